"""The joint computation's part of ``dataledger bench joint`` (server venv): the datasites'
half run in the compute venv (``bench.joint.datasites``), then the platform's side on the
parts it wrote, beside the clear sum of the same outputs, and the table rows.

Clear mode, end to end: each provider's product run, its output and result bytes (at the
datasites), then the sum per key of the three outputs as received (parsed, added up).
Joint mode: each provider's product run, output, layout, vector, fixed point, masking and
part bytes (at the datasites), then ``core.secagg.aggregate`` over the parts, the joint
table (key -> summed values) and its hash, with the aggregation node's own functions. The joint table must equal the clear sums over the layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.joint.workload import KEY_COLUMN, RESULT_MARK, VALUE_COLUMNS, Sizes, joint_stand_in
from bench.table import Row
from core import secagg

ROOT = Path(__file__).resolve().parent.parent.parent
GOAL_RATIO = 3.0
#: what a datasite's time is in each mode (the steps bench.joint.datasites times)
CLEAR_STEPS = ("product_s", "output_s", "bytes_s")
JOINT_STEPS = ("product_s", "output_s", "layout_s", "vector_s", "to_fixed_s", "mask_s",
               "bytes_s")


def run_datasites(sizes: Sizes, work: Path, timeout_s: float) -> dict[str, Any]:
    """``bench.joint.datasites`` in the compute venv; its result."""
    from runtime.settings import Settings

    (work / "config.json").write_text(json.dumps({"sizes": asdict(sizes), "work": str(work)}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run([str(Settings().compute_python), "-m", "bench.joint.datasites",
                           str(work / "config.json")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout_s, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the datasites' half failed (rc {done.returncode}): "
                           f"{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_MARK):])
    return result


def clear_sum(bodies: list[bytes]) -> dict[str, dict[str, int]]:
    """The clear mode's last step: the providers' outputs as received, summed per key."""
    total: dict[str, dict[str, int]] = {}
    for body in bodies:
        for row in json.loads(body):
            sums = total.setdefault(row[KEY_COLUMN], dict.fromkeys(VALUE_COLUMNS, 0))
            for column in VALUE_COLUMNS:
                sums[column] += row[column]
    return total


def joint_sum(parts: list[secagg.MaskedPart], execution_id: str, providers: list[str],
              layout: list[str]) -> dict[str, dict[str, int | float]]:
    """The aggregation node's step, with its own functions: the parts summed
    (``secagg.aggregate``), the joint table (``aggregation.service.joint_table``: integer
    columns divided exactly) and the sha256 of its canonical JSON that ``joint.published``
    records."""
    from aggregation import service

    sums = secagg.aggregate(parts, execution_id, providers)
    table = service.joint_table(joint_stand_in(providers), layout, sums,
                                ["integer"] * len(VALUE_COLUMNS))
    hashlib.sha256(service.table_json(table)).hexdigest()
    return table


def _median_time(fn: Callable[[], Any], runs: int) -> tuple[float, list[float], Any]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def platform_side(sizes: Sizes, work: Path, site: dict[str, Any]) -> dict[str, Any]:
    """Both modes' last step, timed on the files the datasites wrote, and the check that
    the joint table equals the clear sums over the layout."""
    providers = site["providers"]
    bodies = [(work / f"{p}.clear.json").read_bytes() for p in providers]
    parts = [secagg.MaskedPart(json.loads((work / f"{p}.part.json").read_text()),
                               (work / f"{p}.part.body").read_bytes()) for p in providers]
    layout = json.loads((work / "layout.json").read_text())
    runs = max(3, sizes.repetitions)
    clear_s, clear_all, clear = _median_time(lambda: clear_sum(bodies), runs)
    joint_s, joint_all, joint = _median_time(
        lambda: joint_sum(parts, site["execution_id"], providers, layout), runs)
    expected = {key: clear.get(key, dict.fromkeys(VALUE_COLUMNS, 0)) for key in layout}
    return {"clear_sum_s": clear_s, "clear_sum_runs_s": clear_all,
            "aggregate_s": joint_s, "aggregate_runs_s": joint_all,
            "joint_equals_clear": joint == expected,
            "keys_outside_layout": len(set(clear) - set(layout))}


def _datasite_times(site: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per provider and mode: the median total and the median of each step."""
    out: dict[str, dict[str, Any]] = {}
    for p in site["providers"]:
        out[p] = {}
        for mode, steps in (("clear", CLEAR_STEPS), ("joint", JOINT_STEPS)):
            reps = [r[p][mode] for r in site["repetitions"]]
            totals = [sum(rep[s] for s in steps) for rep in reps]
            out[p][mode] = {"total_s": statistics.median(totals), "totals_s": totals,
                            "steps_s": {s: statistics.median(rep[s] for rep in reps)
                                        for s in steps}}
    return out


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:,.1f} ms"


