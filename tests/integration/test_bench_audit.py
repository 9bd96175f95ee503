"""``dataledger bench audit`` on a small log: its generated bundle is one the regulator's
replay accepts in full (records, tree, signatures, consistency, index, business rules), and
the suite writes its JSON with the replay and self-proof rows. No figure is judged here."""

from __future__ import annotations

import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from bench import run
from bench.audit import suite

REPO = Path(__file__).resolve().parents[2]


def test_the_bench_log_replays_clean_and_the_suite_writes_its_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(suite, "QUICK_EVENTS", 2500)
    monkeypatch.setattr(suite, "CACHE", tmp_path / "cache")
    out = tmp_path / "audit.json"
    code = run.main(Namespace(suite="audit", backend="sqlite", json=str(out), quick=True))
    report = json.loads(out.read_text())
    result = report["results"][0]
    assert code == 0, result.get("error")
    assert result["bundle"]["events"] == 2500 and result["bundle"]["index"] is True
    assert result["replay"]["replay"]["ok"] is True
    assert result["replay"]["events"] == 2500
    keys = {row["key"] for row in report["table"]}
    assert {"replay_ratio", "replay_cpu", "selfproof_10", "selfproof_10_size"} <= keys
    small = next(p for p in result["selfproofs"] if p["target"] == 10)
    assert small["verified_events"] == small["events"] > 0

    # the same bundle, replayed by the command a regulator runs, with the trust file
    # handed over beside it: every step holds
    made = Path(result["bundle"]["path"])
    done = subprocess.run(
        [sys.executable, "-m", "cli", "audit", "replay", "--bundle", str(made),
         "--trust", str(made.parent / "trust.json"), "--json", str(tmp_path / "replay.json")],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    replayed = json.loads((tmp_path / "replay.json").read_text())
    assert replayed["ok"] is True and replayed["events"] == 2500
    assert all(step["status"] in ("passed", "skipped") for step in replayed["steps"])
