"""The trust document (``chain.trust``) and whether the witnesses are independent of the
server (``anchoring.service.independence``)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from anchoring.service import independence
from anchoring.witness_clients import HttpWitness
from chain.bls import WitnessKey, WitnessPublicKey
from chain.note import generate_ed25519
from chain.trust import TrustDocumentError, TrustedKeys, trust_document

ORIGIN = "dataledger.local/log"
WITNESSES = [WitnessKey.generate(f"w.example/{n}").published() for n in ("a", "b")]


def document(quorum: int = 2) -> dict[str, Any]:
    _, vkey = generate_ed25519(ORIGIN)
    return trust_document(ORIGIN, vkey, quorum, WITNESSES)


def test_a_trust_document_round_trips() -> None:
    doc = document()
    keys = TrustedKeys.from_json(doc)
    assert keys.origin == ORIGIN and keys.quorum == 2
    assert keys.log_verifier.vkey == doc["log_vkey"]
    assert [w.name for w in keys.witnesses] == ["w.example/a", "w.example/b"]
    assert "quorum 2" in keys.describe()


@pytest.mark.parametrize(("change", "problem"), [
    (lambda d: d.update(quorum=3), "quorum 3 with 2"),
    (lambda d: d.update(quorum="2"), "not a number"),
    (lambda d: d.update(origin="elsewhere.example/log"), "the origin is"),
    (lambda d: d.pop("log_vkey"), "log_vkey"),
    (lambda d: d["witnesses"][0].update(public_key=d["witnesses"][1]["public_key"]),
     "differs from vkey"),
    (lambda d: d["witnesses"][0].update(vkey="w.example/a+00000000+AAAA"), "malformed"),
])
def test_a_bad_trust_document_is_refused_naming_what(change: Any, problem: str) -> None:
    doc = copy.deepcopy(document())
    change(doc)
    with pytest.raises(TrustDocumentError, match=problem):
        TrustedKeys.from_json(doc)


class _Remote(HttpWitness):
    """An HTTP witness client that asks nothing of the network."""

    def __init__(self, url: str, published: WitnessPublicKey) -> None:
        self.url, self._published = url, published


class _InProcess:
    def __init__(self, published: WitnessPublicKey) -> None:
        self._published = published

    @property
    def name(self) -> str:
        return self._published.name

    def published(self) -> WitnessPublicKey:
        return self._published

    def add_checkpoint(self, old_size: int, proof: list[bytes], note: str) -> str:
        raise NotImplementedError


def test_in_process_witnesses_are_not_independent() -> None:
    said = independence([_InProcess(w) for w in WITNESSES], 2)
    assert not said["independent"] and "in-process" in said["why"]
    assert "DATALEDGER_WITNESS_URLS" in said["why"]


def test_witnesses_on_other_hosts_are_independent_only_if_the_quorum_needs_them() -> None:
    a, b = WITNESSES
    remote = [_Remote("https://witness.regulator.example", a),
              _Remote("http://10.1.2.3:7380", b)]
    said = independence(remote, 2)
    assert said["independent"] and "witness.regulator.example" in said["why"]
    assert independence(remote, 1)["independent"]
    # a witness at a loopback URL is this host's: with it alone a quorum of 1 is reached
    mixed = [_Remote("http://127.0.0.1:7380", a), _Remote("http://witness.example", b)]
    assert independence(mixed, 2)["independent"]
    said = independence(mixed, 1)
    assert not said["independent"] and "on this host" in said["why"]
    assert not independence([_Remote("http://localhost:1", a), _InProcess(b)], 2)["independent"]
    assert not independence(remote, 0)["independent"]
