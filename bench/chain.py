"""`dataledger bench chain`: the verifiable log's costs, each beside a baseline of the same run.

For each backend (SQLite files in a fresh temporary directory; PostgreSQL in fresh
schemas ``bench_<random>[_<part>]`` that are dropped at the end) it measures:

1. **tree alone** – N leaf byte strings given (random, 200 bytes each),
   ``tree.append_leaf_data(batch)`` in batches of 5,000 (the integrator's): the tree
   hashes each leaf (SHA-256 of 0x00 ‖ leaf) and the nodes it completes in its hashing
   core (C when built, see :mod:`chain.merkle`) and stores every hash it keeps (the leaf
   tiles and the nodes of level >= 8) with the new size; baseline:
   ``hashlib.sha256(b"\\x00" + b).digest()`` over the same leaves, alternating with the
   tree in rounds. Goal: at least half the baseline's rate and over 200,000 leaves/s.
2. **end to end** – N stored events (filled beforehand with the recorder's
   ``insert_events`` in big batches, not measured), then ``Integrator(store, tree)
   .catch_up()`` from an empty tree (read, canonical bytes, leaf hash, append); baseline:
   reading the same events with the bare library only (``recorder.select_notifications``,
   same batch size; no canonical bytes, no hashing). Goal: over 50,000 leaves/s.
3. **proofs at 1,000,000 leaves** – a tree of that many leaves filled through
   ``append_leaves`` (timed, reported, not a goal), then ``inclusion_proof(i, n)`` and
   ``consistency_proof(m, n)`` for random i, m, served from the database, and their
   verification (``chain.verify``); baselines: one primary-key ``SELECT`` of one node on
   the same connection, and hashing as many interior nodes as the proof has with
   ``hashlib``. Goal: under 1 ms each (judged on p95).
4. **anchoring latency** – the whole service (``runtime.build.build``: event store,
   projections, chain service with its two in-process witnesses) with
   ``checkpoint_every_seconds`` T; commands through ``container.ledger.execute`` at a
   steady modest rate; for each, the time from its commit returning until an anchored
   checkpoint (quorum of both witnesses) covers its last seq, watched every 10 ms on a
   connection of its own. Baseline: the cut interval T (the wait a time-based cut
   implies even if signing and co-signing cost nothing). Goal: under T + 2 s (judged on
   the maximum).

Every loop is bounded in count and time; everything stays on this machine.
"""

from __future__ import annotations

import gc
import hashlib
import math
import os
import random
import secrets
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from anchoring.integrator import Integrator
from anchoring.tilestore_postgres import PostgresTileStore
from anchoring.tilestore_sqlite import SQLiteTileStore
from anchoring.treestore import TreeStore
from bench.append import PG_URL, _check_postgres, _drop_schemas
from bench.table import aligned, quantile
from chain import merkle
from chain.hasher import hash_children, hash_leaf
from chain.verify import verify_consistency, verify_inclusion
from events.store import DatabaseURL, EventStore, open_store

#: tree alone: measured leaves/s over hashlib's must reach this ...
TREE_RATIO_GOAL = 0.5
#: ... and this many leaves/s
TREE_RATE_GOAL = 200_000.0
#: end to end from the event store: leaves/s
E2E_RATE_GOAL = 50_000.0
#: proof generation and verification: milliseconds (p95)
PROOF_MS_GOAL = 1.0
#: anchoring: seconds beyond the cut interval (maximum)
ANCHOR_SLACK_GOAL = 2.0


