"""The trust document: the keys a verifier holds the log to, handed over out of band.

A JSON object shaped like ``GET /ledger/witnesses``: ``origin`` (the log's origin line),
``log_vkey`` (the log's Ed25519 note verifier key), ``quorum`` (co-signatures an anchored
checkpoint needs) and ``witnesses`` (each ``name`` and ``vkey``; ``public_key`` and ``pop``
in base64 may come too, and must then agree with ``vkey``). ``dataledger chain trust`` writes
it; ``chain verify --trust FILE`` and the compute node (``--trust FILE``) read it. Its worth
is where it comes from: a copy taken from the operator (and each witness's key checked with
that witness's own operator) before any check, never the data dir or the API being checked.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chain.bls import TrustedWitness, WitnessPublicKey, trust_witness
from chain.note import Verifier
from chain.verify import VerificationError


class TrustDocumentError(ValueError):
    """The trust document is missing, malformed, or its keys do not check."""


@dataclass(frozen=True)
class TrustedKeys:
    """What a verifier trusts: the log's key and origin, the witnesses and the quorum."""

    origin: str
    log_verifier: Verifier
    witnesses: tuple[TrustedWitness, ...]
    quorum: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrustedKeys:
        """Parse a trust document; each witness's proof of possession is checked.

        Raises TrustDocumentError (a ValueError) naming what is wrong."""
        try:
            witnesses = [trust_witness(_published(w)) for w in data["witnesses"]]
            quorum = data["quorum"]
            if isinstance(quorum, bool) or not isinstance(quorum, int):
                raise TrustDocumentError(f"quorum {quorum!r} is not a number")
            log_verifier = Verifier.from_vkey(data["log_vkey"])
            origin = str(data["origin"])
        except TrustDocumentError:
            raise
        except (VerificationError, ValueError, KeyError, TypeError) as exc:
            raise TrustDocumentError(f"trusted keys: {exc}") from exc
        if not 0 <= quorum <= len(witnesses):
            raise TrustDocumentError(f"quorum {quorum} with {len(witnesses)} trusted witnesses")
        if log_verifier.name != origin:
            raise TrustDocumentError(f"the log key is named {log_verifier.name!r}, "
                                     f"the origin is {origin!r}")
        return cls(origin=origin, log_verifier=log_verifier, witnesses=tuple(witnesses),
                   quorum=quorum)

    @classmethod
    def from_file(cls, path: str | Path) -> TrustedKeys:
        """Read and parse the trust document in ``path``; TrustDocumentError if unreadable."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TrustDocumentError(f"trust file {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise TrustDocumentError(f"trust file {path}: not a JSON object")
        return cls.from_json(data)

    def describe(self) -> str:
        """One line naming the keys: the log key's id, the witnesses and the quorum."""
        names = ", ".join(w.name for w in self.witnesses) or "none"
        return (f"log {self.origin} key {self.log_verifier.key_id:08x}; witnesses {names}; "
                f"quorum {self.quorum}")


def _published(w: Mapping[str, Any]) -> WitnessPublicKey:
    published = WitnessPublicKey.parse(w["vkey"])
    try:
        raw = base64.b64decode(w["public_key"], validate=True) if "public_key" in w else None
    except (binascii.Error, TypeError) as exc:
        raise TrustDocumentError(f"witness {w.get('name')}: public_key is not base64") from exc
    if raw is not None and raw != published.public_key:
        raise TrustDocumentError(f"witness {w.get('name')}: public_key differs from vkey")
    return published


def trust_document(origin: str, log_vkey: str, quorum: int,
                   witnesses: Sequence[WitnessPublicKey]) -> dict[str, Any]:
    """The trust document of a log: what ``GET /ledger/witnesses`` shows, to hand over."""
    return {"origin": origin, "log_vkey": log_vkey, "quorum": quorum,
            "witnesses": [{"name": w.name, "public_key": base64.b64encode(w.public_key).decode(),
                           "pop": base64.b64encode(w.pop).decode(), "vkey": w.encode()}
                          for w in witnesses]}
