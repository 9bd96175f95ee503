"""compute_nodes.datasite against real PySyft 0.9.5 datasites (in-process and HTTP on loopback).

Runs inside the compute venv only: ``compute_nodes/setup-env test``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pytest
from syft.types.errors import SyftException

from compute_nodes import datasite, syft_support
from compute_nodes.sandbox import CodeRaised, Sandbox

pytestmark = pytest.mark.timeout(90)

USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # GB 32100-2015: no I, O, S, V, Z
USCC_WEIGHTS = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]
ORG_WEIGHTS = [3, 7, 9, 10, 5, 8, 4, 2]  # GB 11714 organisation code

# A product's registered code: one function taking the table, imports inside.
TAX = "enterprise-tax-power"
SCORE_SOURCE = '''def score(data):
    import time
    good = data[(data["tax_paid_yuan"] > 50_000) & (data["power_kwh"] > 20_000)]
    return {
        "rows": int(len(data)),
        "good": int(len(good)),
        "tax_total": int(data["tax_paid_yuan"].sum()),
        "run_ns": time.perf_counter_ns(),
    }
'''


def uscc(rng: np.random.Generator) -> str:
    """A well-formed 18-character unified social credit code (check characters included)."""
    body = "".join(rng.choice(list(USCC_CHARS), 8))
    org_values = [int(c) if c.isdigit() else ord(c) - 55 for c in body]  # A=10 ... Z=35
    org_check = 11 - sum(w * v for w, v in zip(ORG_WEIGHTS, org_values, strict=True)) % 11
    org_code = body + {10: "X", 11: "0"}.get(org_check, str(org_check))
    head = "91" + str(rng.choice(["330100", "330102", "330106", "330108"]))
    first17 = head + org_code
    total = sum(w * USCC_CHARS.index(c) for w, c in zip(USCC_WEIGHTS, first17, strict=True))
    return first17 + USCC_CHARS[(31 - total % 31) % 31]


def enterprises(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "uscc": [uscc(rng) for _ in range(n)],
        "industry": rng.choice(["manufacturing", "retail", "logistics", "software"], n),
        "tax_paid_yuan": rng.integers(0, 200_000, n),
        "power_kwh": rng.integers(0, 80_000, n),
    })


def expected_score(table: pd.DataFrame) -> dict[str, int]:
    good = table[(table["tax_paid_yuan"] > 50_000) & (table["power_kwh"] > 20_000)]
    return {"rows": len(table), "good": len(good), "tax_total": int(table["tax_paid_yuan"].sum())}


def without_clock(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "run_ns"}


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """300 private enterprises (Parquet) and 40 unrelated mock rows (CSV)."""
    folder = tmp_path_factory.mktemp("tables")
    private, mock = enterprises(300, seed=61), enterprises(40, seed=7)
    private.to_parquet(folder / "enterprises.parquet", index=False)
    mock.to_csv(folder / "enterprises-mock.csv", index=False)
    return {
        "private": private, "mock": mock,
        "private_path": folder / "enterprises.parquet",
        "mock_path": folder / "enterprises-mock.csv",
    }


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    made = Sandbox(warm=1)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, tables: dict[str, Any]) -> Iterator[Any]:
    """One in-process datasite with the dataset loaded and a submitting account."""
    site = datasite.launch(
        "test-inproc", data_dir=tmp_path_factory.mktemp("inproc"), reset=True,
        admin_password="admin-pass-1",
    )
    try:
        admin = site.admin()
        info = datasite.load_dataset(
            admin, "enterprise-tax-power", tables["private_path"], tables["mock_path"]
        )
        scientist = datasite.data_scientist(site, admin, "node@bank.example", "node-pass-1")
        yield SimpleNamespace(site=site, admin=admin, ds=scientist, info=info)
    finally:
        site.land()


def test_load_dataset_reports_rows_schema_and_file_hash(node: Any, tables: dict[str, Any]) -> None:
    assert node.info == {
        "rows": 300,
        "schema": {"uscc": "object", "industry": "object", "tax_paid_yuan": "int64",
                   "power_kwh": "int64"},
        "sha256_of_private_file": hashlib.sha256(tables["private_path"].read_bytes()).hexdigest(),
    }
    assert all(len(code) == 18 for code in tables["private"]["uscc"])


def test_load_dataset_again_is_a_no_op_and_another_file_is_refused(
    node: Any, tables: dict[str, Any], tmp_path: Path
) -> None:
    again = datasite.load_dataset(
        node.admin, "enterprise-tax-power", tables["private_path"], tables["mock_path"]
    )
    assert again == node.info
    other = tmp_path / "other.parquet"
    tables["private"].head(10).to_parquet(other, index=False)
    with pytest.raises(datasite.DatasetError, match="another file"):
        datasite.load_dataset(node.admin, "enterprise-tax-power", other, tables["mock_path"])


def test_scientist_sees_the_mock_but_not_the_private_rows(node: Any) -> None:
    asset = node.ds.datasets["enterprise-tax-power"].assets["data"]
    assert len(asset.mock) == 40
    assert not asset.has_data_permission()


def test_in_process_request_runs_on_private_rows_after_approval(
    node: Any, tables: dict[str, Any], sandbox: Sandbox
) -> None:
    request_id = datasite.submit(
        node.ds, SCORE_SOURCE, "score", "enterprise-tax-power", "contract-1:1"
    )
    with pytest.raises(SyftException, match="waiting for approval"):
        node.ds.api.services.code.call(
            uid=node.admin.api.services.request.get_by_uid(
                datasite.UID(request_id)).code.id,
            data=node.ds.datasets["enterprise-tax-power"].assets["data"].action_id,
        )
    result = datasite.approve_and_run(node.admin, request_id, [TAX], sandbox)
    assert without_clock(result) == expected_score(tables["private"])


def test_submit_is_idempotent_per_request_key(node: Any) -> None:
    first = datasite.submit(node.ds, SCORE_SOURCE, "score", "enterprise-tax-power", "c-2:1")
    again = datasite.submit(node.ds, SCORE_SOURCE, "score", "enterprise-tax-power", "c-2:1")
    other = datasite.submit(node.ds, SCORE_SOURCE, "score", "enterprise-tax-power", "c-2:2")
    assert first == again
    assert other != first
    with pytest.raises(datasite.CodeSourceError, match="other code"):
        datasite.submit(node.ds, SCORE_SOURCE.replace("50_000", "60_000"), "score",
                        "enterprise-tax-power", "c-2:1")


def test_datasite_keeps_the_registered_code_under_the_request_name(node: Any) -> None:
    request_id = datasite.submit(node.ds, SCORE_SOURCE, "score", "enterprise-tax-power", "c-6:1")
    code = node.admin.api.services.request.get_by_uid(datasite.UID(request_id)).code
    name = datasite.request_function_name("score", "c-6:1")
    assert code.service_func_name == name
    assert code.raw_code == SCORE_SOURCE.replace("def score(", f"def {name}(", 1)


def test_mock_trial_computes_on_mock_rows_only(node: Any, tables: dict[str, Any],
                                               sandbox: Sandbox) -> None:
    result = datasite.run_on_mock(node.ds, SCORE_SOURCE, "score", TAX, sandbox)
    assert without_clock(result) == expected_score(tables["mock"])
    assert result["rows"] == 40


def test_a_run_is_recorded_on_the_datasite_and_never_run_again(node: Any,
                                                                 sandbox: Sandbox) -> None:
    """The sandbox's result is deposited as the request's output: asking again returns
    it without running the code (PySyft 0.9.5 itself would run it again past its count,
    issue #9391)."""
    request_id = datasite.submit(node.ds, SCORE_SOURCE, "score", TAX, "c-3:1")
    first = datasite.approve_and_run(node.admin, request_id, [TAX], sandbox)
    code = node.admin.api.services.request.get_by_uid(datasite.UID(request_id)).code
    assert len(node.admin.api.services.output.get_by_user_code_id(code.id)) == 1
    assert datasite.approve_and_run(node.admin, request_id, [TAX], sandbox) == first
    assert isinstance(datasite.prepare_run(node.admin, request_id, [TAX]), datasite.Recorded)
    assert len(node.admin.api.services.output.get_by_user_code_id(code.id)) == 1


def test_the_code_runs_in_the_sandbox_not_in_this_process(node: Any, sandbox: Sandbox) -> None:
    """What runs the code is another process, under another uid, without network."""
    source = ("def where(data):\n    import os, socket\n"
              "    try:\n        socket.create_connection(('127.0.0.1', 22), 1)\n"
              "        net = 'yes'\n    except OSError:\n        net = 'no'\n"
              "    return {'pid': os.getpid(), 'uid': os.getuid(), 'net': net}\n")
    request_id = datasite.submit(node.ds, source, "where", TAX, "c-8:1")
    ran = datasite.approve_and_run(node.admin, request_id, [TAX], sandbox)
    assert ran["uid"] != os.getuid() and ran["uid"] != 0
    assert ran["pid"] != os.getpid() and ran["net"] == "no"


def test_failing_code_raises_code_raised_with_its_type(node: Any, sandbox: Sandbox) -> None:
    source = "def broken(data):\n    return data['no_such_column'].sum()\n"
    request_id = datasite.submit(node.ds, source, "broken", TAX, "c-5:1")
    with pytest.raises(CodeRaised) as raised:
        datasite.approve_and_run(node.admin, request_id, [TAX], sandbox)
    assert raised.value.kind == "KeyError"
    with pytest.raises(CodeRaised) as raised:
        datasite.run_on_mock(node.ds, source, "broken", TAX, sandbox)
    assert raised.value.kind == "KeyError" and "no_such_column" in raised.value.detail


JOIN_SOURCE = '''def joined(tax, power):
    table = tax.merge(power, on="uscc")
    return {"rows": int(len(table)), "kwh": int(table["kwh"].sum()),
            "tax": int(table["tax_paid_yuan"].sum())}
'''


def test_two_inputs_are_bound_by_position_and_report_their_hashes(
    node: Any, tables: dict[str, Any], tmp_path: Path, sandbox: Sandbox
) -> None:
    power = tables["private"][["uscc"]].head(50).assign(kwh=range(50))
    power.to_csv(tmp_path / "power.csv", index=False)
    power.head(5).to_csv(tmp_path / "power-mock.csv", index=False)
    loaded = datasite.load_dataset(node.admin, "enterprise-power", tmp_path / "power.csv",
                                   tmp_path / "power-mock.csv")
    ids = ["enterprise-tax-power", "enterprise-power"]
    request_id = datasite.submit(node.ds, JOIN_SOURCE, "joined", ids, "c-7:1#p")
    assert datasite.submit(node.ds, JOIN_SOURCE, "joined", ids, "c-7:1#p") == request_id
    result = datasite.approve_and_run(node.admin, request_id, ids, sandbox)
    top = tables["private"].head(50)
    assert result == {"rows": 50, "kwh": sum(range(50)), "tax": int(top["tax_paid_yuan"].sum())}
    assert datasite.request_exists(node.ds, "joined", "c-7:1#p")
    assert not datasite.request_exists(node.ds, "joined", "c-7:2#p")
    assert datasite.input_hashes(node.admin, ids) == {
        "enterprise-tax-power": node.info["sha256_of_private_file"],
        "enterprise-power": loaded["sha256_of_private_file"]}
    trial = datasite.run_on_mock(node.ds, JOIN_SOURCE, "joined", ids, sandbox)
    assert trial["rows"] == len(tables["mock"].merge(power.head(5), on="uscc"))
    with pytest.raises(datasite.CodeSourceError, match="1 input"):
        datasite.submit(node.ds, JOIN_SOURCE, "joined", ids[:1], "c-7:3#p")
    with pytest.raises(datasite.DatasetError, match="no dataset"):
        datasite.input_hashes(node.admin, ["nowhere"])


@pytest.mark.parametrize(("source", "problem"), [
    ("import pandas\ndef score(data):\n    return 1\n", "exactly one top-level function"),
    ("def other(data):\n    return 1\n", "defines 'other'"),
    ("def score(data, extra):\n    return 1\n", "2 argument\\(s\\); the product has 1 input"),
    ("def score(*tables):\n    return 1\n", "plain arguments only"),
    ("def score(data, n=1):\n    return 1\n", "plain arguments only"),
    ("@staticmethod\ndef score(data):\n    return 1\n", "plain arguments only"),
    ("def score(data):\n  return (\n", "not Python"),
])
def test_code_source_must_be_one_plain_function(source: str, problem: str) -> None:
    with pytest.raises(datasite.CodeSourceError, match=problem):
        datasite.function_from_source(source, "score", inputs=1)


def test_annotations_in_code_source_are_not_evaluated() -> None:
    function, params = datasite.function_from_source(
        "def score(data: no_such_name) -> 1 / 0:\n    return len(data)\n", "score"
    )
    assert params == ["data"]
    assert function([1, 2, 3]) == 3


def test_http_datasite_on_loopback_end_to_end_and_keeps_state_across_restart(
    tmp_path: Path, tables: dict[str, Any], sandbox: Sandbox
) -> None:
    port = free_loopback_port()
    data_dir = tmp_path / "http"
    site = datasite.launch("test-http", port=port, data_dir=data_dir, reset=True,
                           admin_password="admin-pass-2")
    try:
        assert [c.laddr.ip for c in _listeners(port)] == ["127.0.0.1"]
        admin = site.admin()
        datasite.load_dataset(admin, "enterprise-tax-power", tables["private_path"],
                              tables["mock_path"])
        scientist = datasite.data_scientist(site, admin, "node@bank.example", "node-pass-2")
        request_id = datasite.submit(scientist, SCORE_SOURCE, "score", "enterprise-tax-power",
                                     "contract-9:1")
        result = datasite.approve_and_run(admin, request_id, [TAX], sandbox)
        assert without_clock(result) == expected_score(tables["private"])
        trial = datasite.run_on_mock(scientist, SCORE_SOURCE, "score", TAX, sandbox)
        assert without_clock(trial) == expected_score(tables["mock"])
    finally:
        site.land()
    assert not _listening(port)

    site = datasite.launch("test-http", port=port, data_dir=data_dir,
                           admin_password="admin-pass-2")
    try:
        admin = site.admin()
        scientist = site.login("node@bank.example", "node-pass-2")
        assert datasite.submit(scientist, SCORE_SOURCE, "score", "enterprise-tax-power",
                               "contract-9:1") == request_id
        assert datasite.approve_and_run(admin, request_id, [TAX], sandbox) == result
    finally:
        site.land()


def test_stalled_http_datasite_is_unavailable_within_the_timeout(
    tmp_path: Path, tables: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(syft_support, "HTTP_TIMEOUT_S", (1.0, 1.5))
    port = free_loopback_port()
    site = datasite.launch("test-http-stall", port=port, data_dir=tmp_path, reset=True)
    server = psutil.Process(_listeners(port)[0].pid)
    try:
        admin = site.admin()
        server.suspend()
        started = time.monotonic()
        with pytest.raises(datasite.DatasiteUnavailableError, match="Timeout"):
            datasite.load_dataset(admin, "enterprise-tax-power", tables["private_path"],
                                  tables["mock_path"])
        assert time.monotonic() - started < 10
    finally:
        server.resume()
        site.land()


def _listeners(port: int) -> list[Any]:
    return [c for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port]


def _listening(port: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not _listeners(port):
            return False
        time.sleep(0.1)
    return True
