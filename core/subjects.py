"""The NATS conventions of the log's outbox: subjects, headers and the checked message.

Every stored event goes to JetStream on subject ``<prefix>.<type_name>`` with its canonical
record (:mod:`core.record`) as the body and these headers: ``Nats-Msg-Id`` = the seq (the
server drops a duplicate within its window), ``Dataledger-Seq`` = the seq,
``Dataledger-Leaf-Hash`` = the hex leaf hash, and on publishing
``Nats-Expected-Last-Sequence`` (the stream must end where the publisher thinks).
"""

from __future__ import annotations

from collections.abc import Mapping

from core.record import LogEntry, RecordError, leaf_hash

HEADER_MSG_ID = "Nats-Msg-Id"
HEADER_EXPECTED_LAST_SEQUENCE = "Nats-Expected-Last-Sequence"
HEADER_SEQ = "Dataledger-Seq"
HEADER_LEAF_HASH = "Dataledger-Leaf-Hash"

DEFAULT_STREAM = "LEDGER"
DEFAULT_PREFIX = "ledger"


class BadMessageError(ValueError):
    """A message is not an event of the log as the publisher sends it."""


def subject_for(prefix: str, type_name: str) -> str:
    """``<prefix>.<type_name>``; a type name must be a valid run of subject tokens."""
    if not type_name or any(c in type_name for c in " \t\r\n*>") or ".." in type_name \
            or type_name.startswith(".") or type_name.endswith("."):
        raise BadMessageError(f"event type {type_name!r} cannot be a NATS subject")
    return f"{prefix}.{type_name}"


def headers_for(seq: int, canonical: bytes) -> dict[str, str]:
    """The headers of the message carrying record ``seq`` whose canonical bytes are given
    (without the expected-last-sequence one, which only publishing adds)."""
    return {HEADER_MSG_ID: str(seq), HEADER_SEQ: str(seq),
            HEADER_LEAF_HASH: leaf_hash(canonical).hex()}


def entry_from_message(data: bytes, headers: Mapping[str, str] | None) -> LogEntry:
    """The stored event a message carries, checked.

    The body must be the canonical bytes of a stored event; the ``Dataledger-Seq`` header
    must match its seq and ``Dataledger-Leaf-Hash`` (when present) its leaf hash.
    """
    try:
        entry = LogEntry.from_canonical(data)
    except RecordError as exc:
        raise BadMessageError(f"not a stored event: {exc}") from exc
    headers = {str(k): str(v) for k, v in (headers or {}).items()}
    if headers.get(HEADER_SEQ, str(entry.seq)) != str(entry.seq):
        raise BadMessageError(f"header {HEADER_SEQ}={headers[HEADER_SEQ]} but the body has "
                              f"seq {entry.seq}")
    want = headers.get(HEADER_LEAF_HASH)
    if want is not None and want != entry.leaf_hash().hex():
        raise BadMessageError(f"seq {entry.seq}: the leaf hash header does not match the body")
    return entry