@dataclass(frozen=True)
class Sizes:
    """How much each measurement does."""

    tree_leaves: int            # leaves of the tree-alone measurement
    tree_rounds: int            # tree and baseline alternate over this many slices
    e2e_events: int             # stored events integrated end to end
    e2e_rounds: int             # each round: baseline read, then catch_up into a fresh tree
    proof_leaves: int           # tree size of the proof measurements
    proof_samples: int          # proofs of each kind timed
    anchor_intervals: tuple[float, ...]  # cut intervals T (checkpoint_every_seconds)
    anchor_seconds: float       # how long commands are sent, per T
    anchor_rate: float          # commands per second (register_participant: 2 events each)
    batch: int = 5000           # the integrator's batch size
    fill_batch: int = 10_000    # events per insert_events call when filling the store
    leaf_bytes: int = 200
    poll_seconds: float = 0.01  # the anchoring watcher's polling interval
    drain_seconds: float = 15.0  # after the load, wait at most T + this for the last anchor


FULL = Sizes(tree_leaves=200_000, tree_rounds=4, e2e_events=200_000, e2e_rounds=2,
             proof_leaves=1_000_000, proof_samples=500, anchor_intervals=(5.0, 1.0),
             anchor_seconds=20.0, anchor_rate=20.0)
QUICK = Sizes(tree_leaves=20_000, tree_rounds=1, e2e_events=20_000, e2e_rounds=1,
              proof_leaves=50_000, proof_samples=100, anchor_intervals=(1.0,),
              anchor_seconds=2.5, anchor_rate=20.0, drain_seconds=5.0)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def summary(values: list[float]) -> dict[str, float]:
    """p50 / p95 / max / mean of a list (empty dict if none)."""
    if not values:
        return {}
    return {"n": len(values), "p50": quantile(values, 0.5), "p95": quantile(values, 0.95),
            "p99": quantile(values, 0.99), "max": max(values), "mean": statistics.fmean(values)}


@dataclass
class Row:
    """One line of the table (numbers in ``data``, as they go to the JSON)."""

    backend: str
    key: str
    measure: str
    value: str
    baseline: str = "-"
    ratio: str = "-"
    goal: str = "-"
    met: bool | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# -- where the trees and stores live -----------------------------------------------------
