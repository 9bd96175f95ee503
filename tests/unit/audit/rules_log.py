"""A real log for the rule book's tests: the parties drive the HTTP API (``client``) on a
SQLite file through a whole market, and the stored events are read back as the log holds
them (``core.record.LogEntry``). Helpers to tamper with a copy of it as a dishonest
operator would: insert, move or rewrite events, signing forged decisions with the keys a
party really holds."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core import decision
from core.canonical import canonical_bytes
from core.record import LogEntry

os.environ.setdefault("DATALEDGER_BACKGROUND_PROCESS", "false")

NOW = datetime.now(UTC)
SPLIT = {"developer": 1000, "operator": 3000, "platform": 1000, "provider": 5000}
QUERY = {"field": "taxpayer_id", "values": ["91110000MA01", "91110000MA02"]}


@dataclass
class HonestLog:
    """The stored events of a whole market, and who did what in it."""

    entries: list[LogEntry]
    parties: dict[str, Any]
    ids: dict[str, str] = field(default_factory=dict)
    #: a party's key before it rotated it (revoked since)
    old_keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)

    def seq_of(self, type_name: str, originator: str | None = None, nth: int = 0) -> int:
        """The seq of the ``nth`` event of that type (on that aggregate)."""
        found = [e.seq for e in self.entries if e.type_name == type_name
                 and (originator is None or e.originator_id == originator)]
        return found[nth]

    def entry(self, seq: int) -> LogEntry:
        return self.entries[seq - 1]


def build_honest_log(tmp: Path) -> HonestLog:
    """Drive a whole market over HTTP on a SQLite file; the log it leaves."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from runtime.build import build
    from runtime.settings import Settings
    from tests.e2e.conftest import ADMIN_TOKEN, World

    container = build(Settings(data_dir=tmp / "var", database_url=f"sqlite:///{tmp / 'l.db'}",
                               admin_token=ADMIN_TOKEN, checkpoint_every_seconds=0.3))
    try:
        with TestClient(create_app(container=container), raise_server_exceptions=False) as tc:
            log = _market(World(tc))
        log.entries = container.store.read(0, 100_000)
    finally:
        container.close()
    return log


def _market(w: Any) -> HonestLog:
    from tests.e2e.conftest import build_chain, product_body
    from tests.e2e.test_computations_api import ask, report

    api = w.api
    chain = build_chain(w)
    power = w.onboard("provider", "Power utility 供电公司")
    insurer = w.onboard("demander", "Insurer 保险公司")
    log = HonestLog([], {"provider": chain.provider, "operator": chain.operator,
                         "demander": chain.demander, "expert": chain.expert,
                         "regulator": w.regulator, "platform": w.platform, "power": power,
                         "insurer": insurer, "developer": chain.developer})
    ids = log.ids
    ids.update(dataset=chain.dataset_id, scenario=chain.scenario_id,
               authorization=chain.authorization_id)
    # a second scenario that is never decided
    ids["pending_scenario"] = api.propose_scenario(
        chain.operator, title="Pending review", purpose="not decided yet", sector="finance",
        requested=[{"dataset_id": chain.dataset_id, "fields": ["taxpayer_id"]}])
    ids["product"] = api.list_product(chain.operator, w.platform, product_body(chain))
    # a trial on mock data, then the contract and two executions
    oid = ids["order"] = api.place_order(chain.demander, ids["product"], "credit decisions",
                                         QUERY)
    api.grant_trial(chain.operator, oid)
    _run(w, chain, oid, 0, ask, report)
    api.propose_contract(chain.operator, oid, usage_policy={
        "processing_count": 2, "not_before": (NOW - timedelta(minutes=5)).isoformat(),
        "not_after": (NOW + timedelta(days=90)).isoformat(), "provider_may_terminate": True,
        "circulation_modes": ["plaintext"]}, price_fen=1_000, revenue_split=SPLIT)
    api.accept_contract(chain.demander, oid)
    api.approve_contract(chain.provider, oid)
    api.approve_contract(chain.operator, oid)
    ids["run1"] = _run(w, chain, oid, 1, ask, report)
    w.call("GET", f"/deliveries/{ids['run1']}/result", chain.demander)
    api.submit_query(chain.demander, oid, QUERY)
    ids["run2"] = _run(w, chain, oid, 2, ask, report)
    # a second order, whose trial was never granted: its request is refused and recorded
    other = ids["order2"] = api.place_order(chain.demander, ids["product"], "a second look")
    refused = w.call("POST", "/computations", chain.provider, 201, json=ask(other, 0))
    assert refused["state"] == "failed", refused
    # the operator rotates its key; the provider ends the contract; the rest winds down
    log.old_keys["operator"] = chain.operator.key
    api.rotate_key(chain.operator)
    api.terminate_contract(chain.provider, oid, "the bank's licence lapsed")
    w.call("POST", f"/participants/{insurer.id}/suspension", w.regulator,
           json={"reason": "sanctioned"})
    api.revoke_authorization(chain.provider, chain.authorization_id, "audit finding")
    w.call("POST", f"/products/{ids['product']}/delisting", w.platform,
           json={"reason": "recall"})
    return log


def _run(w: Any, chain: Any, oid: str, execution: int, ask: Any, report: Any) -> str:
    made = w.call("POST", "/computations", chain.provider, 201, json=ask(oid, execution))
    assert made["state"] == "requested", made
    cid: str = made["computation_id"]
    w.call("POST", f"/computations/{cid}/result", chain.provider, json=report(chain))
    return cid


# -- tampering ------------------------------------------------------------------------------
def renumbered(entries: list[LogEntry]) -> list[LogEntry]:
    """The entries with seqs 1..n again, in their new order."""
    return [replace(e, seq=i) for i, e in enumerate(entries, 1)]


def with_payload(entry: LogEntry, **changes: Any) -> LogEntry:
    """``entry`` with payload fields changed (None deletes one)."""
    payload = {**entry.payload(), **changes}
    return replace(entry, payload_bytes=canonical_bytes(
        {k: v for k, v in payload.items() if v is not None}))


def actor(party: Any) -> dict[str, str]:
    return {"participant": party.participant_id, "member": party.member_id,
            "role": party.role}


def forged(seq: int, type_name: str, originator: str, version: int, party: Any,
           at: str, **fields: Any) -> LogEntry:
    """An event written behind the domain's back, as ``party``'s member."""
    payload = {"actor": actor(party), "at": at, **fields}
    return LogEntry(seq, originator, version, type_name, canonical_bytes(payload))


def signature(key: Ed25519PrivateKey, command: str, aggregate_id: str, version: int,
              member_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """A decision's recorded signature, made with ``key``."""
    stmt = decision.statement(command, aggregate_id, version, member_id, body)
    return {"key_id": decision.key_id(decision.public_key_text(key.public_key())),
            "statement": stmt, "value": decision.sign(key, stmt)}


def insert(entries: list[LogEntry], after_seq: int, *new: LogEntry) -> list[LogEntry]:
    """``new`` placed right after ``after_seq``; every seq renumbered."""
    return renumbered([*entries[:after_seq], *new, *entries[after_seq:]])
