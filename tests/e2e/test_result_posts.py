"""Result posts over HTTP: accepted only when they count. A body over the limit is 413 and
stores nothing; a refused post keeps no bytes; a result posted after the contract was
terminated, an authorization revoked or the scenario suspended is recorded as failed
(``policy_lapsed``) and never delivered; the sweep drops the bytes a crash left unrecorded
and never those the log records."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select, update

from api.deps import Commands
from core.canonical import canonical_bytes
from delivery import results
from domain import computation as uc
from runtime.build import Container, build
from tests.e2e.conftest import Chain, World, head
from tests.e2e.test_computations_api import (
    DATA_SHA,
    POLICY_CHANGES,
    RESULT,
    ask,
    delivered,
    events_of,
    report,
)
from tests.e2e.test_market_api import approved_contract, refused
from tests.e2e.watermarked import kept_digests, watermarked

LIMIT = 4096


@pytest.fixture
def settings_changes() -> dict[str, Any]:
    return {"max_result_bytes": LIMIT}


def stored(container: Container, cid: str) -> list[str]:
    """The digests of the bytes stored for computation ``cid``."""
    results.ensure_table(container.engine)
    with container.engine.connect() as conn:
        return sorted(conn.execute(select(results.results.c.sha256).where(
            results.results.c.computation_id == cid)).scalars())


def requested(world: World, chain: Chain) -> tuple[str, str]:
    """An approved contract and its execution 1, requested: (contract id, computation id)."""
    _, oid = approved_contract(world, chain)
    made = world.call("POST", "/computations", chain.provider, 201, json=ask(oid))
    return oid, str(made["computation_id"])


def post(world: World, chain: Chain, cid: str, headers: dict[str, str] | None = None,
         **kwargs: Any) -> Any:
    return world.client.post(f"/computations/{cid}/result",
                             headers={**chain.provider.headers, **(headers or {})}, **kwargs)


def test_a_body_over_the_limit_is_413_and_stores_nothing(
        world: World, chain: Chain, container: Container) -> None:
    _, cid = requested(world, chain)
    big = report(chain, [{"firm": "A" * LIMIT, "score": 1}])
    before = head(world)
    r = post(world, chain, cid, json=big)  # Content-Length over the limit: refused at once
    assert r.status_code == 413, r.text
    assert r.json() == {"error": "too_large", "detail": (
        f"the body is larger than {LIMIT} bytes (DATALEDGER_MAX_RESULT_BYTES); nothing was "
        "stored")}

    def chunked() -> Any:  # no Content-Length: counted as it is read
        yield json.dumps(big).encode()

    r = post(world, chain, cid, content=chunked(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large", r.text
    assert (stored(container, cid), head(world)) == ([], before)
    assert world.call("GET", f"/computations/{cid}", chain.provider)["state"] == "requested"
    # a result under the limit goes through
    done = world.call("POST", f"/computations/{cid}/result", chain.provider,
                      json=report(chain))
    assert done["state"] == "succeeded"
    # the posted bytes and the copy watermarked for the delivery
    assert stored(container, cid) == kept_digests(world, cid)
    assert done["result_sha256"] in stored(container, cid)
    # the limit is the result route's: other routes are not cut at it
    assert world.client.get("/health").status_code == 200


def test_a_refused_post_keeps_no_bytes(world: World, chain: Chain,
                                       container: Container) -> None:
    """Refused before storing (a failed computation, other bytes after success) or after
    it (the command refuses the report): no bytes stay, the recorded ones do."""
    oid, cid = requested(world, chain)
    world.call("POST", f"/datasets/{chain.dataset_id}/data-loaded", chain.provider,
               json={"rows": 2, "schema": [{"name": "taxpayer_id", "type": "string"}],
                     "sha256": DATA_SHA, "mock_rows": 2})
    other = hashlib.sha256(b"not the loaded data").hexdigest()
    body = refused(world, "POST", f"/computations/{cid}/result", chain.provider, 422,
                   json={**report(chain), "input_hashes": {chain.dataset_id: other}})
    assert body["fields"][0]["field"] == f"input_hashes.{chain.dataset_id}"
    assert stored(container, cid) == []  # stored, then dropped when the command refused

    digest = world.call("POST", f"/computations/{cid}/result", chain.provider,
                        json=report(chain))["result_sha256"]
    forged = [{"firm": "A", "score": 1}]
    for _ in range(3):
        body = refused(world, "POST", f"/computations/{cid}/result", chain.provider, 409,
                       json=report(chain, forged))
        assert "is succeeded" in body["detail"]
    assert stored(container, cid) == kept_digests(world, cid) and digest in stored(container, cid)
    assert watermarked(json.loads(delivered(world, chain, cid)), RESULT)

    world.call("POST", f"/orders/{oid}/queries", chain.demander, 201,
               json={"query": {"field": "taxpayer_id", "values": ["91110000MA01"]}})
    second = world.call("POST", "/computations", chain.provider, 201,
                        json=ask(oid, 2))["computation_id"]
    world.call("POST", f"/computations/{second}/failure", chain.provider,
               json={"reason": "the datasite ran out of memory"})
    for _ in range(3):
        refused(world, "POST", f"/computations/{second}/result", chain.provider, 409,
                json=report(chain))
    assert stored(container, second) == []


@pytest.mark.parametrize("code", list(POLICY_CHANGES))
def test_a_result_posted_after_the_policy_lapsed_is_recorded_failed_and_not_delivered(
        world: World, chain: Chain, container: Container, code: str) -> None:
    """The node ran the code; meanwhile the contract was terminated, the authorization
    revoked or the scenario suspended: the post is answered 409 with the reason, and only
    computation.failed is written: no delivery, no bytes kept."""
    oid, cid = requested(world, chain)
    POLICY_CHANGES[code](world, chain, oid)
    before = head(world)
    r = post(world, chain, cid, json=report(chain))
    assert r.status_code == 409, r.text
    reason = r.json()["detail"]
    assert r.json()["error"] == "wrong_state"
    assert reason.startswith("policy_lapsed: ") and oid in reason, reason
    named = {"contract_terminated": f"contract {oid} was terminated",
             "authorization_revoked": f"authorization {chain.authorization_id} covering",
             "scenario_suspended": f"scenario {chain.scenario_id}"}[code]
    assert reason.startswith(f"policy_lapsed: {named}"), reason
    assert head(world) == before + 1
    assert [e["type"] for e in events_of(world, cid)] == [
        "computation.requested", "computation.failed"]
    assert events_of(world, cid)[1]["payload"]["reason"] == reason
    seen = world.call("GET", f"/computations/{cid}", chain.demander)
    assert (seen["state"], seen["reason"], seen["result_sha256"]) == ("failed", reason, None)
    body = refused(world, "GET", f"/deliveries/{cid}/result", chain.demander, 409)
    assert "nothing is delivered" in body["detail"]
    assert stored(container, cid) == []
    # posting again: refused before anything is stored, nothing written
    refused(world, "POST", f"/computations/{cid}/result", chain.provider, 409,
            json=report(chain))
    assert stored(container, cid) == []


def test_a_result_posted_after_the_product_was_delisted_is_not_delivered(
        world: World, chain: Chain, container: Container) -> None:
    """A product delisted while its code runs delivers nothing: the post is 409
    ``policy_lapsed`` naming the product, recorded as computation.failed, no bytes kept."""
    pid, oid = approved_contract(world, chain)
    cid = str(world.call("POST", "/computations", chain.provider, 201, json=ask(oid))
              ["computation_id"])
    world.call("POST", f"/products/{pid}/delisting", world.platform, json={"reason": "recall"})
    r = post(world, chain, cid, json=report(chain))
    assert r.status_code == 409, r.text
    assert r.json()["detail"].startswith(
        f"policy_lapsed: product {pid} is delisted, not listed"), r.text
    assert [e["type"] for e in events_of(world, cid)] == [
        "computation.requested", "computation.failed"]
    assert stored(container, cid) == []
    refused(world, "GET", f"/deliveries/{cid}/result", chain.demander, 409)


def crash_before_recording(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """kill -9 after the bytes are stored, before the command records them."""
    run = Commands.run

    async def killed(self: Commands, handler: Any, *args: Any, **kwargs: Any) -> Any:
        if handler is uc.record_success:
            raise RuntimeError("kill -9")
        return await run(self, handler, *args, **kwargs)

    monkeypatch.setattr(Commands, "run", killed)
    return monkeypatch.undo


def test_the_sweep_drops_unrecorded_bytes_and_keeps_recorded_ones(
        world: World, chain: Chain, container: Container,
        monkeypatch: pytest.MonkeyPatch) -> None:
    oid, cid = requested(world, chain)
    recorded = world.call("POST", f"/computations/{cid}/result", chain.provider,
                          json=report(chain))["result_sha256"]
    world.call("POST", f"/orders/{oid}/queries", chain.demander, 201,
               json={"query": {"field": "taxpayer_id", "values": ["91110000MA01"]}})
    second = world.call("POST", "/computations", chain.provider, 201,
                        json=ask(oid, 2))["computation_id"]
    undo = crash_before_recording(monkeypatch)
    assert post(world, chain, second, json=report(chain)).status_code == 500
    undo()
    orphan = hashlib.sha256(canonical_bytes(RESULT)).hexdigest()
    orphans = stored(container, second)  # the posted bytes, and the watermarked copy
    assert orphan in orphans and len(orphans) <= 2
    assert world.call("GET", f"/computations/{second}", chain.provider)["state"] == "requested"

    # within the grace period the bytes stay (a post may be about to record them)
    assert results.sweep(container.engine, container.store) == 0
    assert stored(container, second) == orphans
    assert results.sweep(container.engine, container.store, older_than=0) == len(orphans)
    assert stored(container, second) == []
    # recorded bytes are never swept: the result's and its delivery's
    assert stored(container, cid) == kept_digests(world, cid) and recorded in stored(
        container, cid)
    assert watermarked(json.loads(delivered(world, chain, cid)), RESULT)
    # the node, restarted, posts again: stored and recorded, then delivered
    assert world.call("POST", f"/computations/{second}/result", chain.provider,
                      json=report(chain))["state"] == "succeeded"
    assert watermarked(json.loads(delivered(world, chain, second)), RESULT)


def test_serve_sweeps_at_start_up(world: World, chain: Chain, container: Container) -> None:
    """Bytes no computation.succeeded names, older than the grace period, are dropped when
    serve starts (its background process sweeps them from then on)."""
    _, cid = requested(world, chain)
    results.put(container.engine, cid, b'"left by a crash"')
    results.put(container.engine, "no-such-computation", b'"left by a crash"')
    with container.engine.begin() as conn:
        conn.execute(update(results.results).values(stored_at=0.0))
    assert len(stored(container, cid)) == 1
    # the first server's projections are done: the second applies nothing alongside them
    assert container.runner.wait_for(container.ledger.last_seq, 10)
    again = build(container.settings, start_background=False)
    try:
        with again.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(results.results)).scalar() == 0
    finally:
        again.close()


def test_the_background_process_sweep_drops_orphans_and_survives_a_failure(
        container: Container, caplog: pytest.LogCaptureFixture) -> None:
    """What serve's child runs every SWEEP_EVERY_S: a failing sweep is logged, not fatal."""
    from runtime import background

    results.put(container.engine, "no-such-computation", b'"left by a crash"')
    with container.engine.begin() as conn:
        conn.execute(update(results.results).values(stored_at=0.0))
    background._sweep(container)
    assert stored(container, "no-such-computation") == []

    class Broken:
        engine, store = container.engine, None  # loading a stream fails

    results.put(container.engine, "no-such-computation", b'"left by a crash"')
    with container.engine.begin() as conn:
        conn.execute(update(results.results).values(stored_at=0.0))
    background._sweep(Broken())
    assert "sweeping unrecorded result bytes failed" in caplog.text
    assert stored(container, "no-such-computation") != []