class Place:
    """Fresh trees and stores of one backend: SQLite files in a temporary directory, or
    PostgreSQL schemas ``bench_<tag>[_<label>]`` (all dropped by :meth:`cleanup`)."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.tag = secrets.token_hex(4)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"dataledger-bench-chain-{backend}-"))
        self.schemas: list[str] = []
        if backend == "postgresql":
            _check_postgres(DatabaseURL.parse(PG_URL))

    def _schema(self, label: str) -> str:
        schema = f"bench_{self.tag}" + (f"_{label}" if label else "")
        self.schemas.append(schema)
        return schema

    def tree(self, label: str) -> TreeStore:
        """A new, empty tree store."""
        if self.backend == "sqlite":
            return TreeStore(SQLiteTileStore(os.fspath(self.tmp / label / "chain.db")))
        return TreeStore(PostgresTileStore(DatabaseURL.parse(PG_URL).conninfo(),
                                           self._schema(label)))

    def database_url(self, label: str) -> str:
        """The URL of a new, empty event store."""
        if self.backend == "sqlite":
            return f"sqlite:///{self.tmp / label / 'ledger.db'}"
        return f"{PG_URL}?schema={self._schema(label)}"

    def cleanup(self, notes: list[str]) -> None:
        if self.schemas:
            try:
                _drop_schemas(DatabaseURL.parse(PG_URL), self.schemas)
            except Exception as exc:  # noqa: BLE001 - reported, not fatal
                notes.append(f"could not drop schemas {self.schemas}: {exc!r}")
        shutil.rmtree(self.tmp, ignore_errors=True)


def _append_in_batches(tree: TreeStore, leaves: list[bytes], batch: int) -> None:
    for start in range(0, len(leaves), batch):
        tree.append_leaf_data(leaves[start:start + batch])


# -- 1. the tree alone ---------------------------------------------------------------------
def measure_tree(place: Place, sizes: Sizes) -> list[Row]:
    """Leaves/s of append_leaves (hashing + storing) beside hashlib over the same leaves."""
    rng = random.Random(1)
    leaves = [rng.randbytes(sizes.leaf_bytes) for _ in range(sizes.tree_leaves)]
    tree = place.tree("tree")
    memory_size, memory_roots = 0, list[bytes]()
    sha256 = hashlib.sha256
    base_s = tree_s = memory_s = 0.0
    rounds: list[dict[str, float]] = []
    started = _now()
    try:
        _append_in_batches(tree, [rng.randbytes(sizes.leaf_bytes) for _ in range(sizes.batch)],
                           sizes.batch)  # warm-up (its leaves count in no figure)
        offset = tree.size()
        step = math.ceil(len(leaves) / sizes.tree_rounds)
        for r in range(sizes.tree_rounds):
            part = leaves[r * step:(r + 1) * step]
            gc.collect()
            t0 = time.perf_counter()
            hashes = [sha256(b"\x00" + b).digest() for b in part]
            t1 = time.perf_counter()
            _append_in_batches(tree, part, sizes.batch)
            t2 = time.perf_counter()
            nodes: list[tuple[int, int, bytes]] = []
            for start in range(0, len(part), sizes.batch):  # the hashing, without the database
                batch = part[start:start + sizes.batch]
                _, created, memory_roots = merkle.append(memory_size, memory_roots, batch,
                                                         store_from=8)
                nodes += created
                memory_size += len(batch)
            t3 = time.perf_counter()
            base_s += t1 - t0
            tree_s += t2 - t1
            memory_s += t3 - t2
            rounds.append({"leaves": len(part), "baseline_per_s": round(len(part) / (t1 - t0)),
                           "tree_per_s": round(len(part) / (t2 - t1)),
                           "in_memory_per_s": round(len(part) / (t3 - t2))})
            del hashes, nodes
        size = tree.size()
        if size != offset + len(leaves):
            raise RuntimeError(f"tree has {size} leaves, expected {offset + len(leaves)}")
    finally:
        tree.close()
    n = len(leaves)
    rate, base, mem = n / tree_s, n / base_s, n / memory_s
    ratio = rate / base
    met = ratio >= TREE_RATIO_GOAL and rate > TREE_RATE_GOAL
    missed = [w for w, ok in (("ratio", ratio >= TREE_RATIO_GOAL),
                              ("rate", rate > TREE_RATE_GOAL)) if not ok]
    return [Row(place.backend, "tree_alone",
                f"tree alone: append_leaf_data, {n:,} leaves of {sizes.leaf_bytes} B, "
                f"batches of {sizes.batch:,} [{merkle.IMPLEMENTATION}]",
                f"{rate:,.0f} leaves/s", f"{base:,.0f} leaves/s (hashlib alone)",
                f"{ratio:.2f}x", f">= {TREE_RATIO_GOAL:.2f}x and > {TREE_RATE_GOAL:,.0f}/s",
                met, {"leaves": n, "seconds": round(tree_s, 4), "rate": round(rate, 1),
                      "baseline_seconds": round(base_s, 4), "baseline_rate": round(base, 1),
                      "ratio": round(ratio, 4), "rounds": rounds, "missed": missed,
                      "implementation": merkle.IMPLEMENTATION, "started_at": started}),
            Row(place.backend, "tree_in_memory",
                "(for information) the same hashing, in memory: chain.merkle.append, "
                "nothing stored",
                f"{mem:,.0f} leaves/s", f"{base:,.0f} leaves/s (hashlib alone)",
                f"{mem / base:.2f}x", data={"seconds": round(memory_s, 4), "rate": round(mem, 1),
                                            "ratio": round(mem / base, 4)})]


# -- 2. end to end from the event store ----------------------------------------------------
def _template_events() -> list[tuple[int, str, bytes]]:
    """(version, topic, state) of what register_participant stores: real domain events."""
    from api.deps import hash_token
    from domain.application import utc_now
    from domain.base import Actor, Context
    from domain.participant import Participant
    from events.store import to_stored
    from runtime.build import PLATFORM_ADMIN_ID, PLATFORM_ID

    ctx = Context(Actor(PLATFORM_ID, PLATFORM_ADMIN_ID, "platform", ("admin",)), utc_now())
    agg = Participant.register(str(uuid.uuid4()), ctx, name="bench org 1", role="provider",
                               credit_code="910000000000000001")
    agg.add_member(ctx, member_id=str(uuid.uuid4()), name="admin 1", member_roles=["admin"],
                   token_hash=hash_token("bench-1"))
    return [(s.originator_version, s.topic, s.state) for s in map(to_stored, agg.collect())]


def fill_store(store: EventStore, count: int, batch: int) -> float:
    """Insert ``count`` events (pairs of real participant events, fresh ids); return seconds."""
    from eventsourcing.persistence import StoredEvent

    template = _template_events()
    t0 = time.perf_counter()
    done = 0
    while done < count:
        chunk: list[StoredEvent] = []
        while len(chunk) < min(batch, count - done):
            oid = str(uuid.uuid4())
            for version, topic, state in template[:count - done - len(chunk)]:
                chunk.append(StoredEvent(originator_id=oid, originator_version=version,
                                         topic=topic, state=state))
        store.recorder.insert_events(chunk)
        done += len(chunk)
    return time.perf_counter() - t0


def bare_read(store: EventStore, batch: int) -> int:
    """Read every stored event with the library alone, ``batch`` at a time."""
    position = count = 0
    while True:
        notes = store.recorder.select_notifications(start=position, limit=batch,
                                                    inclusive_of_start=False)
        if not notes:
            return count
        count += len(notes)
        position = notes[-1].id


def measure_e2e(place: Place, sizes: Sizes) -> list[Row]:
    """Integrator.catch_up from an empty tree beside the library reading the same events."""
    n = sizes.e2e_events
    store = open_store(DatabaseURL.parse(place.database_url("")))
    rounds: list[dict[str, float]] = []
    base_s = e2e_s = 0.0
    started = _now()
    try:
        fill_s = fill_store(store, n, sizes.fill_batch)
        if store.max_seq() != n:
            raise RuntimeError(f"store holds {store.max_seq()} events, expected {n}")
        bare_read(store, sizes.batch)  # warm-up: caches, connections
        for r in range(sizes.e2e_rounds):
            tree = place.tree(f"e2e{r}")
            try:
                gc.collect()
                t0 = time.perf_counter()
                read = bare_read(store, sizes.batch)
                t1 = time.perf_counter()
                size = Integrator(store, tree, batch_size=sizes.batch).catch_up()
                t2 = time.perf_counter()
            finally:
                tree.close()
            if read != n or size != n:
                raise RuntimeError(f"read {read} events, integrated {size}, expected {n}")
            base_s += t1 - t0
            e2e_s += t2 - t1
            rounds.append({"baseline_per_s": round(n / (t1 - t0)),
                           "e2e_per_s": round(n / (t2 - t1))})
    finally:
        store.close()
    total = n * sizes.e2e_rounds
    rate, base = total / e2e_s, total / base_s
    return [Row(place.backend, "end_to_end",
                f"end to end: Integrator.catch_up, {n:,} stored events, empty tree",
                f"{rate:,.0f} leaves/s", f"{base:,.0f} events/s (library read alone)",
                f"{rate / base:.2f}x", f"> {E2E_RATE_GOAL:,.0f}/s", rate > E2E_RATE_GOAL,
                {"events": n, "rounds": rounds, "seconds": round(e2e_s, 4),
                 "rate": round(rate, 1), "baseline_seconds": round(base_s, 4),
                 "baseline_rate": round(base, 1), "ratio": round(rate / base, 4),
                 "fill_seconds": round(fill_s, 2), "fill_rate": round(n / fill_s),
                 "started_at": started})]


# -- 3. proofs at 1,000,000 leaves -----------------------------------------------------------
def _leaf(i: int) -> bytes:
    return hash_leaf(i.to_bytes(8, "big"))


def _ms(samples_ns: list[int]) -> list[float]:
    return [s / 1e6 for s in samples_ns]


def _fmt_ms(stats: dict[str, float]) -> str:
    return f"p50 {stats['p50']:.3f} ms, p95 {stats['p95']:.3f} ms"


def measure_proofs(place: Place, sizes: Sizes) -> list[Row]:
    """Inclusion and consistency proofs from the database at ``proof_leaves``, and verifying."""
    n = sizes.proof_leaves
    tree = place.tree("proofs")
    rng = random.Random(2)
    clock = time.perf_counter_ns
    # a 32-byte row by primary key (leaves are in tiles; nodes from level 8 up are rows)
    pk_select = "SELECT hash FROM chain_nodes WHERE level = ? AND idx = ?"
    try:
        t0 = time.perf_counter()
        for start in range(0, n, sizes.batch):
            tree.append_leaves(_leaf(i) for i in range(start, min(n, start + sizes.batch)))
        fill_s = time.perf_counter() - t0
        root_n = tree.root(n)
        indices = [rng.randrange(n) for _ in range(sizes.proof_samples)]
        olds = [rng.randrange(1, n) for _ in range(sizes.proof_samples)]
        for i in indices[:20]:  # warm-up
            tree.inclusion_proof(i, n)
            tree.consistency_proof(olds[0], n)
            tree._q(pk_select, (8, i >> 8))
        select_ns: list[int] = []
        incl_ns: list[int] = []
        cons_ns: list[int] = []
        incl: list[list[bytes]] = []
        cons: list[list[bytes]] = []
        gc.collect()
        for i, m in zip(indices, olds, strict=True):  # the three alternate, sample by sample
            a = clock()
            tree._q(pk_select, (8, i >> 8))
            b = clock()
            incl.append(tree.inclusion_proof(i, n))
            c = clock()
            cons.append(tree.consistency_proof(m, n))
            d = clock()
            select_ns.append(b - a)
            incl_ns.append(c - b)
            cons_ns.append(d - c)
        roots_m = [tree.root(m) for m in olds]  # untimed: what a verifier already holds
    finally:
        tree.close()
    leaves = [_leaf(i) for i in indices]
    vincl_ns: list[int] = []
    vcons_ns: list[int] = []
    hash_incl_ns: list[int] = []
    hash_cons_ns: list[int] = []
    errors = 0
    gc.collect()
    for k, (i, m) in enumerate(zip(indices, olds, strict=True)):
        fake = bytes(32)
        a = clock()
        for sibling in incl[k]:
            fake = hash_children(fake, sibling)
        b = clock()
        try:
            verify_inclusion(leaves[k], i, n, incl[k], root_n)
        except Exception:  # noqa: BLE001 - counted; the goal is then missed
            errors += 1
        c = clock()
        for sibling in cons[k]:
            fake = hash_children(fake, sibling)
        d = clock()
        try:
            verify_consistency(m, n, cons[k], roots_m[k], root_n)
        except Exception:  # noqa: BLE001
            errors += 1
        e = clock()
        hash_incl_ns.append(b - a)
        vincl_ns.append(c - b)
        hash_cons_ns.append(d - c)
        vcons_ns.append(e - d)
    sel = summary(_ms(select_ns))
    out: list[Row] = []
    measured = (
        ("inclusion_proof", f"inclusion_proof(i, {n:,}) from the database", incl_ns, sel,
         "one PK SELECT of a node", incl),
        ("consistency_proof", f"consistency_proof(m, {n:,}) from the database", cons_ns, sel,
         "one PK SELECT of a node", cons),
        ("verify_inclusion", "verify_inclusion (chain.verify)", vincl_ns,
         summary(_ms(hash_incl_ns)), "hashlib, as many node hashes", incl),
        ("verify_consistency", "verify_consistency (chain.verify)", vcons_ns,
         summary(_ms(hash_cons_ns)), "hashlib, as many node hashes", cons),
    )
    for key, label, samples, base, base_label, proofs in measured:
        stats = summary(_ms(samples))
        met = errors == 0 and stats["p95"] < PROOF_MS_GOAL
        out.append(Row(place.backend, key, label, _fmt_ms(stats),
                       f"{_fmt_ms(base)} ({base_label})",
                       f"{stats['p50'] / base['p50']:.1f}x time" if base["p50"] else "-",
                       f"< {PROOF_MS_GOAL:g} ms (p95)", met,
                       {"ms": {k: round(v, 4) for k, v in stats.items()},
                        "baseline_ms": {k: round(v, 4) for k, v in base.items()},
                        "proof_hashes_mean": round(statistics.fmean(len(p) for p in proofs), 2),
                        "verification_errors": errors}))
    out[0].data.update(tree_leaves=n, fill_seconds=round(fill_s, 2),
                       fill_rate=round(n / fill_s))
    return out


# -- 4. anchoring latency ------------------------------------------------------------------------
class Watcher(threading.Thread):
    """Polls the newest anchored checkpoint; times each command until one covers it."""

    def __init__(self, tree: TreeStore, poll: float) -> None:
        super().__init__(name="anchor-watcher", daemon=True)
        self.tree = tree
        self.poll = poll
        self.pending: deque[tuple[int, float]] = deque()  # (last seq, commit returned at)
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.anchored: list[dict[str, Any]] = []  # each newly seen anchored checkpoint
        self.size = 0
        self.stop = threading.Event()
        self.error: str | None = None

    def add(self, seq: int, at: float) -> None:
        with self.lock:
            self.pending.append((seq, at))

    def outstanding(self) -> int:
        with self.lock:
            return len(self.pending)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                latest = self.tree.checkpoints.latest(anchored=True)
                now, wall = time.perf_counter(), time.time()
                if latest is not None and latest.size > self.size:
                    self.size = latest.size
                    cut = datetime.fromisoformat(latest.cut_at).timestamp()
                    self.anchored.append({"size": latest.size, "seen_at": wall,
                                          "cut_to_seen_s": round(wall - cut, 4)})
                    with self.lock:
                        while self.pending and self.pending[0][0] <= latest.size:
                            self.latencies.append(now - self.pending.popleft()[1])
                self.stop.wait(self.poll)
        except Exception as exc:  # noqa: BLE001 - reported
            self.error = repr(exc)


def measure_anchoring(place: Place, sizes: Sizes, interval: float) -> Row:
    """Commit → covered by an anchored checkpoint, with the whole service running."""
    from anchoring.service import open_tree
    from api.deps import hash_token
    from domain import participant as uc
    from domain.base import Actor
    from runtime.build import PLATFORM_ADMIN_ID, PLATFORM_ID, build
    from runtime.settings import Settings

    label = f"anchor{interval:g}".replace(".", "_")
    url = place.database_url(label)
    data_dir = place.tmp / label
    settings = Settings(data_dir=data_dir, database_url=url, chain=True, witness_urls="",
                        witness_quorum=None, admin_token="bench" + secrets.token_hex(16)[:27],
                        checkpoint_every_seconds=interval)
    container = build(settings)
    assert container.chain is not None
    watcher = Watcher(open_tree(DatabaseURL.parse(settings.resolved_database_url()), data_dir),
                      sizes.poll_seconds)
    actor = Actor(PLATFORM_ID, PLATFORM_ADMIN_ID, "platform", ("admin",))
    commit_s: list[float] = []
    errors: list[str] = []
    started = _now()
    sent = 0
    try:
        watcher.start()
        # the platform's own first events: wait until they are anchored (steady state)
        watcher.add(container.store.max_seq(), time.perf_counter())
        deadline = time.monotonic() + interval + sizes.drain_seconds
        while watcher.outstanding() and time.monotonic() < deadline:
            time.sleep(0.05)
        with watcher.lock:
            watcher.latencies.clear()
            watcher.pending.clear()
        t_start = time.perf_counter()
        count = int(sizes.anchor_seconds * sizes.anchor_rate)
        for i in range(count):
            delay = t_start + i / sizes.anchor_rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            a = time.perf_counter()
            try:
                result = container.ledger.execute(
                    uc.register_participant, actor, name=f"bench org {i}", role="provider",
                    credit_code=f"92{i:016d}", admin_name=f"admin {i}",
                    admin_token_hash=hash_token(f"bench-anchor-{i}"))
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(repr(exc))
                continue
            b = time.perf_counter()
            commit_s.append(b - a)
            watcher.add(max(result.seqs), b)
            sent += 1
        load_s = time.perf_counter() - t_start
        deadline = time.monotonic() + interval + sizes.drain_seconds
        while watcher.outstanding() and time.monotonic() < deadline and watcher.is_alive():
            time.sleep(0.02)
    finally:
        watcher.stop.set()
        watcher.join(timeout=10)
        watcher.tree.close()
        container.close()
    unanchored = watcher.outstanding()
    stats = summary(watcher.latencies)
    cut_to_seen = summary([a["cut_to_seen_s"] for a in watcher.anchored[1:]])
    gaps = [b["seen_at"] - a["seen_at"] for a, b in zip(watcher.anchored[1:],
                                                         watcher.anchored[2:], strict=False)]
    goal = interval + ANCHOR_SLACK_GOAL
    met = bool(stats) and not unanchored and not errors and watcher.error is None \
        and stats["max"] < goal
    value = (f"p50 {stats['p50']:.2f} s, p95 {stats['p95']:.2f} s, max {stats['max']:.2f} s"
             if stats else "no command anchored")
    if unanchored:
        value += f" [{unanchored} not anchored]"
    if errors:
        value += f" [{len(errors)} errors]"
    return Row(place.backend, f"anchoring_T{interval:g}",
               f"commit -> anchored checkpoint (2 witnesses), cut every {interval:g} s, "
               f"{sizes.anchor_rate:g} cmd/s",
               value, f"{interval:g} s (the cut interval)",
               f"{stats['max'] / interval:.2f}x (max)" if stats else "-",
               f"< {goal:g} s (max)", met,
               {"interval_s": interval, "latency_s": {k: round(v, 4) for k, v in stats.items()},
                "commands": sent, "events": 2 * sent, "load_seconds": round(load_s, 2),
                "commit_ms": {k: v if k == "n" else round(1000 * v, 3)
                              for k, v in summary(commit_s).items()},
                "unanchored": unanchored, "errors": len(errors),
                "first_error": errors[0] if errors else watcher.error,
                "checkpoints_seen": len(watcher.anchored),
                "cut_to_anchored_seen_s": {k: round(v, 4) for k, v in cut_to_seen.items()},
                "between_anchored_s": {k: round(v, 4) for k, v in summary(gaps).items()},
                "checkpoint_every_leaves": settings.checkpoint_every_leaves,
                "poll_seconds": sizes.poll_seconds, "started_at": started})


# -- one backend, the whole suite --------------------------------------------------------------
def run_backend(backend: str, sizes: Sizes, progress: Callable[[str], None]) -> dict[str, Any]:
    """Every measurement of one backend; its databases are removed at the end."""
    notes: list[str] = []
    rows: list[Row] = []
    timings: dict[str, float] = {}
    place = Place(backend)

    def step(name: str, measure: Callable[[], list[Row]]) -> None:
        progress(f"{backend}: {name} ...")
        t0 = time.monotonic()
        rows.extend(measure())
        timings[name] = round(time.monotonic() - t0, 1)

    try:
        step("tree alone", lambda: measure_tree(place, sizes))
        step("end to end", lambda: measure_e2e(place, sizes))
        step(f"proofs at {sizes.proof_leaves:,} leaves", lambda: measure_proofs(place, sizes))
        for interval in sizes.anchor_intervals:
            step(f"anchoring, T = {interval:g} s", _anchoring(place, sizes, interval))
    finally:
        place.cleanup(notes)
    return {"backend": backend, "rows": rows, "notes": notes, "step_seconds": timings}


def _anchoring(place: Place, sizes: Sizes, interval: float) -> Callable[[], list[Row]]:
    return lambda: [measure_anchoring(place, sizes, interval)]


def format_table(table: list[dict[str, Any]]) -> str:
    """backend | measure | value | baseline | ratio | goal | met?"""
    header = ["backend", "measure", "value", "baseline", "ratio", "goal", "met?"]
    lines = [header] + [
        [r["backend"], r["measure"], r["value"], r["baseline"], r["ratio"], r["goal"],
         "-" if r["met"] is None else ("yes" if r["met"] else "NO")] for r in table]
    return aligned(lines)


def _progress(message: str) -> None:
    print(f"  {message}", flush=True)


def run(backends: list[str], quick: bool) -> dict[str, Any]:
    """The whole suite; what run.py prints and writes."""
    sizes = QUICK if quick else FULL
    _progress(f"tree hashing core: {merkle.IMPLEMENTATION}")
    results: list[dict[str, Any]] = []
    table: list[dict[str, Any]] = []
    for backend in backends:
        t0 = time.monotonic()
        try:
            result = run_backend(backend, sizes, _progress)
        except Exception as exc:  # noqa: BLE001 - one backend failing is reported
            results.append({"backend": backend, "error": repr(exc)})
            table.append(Row(backend, "error", f"FAILED: {exc!r}"[:200], "-", met=False)
                         .as_json())
            continue
        result["wall_seconds"] = round(time.monotonic() - t0, 1)
        rows = [r.as_json() for r in result.pop("rows")]
        table += rows
        result["measures"] = rows
        results.append(result)
    goals = [r["met"] for r in table if r["met"] is not None]
    return {"suite": "chain", "quick": quick, "sizes": asdict(sizes), "results": results,
            "table": table, "all_goals_met": bool(goals) and all(goals),
            "merkle_core": merkle.IMPLEMENTATION,
            "notes": [
                (f"tree hashing core: {merkle.IMPLEMENTATION}"
                 + (" (chain/_merkle.c was not built: no C compiler or OpenSSL headers at "
                    "install time; the pure-Python fallback ran)"
                    if "c" not in merkle.IMPLEMENTATIONS else "")),
                ("tree alone: leaves are given as bytes to append_leaf_data; the tree hashes "
                 "each (SHA-256 of 0x00 || leaf) and the interior nodes it completes (about "
                 "one more per leaf) in its hashing core, and stores the leaf hashes in tiles "
                 "of 256 and the nodes of level >= 8 (levels 1-7 are recomputed from the "
                 "tiles when read); the baseline only hashes the leaves"),
                ("end to end: the baseline is the library's read alone "
                 "(recorder.select_notifications, same batch size), without canonical bytes "
                 "or hashing; the fill (insert_events in big batches) is not measured"),
                ("proofs: each from the database at the full tree size (size query + one "
                 "query for the upper nodes and the leaf tiles, the nodes below level 8 "
                 "recomputed from the tiles), random leaf index / old size; judged on p95; "
                 "verification needs the roots, which are read beforehand, untimed"),
                ("anchoring: time from Ledger.execute returning to the watcher (own "
                 "connection, polling every 10 ms) seeing an anchored checkpoint whose size "
                 "covers the command's last seq; projections and the chain service run in "
                 "the same process, as in `dataledger serve`; judged on the maximum"),
                ("ratios: for rates, measured / baseline; for times (proofs), p50 measured / "
                 "p50 baseline; for anchoring, max latency / cut interval"),
            ]}
