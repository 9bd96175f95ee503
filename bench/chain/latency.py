"""4. Anchoring latency: with the whole service running, the time from a command's commit
returning until an anchored checkpoint covers it."""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from anchoring.treestore import TreeStore
from bench.chain.place import Place, Sizes
from bench.table import Row, now, summary
from events.url import DatabaseURL

#: anchoring: seconds beyond the cut interval (maximum)
ANCHOR_SLACK_GOAL = 2.0


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

    def reset(self) -> None:
        """Forget the latencies and the commands waiting so far."""
        with self.lock:
            self.latencies.clear()
            self.pending.clear()

    def drain(self, seconds: float, pause: float) -> None:
        """Wait at most ``seconds`` until every command added is covered (or this stopped)."""
        deadline = time.monotonic() + seconds
        while self.outstanding() and time.monotonic() < deadline and self.is_alive():
            time.sleep(pause)

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


@dataclass
class _Load:
    """The commands sent: how many, each commit's seconds, the errors, how long it took."""

    started_at: str
    sent: int = 0
    commit_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    load_s: float = 0.0


def _send_load(container: Any, watcher: Watcher, sizes: Sizes, load: _Load) -> None:
    """register_participant at ``anchor_rate`` for ``anchor_seconds``, each command handed to
    the watcher when its commit returns."""
    from api.auth import hash_token
    from domain import participant as uc
    from domain.base import Actor
    from runtime.build import PLATFORM_ADMIN_ID, PLATFORM_ID

    actor = Actor(PLATFORM_ID, PLATFORM_ADMIN_ID, "platform", ("admin",))
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
            load.errors.append(repr(exc))
            continue
        b = time.perf_counter()
        load.commit_s.append(b - a)
        watcher.add(max(result.seqs), b)
        load.sent += 1
    load.load_s = time.perf_counter() - t_start


def measure_anchoring(place: Place, sizes: Sizes, interval: float) -> Row:
    """Commit → covered by an anchored checkpoint, with the whole service running."""
    from anchoring.service import open_tree
    from runtime.build import build
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
    load = _Load(now())
    try:
        watcher.start()
        # the platform's own first events: wait until they are anchored (steady state)
        watcher.add(container.store.max_seq(), time.perf_counter())
        watcher.drain(interval + sizes.drain_seconds, 0.05)
        watcher.reset()
        _send_load(container, watcher, sizes, load)
        watcher.drain(interval + sizes.drain_seconds, 0.02)
    finally:
        watcher.stop.set()
        watcher.join(timeout=10)
        watcher.tree.close()
        container.close()
    return _row(place.backend, sizes, interval, watcher, load, settings.checkpoint_every_leaves)


def _row(backend: str, sizes: Sizes, interval: float, watcher: Watcher, load: _Load,
         every_leaves: int) -> Row:
    unanchored = watcher.outstanding()
    stats = summary(watcher.latencies)
    cut_to_seen = summary([a["cut_to_seen_s"] for a in watcher.anchored[1:]])
    gaps = [b["seen_at"] - a["seen_at"] for a, b in zip(watcher.anchored[1:],
                                                         watcher.anchored[2:], strict=False)]
    goal = interval + ANCHOR_SLACK_GOAL
    met = bool(stats) and not unanchored and not load.errors and watcher.error is None \
        and stats["max"] < goal
    value = (f"p50 {stats['p50']:.2f} s, p95 {stats['p95']:.2f} s, max {stats['max']:.2f} s"
             if stats else "no command anchored")
    if unanchored:
        value += f" [{unanchored} not anchored]"
    if load.errors:
        value += f" [{len(load.errors)} errors]"
    return Row(backend, f"anchoring_T{interval:g}",
               f"commit -> anchored checkpoint (2 witnesses), cut every {interval:g} s, "
               f"{sizes.anchor_rate:g} cmd/s",
               value, f"{interval:g} s (the cut interval)",
               f"{stats['max'] / interval:.2f}x (max)" if stats else "-",
               f"< {goal:g} s (max)", met,
               {"interval_s": interval, "latency_s": {k: round(v, 4) for k, v in stats.items()},
                "commands": load.sent, "events": 2 * load.sent,
                "load_seconds": round(load.load_s, 2),
                "commit_ms": {k: v if k == "n" else round(1000 * v, 3)
                              for k, v in summary(load.commit_s).items()},
                "unanchored": unanchored, "errors": len(load.errors),
                "first_error": load.errors[0] if load.errors else watcher.error,
                "checkpoints_seen": len(watcher.anchored),
                "cut_to_anchored_seen_s": {k: round(v, 4) for k, v in cut_to_seen.items()},
                "between_anchored_s": {k: round(v, 4) for k, v in summary(gaps).items()},
                "checkpoint_every_leaves": every_leaves,
                "poll_seconds": sizes.poll_seconds, "started_at": load.started_at})
