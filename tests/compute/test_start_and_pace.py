"""What makes a node start fast after a restart and run executions at once at pace (issue 11,
docs/BENCHMARKS.md "Run 5"): the lean import of PySyft, clients made without a password check
on the node's own datasite, the input cache, no inbox notices, and the PySyft lock granted
oldest first. Each keeps the datasite fully working; the checks here say so.

Runs inside the compute venv only: ``compute_nodes/setup-env test``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from compute_nodes import datasite
from compute_nodes.executor import OldestFirst
from compute_nodes.host import RUNNER_EMAIL
from compute_nodes.sandbox import Sandbox

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
CODE = '''def score(data):
    return [{"uscc": u, "points": int(t // 1000)}
            for u, t in zip(data["uscc"], data["tax_paid_yuan"])]
'''


def test_oldest_first_grants_the_oldest_waiter() -> None:
    lock = OldestFirst()
    order: list[float] = []
    started = threading.Event()

    def holder() -> None:
        with lock.turn(0.0):
            started.set()
            time.sleep(0.3)  # the others queue meanwhile, youngest first

    def waiter(age: float) -> None:
        with lock.turn(age):
            order.append(age)

    first = threading.Thread(target=holder)
    first.start()
    started.wait(5)
    threads = [threading.Thread(target=waiter, args=(age,)) for age in (5.0, 3.0, 4.0, 1.0)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in [first, *threads]:
        t.join(10)
    assert order == [1.0, 3.0, 4.0, 5.0]


def test_lean_import_leaves_the_datasite_working(tmp_path: Path) -> None:
    """In a fresh interpreter, as the fork server does: no notebook machinery imported, and a
    datasite launched, loaded, requested, approved, run and deposited; the HTML table PySyft
    renders still works (itables imported then)."""
    script = f'''
import sys
sys.path.insert(0, {str(ROOT)!r})
from compute_nodes import lean_import
assert lean_import.install()
from compute_nodes import datasite
from compute_nodes.sandbox import Sandbox
import pandas as pd
heavy = [m for m in ("matplotlib", "pandas.io.formats.style", "IPython.terminal",
                     "itables.javascript") if m in sys.modules]
assert not heavy, heavy
import IPython
assert IPython.get_ipython() is None
tmp = {str(tmp_path)!r}
pd.DataFrame({{"uscc": ["a", "b"], "tax_paid_yuan": [1000, 5000]}}).to_csv(tmp + "/p.csv", index=False)
pd.DataFrame({{"uscc": ["m"], "tax_paid_yuan": [2000]}}).to_csv(tmp + "/m.csv", index=False)
site = datasite.launch("lean-site", data_dir=tmp + "/ds", reset=True, admin_password="pw-admin-1")
admin = site.admin()
runner = datasite.data_scientist(site, admin, "r@lean.example", "pw-runner-1")
datasite.load_dataset(admin, "d1", tmp + "/p.csv", tmp + "/m.csv")
with Sandbox(hide=[tmp]) as sandbox:
    rid = datasite.submit(runner, {CODE!r}, "score", ["d1"], "k#1#p")
    got = datasite.approve_and_run(admin, rid, ["d1"], sandbox)
assert got == [{{"uscc": "a", "points": 1}}, {{"uscc": "b", "points": 5}}], got
assert datasite.prepare_run(admin, rid, ["d1"]).value == got
from syft.util.table import itable_template_from_df
assert itable_template_from_df(pd.DataFrame({{"a": [1]}}))
site.land()
print("ok")
'''
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True,
                          text=True, timeout=110, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("pace")
    pd.DataFrame({"uscc": ["a", "b"], "tax_paid_yuan": [1000, 5000]}).to_csv(tmp / "p.csv",
                                                                          index=False)
    pd.DataFrame({"uscc": ["m"], "tax_paid_yuan": [2000]}).to_csv(tmp / "m.csv", index=False)
    made = datasite.launch("pace-site", data_dir=tmp / "ds", reset=True,
                           admin_password="pw-admin-2")
    admin = made.admin()
    runner = datasite.data_scientist(made, admin, RUNNER_EMAIL, "pw-runner-2")
    datasite.load_dataset(admin, "d1", tmp / "p.csv", tmp / "m.csv")
    yield made, admin, runner, tmp
    made.land()


def test_session_is_the_accounts_client(site) -> None:
    made, admin, runner, _ = site
    again_admin, again_runner = made.session(made.admin_email), made.session(RUNNER_EMAIL)
    assert again_admin.credentials.verify_key == admin.credentials.verify_key
    assert again_runner.credentials.verify_key == runner.credentials.verify_key
    assert (again_admin.logged_in_user, again_runner.logged_in_user) == (
        made.admin_email, RUNNER_EMAIL)
    assert again_runner.api.services.user.get_current_user().email == RUNNER_EMAIL
    with pytest.raises(datasite.SyftException):
        made.session("nobody@pace.example")


def test_cached_inputs_and_no_notices(site) -> None:
    _, admin, runner, tmp = site
    cache = datasite.Inputs()
    hashes = datasite.input_hashes(admin, ["d1"], cache=cache)
    assert hashes == datasite.input_hashes(admin, ["d1"])
    with Sandbox(hide=[tmp]) as sandbox:
        for key in ("c1#1#p", "c2#1#p"):
            rid = datasite.submit(runner, CODE, "score", ["d1"], key, cache=cache)
            run = datasite.prepare_run(admin, rid, ["d1"], cache=cache)
            assert isinstance(run, datasite.Run)
            value = sandbox.run(run.code_source, run.function_name, run.inputs).value
            datasite.deposit(admin, rid, value, run=run)
            assert datasite.prepare_run(admin, rid, ["d1"], cache=cache).value == value
    # the table handed over is the one loaded; asked again, it is the one kept
    assert cache.table(admin, "d1") is cache.table(admin, "d1")
    cache.forget("d1")
    assert cache.table(admin, "d1").equals(pd.read_csv(tmp / "p.csv"))
    with pytest.raises(datasite.DatasetMissingError):
        cache.asset(admin, "d2")
    # code requests and approvals leave no inbox notices behind
    assert list(admin.api.services.notifications.get_all()) == []
