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

import pytest

from tests.conftest import free_port

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


def lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]
