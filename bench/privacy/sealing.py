"""Measurement 3: event encryption's cost on ``bench append``: its in-process command path
(``Ledger.execute`` with group commit, ``bench.append.inprocess.measure_commands``) running
a use case whose events name a person (``register_participant``: the organisation and its
first admin member, whose name ``participant.member_added`` seals), by a ledger handed the
key store as its sealer (``privacy.keystore``, as ``runtime.build`` does: a key issued
from the batches it makes ahead and stores, the name sealed with AES-256-GCM) against a ledger over the same store
without one (the name in clear), from one thread and from ``threads``, in alternating
rounds."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from bench.append.measure import FULL, Measure, Spec, merge
from bench.append.measure import Sizes as AppendSizes
from bench.append.workload import CountingLog, Workload
from bench.privacy.workload import Sizes
from bench.table import Row

#: the goal: sealed commands/s at least this share of the clear ones (under 10% slower)
GOAL_SHARE = 0.9

NOTES = [
    ("event encryption: bench append's in-process command path (Ledger.execute, group "
     "commit) on a fresh store of each backend, the use case register_participant (2 events, "
     "the admin member's name sealed), a ledger with the key store as its sealer (the key "
     "issued from batches made ahead and stored in one durable commit each, then "
     "AES-256-GCM) against a ledger over the same store "
     "without (the name in clear), in rounds, each starting with the next variant; cost = 1 - sealed/clear commands/s, "
     "the median of the rounds' ratios (the table's rates are the totals). "
     "For information, a third ledger seals with keys kept in memory (never stored): the "
     "cipher's share alone"),
]


class PersonalWorkload(Workload):
    """bench append's fallback use case, always: the platform registers participants, each
    with its first admin member (a natural person's name)."""

    uses_datasets = False  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.name = ("platform registers participants with their admin member "
                     "(register_participant)")
        self.handler = self.participant_handler()
        self.kwargs = self.participant_kwargs
        self.actor = self.platform
        self.fallback_reason = None

    @staticmethod
    def participant_handler() -> Any:
        from domain.participant import register_participant

        return register_participant


class MemoryKeys:
    """A sealer whose keys live only in memory, never stored: the cipher's share of the cost
    alone (not a configuration the platform runs: its keys would not survive a restart)."""

    def seal(self, subject: str, path: str, value: str) -> dict[str, str]:
        from core import sealed

        key_id, key = sealed.new_key()  # a key of its own per value, as the key store issues
        return sealed.seal(key_id, key, subject, path, value)


#: rounds of each variant per repetition of the suite (short rounds, many: the median of
#: the rounds' ratios is what a burst of load elsewhere moves least)
ROUNDS_PER_REPETITION = 3

#: variant -> what its ledger seals with
VARIANTS = {"clear": "names clear", "sealed": "names sealed (key store)",
            "cipher": "names sealed, keys in memory (the cipher alone)"}


def _runs(ledgers: dict[str, Any], log: CountingLog, workload: Workload, sizes: AppendSizes,
          threads: int, first: int) -> list[Measure]:
    """Each variant's command path from ``threads`` threads, alternating in rounds."""
    from bench.append.inprocess import measure_commands

    block = (sizes.rounds + 1) * sizes.max_count
    plural = "s" if threads > 1 else ""

    def one(n: int, variant: str) -> Any:
        def run(r: int) -> Measure:
            cpu = time.process_time()
            m = measure_commands(ledgers[variant], log, workload, sizes, Spec(
                f"{variant}_{threads}", f"command path, {threads} thread{plural}, "
                f"{VARIANTS[variant]}", threads, (first + n) * block + r * sizes.max_count,
                sizes.seconds / sizes.rounds))
            # this process's CPU (SQLite's work included, PostgreSQL's not), warm-up too:
            # less moved by the load of other processes than the rate
            m.extra["client_cpu_s"] = time.process_time() - cpu
            return m
        return run

    # each round starts with the next variant: none always runs first (or right after
    # another), so whatever the order favours falls on each alike
    names = list(VARIANTS)
    parts: dict[str, list[Measure]] = {v: [] for v in names}
    for r in range(sizes.rounds):
        for i in range(len(names)):
            n = (r + i) % len(names)
            parts[names[n]].append(one(n, names[n])(r))
    return [merge(parts[v]) for v in names]


def run_backend(backend: str, sizes: Sizes) -> dict[str, Any]:
    """Both variants from 1 thread and from ``threads`` on a fresh store of ``backend``."""
    from bench.databases import Scratch
    from events.commit import new_ledger
    from events.store import LedgerLog, open_store
    from events.url import DatabaseURL
    from privacy.keystore import open_keystore

    rounds = ROUNDS_PER_REPETITION * sizes.repetitions
    runs = replace(FULL, seconds=sizes.seconds * rounds, rounds=rounds,
                   warmup=5 if sizes.seconds < 1 else 20)
    notes: list[str] = []
    scratch = Scratch(backend, f"dataledger-bench-privacy-{backend}-")
    try:
        url = DatabaseURL.parse(scratch.database_url("sealing"))
        store = open_store(url)
        keys = open_keystore(url, scratch.tmp / "keys")
        log = CountingLog(LedgerLog(store))
        ledgers = {"clear": new_ledger(log, group_commit=True),
                   "sealed": new_ledger(log, group_commit=True, sealer=keys),
                   "cipher": new_ledger(log, group_commit=True, sealer=MemoryKeys())}
        workload = PersonalWorkload()
        try:
            workload.setup(ledgers["clear"])
            measures = (_runs(ledgers, log, workload, runs, 1, 0)
                        + _runs(ledgers, log, workload, runs, runs.threads, 3))
            probe = ledgers["sealed"].execute(workload.handler, workload.actor,
                                              **workload.kwargs(99 * 10 * runs.max_count))
            sealed_on_log = _sealed_name(store, probe.body["participant_id"])
            steps = _steps(keys)
        finally:
            for ledger in ledgers.values():
                ledger.close()
            keys.close()
            store.close()
    finally:
        scratch.cleanup(notes)
    return {"backend": backend, "workload": workload.name, "threads": runs.threads,
            "measures": [m.as_json() for m in measures], "name_sealed_on_log": sealed_on_log,
            "steps_us": steps, "notes": notes}


def _steps(keys: Any) -> dict[str, float]:
    """The two halves of a seal: a key issued by the key store (mean microseconds over two
    of its batches, each batch made and stored in one durable commit; the slowest issue is
    the one that stored a batch), and the envelope made under a key in hand."""
    from core import sealed
    from privacy.keystore import BATCH

    issued, times = [], []
    for _ in range(2 * BATCH):
        t0 = time.perf_counter()
        issued.append(keys.issue())
        times.append(time.perf_counter() - t0)
    t1 = time.perf_counter()
    for i, (key_id, key) in enumerate(issued):
        sealed.seal(key_id, key, f"bench-subject-{i}", sealed.MEMBER_NAME, f"bench admin {i}")
    seal_s = time.perf_counter() - t1
    return {"issue_us": round(1e6 * sum(times) / len(times), 1),
            "batch_store_ms": round(1e3 * max(times), 2), "batch": BATCH,
            "seal_us": round(1e6 * seal_s / len(issued), 1)}


def _sealed_name(store: Any, participant_id: str) -> bool:
    """Whether the sealed ledger's member_added holds an envelope, not the name."""
    from core.sealed import is_envelope

    added = [e for e in store.load(participant_id)
             if e.type_name == "participant.member_added"]
    return bool(added) and all(is_envelope(e.payload()["name"]) for e in added)


def paired_share(measured: dict[str, Any], clear: dict[str, Any]) -> float:
    """``measured``'s rate over ``clear``'s: the median of the rounds' ratios (each round's
    two runs a few seconds apart, so a burst of load elsewhere falls on both), or of the
    totals when there was one round."""
    import statistics

    a, b = measured["extra"].get("round_rates"), clear["extra"].get("round_rates")
    if not a or not b or not all(b):
        return float(measured["commands_per_s"] / clear["commands_per_s"])
    return float(statistics.median(x / y for x, y in zip(a, b, strict=True)))


def measure(backend: str, sizes: Sizes) -> tuple[dict[str, Any], list[Row]]:
    """Both variants on ``backend``: their rates and the rows (1 thread, N threads)."""
    data = run_backend(backend, sizes)
    by_key = {m["key"]: m for m in data["measures"]}
    rows = []
    steps = data["steps_us"]
    for threads in (1, data["threads"]):
        clear, sealed = by_key[f"clear_{threads}"], by_key[f"sealed_{threads}"]
        cipher = by_key[f"cipher_{threads}"]
        share, alone = paired_share(sealed, clear), paired_share(cipher, clear)
        cpu = {k: round(1000 * m["extra"]["client_cpu_s"] / m["commands"], 3)
               for k, m in (("clear", clear), ("sealed", sealed), ("cipher", cipher))}
        errors = clear["errors"] + sealed["errors"]
        ok = share >= GOAL_SHARE and errors == 0 and data["name_sealed_on_log"]
        rows.append(Row(
            backend, f"event_encryption_{threads}",
            f"bench append's command path, {threads} thread{'s' if threads > 1 else ''}: "
            f"register_participant with its admin's name sealed; this process's CPU per "
            f"command {cpu['sealed']:.3f} ms vs {cpu['clear']:.3f} ms clear "
            f"({cpu['sealed'] / cpu['clear']:.3f}x)"
            + ("" if data["name_sealed_on_log"] else " [NOT sealed on the log]")
            + (f" [{errors} errors]" if errors else ""),
            f"{sealed['commands_per_s']:,.0f} cmd/s",
            f"{clear['commands_per_s']:,.0f} cmd/s (names clear)",
            f"{share:.3f}x ({100 * (1 - share):.1f}% cost)", f">= {GOAL_SHARE:g}x", ok,
            {"clear": clear, "sealed": sealed, "share": round(share, 3),
             "cpu_ms_per_command": cpu}))
        rows.append(Row(
            backend, f"event_encryption_cipher_{threads}",
            f"the same, keys in memory (the cipher's share alone; CPU per command "
            f"{cpu['cipher']:.3f} ms); a key issued "
            f"{steps['issue_us']:,.0f} µs on average (a batch of {steps['batch']} stored: "
            f"{steps['batch_store_ms']:,.1f} ms), a seal {steps['seal_us']:,.0f} µs",
            f"{cipher['commands_per_s']:,.0f} cmd/s",
            f"{clear['commands_per_s']:,.0f} cmd/s (names clear)",
            f"{alone:.3f}x ({100 * (1 - alone):.1f}% cost)", "-", None,
            {"cipher": cipher, "share": round(alone, 3)}))
    return data, rows
