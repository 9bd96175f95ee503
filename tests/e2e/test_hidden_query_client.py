"""``dataledger client hidden-query`` as a bank's operator runs it: the codes from a file,
stdin or the arguments, the token from ``DATALEDGER_TOKEN`` only, one JSON line per code;
exit 2 for bad input, 1 when the platform refuses or cannot be reached, and never a stack
trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from client import platform as client_platform
from tests.conftest import free_port
from tests.e2e.conftest import World
from tests.e2e.joint_market import (
    CODES,
    OUTSIDERS,
    joint_market,
    plain_sum,
    published,
)

REPO = Path(__file__).parents[2]


def client(*args: str, token: str | None = "dl_some_bank_member_token_000000",
           stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``dataledger client hidden-query ARGS`` in a process of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATALEDGER_")}
    if token is not None:
        env["DATALEDGER_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "cli", "client", "hidden-query", *args],
                          env=env, cwd=REPO, input=stdin, capture_output=True, text=True,
                          timeout=120, check=False)


def nowhere() -> str:
    """A URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize(("args", "token", "says"), [
    (["--order", "o", "91310115MA0000001X"], None, "set DATALEDGER_TOKEN"),
    (["--order", "o"], "dl_t", "no code given"),
    (["--order", "o", "--codes-file", "/no/such/file"], "dl_t",
     "--codes-file /no/such/file: No such file or directory"),
    (["--order", "o", "--codes-file", "-", "91310115MA0000001X"], "dl_t",
     "either with --codes-file or as arguments, not both"),
    (["--order", "o", "x" * 257], "dl_t", "1 to 256 bytes"),
    (["--order", "o", "--token", "dl_t", "c"], "dl_t", "unrecognized arguments: --token"),
    (["c"], "dl_t", "the following arguments are required: --order"),
])
def test_bad_input_exits_2_saying_what_is_wrong(args: list[str], token: str | None,
                                                says: str) -> None:
    done = client("--url", nowhere(), *args, token=token)
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr


def test_an_unreachable_platform_exits_1(tmp_path: Path) -> None:
    codes = tmp_path / "codes.txt"
    codes.write_text("# applicants\n91310115MA0000001X\n\n91310115MA0000002X\n",
                     encoding="utf-8")
    url = nowhere()
    done = client("--url", url, "--order", "o", "--codes-file", str(codes))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"--url {url}:" in done.stderr and "Traceback" not in done.stderr
    assert "91310115MA0000001X" not in done.stderr


def lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


# -- against the platform (the test app, on SQLite and PostgreSQL) ---------------------------


class _Shared(client_platform.Platform):
    """The test app's client, left open when the command is done with it."""

    def close(self) -> None:
        pass


@pytest.fixture
def settings_changes() -> dict[str, Any]:
    return {"aggregation_sweep_seconds": 3600}


@pytest.fixture
def served(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    """``dataledger client`` in this process, talking to the test app."""
    monkeypatch.setattr(client_platform.Platform, "at",
                        classmethod(lambda cls, url, timeout=30: _Shared(world.client)))
    return world


def run_in_process(args: list[str], token: str, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    monkeypatch.setenv("DATALEDGER_TOKEN", token)
    code = main(["client", "hidden-query", "--url", "http://testserver", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_bank_gets_one_json_line_per_code_and_the_table_once(
        served: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    jm = published(served, query_count=100)
    members = [CODES[5], CODES[17], CODES[30]]
    asked = [members[0], OUTSIDERS[0], members[1], members[2], OUTSIDERS[1], members[0]]
    codes = tmp_path / "applicants.txt"
    codes.write_text("# the bank's applicants\n" + "\n".join(asked) + "\n", encoding="utf-8")
    cache = tmp_path / "tables"
    code, out, err = run_in_process(["--order", jm.order_id, "--codes-file", str(codes),
                                     "--cache-dir", str(cache)], jm.demander.token,
                                    monkeypatch, capsys)
    assert code == 0, err
    expected = plain_sum()
    assert lines(out) == [  # in the order given, a repeated code once
        {"code": members[0], "row": {"credit_code": members[0], **expected[members[0]]}},
        {"code": OUTSIDERS[0], "row": None},
        {"code": members[1], "row": {"credit_code": members[1], **expected[members[1]]}},
        {"code": members[2], "row": {"credit_code": members[2], **expected[members[2]]}},
        {"code": OUTSIDERS[1], "row": None}]
    assert "5 code(s) looked up, 3 in the table" in err
    view = served.call("GET", f"/joint/{jm.joint_id}", jm.demander)
    assert (view["queries"], view["queried"]) == (1, 5)
    (kept,) = cache.iterdir()
    assert kept.name == f"{view['table_digest']}.table"
    # the second query opens its rows in the cached table: not downloaded again
    monkeypatch.setattr(client_platform.Platform, "joint_table",
                        lambda *a, **k: pytest.fail("the cached table was downloaded again"))
    code, out, _ = run_in_process(["--order", jm.order_id, "--joint", jm.joint_id,
                                   "--cache-dir", str(cache), CODES[0]], jm.demander.token,
                                  monkeypatch, capsys)
    assert code == 0
    assert lines(out) == [{"code": CODES[0], "row": {"credit_code": CODES[0],
                                                     **expected[CODES[0]]}}]


def test_a_refusal_exits_1_and_a_wrong_order_2(
        served: World, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    jm = published(served, query_count=2)
    other_bank = served.onboard("demander", "Another bank 另一家银行")
    for joint in ([], ["--joint", jm.joint_id]):  # another bank's order is not one it sees
        code, out, err = run_in_process(["--order", jm.order_id, *joint, CODES[1]],
                                        other_bank.token, monkeypatch, capsys)
        assert (code, out) == (2, "")
        assert f"the platform refused: GET /orders/{jm.order_id}: 404" in err
    code, out, err = run_in_process(["--order", jm.order_id, CODES[1], CODES[2], CODES[3]],
                                    jm.demander.token, monkeypatch, capsys)
    assert code == 1 and out == ""
    assert "409" in err and "count_exhausted" in err and CODES[1] not in err
    code, out, err = run_in_process(["--order", "no-such-order", CODES[1]],
                                    jm.demander.token, monkeypatch, capsys)
    assert (code, out) == (2, "") and "GET /orders/no-such-order: 404" in err


def test_nothing_published_yet_exits_1(served: World, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    jm = joint_market(served)
    code, out, err = run_in_process(["--order", jm.order_id, CODES[1]], jm.demander.token,
                                    monkeypatch, capsys)
    assert (code, out) == (1, "")
    assert f"order {jm.order_id} has no published joint table yet" in err
