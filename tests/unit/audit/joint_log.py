"""A joint computation's log made by hand for the rule book's tests (white paper 6.1):
the parties admitted, three providers' datasets under one approved scenario, a listed joint
product, the bank's approved contract, the providers' node keys, one joint execution (its
requests, the layout, the masked parts, the aggregation node's publication) and the bank's
hidden queries. Written from the event catalogue, as a stream the rule book must pass;
the tests break it one rule at a time."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core import decision, secagg
from core.canonical import canonical_bytes
from core.record import LogEntry

START = datetime(2030, 3, 1, 9, 0, tzinfo=UTC)
FIELDS = ["credit_code", "amount"]
CODE_SHA256 = "c" * 64
LENGTH = 40
COLUMNS = ["score", "weight"]
DEADLINE_S = 600


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Who:
    """A participant and the member that acts for it."""

    pid: str
    member: str
    role: str

    def actor(self) -> dict[str, str]:
        return {"participant": self.pid, "member": self.member, "role": self.role}


SYSTEM = Who("system", "system", "system")
PLATFORM = Who("platform-1", "platform-admin", "platform")
REGULATOR = Who("regulator-1", "regulator-admin", "regulator")
EXPERT = Who("regulator-1", "regulator-expert", "regulator")
OPERATOR = Who("operator-1", "operator-admin", "operator")
PROVIDERS = [Who(f"provider-{n}", f"provider-{n}-admin", "provider")
             for n in ("market", "tax", "power")]
BANK = Who("bank-1", "bank-admin", "demander")
OTHER_BANK = Who("bank-2", "bank-2-admin", "demander")
DATASETS = [f"dataset-{p.pid}" for p in PROVIDERS]
AUTHORIZATIONS = [f"auth-{p.pid}" for p in PROVIDERS]
SCENARIO, PRODUCT, ORDER = "scenario-1", "product-joint", "order-1"
COMPUTATIONS = [f"computation-{p.pid}" for p in PROVIDERS]


@dataclass
class JointLog:
    """The stream being written, each event's ``at`` a second after the one before (one
    command's events share theirs: :meth:`add` with ``same=True``)."""

    entries: list[LogEntry] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    now: datetime = START
    signing_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    def add(self, type_name: str, oid: str, who: Who, *, same: bool = False,
            **payload: Any) -> LogEntry:
        if not same:
            self.now += timedelta(seconds=1)
        version = self.versions[oid] = self.versions.get(oid, 0) + 1
        body = {"actor": who.actor(), "at": iso(self.now), **payload}
        entry = LogEntry(len(self.entries) + 1, oid, version, type_name, canonical_bytes(body))
        self.entries.append(entry)
        return entry

    def seq_of(self, type_name: str, oid: str | None = None, nth: int = 0) -> int:
        return [e.seq for e in self.entries if e.type_name == type_name
                and (oid is None or e.originator_id == oid)][nth]


#: the joint execution's id, by the shared spec's formula
JOINT = str(uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, "dataledger:joint"), f"{ORDER}#1#joint"))


def _onboard(log: JointLog, who: Who, admitted_by: Who) -> None:
    log.add("participant.registered", who.pid, PLATFORM, role=who.role, name=who.pid)
    log.add("participant.member_added", who.pid, PLATFORM, member_id=who.member,
            member_roles=["admin"])
    log.add("participant.admission_approved", who.pid, admitted_by, comment="ok")


