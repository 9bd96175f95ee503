"""The log's JetStream stream: its set-up, and the messages the publisher puts there read back.

The subjects, headers and the checked message body are the conventions of
:mod:`core.subjects`; this module adds the stream itself (file storage, subjects
``<prefix>.>``, a duplicate window) and the decoding a consumer of the stream uses.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from core.record import LogEntry
from core.subjects import entry_from_message

__all__ = ["DUPLICATE_WINDOW_SECONDS", "Delivered", "PublishError", "decode_entry",
           "decode_message", "ensure_stream"]

log = logging.getLogger(__name__)

#: how long the server remembers message ids (the stream's ``duplicate_window``)
DUPLICATE_WINDOW_SECONDS = 120.0


class PublishError(RuntimeError):
    """A publishing session failed; the position holds what was acknowledged before it."""


async def ensure_stream(js: JetStreamContext, stream: str, subject_prefix: str,
                        duplicate_window: float = DUPLICATE_WINDOW_SECONDS) -> None:
    """Create the stream (file storage, subjects ``<prefix>.>``) unless it exists."""
    subjects = [f"{subject_prefix}.>"]
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        await js.add_stream(StreamConfig(name=stream, subjects=subjects,
                                         storage=StorageType.FILE,
                                         duplicate_window=duplicate_window))
        log.info("created JetStream stream %s on %s", stream, subjects[0])
        return
    if subjects[0] not in (info.config.subjects or []):
        raise PublishError(f"stream {stream} exists without subject {subjects[0]} "
                           f"(it has {info.config.subjects})")


class Delivered(NamedTuple):
    """What :func:`decode_message` gives: the seq, the type and the decoded payload."""

    seq: int
    type_name: str
    payload: Any


def _headers(msg: Any) -> dict[str, str]:
    headers = getattr(msg, "headers", None) or {}
    return {str(k): str(v) for k, v in headers.items()}


def decode_entry(msg: Any) -> LogEntry:
    """The stored event a message carries, checked (:func:`core.subjects.entry_from_message`).

    ``msg`` is a ``nats.aio.msg.Msg`` (or anything with ``data`` and ``headers``).
    """
    return entry_from_message(bytes(msg.data or b""), _headers(msg))


def decode_message(msg: Any) -> Delivered:
    """``(seq, type_name, payload)`` of a message the publisher sent (checked as
    :func:`decode_entry` does)."""
    entry = decode_entry(msg)
    return Delivered(entry.seq, entry.type_name, entry.payload())
