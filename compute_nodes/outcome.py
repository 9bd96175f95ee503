"""The events a compute node acts on, and what it did with each: an :class:`Outcome`.

Events acted on:

- ``order.trial_granted``: execution 0, the trial (试用): the code on this provider's mock
  rows only, for the owners of the product's inputs, before the contract is approved;
- ``contract.approved``: execution 1 of the contract, with the order's ``query``;
- ``contract.query_submitted {execution, query}``: execution ``n >= 2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

APPROVED = "contract.approved"
QUERY_SUBMITTED = "contract.query_submitted"
TRIAL = "order.trial_granted"
WATCHED = (APPROVED, QUERY_SUBMITTED, TRIAL)
#: outcome statuses that leave the event to be handled again later
RETRY_LATER = frozenset({"not_anchored", "lagging", "refused", "error", "running"})
#: the ones looked at again after a short fixed pause: they end by themselves within
#: seconds (the next anchored checkpoint; the read models catching up; an execution
#: running on the sandbox)
SOON = frozenset({"not_anchored", "lagging", "running"})


class NodeError(Exception):
    """What the node was shown is not well formed (an execution number, a query): the node
    refuses to act on it."""


@dataclass
class Outcome:
    """What the node did with one event (one execution of one contract).

    ``status``: ``delivered`` (result on the ledger), ``posted`` (a joint product's masked
    part on the ledger, ``compute_nodes/joint.py``), ``failed`` (the execution is recorded
    as failed: a policy refusal by the ledger, or the code or the datasite failed),
    ``skipped`` (the execution was already succeeded or failed), ``ignored`` (nothing for
    this provider to do), ``rejected`` (``POST /computations`` answered 403, 404, 409
    wrong_state or 422: nothing is recorded and asking again would get the same answer),
    and the ones to retry later (:data:`RETRY_LATER`):
    ``not_anchored`` (no anchored checkpoint covers the event yet), ``lagging`` (the
    platform's read models, by ``GET /health``'s ``projected``, are not yet at the event: a
    404 means nothing yet), ``refused`` (a check of what the platform showed failed),
    ``error`` (the platform did not answer as expected), ``running`` (the execution runs;
    its result is released when the event is handled again once it ended).
    """

    contract_id: str
    status: str
    detail: str = ""
    execution: int | None = None
    computation_id: str | None = None
    result_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None
    event_type: str | None = None

    @property
    def settled(self) -> bool:
        """True once nothing is left to do for the event (its position may move on)."""
        return self.status not in RETRY_LATER


def settled(outcomes: Sequence[Outcome]) -> bool:
    return all(o.settled for o in outcomes)