def market(log: JointLog, *, contract_policy: dict[str, Any] | None = None) -> None:
    """The parties, datasets, scenario, grants, the listed joint product and the bank's
    approved contract."""
    log.add("participant.registered", PLATFORM.pid, SYSTEM, role="platform", name="platform")
    log.add("participant.admission_approved", PLATFORM.pid, SYSTEM, comment="founding")
    log.add("participant.member_added", PLATFORM.pid, SYSTEM, member_id=PLATFORM.member,
            member_roles=["admin"])
    _onboard(log, REGULATOR, PLATFORM)
    log.add("participant.regulator_seated", "regulator-seat", PLATFORM,
            participant_id=REGULATOR.pid)
    log.add("participant.member_added", REGULATOR.pid, REGULATOR, member_id=EXPERT.member,
            member_roles=["expert"])
    _onboard(log, OPERATOR, REGULATOR)
    for who in (*PROVIDERS, BANK, OTHER_BANK):
        _onboard(log, who, PLATFORM)
    for who, ds in zip(PROVIDERS, DATASETS, strict=True):
        log.add("dataset.registered", ds, who, owner_id=who.pid, name=ds)
    requested = [{"dataset_id": ds, "fields": FIELDS} for ds in DATASETS]
    log.add("scenario.submitted", SCENARIO, OPERATOR, operator_id=OPERATOR.pid,
            requested=requested)
    log.add("scenario.opinion_recorded", SCENARIO, EXPERT, expert_id=EXPERT.member,
            verdict="approve", comment="proportionate")
    log.add("scenario.approved", SCENARIO, REGULATOR, comment="approved")
    for who, auth, item in zip(PROVIDERS, AUTHORIZATIONS, requested, strict=True):
        log.add("authorization.granted", auth, who, provider_id=who.pid, operator_id=OPERATOR.pid,
                scenario_id=SCENARIO, datasets=[item], not_before=iso(START - timedelta(days=1)),
                not_after=iso(START + timedelta(days=365)),
                usage_policy={"processing_count": 10, "query_count": 1000})
    log.add("product.registered", PRODUCT, OPERATOR, operator_id=OPERATOR.pid,
            scenario_id=SCENARIO, authorization_ids=AUTHORIZATIONS, inputs=requested,
            code_sha256=CODE_SHA256, key_column="credit_code",
            joint={"value_columns": COLUMNS, "min_providers": 3,
                   "deadline_seconds": DEADLINE_S})
    log.add("product.listing_requested", PRODUCT, OPERATOR)
    log.add("product.listed", PRODUCT, PLATFORM, comment="listed")
    log.add("order.placed", ORDER, BANK, demander_id=BANK.pid, product_id=PRODUCT,
            operator_id=OPERATOR.pid, purpose="SME credit", query=None)
    policy = {"not_before": iso(START), "not_after": iso(START + timedelta(days=90)),
              "processing_count": 10, "query_count": 50, **(contract_policy or {})}
    log.add("contract.proposed", ORDER, OPERATOR, usage_policy=policy, price_fen=100,
            required_approvals=sorted([*(p.pid for p in PROVIDERS), OPERATOR.pid]),
            revenue_split={"operator": 5000, "provider": 5000})
    log.add("contract.accepted", ORDER, BANK)
    for who in (*PROVIDERS, OPERATOR):
        log.add("contract.party_approved", ORDER, who, party_id=who.pid)
    log.add("contract.approved", ORDER, OPERATOR)


def node_keys(log: JointLog) -> None:
    """Each provider's node key; the first provider's member signs its registration."""
    first = PROVIDERS[0]
    public = decision.public_key_text(log.signing_key.public_key())
    log.add("participant.key_registered", first.pid, first, member_id=first.member,
            public_key=public, key_id=decision.key_id(public))
    for who in PROVIDERS:
        node = secagg.public_key_text(secagg.new_node_key().public_key())
        signature = None
        if who == first:
            stmt = decision.statement("participant.node_key", who.pid,
                                      log.versions[who.pid], who.member, {"public_key": node})
            signature = {"key_id": decision.key_id(public), "statement": stmt,
                         "value": decision.sign(log.signing_key, stmt)}
        log.add("participant.node_key_registered", who.pid, who, public_key=node,
                key_id=secagg.node_key_id(node), signature=signature)


