"""Joint execution (联合计算): one execution of a joint product's contract, computed over
several providers' data with secure aggregation (docs/SECAGG.md, white paper 6.1).

A product that declares a joint output (``product.joint``) is not delivered provider by
provider. For each execution >= 1 of its contract the ledger keeps a ``JointExecution``
(id ``joint_id(contract_id, execution)``, which is also the secagg ``execution_id``): it is
started with the first provider's ``computation.requested`` of that execution; the layout
provider (the owner of the product's first input) publishes the layout, the sorted key
list every provider's vector follows (``joint.layout_published``: its SHA-256 and length);
each provider posts its masked part (``joint.part_received``, with its
``computation.succeeded``: ``domain.joint_parts``); once all are in, the platform's
aggregation node sums them and publishes the joint table (``joint.published``, by the
system actor). A provider's failure, a deadline passed with a part missing or a refused
aggregation fails it (``joint.failed``): terminal, and nothing is ever delivered (no
``delivery.made`` for a joint computation).

The layout and the parts' bytes stay off the log (``aggregation/store.py``); the log holds
their hashes only.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any

from core.canonical import canonical_bytes
from core.event import Event
from core.secagg import MAX_CODE_BYTES
from domain.base import Aggregate, Context, applies
from domain.errors import Forbidden, InvalidInput, NotFound, WrongState
from domain.order import Order
from domain.permissions import permit
from domain.policy import parse_instant
from domain.product import Product, joint_providers
from domain.unit_of_work import UnitOfWork

#: the namespace of joint ids: uuid5(NS, f"{contract_id}#{execution}#joint")
NS = uuid.uuid5(uuid.NAMESPACE_URL, "dataledger:joint")
#: the stable codes a ``joint.failed`` reason starts with (``code: sentence``)
FAILURE_CODES = ("missing", "provider_failed", "refused", "policy_lapsed")
#: the states after which nothing more is taken
TERMINAL = ("published", "failed")
#: a layout: 1 to MAX_KEYS sorted unique keys, each 1 to MAX_CODE_BYTES bytes of UTF-8
#: (``core.secagg``'s bound on a code: each key is a code of the hidden table)
MAX_KEYS = 2_000_000
#: a masked part's words at most: its layout's keys x the product's value columns, so a
#: part's body (8 bytes a word, 32,000,000 bytes) fits its post (``api/edge.py``)
MAX_PART_WORDS = 4_000_000
MAX_REASON = 2000


def joint_id(contract_id: str, execution: int) -> str:
    """The id of the joint execution ``execution`` of contract ``contract_id`` (and the
    ``execution_id`` its parts are masked for)."""
    return str(uuid.uuid5(NS, f"{contract_id}#{execution}#joint"))


def layout_bytes(keys: Any) -> tuple[bytes, str]:
    """A layout's canonical JSON bytes and their SHA-256 (``layout_sha256``), checked:
    a list of 1 to MAX_KEYS sorted unique non-empty strings of at most MAX_CODE_BYTES
    bytes of UTF-8 (a longer key could not be a code of the hidden table)."""
    if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_KEYS:
        raise InvalidInput("keys", f"must be a list of 1 to {MAX_KEYS} keys")
    previous: str | None = None
    for i, key in enumerate(keys):
        if (not isinstance(key, str) or not key or "\x00" in key
                or len(key) > MAX_CODE_BYTES or len(key.encode("utf-8")) > MAX_CODE_BYTES):
            raise InvalidInput(f"keys[{i}]", f"must be a non-empty string of at most "
                                             f"{MAX_CODE_BYTES} bytes of UTF-8, without NUL")
        if previous is not None and key <= previous:
            raise InvalidInput(f"keys[{i}]", "the keys must be sorted and unique (each "
                                             "greater than the one before)")
        previous = key
    content = canonical_bytes(keys)
    return content, hashlib.sha256(content).hexdigest()


@dataclass(frozen=True, kw_only=True)
class JointStarted(Event):
    """A joint execution started (with the first provider's request of it): whose parts
    it waits for (``providers``, in input order; ``layout_provider`` publishes the layout)
    and until when (``deadline``)."""

    type_name = "joint.started"
    contract_id: str
    execution: int
    product_id: str
    demander_id: str
    providers: list[str]
    layout_provider: str
    key_column: str
    value_columns: list[str]
    deadline: str


@dataclass(frozen=True, kw_only=True)
class JointLayoutPublished(Event):
    """The layout provider's node published the layout: the SHA-256 of the sorted key
    list's canonical JSON, and how many keys."""

    type_name = "joint.layout_published"
    layout_sha256: str
    length: int


@dataclass(frozen=True, kw_only=True)
class JointPartReceived(Event):
    """A provider's masked part is in: its digest (``MaskedPart.digest()``, which commits to
    the header and the body) and its length in 64-bit words."""

    type_name = "joint.part_received"
    provider_id: str
    computation_id: str
    digest: str
    length: int


@dataclass(frozen=True, kw_only=True)
class JointPublished(Event):
    """The aggregation node summed the parts and published the joint table: the SHA-256 of
    its canonical JSON, the sealed (hidden-query) table's digest, its rows."""

    type_name = "joint.published"
    result_sha256: str
    table_digest: str
    rows: int


@dataclass(frozen=True, kw_only=True)
class JointFailed(Event):
    """The joint execution failed (``code: sentence``, a code of ``FAILURE_CODES``);
    terminal: nothing is delivered."""

    type_name = "joint.failed"
    reason: str


@dataclass(frozen=True, kw_only=True)
class JointQueried(Event):
    """The contract's demander made a hidden query on the published table
    (``domain.joint_query``): what the ledger may know of it, never a code, the request or
    the response. ``request_commitment``: SHA-256 of the blinded request's bytes;
    ``request_size``: how many codes it asks about (counted against ``query_count``);
    ``answer_hash``: SHA-256 of the aggregation node's response."""

    type_name = "joint.queried"
    contract_id: str
    demander_id: str
    request_commitment: str
    request_size: int
    answer_hash: str


class JointExecution(Aggregate):
    """started → layout_published (the parts come in) → published | failed; both terminal."""

    kind = "joint"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.state = "new"
        self.contract_id = ""
        self.execution = 0
        self.product_id = ""
        self.demander_id = ""
        self.providers: list[str] = []
        self.layout_provider = ""
        self.key_column = ""
        self.value_columns: list[str] = []
        self.deadline = ""
        self.layout_sha256: str | None = None
        self.length = 0
        #: provider id -> the digest of its part
        self.parts: dict[str, str] = {}
        self.reason = ""
        #: hidden queries answered on its published table, and the codes they asked about
        self.queries = 0
        self.queried = 0

    @property
    def part_length(self) -> int:
        """The words of each part: a value per key of the layout and value column."""
        return self.length * len(self.value_columns)

    def complete(self) -> bool:
        """Whether every provider's part is in."""
        return all(p in self.parts for p in self.providers)

    def past_deadline(self, at: str) -> bool:
        """Whether instant ``at`` is at or past the joint's deadline."""
        return parse_instant(at, "at") >= parse_instant(self.deadline, "deadline")

    def missing_reason(self) -> str:
        """The ``missing: …`` reason of a joint its deadline found incomplete: the layout,
        else the providers whose part is not in."""
        if self.state != "layout_published":
            why = f"layout provider {self.layout_provider} published no layout"
        else:
            missing = [p for p in self.providers if p not in self.parts]
            why = (f"provider{'s' if len(missing) > 1 else ''} {', '.join(missing)} sent no "
                   "part")
        return f"missing: {why} by the deadline {self.deadline}"

    # -- decide -----------------------------------------------------------------
    @classmethod
    def start(cls, ctx: Context, *, order: Order, product: Product, execution: int,
              providers: list[str]) -> JointExecution:
        """Start execution ``execution`` of a joint product's contract."""
        assert product.joint is not None and product.key_column is not None
        deadline = (parse_instant(ctx.at, "at").astimezone(UTC)
                    + timedelta(seconds=product.joint["deadline_seconds"]))
        agg = cls(joint_id(order.id, execution))
        agg.trigger(JointStarted, ctx, contract_id=order.id, execution=execution,
                    product_id=product.id, demander_id=order.demander_id,
                    providers=list(providers), layout_provider=providers[0],
                    key_column=product.key_column,
                    value_columns=list(product.joint["value_columns"]),
                    deadline=deadline.isoformat().replace("+00:00", "Z"))
        return agg

    def takes_layout(self, ctx: Context, layout_sha256: str, length: int) -> bool:
        """Whether the layout provider may publish this layout of ``length`` keys: True if
        it published this very one already (a repeat), False if the joint awaits it; else
        it raises (422 ``keys`` for a layout whose parts would pass MAX_PART_WORDS)."""
        if ctx.actor.role != "provider" or ctx.actor.participant_id != self.layout_provider:
            raise Forbidden(f"only the layout provider {self.layout_provider} of joint "
                            f"{self.id} publishes its layout")
        self.require_open("publish a layout")
        most = MAX_PART_WORDS // len(self.value_columns)
        if length > most:
            raise InvalidInput("keys", f"joint {self.id} has {len(self.value_columns)} value "
                                       f"column(s): its parts hold at most {MAX_PART_WORDS} "
                                       f"words, so its layout at most {most} keys, not "
                                       f"{length}")
        if self.layout_sha256 == layout_sha256:
            return True
        if self.layout_sha256 is not None:
            raise WrongState(f"joint {self.id} has its layout already ({self.layout_sha256}, "
                             f"{self.length} keys); a layout is published once",
                             state=self.state)
        return False

    def publish_layout(self, ctx: Context, *, layout_sha256: str, length: int) -> None:
        if not self.takes_layout(ctx, layout_sha256, length):
            self.trigger(JointLayoutPublished, ctx, layout_sha256=layout_sha256, length=length)

    def receive_part(self, ctx: Context, *, provider_id: str, computation_id: str,
                     digest: str) -> None:
        """Record a provider's part (the caller checked it: ``domain.joint_parts``)."""
        self.require_state(["layout_published"], "receive a part")
        self.trigger(JointPartReceived, ctx, provider_id=provider_id,
                     computation_id=computation_id, digest=digest, length=self.part_length)

    def publish(self, ctx: Context, *, result_sha256: str, table_digest: str,
                rows: int) -> None:
        self.require_state(["layout_published"], "publish the joint table")
        if not self.complete():
            raise WrongState(f"joint {self.id} still waits for the parts of "
                             f"{', '.join(p for p in self.providers if p not in self.parts)}",
                             state=self.state)
        self.trigger(JointPublished, ctx, result_sha256=result_sha256,
                     table_digest=table_digest, rows=rows)

    def fail(self, ctx: Context, *, reason: str) -> None:
        """Fail the joint; ``missing`` only while a part or the layout is missing (the
        sweep read it incomplete, and the last part may have come since)."""
        self.require_open("fail")
        code = reason.split(":", 1)[0]
        if code not in FAILURE_CODES or not reason[len(code) + 1:].strip():
            raise InvalidInput("reason", f"must be 'code: sentence' with a code of "
                                         f"{', '.join(FAILURE_CODES)}")
        if code == "missing" and self.state == "layout_published" and self.complete():
            raise WrongState(f"joint {self.id} has every part: none is missing",
                             state=self.state)
        self.trigger(JointFailed, ctx, reason=reason[:MAX_REASON])

    def require_open(self, action: str) -> None:
        """Raise WrongState (409) once the joint is published or failed."""
        if self.state in TERMINAL:
            raise WrongState(f"cannot {action}: joint {self.id} is {self.state}"
                             + (f" ({self.reason})" if self.reason else ""),
                             state=self.state)

    # -- evolve -----------------------------------------------------------------
    @applies(JointStarted)
    def _started(self, e: JointStarted) -> None:
        self.state, self.contract_id, self.execution = "started", e.contract_id, e.execution
        self.product_id, self.demander_id = e.product_id, e.demander_id
        self.providers, self.layout_provider = list(e.providers), e.layout_provider
        self.key_column, self.value_columns = e.key_column, list(e.value_columns)
        self.deadline = e.deadline

    @applies(JointLayoutPublished)
    def _layout(self, e: JointLayoutPublished) -> None:
        self.state, self.layout_sha256, self.length = "layout_published", e.layout_sha256, e.length

    @applies(JointPartReceived)
    def _part(self, e: JointPartReceived) -> None:
        self.parts = {**self.parts, e.provider_id: e.digest}

    @applies(JointPublished)
    def _published(self, e: JointPublished) -> None:
        self.state = "published"

    @applies(JointFailed)
    def _failed(self, e: JointFailed) -> None:
        self.state, self.reason = "failed", e.reason

    @applies(JointQueried)
    def _queried(self, e: JointQueried) -> None:
        self.queries += 1
        self.queried += e.request_size


def find_joint(uow: UnitOfWork, id: str) -> JointExecution | None:
    try:
        return uow.get(JointExecution, id)
    except NotFound:
        return None


def _view(agg: JointExecution) -> dict[str, Any]:
    return {"joint_id": agg.id, "state": agg.state}


# -- what a computation of a joint execution does to it (called by domain.computation) ---
def on_request(uow: UnitOfWork, ctx: Context, *, order: Order, product: Product,
               execution: int) -> str | None:
    """The joint execution a provider's request of ``execution`` belongs to (its id;
    None for a plain product or the trial): started now, in the request's unit of work,
    if this is its first request."""
    if product.joint is None or execution < 1:
        return None
    found = find_joint(uow, joint_id(order.id, execution))
    if found is None:
        found = JointExecution.start(ctx, order=order, product=product, execution=execution,
                                     providers=joint_providers(uow, product))
        uow.add(found)
    return found.id


def on_failure(uow: UnitOfWork, ctx: Context, *, contract_id: str, execution: int,
               computation_id: str, reason: str) -> None:
    """A provider's computation of a joint execution failed: the joint fails with it, in
    the same unit of work (``policy_lapsed`` if its part came after the policy lapsed,
    else ``provider_failed``); nothing if the joint is already published or failed."""
    found = find_joint(uow, joint_id(contract_id, execution)) if execution >= 1 else None
    if found is None or found.state in TERMINAL:
        return
    text = (reason if reason.startswith("policy_lapsed: ") else
            f"provider_failed: computation {computation_id} of provider "
            f"{ctx.actor.participant_id} failed ({reason[:1000]})")
    found.fail(ctx, reason=text)


# -- use cases ------------------------------------------------------------------
def check_layout(uow: UnitOfWork, ctx: Context, id: str, layout_sha256: str,
                 length: int) -> None:
    """Whether the actor may publish this layout (asked before its bytes are stored): the
    joint's layout provider, the joint awaiting it or holding this very one, its parts
    within MAX_PART_WORDS."""
    permit(ctx.actor, "joint.layout")
    uow.get(JointExecution, id).takes_layout(ctx, layout_sha256, length)


def publish_layout(uow: UnitOfWork, ctx: Context, id: str, *, layout_sha256: str,
                   length: int) -> dict[str, Any]:
    """The layout provider's node publishes the layout (its bytes stored by the caller);
    the same layout again writes nothing."""
    permit(ctx.actor, "joint.layout")
    agg = uow.get(JointExecution, id)
    agg.publish_layout(ctx, layout_sha256=layout_sha256, length=length)
    return {**_view(agg), "layout_sha256": agg.layout_sha256, "length": agg.length}


def publish(uow: UnitOfWork, ctx: Context, id: str, *, result_sha256: str,
            table_digest: str, rows: int) -> dict[str, Any]:
    """The aggregation node (the system actor) publishes the joint table once every part
    is in: the clear table's SHA-256, the sealed table's digest, its rows."""
    permit(ctx.actor, "joint.publication")
    agg = uow.get(JointExecution, id)
    agg.publish(ctx, result_sha256=result_sha256, table_digest=table_digest, rows=rows)
    return _view(agg)


def fail(uow: UnitOfWork, ctx: Context, id: str, *, reason: str) -> dict[str, Any]:
    """The system actor fails the joint execution (``code: sentence``: a deadline passed
    with parts missing, an aggregation refused); terminal."""
    permit(ctx.actor, "joint.failure")
    agg = uow.get(JointExecution, id)
    agg.fail(ctx, reason=reason)
    return {**_view(agg), "reason": agg.reason}
