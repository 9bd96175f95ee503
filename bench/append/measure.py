"""What one measurement is (:class:`Measure`), how long each runs (:class:`Sizes`), and its
rounds merged into one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sizes:
    """How long and how much each measurement runs (it stops at whichever comes first)."""

    seconds: float          # per in-process measurement (split over the rounds)
    http_seconds: float     # per HTTP measurement
    max_count: int          # operations per measurement
    pool_rate: int          # pre-encoded events per second of a bare-library measurement
    warmup: int             # untimed operations before each in-process measurement
    http_warmup: float      # untimed seconds of each HTTP request kind
    rounds: int             # a measurement and its baseline alternate in this many rounds
    threads: int = 16
    http_concurrency: int = 64
    server_start_timeout: float = 60.0


FULL = Sizes(seconds=6.0, http_seconds=6.0, max_count=100_000, pool_rate=6_000, warmup=50,
             http_warmup=1.0, rounds=3)
QUICK = Sizes(seconds=0.4, http_seconds=0.6, max_count=3_000, pool_rate=6_000, warmup=5,
              http_warmup=0.2, rounds=1)


@dataclass(frozen=True)
class Spec:
    """One in-process measurement: its key and label, its threads, where its arguments start
    (each measurement its own range), and its seconds (``None``: ``Sizes.seconds``)."""

    key: str
    label: str
    threads: int
    offset: int
    seconds: float | None = None


@dataclass
class Measure:
    """One timed run."""

    key: str
    label: str
    unit: str                     # "events/s" or "requests/s"
    count: int                    # events (in process) or successful requests (HTTP)
    seconds: float
    started_at: str
    commands: int | None = None
    errors: int = 0
    first_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def command_rate(self) -> float | None:
        if self.commands is None or self.seconds <= 0:
            return None
        return self.commands / self.seconds

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["rate"] = round(self.rate, 1)
        if self.command_rate is not None:
            out["commands_per_s"] = round(self.command_rate, 1)
        out["seconds"] = round(self.seconds, 4)
        return out


def _merged_extra(parts: list[Measure], count: int) -> dict[str, Any]:
    """The first round's extra, with the rounds' rates and their counters summed."""
    first = parts[0]
    extra = dict(first.extra)
    extra["rounds"] = len(parts)
    extra["round_rates"] = [round(p.rate) for p in parts]
    for key in ("transactions", "pool", "events", "client_cpu_s", "server_cpu_s",
                "server_cpu_settled_s", "settle_s"):
        if key in first.extra:
            extra[key] = round(sum(p.extra.get(key, 0) for p in parts), 3)
    if "pool_exhausted" in first.extra:
        extra["pool_exhausted"] = any(p.extra["pool_exhausted"] for p in parts)
    if "statuses" in first.extra:
        statuses: dict[str, int] = {}
        for p in parts:
            for code, n in p.extra["statuses"].items():
                statuses[code] = statuses.get(code, 0) + n
        extra["statuses"] = statuses
    if extra.get("transactions"):
        extra["events_per_transaction"] = round(extra["events"] / extra["transactions"], 2)
    for cpu in ("client", "server"):
        if f"{cpu}_cpu_s" in extra and count:
            extra[f"{cpu}_cpu_ms_per_request"] = round(1000 * extra[f"{cpu}_cpu_s"] / count, 3)
    if "server_cpu_settled_s" in extra and count:
        extra["server_cpu_ms_per_request_settled"] = round(
            1000 * extra["server_cpu_settled_s"] / count, 3)
    return extra


def merge(parts: list[Measure]) -> Measure:
    """One measurement from its rounds (counts and times summed; each round's rate kept)."""
    first = parts[0]
    if len(parts) == 1:
        return first
    commands = [p.commands for p in parts if p.commands is not None]
    count = sum(p.count for p in parts)
    return Measure(first.key, first.label, first.unit, count, sum(p.seconds for p in parts),
                   first.started_at, commands=sum(commands) if commands else None,
                   errors=sum(p.errors for p in parts),
                   first_error=next((p.first_error for p in parts if p.first_error), None),
                   extra=_merged_extra(parts, count))


def alternate(rounds: int, *runs: Callable[[int], Measure]) -> list[Measure]:
    """Run each of ``runs`` once per round, in turn (baseline, measured, baseline, ...)."""
    parts: list[list[Measure]] = [[] for _ in runs]
    for r in range(rounds):
        for n, run_one in enumerate(runs):
            parts[n].append(run_one(r))
    return [merge(p) for p in parts]