def request(log: JointLog, n: int, *, start: bool = True) -> None:
    """Provider ``n``'s request of execution 1 (the first one starts the joint: ``start``
    writes its ``joint.started`` in the same commit)."""
    who = PROVIDERS[n]
    log.add("computation.requested", COMPUTATIONS[n], who, contract_id=ORDER,
            product_id=PRODUCT, provider_id=who.pid, demander_id=BANK.pid,
            operator_id=OPERATOR.pid, execution=1, dataset_ids=[DATASETS[n]],
            code_sha256=CODE_SHA256, datasite="site")
    if n == 0 and start:
        started(log, who)


def started(log: JointLog, who: Who) -> None:
    """``joint.started``, in the commit under way."""
    log.add("joint.started", JOINT, who, same=True, contract_id=ORDER, execution=1,
            product_id=PRODUCT, demander_id=BANK.pid, providers=[p.pid for p in PROVIDERS],
            layout_provider=PROVIDERS[0].pid, key_column="credit_code",
            value_columns=COLUMNS, deadline=iso(log.now + timedelta(seconds=DEADLINE_S)))


def part(log: JointLog, n: int) -> None:
    """Provider ``n``'s masked part with its computation's success, in one commit."""
    who, digest = PROVIDERS[n], f"{n}" * 64
    log.add("computation.succeeded", COMPUTATIONS[n], who, result_sha256=digest,
            result_rows=LENGTH, input_hashes={DATASETS[n]: "a" * 64}, datasite="site",
            code_sha256=CODE_SHA256)
    log.add("joint.part_received", JOINT, who, same=True, provider_id=who.pid,
            computation_id=COMPUTATIONS[n], digest=digest, length=LENGTH * len(COLUMNS))


def query(log: JointLog, size: int = 5, who: Who = BANK) -> None:
    log.add("joint.queried", JOINT, who, contract_id=ORDER, demander_id=who.pid,
            request_commitment="d" * 64, request_size=size, answer_hash="e" * 64)


def published_log() -> JointLog:
    """The whole flow: requests, layout, three parts, publication, two hidden queries."""
    log = JointLog()
    market(log)
    node_keys(log)
    for n in range(3):
        request(log, n)
    log.add("joint.layout_published", JOINT, PROVIDERS[0], layout_sha256="f" * 64,
            length=LENGTH)
    for n in range(3):
        part(log, n)
    log.add("joint.published", JOINT, SYSTEM, result_sha256="9" * 64, table_digest="8" * 64,
            rows=LENGTH)
    query(log, 20)
    query(log, 25)
    return log


def failed_log() -> JointLog:
    """The power utility's computation fails after two parts: the joint fails with it."""
    log = JointLog()
    market(log)
    node_keys(log)
    for n in range(3):
        request(log, n)
    log.add("joint.layout_published", JOINT, PROVIDERS[0], layout_sha256="f" * 64,
            length=LENGTH)
    part(log, 0)
    part(log, 1)
    who = PROVIDERS[2]
    log.add("computation.failed", COMPUTATIONS[2], who, reason="sandbox: the code crashed")
    log.add("joint.failed", JOINT, who, same=True, reason=f"provider_failed: computation "
            f"{COMPUTATIONS[2]} of provider {who.pid} failed")
    return log


def refused_log() -> JointLog:
    """The first request comes after the contract's window closed: recorded with its
    refusal, the joint started and failed in the same commit."""
    log = JointLog()
    market(log, contract_policy={"not_after": iso(START + timedelta(minutes=2))})
    node_keys(log)
    log.now += timedelta(minutes=10)
    request(log, 0, start=False)
    who = PROVIDERS[0]
    refusal = "outside_window: the contract's window closed"
    log.add("computation.failed", COMPUTATIONS[0], who, same=True, reason=refusal)
    started(log, who)
    log.add("joint.failed", JOINT, who, same=True, reason=f"provider_failed: computation "
            f"{COMPUTATIONS[0]} of provider {who.pid} failed ({refusal})")
    return log
