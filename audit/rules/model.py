"""The rule book's own picture of the ledger, folded from the events alone.

Written from the white paper (5.1.1 the parties, 5.2.3 the reviews and authorizations, 6.2
the usage controls), ../DESIGN.md section 2 and the event catalogue, not from ``domain/``:
an auditor that replayed the project's aggregates would repeat their bugs. Each record keeps
only what a rule needs; old class versions of an event are read as they were stored (a
version-1 decision has no ``signature``, a version-1 key registration no ``key_id``).

``State.apply`` moves the picture past one event; the rules (``audit/rules/*.py``) read it
*before* the event they judge, which is the ledger as it stood at that event's seq.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.decision import DecisionFormatError
from core.decision import key_id as decision_key_id
from core.record import LogEntry

STEP = "business rules"
#: the server's own actor: it founds the platform operator and rotates its admin's token
SYSTEM = "system"


@dataclass(frozen=True)
class Finding:
    """One broken rule: the event's seq, the step, the rule's name, what the rule expected
    and what the log holds instead."""

    seq: int
    rule: str
    expected: str
    found: str
    step: str = STEP

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "step": self.step, "rule": self.rule,
                "expected": self.expected, "found": self.found}


class Malformed(ValueError):
    """An event that lacks a field a rule reads, or holds one of the wrong type."""


def instant(value: Any, name: str = "at") -> datetime:
    """An ISO-8601 instant with its offset (``...Z`` or ``+08:00``), else Malformed."""
    if not isinstance(value, str):
        raise Malformed(f"{name} is not an instant: {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Malformed(f"{name} is not an ISO-8601 instant: {value!r}") from None
    if parsed.tzinfo is None:
        raise Malformed(f"{name} has no UTC offset: {value!r}")
    return parsed


@dataclass(frozen=True)
class Ev:
    """The event being judged: where it is, what it says, who made it and when."""

    seq: int
    type: str
    id: str
    version: int
    payload: dict[str, Any]
    at: datetime
    participant: str
    member: str
    role: str

    @classmethod
    def of(cls, entry: LogEntry, payload: dict[str, Any] | None = None) -> Ev:
        """The event of ``entry``; ``payload`` its decoded payload, when the caller has it."""
        if payload is None:
            payload = entry.payload()
        actor = payload.get("actor")
        if not isinstance(actor, dict) or not all(
                isinstance(actor.get(k), str) for k in ("participant", "member", "role")):
            raise Malformed("actor is not {participant, member, role}")
        return cls(entry.seq, entry.type_name, entry.originator_id, entry.version, payload,
                   instant(payload.get("at")), actor["participant"], actor["member"],
                   actor["role"])

    def get(self, key: str) -> Any:
        """A field the rule needs (Malformed if the event lacks it)."""
        try:
            return self.payload[key]
        except KeyError:
            raise Malformed(f"{self.type} has no {key!r}") from None


@dataclass
class Key:
    member: str
    public_key: str
    active: bool = True


@dataclass
class Participant:
    role: str
    state: str = "pending"
    #: member id -> its member roles (admin, expert, member)
    members: dict[str, frozenset[str]] = field(default_factory=dict)
    #: key id -> the registered key
    keys: dict[str, Key] = field(default_factory=dict)


@dataclass
class Scenario:
    operator: str
    requested: dict[str, frozenset[str]]
    state: str = "submitted"
    version: int = 1
    #: expert member id -> verdict
    opinions: dict[str, str] = field(default_factory=dict)


@dataclass
class Authorization:
    provider: str
    scenario: str
    datasets: dict[str, frozenset[str]]
    not_before: datetime
    not_after: datetime
    policy: dict[str, Any]
    state: str = "granted"

    def covers(self, dataset: str, fields: frozenset[str], at: datetime) -> bool:
        granted = self.datasets.get(dataset)
        return (self.state == "granted" and self.not_before <= at < self.not_after
                and granted is not None and fields <= granted)


@dataclass
class Product:
    operator: str
    scenario: str
    authorizations: list[str]
    #: input dataset id -> the fields the code reads, in input order
    inputs: dict[str, frozenset[str]]
    code_sha256: str
    state: str = "registered"


@dataclass
class Order:
    demander: str
    product: str
    operator: str
    state: str = "placed"
    policy: dict[str, Any] = field(default_factory=dict)
    required: list[str] = field(default_factory=list)
    approvals: list[str] = field(default_factory=list)
    trial: bool = False
    #: provider -> the executions (>= 1) it requested that did not fail
    used: dict[str, set[int]] = field(default_factory=dict)


@dataclass
class Computation:
    contract: str
    product: str
    provider: str
    demander: str
    execution: int
    datasets: list[str]
    code_sha256: str
    state: str = "requested"
    result_sha256: str = ""
    delivered: bool = False
    #: findings on the request, held until the computation's next event: a request the
    #: ledger refused is recorded with its ``computation.failed`` and broke no rule
    held: list[Finding] = field(default_factory=list)


def _selection(items: Any, name: str) -> dict[str, frozenset[str]]:
    """``[{dataset_id, fields}]`` as dataset id -> fields."""
    if not isinstance(items, list):
        raise Malformed(f"{name} is not a list of {{dataset_id, fields}}")
    try:
        return {str(i["dataset_id"]): frozenset(i["fields"]) for i in items}
    except (KeyError, TypeError):
        raise Malformed(f"{name} is not a list of {{dataset_id, fields}}") from None


def registered_key_id(payload: dict[str, Any]) -> str:
    """A key registration's key id: stored since version 2, computed from the key before."""
    kid = payload.get("key_id")
    if isinstance(kid, str):
        return kid
    try:
        return decision_key_id(str(payload.get("public_key")))
    except DecisionFormatError:
        return "invalid:" + str(payload.get("public_key"))


