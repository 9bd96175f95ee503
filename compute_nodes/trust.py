"""What the node's operator trusts, and the verifier that holds the platform to it.

The node trusts the keys its operator gave it at start (the log's note key, its origin, the
witnesses' BLS keys and the quorum: the trust document of ``chain.trust``, a file handed over
out of band and given with ``--trust FILE``), never the platform's word nor a file in the
data dir it checks. :class:`Verifier` checks an event the platform shows in these
steps; every failed check raises :class:`TrustError`, the one error of this module:

1. the record: the event is read from its canonical bytes (``core.record.LogEntry``); the
   fields the view also shows must agree with them;
2. the checkpoint's signature by the log's key, for the trusted origin;
3. the witnesses: at least ``quorum`` co-signatures of trusted witnesses on that checkpoint
   (a checkpoint passing 2 and 3 is *anchored*; none covering the event yet is not an
   error: the event is handled again later);
4. the inclusion proof: the record's leaf hash (``core.record.leaf_hash``) is leaf
   ``seq - 1`` of that checkpoint's tree;
5. consistency: an event a view names by its seq is that event (its type and originator),
   proven under the same checkpoint, and what the views say agrees with the proven
   events (:meth:`Verifier.agree`).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chain.bls import cosignatures
from chain.checkpoint import Checkpoint, open_checkpoint
from chain.trust import TrustDocumentError, TrustedKeys
from chain.verify import VerificationError, verify_inclusion
from compute_nodes.platform import NodePlatform
from core.record import LogEntry, RecordError, leaf_hash


class TrustError(ValueError):
    """A check of what the platform showed failed: the node does not act on it."""


class Trust(TrustedKeys):
    """What the node's operator trusts (``chain.trust``): read from the file given with
    ``--trust FILE`` / ``DATALEDGER_NODE_TRUST``, never asked of the platform; a malformed
    document raises TrustError."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Trust:
        try:
            keys = TrustedKeys.from_json(data)
        except TrustDocumentError as exc:
            raise TrustError(str(exc)) from exc
        return cls(keys.origin, keys.log_verifier, keys.witnesses, keys.quorum)

    @classmethod
    def from_file(cls, path: str | Path) -> Trust:
        try:
            keys = TrustedKeys.from_file(path)
        except TrustDocumentError as exc:
            raise TrustError(str(exc)) from exc
        return cls(keys.origin, keys.log_verifier, keys.witnesses, keys.quorum)


#: set by serve for the host it starts: the trust file holds serve's own keys
FROM_SERVE = "DATALEDGER_NODE_TRUST_FROM_SERVE"


def node_trust(given: str | None) -> tuple[Path, Trust, str]:
    """The trust file of a node (``--trust FILE``, else ``DATALEDGER_NODE_TRUST``), its keys,
    and one line saying whose keys they are. Raises TrustError if none is given or it does
    not parse: a node never falls back to a file of the data dir or to the platform."""
    path = given or os.environ.get("DATALEDGER_NODE_TRUST")
    if not path:
        raise TrustError("--trust FILE (or DATALEDGER_NODE_TRUST) is required: the log key, "
                         "witnesses and quorum this node trusts, taken out of band (e.g. "
                         "`dataledger chain trust --out FILE` by the platform's operator)")
    trust = Trust.from_file(path)
    if os.environ.get(FROM_SERVE) == "1":
        said = (f"trusting the keys the serve that started this node handed it "
                f"({trust.describe()}): that server's own log key and witnesses, the same "
                "operator's word (a development default: a provider's own node takes --trust "
                "FILE)")
    else:
        said = f"trusting {path}: {trust.describe()}"
    return Path(path).absolute(), trust, said


