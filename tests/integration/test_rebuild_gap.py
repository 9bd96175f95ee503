"""``dataledger projections rebuild`` over a log with a missing seq: refused, exit 1, the
missing seq named, the read models left as they were; and nothing catches up past it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from events.store import LogGapError
from runtime.build import build
from runtime.settings import Settings

TOKEN = "dl_test_admin_token_0123456789abcdef"


def gapped_store(data: Path) -> int:
    """A SQLite store made by serve's build, then seq 2 deleted behind the API; its head."""
    settings = Settings(data_dir=data, admin_token=TOKEN, compute_node="false")
    container = build(settings, start_background=False)
    head = container.store.max_seq()
    container.close()
    assert head >= 3
    with sqlite3.connect(data / "ledger.db") as db:
        tables = [name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table'") if "event" in name]
        table = next(t for t in tables if "rowid" not in t and db.execute(
            f"SELECT COUNT(*) FROM {t}").fetchone()[0] == head)
        db.execute(f"DELETE FROM {table} WHERE rowid = 2")
    return head


def rebuild(data: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATALEDGER_DATA_DIR": str(data), "DATALEDGER_ADMIN_TOKEN": TOKEN,
           "DATALEDGER_COMPUTE_NODE": "false"}
    return subprocess.run([sys.executable, "-m", "cli", "projections", "rebuild"], env=env,
                          check=False, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parents[2])


def test_rebuild_refuses_a_log_with_a_gap_and_drops_nothing(tmp_path: Path) -> None:
    data = tmp_path / "var"
    gapped_store(data)
    views = (data / "views.db").read_bytes()
    for _ in range(2):  # refused, and refused again: the read models are as they were
        out = rebuild(data)
        assert out.returncode == 1, out.stdout + out.stderr
        assert "seq 2 is missing" in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert "rebuilt" not in out.stdout
    assert (data / "views.db").read_bytes() == views


def test_read_models_behind_a_gap_do_not_catch_up_past_it(tmp_path: Path) -> None:
    data = tmp_path / "var"
    gapped_store(data)
    (data / "views.db").unlink()  # the read models start again from seq 1
    out = rebuild(data)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "seq 2 is missing" in out.stderr and "Traceback" not in out.stderr, out.stderr
    settings = Settings(data_dir=data, admin_token=TOKEN, compute_node="false")
    with pytest.raises(LogGapError) as refused:
        build(settings, start_background=False)
    assert (refused.value.missing, refused.value.found) == (2, 3)
