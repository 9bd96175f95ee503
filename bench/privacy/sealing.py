"""Measurement 3: event encryption's cost on ``bench append``: its in-process command path
(``Ledger.execute`` with group commit, ``bench.append.inprocess.measure_commands``) running
a use case whose events name a person (``register_participant``: the organisation and its
first admin member, whose name ``participant.member_added`` seals), by a ledger handed the
key store as its sealer (``privacy.keystore``, as ``runtime.build`` does: each new member's
key made and stored, the name sealed with AES-256-GCM) against a ledger over the same store
without one (the name in clear), from one thread and from ``threads``, in alternating
rounds."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bench.append.measure import FULL, Measure, Spec, alternate
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
     "made and stored per new member, then AES-256-GCM) against a ledger over the same store "
     "without (the name in clear), alternating rounds; cost = 1 - sealed/clear commands/s"),
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


def _pair(clear: Any, sealed: Any, log: CountingLog, workload: Workload, sizes: AppendSizes,
          threads: int, first: int) -> list[Measure]:
    """The clear and the sealed command path from ``threads`` threads, alternating."""
    from bench.append.inprocess import measure_commands

    block = 10 * sizes.max_count
    plural = "s" if threads > 1 else ""

    def spec(r: int, key: str, label: str, n: int) -> Spec:
        return Spec(key, label, threads, (first + n) * block + r * sizes.max_count,
                    sizes.seconds / sizes.rounds)

    return alternate(
        sizes.rounds,
        lambda r: measure_commands(clear, log, workload, sizes, spec(
            r, f"clear_{threads}", f"command path, {threads} thread{plural}, names clear", 0)),
        lambda r: measure_commands(sealed, log, workload, sizes, spec(
            r, f"sealed_{threads}", f"command path, {threads} thread{plural}, names sealed",
            1)))


def run_backend(backend: str, sizes: Sizes) -> dict[str, Any]:
    """Both variants from 1 thread and from ``threads`` on a fresh store of ``backend``."""
    from bench.databases import Scratch
    from events.commit import new_ledger
    from events.store import LedgerLog, open_store
    from events.url import DatabaseURL
    from privacy.keystore import open_keystore

    runs = replace(FULL, seconds=sizes.seconds * sizes.repetitions, rounds=sizes.repetitions,
                   warmup=min(FULL.warmup, 5 if sizes.seconds < 1 else FULL.warmup))
    notes: list[str] = []
    scratch = Scratch(backend, f"dataledger-bench-privacy-{backend}-")
    try:
        url = DatabaseURL.parse(scratch.database_url("sealing"))
        store = open_store(url)
        keys = open_keystore(url, scratch.tmp / "keys")
        log = CountingLog(LedgerLog(store))
        clear = new_ledger(log, group_commit=True)
        sealed = new_ledger(log, group_commit=True, sealer=keys)
        workload = PersonalWorkload()
        try:
            workload.setup(clear)
            measures = (_pair(clear, sealed, log, workload, runs, 1, 0)
                        + _pair(clear, sealed, log, workload, runs, runs.threads, 2))
            probe = sealed.execute(workload.handler, workload.actor,
                                   **workload.kwargs(99 * 10 * runs.max_count))
            sealed_on_log = _sealed_name(store, probe.body["participant_id"])
        finally:
            clear.close()
            sealed.close()
            keys.close()
            store.close()
    finally:
        scratch.cleanup(notes)
    return {"backend": backend, "workload": workload.name, "threads": runs.threads,
            "measures": [m.as_json() for m in measures], "name_sealed_on_log": sealed_on_log,
            "notes": notes}


def _sealed_name(store: Any, participant_id: str) -> bool:
    """Whether the sealed ledger's member_added holds an envelope, not the name."""
    from core.sealed import is_envelope

    added = [e for e in store.load(participant_id)
             if e.type_name == "participant.member_added"]
    return bool(added) and all(is_envelope(e.payload()["name"]) for e in added)


def measure(backend: str, sizes: Sizes) -> tuple[dict[str, Any], list[Row]]:
    """Both variants on ``backend``: their rates and the rows (1 thread, N threads)."""
    data = run_backend(backend, sizes)
    by_key = {m["key"]: m for m in data["measures"]}
    rows = []
    for threads in (1, data["threads"]):
        clear, sealed = by_key[f"clear_{threads}"], by_key[f"sealed_{threads}"]
        share = sealed["commands_per_s"] / clear["commands_per_s"]
        errors = clear["errors"] + sealed["errors"]
        ok = share >= GOAL_SHARE and errors == 0 and data["name_sealed_on_log"]
        rows.append(Row(
            backend, f"event_encryption_{threads}",
            f"bench append's command path, {threads} thread{'s' if threads > 1 else ''}: "
            "register_participant with its admin's name sealed"
            + ("" if data["name_sealed_on_log"] else " [NOT sealed on the log]")
            + (f" [{errors} errors]" if errors else ""),
            f"{sealed['commands_per_s']:,.0f} cmd/s",
            f"{clear['commands_per_s']:,.0f} cmd/s (names clear)",
            f"{share:.3f}x ({100 * (1 - share):.1f}% cost)", f">= {GOAL_SHARE:g}x", ok,
            {"clear": clear, "sealed": sealed, "share": round(share, 3)}))
    return data, rows
