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
                               "seconds": 0.3, "repetitions": 1, "seed": 15}
    assert "--rows 300 --deliveries 12 --trace-rows 200 --repetitions 1" in report["command"]
    assert {"cpu_count", "python", "date"} <= set(report["machine"])
    assert [r["backend"] for r in report["results"]] == ["-", "sqlite"]
    assert all("error" not in r for r in report["results"])
    assert isinstance(report["all_goals_met"], bool) and report["notes"]
    for row in report["table"]:
        assert {"backend", "key", "measure", "value", "baseline", "ratio", "goal", "met",
                "data"} <= set(row)
    keys = {row["key"]: row for row in report["table"]}
    assert set(keys) == {"mask_watermark", "trace_leak", "trace_leak_parquet",
                         "trace_no_match", "event_encryption_1", "event_encryption_16",
                         "event_encryption_cipher_1", "event_encryption_cipher_16",
                         "trace_leak_command"}

    delivered = report["results"][0]["delivered"]
    assert delivered["rows"] == 300 and delivered["marked_cells"] > 0
    assert set(delivered["median"]["marked"]) == {"mask_s", "mark_s", "encode_s", "total_s"}
    assert set(delivered["median"]["unmarked"]) == {"encode_s", "total_s"}
    assert delivered["applied"]["account"] == "L4:account:withheld"
    assert delivered["applied"]["phone"] == "L3:phone:partial"

    trace = report["results"][0]["trace"]
    assert trace["deliveries"] == 12 and trace["leak_rows"] == 100
    assert trace["right"] is True and trace["parquet_right"] is True  # the right delivery
    assert trace["no_match"] is True and trace["never_delivered"]["confidence"] is None
    assert trace["match"]["candidates"] == 12 and trace["match"]["confidence"].startswith("1 - ")
    assert keys["trace_leak"]["met"] is not False and keys["trace_no_match"]["met"] is True

    command = report["results"][1]["trace_command"]
    assert command["deliveries"] == 12 and command["demanders"] == 10
    assert command["right"] is True and command["notes"] == []  # the right delivery named
    assert command["answer"]["candidates"] == 12 and command["answer"]["seqs"]
    assert command["answer"]["match"]["delivery_id"] == command["leaked"]
    assert command["start_up_s"] > 0 and len(command["runs_s"]) == 1

    sealing = report["results"][1]["sealing"]
    assert sealing["name_sealed_on_log"] is True
    assert {m["key"] for m in sealing["measures"]} == {
        f"{variant}_{threads}" for variant in ("clear", "sealed", "cipher") for threads in (1, 16)}
    assert all(m["errors"] == 0 and m["commands"] > 0 for m in sealing["measures"])
    assert set(sealing["steps_us"]) == {"issue_us", "batch_store_ms", "batch", "seal_us"}


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


@pytest.mark.postgres
def test_bench_privacy_sealing_on_postgresql(pg_available: None) -> None:
    # measurement 3 on a fresh PostgreSQL schema (its key store a table there; dropped)
    from bench.privacy import sealing
    from bench.privacy.workload import Sizes

    data, rows = sealing.measure("postgresql", Sizes(seconds=0.3, repetitions=1))
    assert data["backend"] == "postgresql" and data["name_sealed_on_log"] is True
    assert [r.key for r in rows] == ["event_encryption_1", "event_encryption_cipher_1",
                                     "event_encryption_16", "event_encryption_cipher_16"]
    assert all(m["errors"] == 0 and m["commands"] > 0 for m in data["measures"])
    assert data["notes"] == []  # the schema was dropped