def joint_rows(sizes: Sizes, site: dict[str, Any], platform: dict[str, Any]) -> list[Row]:
    """A row per provider, the datasites together (the goal), and end to end."""
    times = _datasite_times(site)
    rows = []
    for p, view in zip(site["providers"], site["views"], strict=True):
        c, j = times[p]["clear"], times[p]["joint"]
        s = j["steps_s"]
        masking = s["layout_s"] + s["vector_s"] + s["to_fixed_s"] + s["mask_s"] + s["bytes_s"]
        ratio = j["total_s"] / c["total_s"]
        rows.append(Row("datasite", f"joint_{p}",
                        f"{p} ({view}), {site['rows'][p]:,} rows: product + layout, vector, "
                        f"to_fixed, mask, part ({_ms(masking)} of it)",
                        _ms(j["total_s"]), f"{_ms(c['total_s'])} (product + result bytes)",
                        f"{ratio:.2f}x", f"<= {GOAL_RATIO:g}x", ratio <= GOAL_RATIO,
                        {"joint": j, "clear": c}))
    joint_total = sum(times[p]["joint"]["total_s"] for p in site["providers"])
    clear_total = sum(times[p]["clear"]["total_s"] for p in site["providers"])
    ratio = joint_total / clear_total
    n = len(site["providers"])
    rows.append(Row("datasite", "joint_datasites",
                    f"the {n} datasites together, {sizes.rows:,} rows each, masking included",
                    _ms(joint_total), f"{_ms(clear_total)} (clear)", f"{ratio:.2f}x",
                    f"<= {GOAL_RATIO:g}x", ratio <= GOAL_RATIO,
                    {"joint_s": joint_total, "clear_s": clear_total}))
    same = platform["joint_equals_clear"]
    e2e_joint = joint_total + platform["aggregate_s"]
    e2e_clear = clear_total + platform["clear_sum_s"]
    rows.append(Row("platform", "joint_aggregate",
                    f"aggregation: secagg.aggregate of {n} parts + joint table of "
                    f"{site['layout_length']:,} keys"
                    + ("" if same else " [joint table DIFFERS from the clear sum]"),
                    _ms(platform["aggregate_s"]),
                    f"{_ms(platform['clear_sum_s'])} (the outputs parsed and summed per key)",
                    f"{platform['aggregate_s'] / platform['clear_sum_s']:.2f}x", "equal sums",
                    same, platform))
    rows.append(Row("both", "joint_end_to_end",
                    "datasites + aggregation against datasites + clear sum (information)",
                    _ms(e2e_joint), _ms(e2e_clear), f"{e2e_joint / e2e_clear:.2f}x", "-", None,
                    {"joint_s": e2e_joint, "clear_s": e2e_clear}))
    return rows


def measure(sizes: Sizes) -> tuple[dict[str, Any], list[Row]]:
    """The datasites' half, then the platform's side; the result and its rows."""
    with tempfile.TemporaryDirectory(prefix="dataledger-bench-joint-") as tmp:
        work = Path(tmp)
        site = run_datasites(sizes, work, timeout_s=120 + 0.02 * sizes.rows * sizes.providers
                             * (sizes.repetitions + 1))
        platform = platform_side(sizes, work, site)
    return {"datasites": site, "platform": platform}, joint_rows(sizes, site, platform)