class Verifier:
    """Checks the events, checkpoints and proofs the platform serves against a
    :class:`Trust`, in the numbered steps of this module's docstring."""

    def __init__(self, trust: Trust, platform: NodePlatform) -> None:
        self.trust = trust
        self.platform = platform
        self._checkpoint: Checkpoint | None = None  # the largest anchored one verified

    @staticmethod
    def record(event: Mapping[str, Any] | bytes | LogEntry) -> LogEntry:
        """Step 1: the record of a ``GET /ledger/events`` view (its ``canonical`` is what
        counts), of canonical bytes, or a LogEntry as is."""
        if isinstance(event, LogEntry):
            return event
        try:
            if isinstance(event, bytes | bytearray):
                return LogEntry.from_canonical(bytes(event))
            if not isinstance(event, Mapping):
                raise RecordError("an event view needs its canonical bytes")
            return LogEntry.from_view(event)
        except RecordError as exc:
            raise TrustError(str(exc)) from exc

    def anchored(self, seq: int) -> Checkpoint | None:
        """Steps 2 and 3: a verified anchored checkpoint of size >= seq, or None if there
        is none yet."""
        if self._checkpoint is not None and self._checkpoint.size >= seq:
            return self._checkpoint
        view = self.platform.anchored_checkpoint()
        if view is None:
            return None
        try:
            checkpoint = self._open(view)
        except (VerificationError, ValueError, KeyError) as exc:
            raise TrustError(f"checkpoint refused: {exc}") from exc
        if self._checkpoint is None or checkpoint.size > self._checkpoint.size:
            self._checkpoint = checkpoint
        return checkpoint if checkpoint.size >= seq else None

    @property
    def latest(self) -> Checkpoint | None:
        """The largest anchored checkpoint verified so far (steps 2 and 3), if any."""
        return self._checkpoint

    def _open(self, view: dict[str, Any]) -> Checkpoint:
        note = view["cosigned"]
        # 2. signed by the log's key, for the trusted origin
        checkpoint, _ = open_checkpoint(note, [self.trust.log_verifier], self.trust.origin)
        # 3. co-signed by a quorum of the trusted witnesses
        signed = cosignatures(note, list(self.trust.witnesses))
        if len(signed) < self.trust.quorum:
            raise VerificationError(
                f"checkpoint {checkpoint.size}: {len(signed)} trusted co-signature(s), "
                f"quorum is {self.trust.quorum}")
        if checkpoint.size != view.get("size", checkpoint.size):
            raise VerificationError(f"checkpoint size {checkpoint.size} != view {view['size']}")
        return checkpoint

    def included(self, entry: LogEntry, checkpoint: Checkpoint) -> None:
        """Step 4: the record's canonical bytes are leaf ``seq - 1`` of the anchored tree."""
        proof = self.platform.inclusion_proof(entry.seq - 1, checkpoint.size)
        try:
            hashes = [base64.b64decode(h, validate=True) for h in proof]
        except (binascii.Error, TypeError) as exc:
            raise TrustError(f"inclusion proof of event {entry.seq} is not base64") from exc
        try:
            verify_inclusion(leaf_hash(entry.canonical()), entry.seq - 1, checkpoint.size,
                             hashes, checkpoint.root)
        except VerificationError as exc:
            raise TrustError(str(exc)) from exc

    def proven(self, view: Mapping[str, Any], key: str, type_name: str, originator_id: str,
               checkpoint: Checkpoint) -> LogEntry:
        """Step 5: the event a view names by ``view[key]`` (its seq), checked to be
        ``type_name`` of ``originator_id`` (step 1) and proven included in ``checkpoint``
        (step 4)."""
        seq = view.get(key)
        if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= checkpoint.size:
            raise TrustError(f"{type_name} of {originator_id}: the view's {key} {seq!r} is "
                             f"not an event under the anchored checkpoint {checkpoint.size}")
        event = self.record(self.platform.event(seq))
        if (event.seq, event.type_name, event.originator_id) != (seq, type_name, originator_id):
            raise TrustError(f"event {seq} is not {type_name} of {originator_id}")
        self.included(event, checkpoint)
        return event

    @staticmethod
    def agree(view: Mapping[str, Any], proven: LogEntry, keys: tuple[str, ...],
              what: str) -> None:
        """Step 5: the view shows for each of ``keys`` what the proven event's payload says."""
        payload = proven.payload()
        for key in keys:
            if payload.get(key) != view.get(key):
                raise TrustError(f"the {what} view's {key} {view.get(key)!r} is not the "
                                 f"{payload.get(key)!r} of {proven.type_name} (event "
                                 f"{proven.seq})")
