"""Measurement 3: event encryption's cost on ``bench append``: its in-process command path
with the personal fields of the events sealed under per-subject keys (``core.sealed``, the
keys in ``privacy.keystore``), against the same commands in the clear, on a fresh store of
each backend, in alternating rounds."""

from __future__ import annotations

from typing import Any

from bench.privacy.workload import Sizes
from bench.table import Row

#: the goal: sealed commands/s at least this share of the clear ones (under 10% slower)
GOAL_SHARE = 0.9

NOTES = [
    ("event encryption: bench append's command path (Ledger.execute, group commit, one "
     "thread) on a fresh store, the personal fields of its events sealed (AES-256-GCM under "
     "each subject's key from the key store) against the same commands in the clear, "
     "alternating rounds; the cost is 1 - sealed/clear"),
]


def measure(backend: str, sizes: Sizes) -> tuple[dict[str, Any], list[Row]]:
    """Both variants on ``backend``: their rates and the row."""
    from bench.append import sealed

    data: dict[str, Any] = sealed.measure_sealed(backend, sizes.seconds, sizes.repetitions)
    share = data["sealed_rate"] / data["clear_rate"]
    data["share"] = round(share, 3)
    row = Row(backend, "event_encryption",
              f"bench append's command path ({data['workload']}), personal fields sealed",
              f"{data['sealed_rate']:,.0f} cmd/s", f"{data['clear_rate']:,.0f} cmd/s (clear)",
              f"{share:.3f}x ({100 * (1 - share):+.1f}% cost)", f">= {GOAL_SHARE:g}x",
              share >= GOAL_SHARE, data)
    return data, [row]
