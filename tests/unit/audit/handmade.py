"""A small log made by hand for the replay's unit tests: events, checkpoints signed with a
log key and co-signed by two BLS witnesses (quorum 2), and the trust document to check
them with; written as a real bundle with audit/bundle.py.

The roots are computed with chain/proof.py's InMemoryTree, not with the replay's own path
(chain/merkle.py over a compact range), so the two cross-check each other.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from audit.bundle import write_bundle
from chain.bls import WitnessKey, aggregate, cosign
from chain.checkpoint import (
    NO_PREVIOUS,
    Checkpoint,
    checkpoint_hash,
    ledger_extensions,
    sign_checkpoint,
)
from chain.note import Signer, generate_ed25519, parse_note, sign_note
from chain.proof import InMemoryTree
from chain.trust import TrustedKeys, trust_document
from core.canonical import canonical_bytes
from core.record import LogEntry

ORIGIN = "audit.test/log"
LOG = Signer.from_key(generate_ed25519(ORIGIN)[0])
#: the platform's own second key: what a dishonest operator re-signs with
FORGER = Signer.from_key(generate_ed25519(ORIGIN)[0])
WITNESSES = [WitnessKey.generate("audit.test/w1"), WitnessKey.generate("audit.test/w2")]
START = datetime(2030, 3, 1, 9, 0, tzinfo=UTC)


def trust_doc() -> dict[str, Any]:
    return trust_document(ORIGIN, LOG.verifier().vkey, 2, [w.published() for w in WITNESSES])


def trusted() -> TrustedKeys:
    return TrustedKeys.from_json(trust_doc())


def event(seq: int, kind: str = "dataset.registered", **payload: Any) -> LogEntry:
    """A stored event; its ``at`` moves on a day every 4 seqs (for the per-day counts)."""
    at = (START + timedelta(days=(seq - 1) // 4, minutes=seq)).isoformat().replace(
        "+00:00", "Z")
    body = {"at": at, "actor": {"participant": "p1", "member": "m1", "role": "provider"},
            "name": f"dataset {seq}", **payload}
    return LogEntry(seq, f"agg-{seq}", 1, kind, canonical_bytes(body))


def events(n: int) -> list[LogEntry]:
    return [event(seq, "participant.registered" if seq % 3 == 0 else "dataset.registered")
            for seq in range(1, n + 1)]


@dataclass
class Cut:
    """How to cut one checkpoint: its size, and what to do wrong, if anything."""

    size: int
    anchored: bool = True
    witnesses: int = 2
    signer: Signer = LOG
    index_root: bytes | None = None
    prev: bytes | None = None
    #: its time, in minutes after START; by default a minute after its events' latest ``at``
    minutes: int | None = None
    cosign_other_body: bool = False


def checkpoints(entries: Sequence[LogEntry], cuts: Sequence[int | Cut]) -> list[dict[str, Any]]:
    """The checkpoint records (``checkpoints.jsonl`` lines) of ``entries`` at ``cuts``."""
    tree = InMemoryTree(e.leaf_hash() for e in entries)
    out: list[dict[str, Any]] = []
    prev = NO_PREVIOUS
    when = START
    for k, spec in enumerate(cuts):
        cut = spec if isinstance(spec, Cut) else Cut(spec)
        # cut after the events it covers, as a checkpointer does (their ``at`` no later)
        when = START + timedelta(minutes=cut.minutes) if cut.minutes is not None else max(
            START + timedelta(minutes=k), when, *(_at(e) + timedelta(minutes=1)
                                                  for e in entries[:cut.size]))
        lines = ledger_extensions(when, cut.prev if cut.prev is not None else prev,
                                  cut.index_root)
        root = tree.root(min(cut.size, tree.size))
        note = sign_checkpoint(Checkpoint(ORIGIN, cut.size, root, lines), [cut.signer])
        out.append(_cosigned(note, cut, when))
        prev = checkpoint_hash(note)
    return out


def _at(entry: LogEntry) -> datetime:
    """The event's ``at`` (START if it has none that reads: a test's malformed event)."""
    try:
        return datetime.fromisoformat(entry.payload().get("at"))
    except (TypeError, ValueError):
        return START


def _cosigned(note: str, cut: Cut, when: datetime) -> dict[str, Any]:
    body, _ = parse_note(note)
    signed = body if not cut.cosign_other_body else body.replace(f"\n{cut.size}\n",
                                                                 f"\n{cut.size + 1}\n")
    witnesses = WITNESSES[:cut.witnesses]
    lines = [cosign(signed, w) for w in witnesses]
    sigs = [base64.b64decode(line.split()[-1])[4:] for line in lines]
    base = note if signed == body else sign_note(signed, [cut.signer])
    return {"size": cut.size, "note": note, "cosigned": base + "".join(lines),
            "signers": sorted(w.name for w in witnesses),
            "aggregate": base64.b64encode(aggregate(sigs)).decode() if sigs else None,
            "anchored": cut.anchored, "cut_at": when.isoformat()}


def bundle(path: Path, entries: Sequence[LogEntry], cuts: Sequence[int | Cut]) -> Path:
    """Write the bundle of ``entries`` with checkpoints at ``cuts`` into ``path``."""
    write_bundle(path, entries, checkpoints(entries, cuts), trust_doc())
    return path


def changed(entry: LogEntry, **payload: Any) -> LogEntry:
    """The same event with payload fields changed (a rewritten event, still canonical)."""
    body = {**entry.payload(), **payload}
    return replace(entry, payload_bytes=canonical_bytes(body))
