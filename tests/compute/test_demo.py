"""``dataledger demo finance`` end to end: a real ``serve`` (server venv) that starts the
embedded compute node host (this venv) with three providers' in-process PySyft datasites.

The demo checks its own claims (and exits 1 if one fails); this test runs it as a user
would and reads what it printed and left on disk: no secret in any log it left nor in what
it printed, no private value outside a provider's own log (``logscan.py``), and the node's
credentials readable by the node's user only.
"""

from __future__ import annotations

import csv
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from tests.compute import logscan

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / ".venv" / "bin" / "dataledger"


def test_demo_finance_delivers_scores_for_the_asked_enterprises_only(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATALEDGER_")}
    done = subprocess.run([str(SERVER), "demo", "finance", "--data-dir", str(data),
                           "--enterprises", "400", "--asked", "12", "--timeout", "480"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=880,
                          check=False)
    out = done.stdout
    log = (data / "serve.log").read_text(errors="replace") if (data / "serve.log").exists() \
        else ""
    assert done.returncode == 0, f"{out}\n{done.stderr}\n--- serve.log ---\n{log[-6000:]}"
    held = re.search(r"(\d+) of (\d+) checks held", out)
    assert held and held.group(1) == held.group(2), out
    assert "FAIL" not in out
    # the bank's lines show points per credit code, never a private value
    bank = [line for line in out.splitlines() if line.strip().startswith("[bank]")]
    assert any(re.search(r"\b[0-9A-Y]{18}\s+-?\d+ points", line) for line in bank), out
    with (data / "source-data" / "tax.private.csv").open(encoding="utf-8") as handle:
        tax_paid = {row["tax_paid_yuan_12m"] for row in csv.DictReader(handle)}
    printed = set(re.findall(r"\b\d{5,}\b", "\n".join(bank)))
    assert not printed & tax_paid
    # three providers enrolled, each followed the log
    positions = list((data / "node" / "positions").glob("*.json"))
    assert len(positions) == 3
    assert len(list((data / "node" / "providers").glob("*.json"))) == 3
    no_secret_nor_private_value_in_the_logs(data, out + done.stderr)
    credentials_are_the_node_users_only(data / "node")


#: the private columns whose values are long enough to be looked for in the logs
PRIVATE_COLUMNS = {"tax": ["tax_paid_yuan_12m", "tax_arrears_yuan"],
                   "power": ["power_kwh_12m"]}


def no_secret_nor_private_value_in_the_logs(data: Path, printed: str) -> None:
    secrets = logscan.node_secrets(data / "node")
    assert len(secrets) == 9  # three providers: a token and two passwords each
    private: dict[str, str] = {}
    for view, columns in PRIVATE_COLUMNS.items():
        private.update(logscan.private_values(data / "source-data" / f"{view}.private.csv",
                                              columns))
    assert len(private) >= 5
    assert (data / "serve.log").exists() and len(list(data.rglob("private.log"))) == 3
    leaks = logscan.scan([data], secrets=secrets, private=private,
                         texts={"what the demo printed": printed})
    assert not leaks, "\n".join(map(str, leaks[:30]))


def credentials_are_the_node_users_only(node: Path) -> None:
    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    for directory in (node, *(node / sub for sub in ("providers", "positions", "nodes",
                                                     "jobs", "datasites"))):
        assert mode(directory) == 0o700, directory
    for path in (*node.glob("providers/*.json"), *node.glob("positions/*.json"),
                 *node.rglob("private.log"), *node.rglob("node.lock"), node / "host.lock",
                 node / "trust.json"):
        assert mode(path) == 0o600, path
