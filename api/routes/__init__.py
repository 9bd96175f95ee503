"""One router per resource."""

from api.routes.ledger import router as ledger
from api.routes.participants import router as participants

ROUTERS = [participants, ledger]
