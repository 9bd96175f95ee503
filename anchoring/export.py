"""The log as an export reads it (``dataledger export``, ``GET /ledger/export``): the events
stored when the export starts, in seq order and in batches; then the checkpoints up to them,
in size order and in pages; and the trust document. ``audit.bundle`` writes them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from anchoring.checkpoints import CheckpointStore, StoredCheckpoint
from anchoring.service import ChainService
from core.record import LogEntry
from events.store import EventStore


def log_entries(store: EventStore, upto: int, batch: int = 5000) -> Iterator[LogEntry]:
    """The stored events with seq <= ``upto``, in seq order, ``batch`` at a time (as stored:
    a missing seq is left for the audit to find, not hidden or refused here)."""
    done = 0
    while done < upto and (entries := store.read(done, min(batch, upto - done))):
        for entry in entries:
            if entry.seq > upto:
                return
            yield entry
        done = entries[-1].seq


def stored_checkpoints(checkpoints: CheckpointStore, upto: int,
                       page: int = 1000) -> Iterator[StoredCheckpoint]:
    """The stored checkpoints of size <= ``upto``, in size order, ``page`` at a time."""
    after = 0
    while rows := checkpoints.page(after, page):
        for cp in rows:
            if cp.size > upto:
                return
            yield cp
        after = rows[-1].size


@dataclass(frozen=True)
class ExportSource:
    """What a bundle is made of, read lazily: iterate ``entries`` before ``checkpoints``."""

    upto: int
    entries: Iterator[LogEntry]
    checkpoints: Iterator[StoredCheckpoint]
    trust: dict[str, Any]


def export_source(store: EventStore, chain: ChainService, batch: int = 5000) -> ExportSource:
    """The log up to the seq stored now: events appended during the export are left out,
    and so is any checkpoint over them."""
    upto = store.max_seq()
    return ExportSource(upto, log_entries(store, upto, batch),
                        stored_checkpoints(chain.tree.checkpoints, upto),
                        chain.trust_document())
