"""2. End to end from the event store: ``Integrator.catch_up`` from an empty tree beside
the library reading the same stored events."""

from __future__ import annotations

import gc
import time
import uuid

from anchoring.integrator import Integrator
from bench.chain.place import Place, Sizes
from bench.table import Row, now
from events.store import EventStore, open_store
from events.url import DatabaseURL

#: end to end from the event store: leaves/s
E2E_RATE_GOAL = 50_000.0


def _template_events() -> list[tuple[int, str, bytes]]:
    """(version, topic, state) of what register_participant stores: real domain events."""
    from api.auth import hash_token
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
    started = now()
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