class State:
    """Every aggregate the rules need, by id; the regulator seat's holder."""

    def __init__(self) -> None:
        self.participants: dict[str, Participant] = {}
        self.regulator: str | None = None
        self.datasets: dict[str, str] = {}  # dataset id -> owner
        self.scenarios: dict[str, Scenario] = {}
        self.authorizations: dict[str, Authorization] = {}
        self.products: dict[str, Product] = {}
        self.orders: dict[str, Order] = {}
        self.computations: dict[str, Computation] = {}

    def apply(self, ev: Ev) -> None:
        """Move past ``ev`` (an event type no rule reads is passed over)."""
        handler = _APPLY.get(ev.type)
        if handler is not None:
            handler(self, ev)
        scenario = self.scenarios.get(ev.id)
        if scenario is not None:
            scenario.version = ev.version


def _participant_registered(s: State, ev: Ev) -> None:
    s.participants[ev.id] = Participant(str(ev.get("role")))


def _participant_state(state: str) -> Any:
    def apply(s: State, ev: Ev) -> None:
        if ev.id in s.participants:
            s.participants[ev.id].state = state
    return apply


def _member_added(s: State, ev: Ev) -> None:
    if ev.id in s.participants:
        roles = ev.get("member_roles")
        s.participants[ev.id].members[str(ev.get("member_id"))] = frozenset(
            roles if isinstance(roles, list) else ())


def _key_registered(s: State, ev: Ev) -> None:
    if ev.id in s.participants:
        s.participants[ev.id].keys[registered_key_id(ev.payload)] = Key(
            str(ev.get("member_id")), str(ev.get("public_key")))


def _key_revoked(s: State, ev: Ev) -> None:
    key = s.participants.get(ev.id, Participant("")).keys.get(str(ev.get("key_id")))
    if key is not None:
        key.active = False


def _seated(s: State, ev: Ev) -> None:
    s.regulator = str(ev.get("participant_id"))


def _dataset_registered(s: State, ev: Ev) -> None:
    s.datasets[ev.id] = str(ev.get("owner_id"))


def _scenario_submitted(s: State, ev: Ev) -> None:
    s.scenarios[ev.id] = Scenario(str(ev.get("operator_id")),
                                  _selection(ev.get("requested"), "requested"))


def _opinion(s: State, ev: Ev) -> None:
    if ev.id in s.scenarios:
        s.scenarios[ev.id].opinions[str(ev.get("expert_id"))] = str(ev.get("verdict"))


def _scenario_state(state: str) -> Any:
    def apply(s: State, ev: Ev) -> None:
        if ev.id in s.scenarios:
            s.scenarios[ev.id].state = state
    return apply


def _granted(s: State, ev: Ev) -> None:
    policy = ev.get("usage_policy")
    s.authorizations[ev.id] = Authorization(
        str(ev.get("provider_id")), str(ev.get("scenario_id")),
        _selection(ev.get("datasets"), "datasets"), instant(ev.get("not_before"), "not_before"),
        instant(ev.get("not_after"), "not_after"), policy if isinstance(policy, dict) else {})


def _authorization_state(state: str) -> Any:
    def apply(s: State, ev: Ev) -> None:
        if ev.id in s.authorizations:
            s.authorizations[ev.id].state = state
    return apply


