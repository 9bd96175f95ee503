"""The stored record: one event as the log holds it, its canonical bytes and its leaf hash.

The canonical record of a stored event is the deterministic JSON object with the keys
``id``, ``payload``, ``seq``, ``type`` and ``version`` (:func:`core.canonical.stored_event_bytes`).
Those bytes are the Merkle leaf's preimage, what ``GET /ledger/events`` shows base64-encoded
as ``canonical``, and the body of a JetStream message. The server, the compute node and the
offline audit all read records through :class:`LogEntry`, so there is one parser.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chain.hasher import hash_leaf
from core.canonical import (
    CanonicalEncodingError,
    canonical_bytes,
    decode,
    decode_exact,
    stored_event_bytes,
)
from core.event import Event, event_class

RECORD_KEYS = frozenset({"id", "payload", "seq", "type", "version"})


class RecordError(ValueError):
    """Bytes or a view that are not a stored event's canonical record; the message says why."""


def leaf_hash(canonical: bytes) -> bytes:
    """The Merkle leaf of a stored event: SHA-256(0x00 ‖ its canonical bytes)."""
    return hash_leaf(canonical)


@dataclass(frozen=True)
class LogEntry:
    """One stored event as the log holds it."""

    seq: int
    originator_id: str
    version: int
    type_name: str
    payload_bytes: bytes

    def canonical(self) -> bytes:
        """The canonical bytes of the whole stored event (the Merkle leaf preimage); those
        :meth:`from_canonical` read are kept, not built again (the fields are frozen)."""
        data: bytes | None = self.__dict__.get("_canonical")
        if data is None:
            data = stored_event_bytes(self.seq, self.originator_id, self.version,
                                      self.type_name, self.payload_bytes)
        return data

    @property
    def read_canonical(self) -> bool:
        """Whether this record was read from bytes found exactly canonical (:meth:`read`),
        so that its payload decodes plainly to what :meth:`payload` gives."""
        return "_canonical" in self.__dict__

    def leaf_hash(self) -> bytes:
        """This record's Merkle leaf."""
        return leaf_hash(self.canonical())

    def payload(self) -> Any:
        """The decoded payload."""
        return decode(self.payload_bytes)

    def event(self) -> Event:
        """The domain event (upcast to its current class version); its type must be registered."""
        return event_class(self.type_name).from_payload(
            self.originator_id, self.version, self.payload())

    @classmethod
    def from_canonical(cls, data: bytes) -> LogEntry:
        """The record whose canonical bytes are exactly ``data``.

        Raises RecordError unless ``data`` is canonical JSON of an object with the keys id,
        payload (an object), seq (≥ 1), type and version, encoded exactly as the log encodes it.
        """
        return cls.read(data)[0]

    @classmethod
    def read(cls, data: bytes, *, checked: bool = False) -> tuple[LogEntry, dict[str, Any]]:
        """:meth:`from_canonical`, and the payload it decoded (the caller's own: a reader
        that needs the payload need not decode it again). ``checked``: the bytes were read
        as canonical before (by the process that sent them), so they are only decoded."""
        record = json.loads(data) if checked else decode_exact(data)
        if type(record) is dict and record.keys() == RECORD_KEYS:
            seq, version, payload = record["seq"], record["version"], record["payload"]
            if (type(seq) is int and seq >= 1 and type(version) is int
                    and type(payload) is dict and type(record["type"]) is str
                    and type(record["id"]) is str):
                # data is exactly the encoding of id, payload, seq, type, version in that
                # order; no encoded string holds ',"' unescaped, so these finds are exact
                payload_bytes = data[data.index(b',"payload":') + 11:data.rindex(b',"seq":')]
                entry = cls(seq, record["id"], version, record["type"], payload_bytes)
                object.__setattr__(entry, "_canonical", data)
                return entry, payload
        return cls._read_slowly(data)

    @classmethod
    def _read_slowly(cls, data: bytes) -> tuple[LogEntry, dict[str, Any]]:
        """The full check, for bytes the fast one did not pass: it names what is off."""
        try:
            record = decode(data)
        except (UnicodeDecodeError, ValueError) as exc:
            raise RecordError(f"not canonical JSON: {exc}") from exc
        if not isinstance(record, dict) or set(record) != RECORD_KEYS:
            raise RecordError("not a stored event (keys id, payload, seq, type, version)")
        seq, version = record["seq"], record["version"]
        if not (type(seq) is int and seq >= 1 and type(version) is int
                and isinstance(record["type"], str) and isinstance(record["id"], str)
                and isinstance(record["payload"], dict)):
            raise RecordError("malformed stored event")
        try:
            entry = cls(seq, record["id"], version, record["type"],
                        canonical_bytes(record["payload"]))
        except CanonicalEncodingError as exc:
            raise RecordError(f"payload: {exc}") from exc
        if entry.canonical() != data:
            raise RecordError(f"seq {seq}: the bytes are not in canonical form")
        object.__setattr__(entry, "_canonical", data)
        return entry, record["payload"]

    @classmethod
    def from_view(cls, view: Mapping[str, Any]) -> LogEntry:
        """The record of a ``GET /ledger/events`` item.

        Its base64 ``canonical`` is what counts; the ``seq``, ``type`` and ``originator_id``
        it also shows must agree with those bytes (RecordError otherwise).
        """
        if "canonical" not in view:
            raise RecordError("an event view needs its canonical bytes")
        try:
            data = base64.b64decode(view["canonical"], validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise RecordError(f"canonical is not base64: {exc}") from exc
        entry = cls.from_canonical(data)
        parsed = (entry.seq, entry.type_name, entry.originator_id)
        shown = (view.get("seq", entry.seq), view.get("type", entry.type_name),
                 view.get("originator_id", entry.originator_id))
        if shown != parsed:
            raise RecordError(f"the view says {shown}, its canonical bytes say {parsed}")
        return entry
