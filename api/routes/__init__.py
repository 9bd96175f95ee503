"""One router per resource."""

from api.routes.authorizations import router as authorizations
from api.routes.chain import router as chain
from api.routes.computations import router as computations
from api.routes.datasets import router as datasets
from api.routes.deliveries import router as deliveries
from api.routes.forensics import router as forensics
from api.routes.hidden_queries import router as hidden_queries
from api.routes.joint import router as joint
from api.routes.ledger import router as ledger
from api.routes.orders import router as orders
from api.routes.participants import router as participants
from api.routes.products import router as products
from api.routes.scenarios import router as scenarios

ROUTERS = [participants, datasets, scenarios, authorizations, products, orders, ledger, chain,
           computations, joint, deliveries, forensics, hidden_queries]