def _product_registered(s: State, ev: Ev) -> None:
    auths = ev.get("authorization_ids")
    s.products[ev.id] = Product(str(ev.get("operator_id")), str(ev.get("scenario_id")),
                                [str(a) for a in auths] if isinstance(auths, list) else [],
                                _selection(ev.get("inputs"), "inputs"),
                                str(ev.get("code_sha256")))


def _product_state(state: str) -> Any:
    def apply(s: State, ev: Ev) -> None:
        if ev.id in s.products:
            s.products[ev.id].state = state
    return apply


def _order_placed(s: State, ev: Ev) -> None:
    s.orders[ev.id] = Order(str(ev.get("demander_id")), str(ev.get("product_id")),
                            str(ev.get("operator_id")))


def _proposed(s: State, ev: Ev) -> None:
    order = s.orders.get(ev.id)
    if order is not None:
        policy, required = ev.get("usage_policy"), ev.get("required_approvals")
        order.state = "proposed"
        order.policy = policy if isinstance(policy, dict) else {}
        order.required = [str(p) for p in required] if isinstance(required, list) else []


def _party_approved(s: State, ev: Ev) -> None:
    if ev.id in s.orders:
        s.orders[ev.id].approvals.append(str(ev.get("party_id")))


def _trial(s: State, ev: Ev) -> None:
    if ev.id in s.orders:
        s.orders[ev.id].trial = True


def _order_state(state: str) -> Any:
    def apply(s: State, ev: Ev) -> None:
        if ev.id in s.orders:
            s.orders[ev.id].state = state
    return apply


def _requested(s: State, ev: Ev) -> None:
    datasets = ev.get("dataset_ids")
    execution = ev.get("execution")
    if not isinstance(execution, int) or isinstance(execution, bool):
        raise Malformed(f"execution is not an integer: {execution!r}")
    run = Computation(str(ev.get("contract_id")), str(ev.get("product_id")),
                      str(ev.get("provider_id")), str(ev.get("demander_id")), execution,
                      [str(d) for d in datasets] if isinstance(datasets, list) else [],
                      str(ev.get("code_sha256")))
    s.computations[ev.id] = run
    order = s.orders.get(run.contract)
    if order is not None and execution >= 1:
        order.used.setdefault(run.provider, set()).add(execution)


def _succeeded(s: State, ev: Ev) -> None:
    run = s.computations.get(ev.id)
    if run is not None:
        run.state, run.result_sha256 = "succeeded", str(ev.get("result_sha256"))


def _failed(s: State, ev: Ev) -> None:
    run = s.computations.get(ev.id)
    if run is None:
        return
    run.state = "failed"
    order = s.orders.get(run.contract)
    if order is not None:  # a failed execution uses up none of the processing count
        order.used.get(run.provider, set()).discard(run.execution)


def _delivered(s: State, ev: Ev) -> None:
    run = s.computations.get(ev.id)
    if run is not None:
        run.delivered = True


_APPLY: dict[str, Any] = {
    "participant.registered": _participant_registered,
    "participant.admission_approved": _participant_state("admitted"),
    "participant.admission_rejected": _participant_state("rejected"),
    "participant.suspended": _participant_state("suspended"),
    "participant.member_added": _member_added,
    "participant.key_registered": _key_registered,
    "participant.key_revoked": _key_revoked,
    "participant.regulator_seated": _seated,
    "dataset.registered": _dataset_registered,
    "scenario.submitted": _scenario_submitted,
    "scenario.opinion_recorded": _opinion,
    "scenario.approved": _scenario_state("approved"),
    "scenario.rejected": _scenario_state("rejected"),
    "scenario.suspended": _scenario_state("suspended"),
    "authorization.granted": _granted,
    "authorization.revoked": _authorization_state("revoked"),
    "authorization.expired": _authorization_state("expired"),
    "product.registered": _product_registered,
    "product.listing_requested": _product_state("listing_requested"),
    "product.listed": _product_state("listed"),
    "product.listing_rejected": _product_state("registered"),
    "product.delisted": _product_state("delisted"),
    "order.placed": _order_placed,
    "order.trial_granted": _trial,
    "order.cancelled": _order_state("cancelled"),
    "contract.proposed": _proposed,
    "contract.accepted": _order_state("accepted"),
    "contract.party_approved": _party_approved,
    "contract.approved": _order_state("approved"),
    "contract.terminated": _order_state("terminated"),
    "computation.requested": _requested,
    "computation.succeeded": _succeeded,
    "computation.failed": _failed,
    "delivery.made": _delivered,
}
