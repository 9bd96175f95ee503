"""The regulator's own rule book: the business rules replayed from the events alone.

It imports only ``core`` (the stored record, the decision statement and its Ed25519 check),
never the project's domain or aggregates, so a bug there is not repeated here: the rules are
written again from the white paper, DESIGN.md and the event catalogue (``model.py`` the
picture of the ledger, ``authority.py`` who may, ``execution.py`` contracts, listings and
executions, ``signatures.py`` signed decisions, ``joint.py`` joint computations and hidden
queries, ``book.py`` the ``RuleBook`` that streams).
"""

from audit.rules.book import RuleBook
from audit.rules.model import STEP, Finding

__all__ = ["STEP", "Finding", "RuleBook"]
