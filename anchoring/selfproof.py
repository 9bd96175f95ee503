"""The clean self-proof (清白自证), made: one actor's events on one resource, proven.

``GET /forensics/self-proof`` answers :func:`self_proof`: a ``dataledger-self-proof/1``
document (its checker and format: ``audit/selfproof.py``, docs/INDEX.md) hung on the newest
anchored checkpoint that commits to the per-actor index (its ``index`` line). It holds every
event of the actor on the resource up to that checkpoint's size (the chain of the index
entry is recomputed from all of them), each with its RFC 6962 inclusion proof, the index
entry (or None) and its map proof (of membership, or of absence). The period asked for only
says which of them the verifier's sentence reports, by each event's ``at``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from typing import Any

from anchoring.actor_index import ActorIndex
from anchoring.checkpoints import StoredCheckpoint
from anchoring.treestore import TreeStore
from chain.checkpoint import INDEX, Checkpoint
from chain.note import parse_note
from core.actor_index import index_key_hash
from core.record import LogEntry
from events.store import EventStore

FORMAT = "dataledger-self-proof/1"


class NoIndexedCheckpoint(LookupError):
    """No anchored checkpoint commits to the per-actor index yet."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def indexed_checkpoint(tree: TreeStore) -> StoredCheckpoint:
    """The newest anchored checkpoint carrying an ``index`` line (NoIndexedCheckpoint)."""
    latest = tree.checkpoints.latest(anchored=True)
    if latest is None:
        raise NoIndexedCheckpoint("no anchored checkpoint yet")
    body, _ = parse_note(latest.note)
    if Checkpoint.unmarshal(body).extension(INDEX) is None:
        raise NoIndexedCheckpoint(f"the newest anchored checkpoint (size {latest.size}) "
                                  "commits to no per-actor index")
    return latest


def self_proof(store: EventStore, tree: TreeStore, index: ActorIndex, actor: str,
               resource: str, period: tuple[str | None, str | None]) -> dict[str, Any]:
    """The self-proof document of ``actor`` on ``resource`` at the newest indexed anchored
    checkpoint; ``period`` is (from, to), RFC 3339 or None, carried for the verifier."""
    cp = indexed_checkpoint(tree)
    size = cp.size
    seqs = index.postings(actor, resource, size)
    entries = list(_read(store, seqs))
    value = index.value_at(actor, resource, size)
    return {
        "format": FORMAT, "actor": actor, "resource": resource,
        "from": period[0], "to": period[1],
        "checkpoint": {"size": cp.size, "note": cp.note, "cosigned": cp.cosigned,
                       "signers": cp.signers,
                       "aggregate": None if cp.aggregate is None else _b64(cp.aggregate),
                       "anchored": cp.anchored, "cut_at": cp.cut_at},
        "tree_size": size,
        "entry": None if value is None else {
            "keyhash": _b64(index_key_hash(actor, resource)), "value": value.to_json()},
        "map_proof": index.prove(actor, resource, size).to_json(),
        "events": [{"seq": e.seq, "canonical": _b64(e.canonical()),
                    "inclusion": [_b64(h) for h in tree.inclusion_proof(e.seq - 1, size)]}
                   for e in entries],
    }


def _read(store: EventStore, seqs: Sequence[int]) -> Iterator[LogEntry]:
    """The stored events at ``seqs`` (ascending), read a run of consecutive seqs at a time."""
    k = 0
    while k < len(seqs):
        run = 1
        while k + run < len(seqs) and seqs[k + run] == seqs[k] + run and run < 1000:
            run += 1
        found = store.read(seqs[k] - 1, run)
        if [e.seq for e in found] != list(seqs[k:k + run]):
            raise LookupError(f"the log does not hold seqs {seqs[k]}..{seqs[k] + run - 1} "
                              "the index lists")
        yield from found
        k += run
