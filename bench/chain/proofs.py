"""3. Proofs: inclusion and consistency proofs served from the database at a large tree
size, and their verification, each beside a baseline of the same cost's kind."""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from anchoring.treestore import TreeStore
from bench.chain.place import Place, Sizes
from bench.table import Row, summary
from chain.hasher import hash_children, hash_leaf
from chain.verify import verify_consistency, verify_inclusion

#: proof generation and verification: milliseconds (p95)
PROOF_MS_GOAL = 1.0
#: the baseline of a proof: a 32-byte row by primary key (leaves are in tiles; nodes from
#: level 8 up are rows)
PK_SELECT = "SELECT hash FROM chain_nodes WHERE level = ? AND idx = ?"


@dataclass
class _Samples:
    """Each sample's nanoseconds, by what was timed; the proofs made; failed verifications."""

    select_ns: list[int] = field(default_factory=list)
    incl_ns: list[int] = field(default_factory=list)
    cons_ns: list[int] = field(default_factory=list)
    hash_incl_ns: list[int] = field(default_factory=list)
    vincl_ns: list[int] = field(default_factory=list)
    hash_cons_ns: list[int] = field(default_factory=list)
    vcons_ns: list[int] = field(default_factory=list)
    incl: list[list[bytes]] = field(default_factory=list)
    cons: list[list[bytes]] = field(default_factory=list)
    errors: int = 0


def _leaf(i: int) -> bytes:
    return hash_leaf(i.to_bytes(8, "big"))


def _ms(samples_ns: list[int]) -> list[float]:
    return [s / 1e6 for s in samples_ns]


def _fmt_ms(stats: dict[str, float]) -> str:
    return f"p50 {stats['p50']:.3f} ms, p95 {stats['p95']:.3f} ms"


def _fill(tree: TreeStore, n: int, batch: int) -> float:
    """Append leaves 0 .. n-1 in batches; the seconds it took."""
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        tree.append_leaves(_leaf(i) for i in range(start, min(n, start + batch)))
    return time.perf_counter() - t0


def _time_proofs(tree: TreeStore, n: int, indices: list[int], olds: list[int],
                 samples: _Samples) -> None:
    """The node SELECT, the inclusion proof and the consistency proof, sample by sample."""
    clock = time.perf_counter_ns
    for i in indices[:20]:  # warm-up
        tree.inclusion_proof(i, n)
        tree.consistency_proof(olds[0], n)
        tree.tiles.query(PK_SELECT, (8, i >> 8))
    gc.collect()
    for i, m in zip(indices, olds, strict=True):  # the three alternate, sample by sample
        a = clock()
        tree.tiles.query(PK_SELECT, (8, i >> 8))
        b = clock()
        samples.incl.append(tree.inclusion_proof(i, n))
        c = clock()
        samples.cons.append(tree.consistency_proof(m, n))
        d = clock()
        samples.select_ns.append(b - a)
        samples.incl_ns.append(c - b)
        samples.cons_ns.append(d - c)


def _hash_as_many(proof: list[bytes]) -> None:
    """The baseline of a verification: as many node hashes as the proof has
    (``hash_children``: hashlib's SHA-256 of two nodes)."""
    fake = bytes(32)
    for sibling in proof:
        fake = hash_children(fake, sibling)


def _fails(check: Callable[..., Any], *args: Any) -> int:
    """1 if ``check(*args)`` raises (counted; the goal is then missed), else 0."""
    try:
        check(*args)
    except Exception:  # noqa: BLE001
        return 1
    return 0


def _time_verification(n: int, indices: list[int], olds: list[int], roots_m: list[bytes],
                       root_n: bytes, samples: _Samples) -> None:
    """Each proof verified (``chain.verify``), each after its baseline."""
    clock = time.perf_counter_ns
    leaves = [_leaf(i) for i in indices]
    errors = 0
    gc.collect()
    for k, (i, m) in enumerate(zip(indices, olds, strict=True)):
        a = clock()
        _hash_as_many(samples.incl[k])
        b = clock()
        errors += _fails(verify_inclusion, leaves[k], i, n, samples.incl[k], root_n)
        c = clock()
        _hash_as_many(samples.cons[k])
        d = clock()
        errors += _fails(verify_consistency, m, n, samples.cons[k], roots_m[k], root_n)
        e = clock()
        samples.hash_incl_ns.append(b - a)
        samples.vincl_ns.append(c - b)
        samples.hash_cons_ns.append(d - c)
        samples.vcons_ns.append(e - d)
    samples.errors = errors


def measure_proofs(place: Place, sizes: Sizes) -> list[Row]:
    """Inclusion and consistency proofs from the database at ``proof_leaves``, and verifying."""
    n = sizes.proof_leaves
    tree = place.tree("proofs")
    rng = random.Random(2)
    samples = _Samples()
    try:
        fill_s = _fill(tree, n, sizes.batch)
        root_n = tree.root(n)
        indices = [rng.randrange(n) for _ in range(sizes.proof_samples)]
        olds = [rng.randrange(1, n) for _ in range(sizes.proof_samples)]
        _time_proofs(tree, n, indices, olds, samples)
        roots_m = [tree.root(m) for m in olds]  # untimed: what a verifier already holds
    finally:
        tree.close()
    _time_verification(n, indices, olds, roots_m, root_n, samples)
    out = _rows(place.backend, n, samples)
    out[0].data.update(tree_leaves=n, fill_seconds=round(fill_s, 2),
                       fill_rate=round(n / fill_s))
    return out


def _rows(backend: str, n: int, samples: _Samples) -> list[Row]:
    sel = summary(_ms(samples.select_ns))
    measured = (
        ("inclusion_proof", f"inclusion_proof(i, {n:,}) from the database", samples.incl_ns,
         sel, "one PK SELECT of a node", samples.incl),
        ("consistency_proof", f"consistency_proof(m, {n:,}) from the database", samples.cons_ns,
         sel, "one PK SELECT of a node", samples.cons),
        ("verify_inclusion", "verify_inclusion (chain.verify)", samples.vincl_ns,
         summary(_ms(samples.hash_incl_ns)), "hashlib, as many node hashes", samples.incl),
        ("verify_consistency", "verify_consistency (chain.verify)", samples.vcons_ns,
         summary(_ms(samples.hash_cons_ns)), "hashlib, as many node hashes", samples.cons),
    )
    out: list[Row] = []
    for key, label, timed, base, base_label, proofs in measured:
        stats = summary(_ms(timed))
        met = samples.errors == 0 and stats["p95"] < PROOF_MS_GOAL
        out.append(Row(backend, key, label, _fmt_ms(stats),
                       f"{_fmt_ms(base)} ({base_label})",
                       f"{stats['p50'] / base['p50']:.1f}x time" if base["p50"] else "-",
                       f"< {PROOF_MS_GOAL:g} ms (p95)", met,
                       {"ms": {k: round(v, 4) for k, v in stats.items()},
                        "baseline_ms": {k: round(v, 4) for k, v in base.items()},
                        "proof_hashes_mean": round(statistics.fmean(len(p) for p in proofs), 2),
                        "verification_errors": samples.errors}))
    return out
