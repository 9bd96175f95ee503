"""``dataledger bench privacy`` at small sizes: the command runs every measurement (masking
and watermarking a result against writing it unmarked, the leak trace among the
deliveries, event encryption on bench append's command path), the JSON holds the figures
docs/BENCHMARKS.md reports, and the trace names the right delivery. No figure is judged
here; sizes out of bounds are refused naming the option."""

from __future__ import annotations

import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_bench_privacy_runs_and_writes_its_json(tmp_path: Path) -> None:
    from bench import run

    out = tmp_path / "privacy.json"
    code = run.main(Namespace(suite="privacy", backend="sqlite", json=str(out), quick=True,
                              rows=300, deliveries=12, trace_rows=200, repetitions=1))
    report = json.loads(out.read_text())
    assert code == 0, [r.get("error") for r in report["results"]]
    assert report["suite"] == "privacy" and report["quick"] is True
    assert report["sizes"] == {"rows": 300, "deliveries": 12, "trace_rows": 200,
                               "seconds": 1.0, "repetitions": 1, "seed": 15}
    assert "--rows 300 --deliveries 12 --trace-rows 200 --repetitions 1" in report["command"]
    assert {"cpu_count", "python", "date"} <= set(report["machine"])
    assert [r["backend"] for r in report["results"]] == ["-", "sqlite"]
    assert all("error" not in r for r in report["results"])
    assert isinstance(report["all_goals_met"], bool) and report["notes"]
    for row in report["table"]:
        assert {"backend", "key", "measure", "value", "baseline", "ratio", "goal", "met",
                "data"} <= set(row)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--deliveries", "1", "--deliveries must be 2 to 100,000, not 1"),
    ("--rows", "5", "--rows must be 10 to 10,000,000, not 5"),
])
def test_bench_privacy_refuses_sizes_out_of_bounds(tmp_path: Path, option: str, value: str,
                                                   message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli", "bench", "privacy", "--quick", option, value,
         "--json", str(tmp_path / "p.json")],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "p.json").exists()
