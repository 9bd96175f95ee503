"""``dataledger bench joint`` at small sizes: the command runs every part (the datasites'
half in the compute venv; the hidden query in process and over HTTP against a real server
whose aggregation node publishes the table), its joint table equals the clear sum, every
hidden-query answer is right, and the JSON holds the figures docs/BENCHMARKS.md reports.
No figure is judged here; sizes out of bounds are refused naming the option."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.joint import hidden, served
from bench.joint.workload import Sizes
from runtime.settings import Settings
from tests.conftest import require_service

REPO = Path(__file__).resolve().parents[2]


def test_bench_joint_runs_and_writes_its_json(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    venv = Settings().compute_python
    require_service("the compute venv (compute_nodes/setup-env)",
                    None if venv.exists() else f"{venv} does not exist")
    monkeypatch.setattr(hidden, "CACHE", tmp_path / "tables")
    out = tmp_path / "joint.json"
    from argparse import Namespace

    from bench import run

    code = run.main(Namespace(suite="joint", backend="sqlite", json=str(out), quick=True,
                              rows=300, providers=3, codes=20, table_rows=200,
                              repetitions=1))
    report = json.loads(out.read_text())
    result = report["results"][0]
    assert code == 0, result.get("error")
    assert report["sizes"] == {"rows": 300, "providers": 3, "codes": 20, "table_rows": 200,
                               "repetitions": 1, "seed": 14}
    assert "--rows 300 --providers 3 --codes 20 --table-rows 200" in report["command"]
    keys = {row["key"]: row for row in report["table"]}
    assert {"joint_provider-0", "joint_provider-1", "joint_provider-2", "joint_datasites",
            "joint_aggregate", "joint_end_to_end", "hidden_query", "hidden_table_prepare",
            "hidden_table_publication", "hidden_query_http", "hidden_publish_http"} == set(keys)
    site = result["joint"]["datasites"]
    assert site["layout_length"] == 300 and site["rows"]["provider-1"] == 300
    steps = keys["joint_provider-1"]["data"]["joint"]["steps_s"]
    assert set(steps) == {"product_s", "output_s", "layout_s", "vector_s", "to_fixed_s",
                          "mask_s", "bytes_s"}
    platform = result["joint"]["platform"]
    assert platform["joint_equals_clear"] is True and keys["joint_aggregate"]["met"] is True
    assert platform["keys_outside_layout"] == 2 * 15  # 5% of each non-layout provider's
    query = result["hidden"]
    assert query["answers_right"] is True
    assert query["codes"] == 20 and query["members"] == 10
    assert query["publication"]["same"] is True
    assert query["table"]["from_cache"] is False
    assert (tmp_path / "tables" / "table-200-14.table").stat().st_mode & 0o077 == 0
    http = report["results"][1]
    assert http["backend"] == "sqlite" and "error" not in http
    served = http["served"]
    assert served["answers_right"] is True and served["rows"] == 200
    assert served["codes"] == 20 and served["members"] == 10
    assert served["download"]["bytes"] > 0 and len(served["posts_s"]) == 1
    assert keys["hidden_query_http"]["backend"] == "sqlite"

    # a second run reads the sealed table back instead of preparing it again
    again = hidden.measure(Sizes(**report["sizes"]))
    assert again["table"]["from_cache"] is True and again["answers_right"] is True


@pytest.mark.postgres
def test_bench_joint_hidden_query_over_http_on_postgresql(pg_available: None) -> None:
    # the HTTP rows' server on a fresh PostgreSQL schema (dropped at the end)
    notes: list[str] = []
    r = served.measure(Sizes(rows=100, codes=20, table_rows=200, repetitions=1),
                       "postgresql", notes)
    assert r["backend"] == "postgresql" and r["rows"] == 200
    assert r["answers_right"] is True and r["members"] == 10
    assert r["download"]["bytes"] > 0 and r["publish_s"] > 0
    assert notes == []  # the schema was dropped


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--providers", "1", "--providers must be 2 to 64, not 1"),
    ("--codes", "500", "--codes (500) must not exceed --table-rows (200)"),
])
def test_bench_joint_refuses_sizes_out_of_bounds(tmp_path: Path, option: str, value: str,
                                                 message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli", "bench", "joint", "--quick", "--table-rows", "200",
         option, value, "--json", str(tmp_path / "j.json")],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "j.json").exists()
