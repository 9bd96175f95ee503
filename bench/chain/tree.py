"""1. The tree alone: leaves/s of ``append_leaf_data`` (hashing and storing) beside hashlib
over the same leaves, and, for information, the same hashing in memory."""

from __future__ import annotations

import gc
import hashlib
import math
import random
import time
from dataclasses import dataclass, field

from anchoring.treestore import TreeStore
from bench.chain.place import Place, Sizes
from bench.table import Row, now
from chain import merkle

#: tree alone: measured leaves/s over hashlib's must reach this ...
TREE_RATIO_GOAL = 0.5
#: ... and this many leaves/s
TREE_RATE_GOAL = 200_000.0


@dataclass
class _Times:
    """Seconds spent by the baseline, the tree and the in-memory hashing; each round's rates."""

    base_s: float = 0.0
    tree_s: float = 0.0
    memory_s: float = 0.0
    rounds: list[dict[str, float]] = field(default_factory=list)


def _append_in_batches(tree: TreeStore, leaves: list[bytes], batch: int) -> None:
    for start in range(0, len(leaves), batch):
        tree.append_leaf_data(leaves[start:start + batch])


def _in_memory(size: int, roots: list[bytes], part: list[bytes],
               batch: int) -> tuple[int, list[bytes]]:
    """The tree's hashing without the database: ``chain.merkle.append`` in batches; the new
    size and roots."""
    nodes: list[tuple[int, int, bytes]] = []
    for start in range(0, len(part), batch):
        chunk = part[start:start + batch]
        _, created, roots = merkle.append(size, roots, chunk, store_from=8)
        nodes += created
        size += len(chunk)
    del nodes
    return size, roots


def _time_rounds(tree: TreeStore, leaves: list[bytes], sizes: Sizes) -> _Times:
    """hashlib, the tree and the in-memory hashing, in turn over each slice of ``leaves``."""
    sha256 = hashlib.sha256
    times = _Times()
    memory_size, memory_roots = 0, list[bytes]()
    step = math.ceil(len(leaves) / sizes.tree_rounds)
    for r in range(sizes.tree_rounds):
        part = leaves[r * step:(r + 1) * step]
        gc.collect()
        t0 = time.perf_counter()
        hashes = [sha256(b"\x00" + b).digest() for b in part]
        t1 = time.perf_counter()
        _append_in_batches(tree, part, sizes.batch)
        t2 = time.perf_counter()
        memory_size, memory_roots = _in_memory(memory_size, memory_roots, part, sizes.batch)
        t3 = time.perf_counter()
        times.base_s += t1 - t0
        times.tree_s += t2 - t1
        times.memory_s += t3 - t2
        times.rounds.append({"leaves": len(part), "baseline_per_s": round(len(part) / (t1 - t0)),
                             "tree_per_s": round(len(part) / (t2 - t1)),
                             "in_memory_per_s": round(len(part) / (t3 - t2))})
        del hashes
    return times


def measure_tree(place: Place, sizes: Sizes) -> list[Row]:
    """Leaves/s of append_leaves (hashing + storing) beside hashlib over the same leaves."""
    rng = random.Random(1)
    leaves = [rng.randbytes(sizes.leaf_bytes) for _ in range(sizes.tree_leaves)]
    tree = place.tree("tree")
    started = now()
    try:
        _append_in_batches(tree, [rng.randbytes(sizes.leaf_bytes) for _ in range(sizes.batch)],
                           sizes.batch)  # warm-up (its leaves count in no figure)
        offset = tree.size()
        times = _time_rounds(tree, leaves, sizes)
        size = tree.size()
        if size != offset + len(leaves):
            raise RuntimeError(f"tree has {size} leaves, expected {offset + len(leaves)}")
    finally:
        tree.close()
    return _rows(place.backend, sizes, len(leaves), times, started)


def _rows(backend: str, sizes: Sizes, n: int, times: _Times, started: str) -> list[Row]:
    rate, base, mem = n / times.tree_s, n / times.base_s, n / times.memory_s
    ratio = rate / base
    met = ratio >= TREE_RATIO_GOAL and rate > TREE_RATE_GOAL
    missed = [w for w, ok in (("ratio", ratio >= TREE_RATIO_GOAL),
                              ("rate", rate > TREE_RATE_GOAL)) if not ok]
    return [Row(backend, "tree_alone",
                f"tree alone: append_leaf_data, {n:,} leaves of {sizes.leaf_bytes} B, "
                f"batches of {sizes.batch:,} [{merkle.IMPLEMENTATION}]",
                f"{rate:,.0f} leaves/s", f"{base:,.0f} leaves/s (hashlib alone)",
                f"{ratio:.2f}x", f">= {TREE_RATIO_GOAL:.2f}x and > {TREE_RATE_GOAL:,.0f}/s",
                met, {"leaves": n, "seconds": round(times.tree_s, 4), "rate": round(rate, 1),
                      "baseline_seconds": round(times.base_s, 4), "baseline_rate": round(base, 1),
                      "ratio": round(ratio, 4), "rounds": times.rounds, "missed": missed,
                      "implementation": merkle.IMPLEMENTATION, "started_at": started}),
            Row(backend, "tree_in_memory",
                "(for information) the same hashing, in memory: chain.merkle.append, "
                "nothing stored",
                f"{mem:,.0f} leaves/s", f"{base:,.0f} leaves/s (hashlib alone)",
                f"{mem / base:.2f}x", data={"seconds": round(times.memory_s, 4),
                                            "rate": round(mem, 1), "ratio": round(mem / base, 4)})]
