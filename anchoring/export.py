"""The log as an export reads it (``dataledger export``, ``GET /ledger/export``): the events
stored when the export starts, in seq order and in batches; then the checkpoints up to them,
in size order and in pages; the leaf hashes the tree stored for them; and the trust
document. ``audit.bundle`` writes them.

By default an export stops at the newest anchored checkpoint (events 1 to its size, and the
checkpoints up to it): what follows is vouched for by no witness yet, and a replay of it
would fail (step 3). ``--all`` / ``?all=true`` takes every stored event; the manifest says
which (``scope``, ``log_events``, ``notes``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anchoring.checkpoints import CheckpointStore, StoredCheckpoint
from anchoring.service import EMBEDDED_WITNESSES, ChainService
from anchoring.witness_clients import WitnessUnreachable, http_witnesses
from chain.bls import SECRET_KEY_SIZE, WitnessKey
from chain.note import Signer
from chain.trust import trust_document
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


def export_scope(head: int, anchored: int, include_all: bool) -> tuple[int, dict[str, Any]]:
    """Where an export of a log of ``head`` events, whose newest anchored checkpoint has
    size ``anchored``, stops; and what its manifest says of it (scope, log_events, notes)."""
    if include_all:
        tail = (f"every stored event (--all): seqs {anchored + 1} to {head} lie under no "
                "anchored checkpoint yet, so no witness vouches for them and a replay fails "
                "at step 3")
        notes = [] if head == anchored else [tail]
        return head, {"scope": "all", "log_events": head, "notes": notes}
    notes = [f"events 1 to {anchored}: up to the newest anchored checkpoint"]
    if head > anchored:
        notes.append(f"the {head - anchored} events after it (seqs {anchored + 1} to {head}), "
                     "under no anchored checkpoint yet, are left out; --all (?all=true) "
                     "takes them too")
    return anchored, {"scope": "anchored", "log_events": head, "notes": notes}


@dataclass(frozen=True)
class ExportSource:
    """What a bundle is made of, read lazily: iterate ``entries`` before ``checkpoints``."""

    upto: int
    entries: Iterator[LogEntry]
    checkpoints: Iterator[StoredCheckpoint]
    trust: dict[str, Any]
    #: the tree's stored leaf hashes of seqs first to last (audit.bundle.StoredLeaves)
    leaves: Callable[[int, int], bytes]
    #: the manifest's scope, log_events and notes
    about: dict[str, Any]


def export_source(store: EventStore, chain: ChainService, batch: int = 5000, *,
                  include_all: bool = False) -> ExportSource:
    """The log up to its newest anchored checkpoint (``include_all``: up to the seq stored
    now): events appended during the export are left out, and so is any checkpoint over
    them."""
    tree = chain.tree
    newest = tree.checkpoints.latest(anchored=True)
    upto, about = export_scope(store.max_seq(), newest.size if newest else 0, include_all)

    def leaves(first: int, last: int) -> bytes:
        return tree.leaf_hashes(first - 1, max(first - 1, min(last, tree.size())))

    return ExportSource(upto, log_entries(store, upto, batch),
                        stored_checkpoints(tree.checkpoints, upto),
                        chain.trust_document(), leaves, about)


def stored_trust_document(data_dir: Path, origin: str, key_file: Path | None,
                          witness_urls: Sequence[str],
                          quorum: int | None) -> tuple[dict[str, Any] | None, str]:
    """The trust document from the keys as they are stored, making none (the export of a
    store never writes): ``(document, "")``, or ``(None, why)`` where a key is not there
    (a log key cannot be told from the checkpoints: they carry its signatures, not it)."""
    path = key_file or data_dir / "log.key"
    if not path.is_file():
        return None, (f"trust.json is left out: no log key at {path} (the export makes "
                      "none); take the trust document from the platform (dataledger chain "
                      "trust, GET /ledger/witnesses) out of band")
    signer = Signer.from_key(path.read_text().strip())
    if signer.name != origin:
        return None, f"trust.json is left out: {path} holds the key of {signer.name!r}"
    if witness_urls:
        try:
            published = [w.published() for w in http_witnesses(witness_urls)]
        except WitnessUnreachable as exc:
            return None, f"trust.json is left out: {exc}"
    else:
        published = []
        for short in EMBEDDED_WITNESSES:
            key = data_dir / "witnesses" / short / "witness.key"
            secret = key.read_bytes() if key.is_file() else b""
            if len(secret) != SECRET_KEY_SIZE:
                return None, f"trust.json is left out: no witness key at {key}"
            name = f"{origin.split('/')[0]}/{short}"
            published.append(WitnessKey(name, secret).published())
    needed = len(published) if quorum is None else quorum
    return trust_document(origin, signer.verifier().vkey, needed, published), ""
