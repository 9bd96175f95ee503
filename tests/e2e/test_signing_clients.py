"""The signing clients against the real server (signatures required, the default): the
``client`` signs and re-signs a stale decision, and an integrator with ``dataledger keys
new`` / ``dataledger sign`` or docs/SIGNING.md's function and plain HTTP is accepted; each
recorded signature verifies from its event alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from client import signing
from client.platform import Party
from core import decision as d
from tests.e2e.conftest import USED, Chain, World, head
from tests.unit.test_signing_doc import doc_function


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """SQLite only: nothing here is about the recorder."""
    return sqlite_url


def recorded(world: World, aggregate_id: str, type_name: str) -> dict[str, Any]:
    """The last event ``type_name`` of ``aggregate_id``, as the regulator reads it."""
    events = [e for e in world.api.events(world.regulator)
              if e["originator_id"] == aggregate_id and e["type"] == type_name]
    assert events, f"no {type_name} of {aggregate_id}"
    return events[-1]


def test_signatures_are_required_and_the_client_s_verify_from_the_event(
        world: World, chain: Chain) -> None:
    assert world.client.get("/health").json()["unsigned_decisions"] == "required"
    decided = recorded(world, chain.scenario_id, "scenario.approved")
    signature = decided["payload"]["signature"]
    assert signature["key_id"] == world.regulator.key_id
    assert signature["statement"]["command"] == "scenario.decision"
    assert signature["statement"]["aggregate_id"] == chain.scenario_id
    assert signature["statement"]["member_id"] == world.regulator.member_id
    public = signing.public_key(world.regulator.key)[0]  # type: ignore[arg-type]
    assert d.event_signature_verifies(public, signature)
    # the same decision unsigned (a party without its key) is refused and writes nothing
    unsigned = Party(chain.provider.participant_id, chain.provider.token,
                     member_id=chain.provider.member_id)
    before = head(world)
    r = world.api.send("POST", f"/authorizations/{chain.authorization_id}/revocation",
                       unsigned, json={"reason": "x"})
    assert (r.status_code, r.json()["error"]) == (403, "signature_required")
    assert head(world) == before


def test_the_client_signs_again_when_the_aggregate_moved(
        world: World, chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first signature is made on a version that is no longer current: the server says
    409 stale_decision, the client reads the version again and signs again."""
    reads: list[int] = []
    read = signing.view_version

    def behind_once(response: Any) -> int:
        version = read(response)
        reads.append(version)
        return version - 1 if len(reads) == 1 else version

    monkeypatch.setattr(signing, "view_version", behind_once)
    before = head(world)
    world.api.revoke_authorization(chain.provider, chain.authorization_id, "consent withdrawn")
    assert len(reads) == 2 and head(world) == before + 1
    revoked = recorded(world, chain.authorization_id, "authorization.revoked")
    assert revoked["payload"]["signature"]["statement"]["aggregate_version"] == reads[-1]


def test_an_integrator_signs_with_the_cli_and_plain_http(
        world: World, chain: Chain, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """keys new → register the printed key → read the version → sign → POST the printed
    body as it is."""
    provider = world.member(chain.provider, "integration robot", ["admin"])
    assert main(["keys", "new", "--out", str(tmp_path / "robot.pem")]) == 0
    printed = json.loads(capsys.readouterr().out)
    world.call("POST", f"/participants/{provider.participant_id}/keys", provider, 201,
               json={"public_key": printed["public_key"]})
    version = world.call("GET", f"/authorizations/{chain.authorization_id}", provider)["version"]
    command = tmp_path / "revocation.json"
    command.write_text(json.dumps({
        "command": "authorization.revocation", "aggregate_id": chain.authorization_id,
        "aggregate_version": version, "member_id": provider.member_id,
        "body": {"reason": "撤回授权: the source system is retired"}}, ensure_ascii=False))
    assert main(["sign", "--key", str(tmp_path / "robot.pem"), "--command", str(command)]) == 0
    body = capsys.readouterr().out
    r = world.client.post(f"/authorizations/{chain.authorization_id}/revocation",
                          content=body.encode(), headers={**provider.headers,
                                                          "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    signature = recorded(world, chain.authorization_id, "authorization.revoked")[
        "payload"]["signature"]
    assert signature["key_id"] == printed["key_id"]
    assert d.event_signature_verifies(printed["public_key"], signature)


def test_the_documented_function_is_accepted(world: World, chain: Chain) -> None:
    """docs/SIGNING.md's function (``cryptography`` alone) signs a grant, sent as plain
    HTTP; the same signature over a changed body is refused and writes nothing."""
    sign_decision = doc_function()
    scenario = world.call("GET", f"/scenarios/{chain.scenario_id}", chain.provider)
    body = {"scenario_id": chain.scenario_id,
            "datasets": [{"dataset_id": chain.dataset_id, "fields": USED}],
            "not_before": "2025-01-01T00:00:00+08:00", "not_after": "2030-01-01T00:00:00+08:00",
            "usage_policy": {"processing_count": 5}}
    signed = sign_decision(chain.provider.key, "authorization.grant", chain.scenario_id,
                           scenario["version"], chain.provider.member_id, body)
    before = head(world)
    changed = {**signed, "usage_policy": {"processing_count": 6}}
    r = world.client.post("/authorizations", json=changed, headers=chain.provider.headers)
    assert (r.status_code, r.json()["error"]) == (403, "signature_invalid")
    assert head(world) == before
    r = world.client.post("/authorizations", json=signed, headers=chain.provider.headers)
    assert r.status_code == 201, r.text


def test_the_client_rotates_and_revokes_keys(world: World, chain: Chain) -> None:
    """After a rotation the party signs with its new key and a copy holding the old one is
    refused (key_revoked); a revoked key signs nothing."""
    old = Party(chain.provider.participant_id, chain.provider.token,
                member_id=chain.provider.member_id, key=chain.provider.key, key_registered=True)
    old_id = chain.provider.key_id
    world.api.rotate_key(chain.provider)
    assert chain.provider.key_id != old_id and chain.provider.key_registered
    before = head(world)
    r = world.api.send("POST", f"/authorizations/{chain.authorization_id}/revocation", old,
                       json={"reason": "x"})
    assert (r.status_code, r.json()["error"]) == (403, "key_revoked")
    assert head(world) == before
    world.api.revoke_key(chain.provider, chain.provider.participant_id,
                         str(chain.provider.key_id), "the laptop was lost")
    r = world.api.send("POST", f"/authorizations/{chain.authorization_id}/revocation",
                       chain.provider, json={"reason": "x"})
    assert (r.status_code, r.json()["error"]) == (403, "key_revoked")
    world.api.give_key(chain.provider)
    world.api.revoke_authorization(chain.provider, chain.authorization_id, "consent withdrawn")
