"""The audit bench's bundle: the synthesized log (``bench.audit.synth``) with its Merkle tree,
its checkpoints and its witnesses, written as a bundle (``audit.bundle.write_bundle``) and kept
under ``bench-results/audit-bundles/`` by its parameters, so a rerun reads it back at once.

A fresh log key (``chain.note.Signer``) signs a checkpoint every 1000 leaves and at the end,
with the ``time`` and ``prev`` lines the checkpointer writes and the per-actor index's root
(``index`` line: ``core.actor_index.IndexFold``, as the server keeps it); two fresh witnesses
(``chain.bls``, blspy when installed) co-sign each one, and their aggregate is kept, as an
anchored checkpoint holds. The tree is the C core's (``chain.merkle.append``). The trust
document (``chain.trust.trust_document``) is written next to the bundle, as the copy a
regulator is handed out of band, and ``meta.json`` says what the bench needs to know
of the log: the index keys (actor, resource) with about 10 and about 1,000 events.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from chain import merkle
from chain.bls import WitnessKey, aggregate, cosign
from chain.checkpoint import (
    NO_PREVIOUS,
    Checkpoint,
    checkpoint_hash,
    ledger_extensions,
    sign_checkpoint,
)
from chain.compact import fold
from chain.note import Signer, parse_signature_line
from chain.trust import trust_document
from core.record import LogEntry

#: bump when the generated log changes shape: the cache key holds it
GENERATOR_VERSION = 1
ORIGIN = "bench.dataledger.local/audit"
WITNESSES = ("witness-1.bench", "witness-2.bench")
EVERY = 1000
#: the bundle's banks (16: the first and 7 more run most cycles, 8 run 1, 2, 4 ... 128)
DEMANDERS = 16
DESIGNATED = 8


def _index_fold() -> Any | None:
    try:
        from core.actor_index import IndexFold
    except ImportError:  # the index is not in this installation: no index lines
        return None
    return IndexFold()


@dataclass
class ChainMaker:
    """Leaves, checkpoints and co-signatures over entries as they stream past."""

    signer: Signer = field(default_factory=lambda: Signer(ORIGIN, os.urandom(32)))
    witnesses: list[WitnessKey] = field(
        default_factory=lambda: [WitnessKey.generate(n) for n in WITNESSES])
    index: Any | None = field(default_factory=_index_fold)
    size: int = 0
    roots: list[bytes] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    prev: bytes = NO_PREVIOUS
    key_counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def trust(self) -> dict[str, Any]:
        return trust_document(ORIGIN, self.signer.verifier().vkey, len(self.witnesses),
                              [w.published() for w in self.witnesses])

    def feed(self, entries: Iterator[LogEntry]) -> Iterator[LogEntry]:
        """Pass ``entries`` through, cutting a checkpoint every EVERY leaves and at the end."""
        batch: list[LogEntry] = []
        for entry in entries:
            batch.append(entry)
            yield entry
            if len(batch) == EVERY:
                self._append(batch)
                batch = []
        if batch:
            self._append(batch)

    def _append(self, batch: list[LogEntry]) -> None:
        hashes, _, self.roots = merkle.append(self.size, self.roots,
                                              [e.canonical() for e in batch], store_from=64)
        if self.index is not None:
            for i, entry in enumerate(batch):
                for key, _, _ in self.index.apply(entry, hashes[32 * i:32 * i + 32]):
                    self.key_counts[key] += 1
        self.size += len(batch)
        last_at = datetime.fromisoformat(batch[-1].payload()["at"])
        self._cut(last_at + timedelta(seconds=2))

    def _cut(self, when: datetime) -> None:
        lines = ledger_extensions(when, self.prev,
                                  None if self.index is None else self.index.root())
        checkpoint = Checkpoint(ORIGIN, self.size, fold(self.roots), lines)
        note = sign_checkpoint(checkpoint, [self.signer])
        body = checkpoint.marshal()
        cosigns = [cosign(body, w) for w in self.witnesses]
        signatures = [parse_signature_line(line.rstrip("\n")).signature for line in cosigns]
        self.checkpoints.append({
            "size": self.size, "note": note, "cosigned": note + "".join(cosigns),
            "signers": sorted(w.name for w in self.witnesses),
            "aggregate": aggregate(signatures), "anchored": True,
            "cut_at": when.isoformat()})
        self.prev = checkpoint_hash(note)

    def nearest_keys(self, targets: tuple[int, ...]) -> dict[str, Any]:
        """For each target count, the index key whose event count is nearest to it."""
        out: dict[str, Any] = {}
        for target in targets:
            if not self.key_counts:
                break
            key, count = min(self.key_counts.items(),
                             key=lambda kv: (abs(kv[1] - target), kv[0]))
            out[str(target)] = {"actor": key[0], "resource": key[1], "events": count}
        return out


#: events through every branch of the index's rules (core/actor_index.py): the digest of
#: their index root names the rules a bundle was made under
_PROBE = (
    ("dataset.registered", "ds1", {"owner_id": "prov"}),
    ("product.registered", "pr1", {"operator_id": "op", "inputs": [{"dataset_id": "ds1"}]}),
    ("authorization.granted", "au1", {"provider_id": "prov", "operator_id": "op",
                                      "datasets": [{"dataset_id": "ds1"}]}),
    ("authorization.revoked", "au1", {}),
    ("order.placed", "or1", {"demander_id": "bank", "product_id": "pr1"}),
    ("contract.party_approved", "or1", {}),
    ("computation.requested", "co1", {"demander_id": "bank", "provider_id": "prov",
                                      "dataset_ids": ["ds1"]}),
    ("delivery.made", "co1", {}),
    ("delivery.accessed", "us1", {"computation_id": "co1"}),
    ("dataset.data_loaded", "ds1", {}),
)


def _index_rules_digest() -> str:
    """A digest of what the index's rules and map make of events through each of their
    branches (a bundle made under other rules carries other ``index`` roots: it is made
    again; a faster fold making the same roots keeps it), or "noindex"."""
    fold = _index_fold()
    if fold is None:
        return "noindex"
    from core.canonical import canonical_bytes

    for seq, (kind, oid, body) in enumerate(_PROBE, start=1):
        actor = {"participant": "prov" if seq % 2 else "bank", "member": "m", "role": "r"}
        payload = canonical_bytes({"actor": actor, "at": "2030-01-01T00:00:00Z", **body})
        fold.apply(LogEntry(seq, oid, 1, kind, payload))
    return "index" + hashlib.sha256(fold.root()).hexdigest()[:10]


def cache_dir(root: Path, events: int) -> Path:
    """Where the bundle of ``events`` events is kept (by the generator's parameters)."""
    return root / (f"n{events}-every{EVERY}-d{DEMANDERS}-{_index_rules_digest()}"
                   f"-v{GENERATOR_VERSION}")


def bundle(root: Path, events: int, *, fresh: bool = False) -> tuple[Path, dict[str, Any]]:
    """The bundle of ``events`` events under ``root`` (made unless kept there already), and
    its meta (the trust file's path, the generation time, the chosen index keys)."""
    target = cache_dir(root, events)
    meta_path = target / "meta.json"
    if meta_path.exists() and not fresh:
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        meta["cached"] = True
        return target / "bundle", meta
    if target.exists():
        shutil.rmtree(target)
    work = target.with_name(target.name + ".partial")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    meta = generate(work, events)
    work.rename(target)
    meta["cached"] = False
    return target / "bundle", meta


def generate(work: Path, events: int) -> dict[str, Any]:
    """Make the seed, synthesize, chain and write the bundle into ``work``; the meta."""
    from audit.bundle import write_bundle
    from bench.audit.seed import make_seed
    from bench.audit.synth import Synthesizer

    t0 = time.monotonic()
    seed = make_seed(DEMANDERS)
    t1 = time.monotonic()
    chain = ChainMaker()
    synth = Synthesizer(seed, events, designated=DESIGNATED)
    manifest = write_bundle(work / "bundle", chain.feed(synth.entries()), chain.checkpoints,
                            chain.trust())
    t2 = time.monotonic()
    (work / "trust.json").write_text(json.dumps(chain.trust(), indent=2) + "\n")
    meta = {"events": manifest["events"], "checkpoints": manifest["checkpoints"],
            "tree_size": manifest["tree_size"], "origin": ORIGIN, "index": chain.index is not None,
            "trust": "trust.json",
            "bundle_bytes": sum(f["bytes"] for f in manifest["files"]),
            "seed_events": len(seed.entries), "seed_seconds": round(t1 - t0, 2),
            "synthesis_seconds": round(t2 - t1, 2), "generator_version": GENERATOR_VERSION,
            "keys": chain.nearest_keys((10, 1000))}
    (work / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
