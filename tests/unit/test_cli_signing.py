"""``dataledger keys new`` and ``dataledger sign`` (cli/signing.py): a key file an integrator
keeps, a signed body the server accepts, and one clear line with exit 2 for a bad input."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from core import decision as d

COMMAND = {"command": "contract.approval", "aggregate_id": "o-1", "aggregate_version": 4,
           "member_id": "m-1", "body": {}}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / "member.pem"
    code, out, err = run(capsys, "keys", "new", "--out", str(path))
    assert code == 0, err
    return path, json.loads(out)


def write(tmp_path: Path, content: Any) -> Path:
    path = tmp_path / "command.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_keys_new_writes_a_private_pem_and_prints_its_public_key(
        key_file: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    path, printed = key_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = d.load_private_key(path.read_bytes())
    assert printed["public_key"] == d.public_key_text(key.public_key())
    assert printed["key_id"] == d.key_id(printed["public_key"])
    code, _, err = run(capsys, "keys", "new", "--out", str(path))
    assert code == 2 and "exists" in err
    assert d.load_private_key(path.read_bytes()).private_bytes_raw() == key.private_bytes_raw()
    assert run(capsys, "keys", "new", "--out", str(path), "--force")[0] == 0


@pytest.mark.parametrize("body", [{}, {"approve": True, "comment": "同意"}])
def test_sign_prints_the_body_with_a_signature_the_server_verifies(
        key_file: tuple[Path, dict[str, Any]], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], body: dict[str, Any]) -> None:
    path, printed = key_file
    code, out, err = run(capsys, "sign", "--key", str(path),
                         "--command", str(write(tmp_path, {**COMMAND, "body": body})))
    assert code == 0, err
    signed = json.loads(out)
    assert {k: v for k, v in signed.items() if k != "signature"} == body
    assert signed["signature"]["key_id"] == printed["key_id"]
    assert signed["signature"]["aggregate_version"] == 4
    # what domain/signing.py checks: the statement over the body as sent, less its signature
    stmt = d.statement("contract.approval", "o-1", 4, "m-1", signed)
    assert d.verifies(printed["public_key"], stmt, signed["signature"]["value"])


@pytest.mark.parametrize(("content", "says"), [
    ("{not json", "not a JSON file"),
    ([1, 2], "must hold a JSON object"),
    ({k: v for k, v in COMMAND.items() if k != "member_id"}, "'member_id' must be a JSON string"),
    ({**COMMAND, "aggregate_version": "4"}, "'aggregate_version' must be a JSON integer"),
    ({**COMMAND, "aggregate_version": True}, "'aggregate_version' must be a JSON integer"),
    ({**COMMAND, "aggregate_version": -1}, "not negative"),
    ({**COMMAND, "aggregate_id": ""}, "must not be empty"),
    ({**COMMAND, "body": []}, "'body' must be a JSON object"),
    ({**COMMAND, "body": {"signature": {}}}, "holds a signature already"),
    ({**COMMAND, "extra": 1}, "unknown field(s) extra"),
    ({**COMMAND, "command": "contract.cancellation"}, "is not a signed command"),
    ({**COMMAND, "body": {"price": 1.5}}, "$.body.price: floats are not allowed"),
])
def test_sign_refuses_a_bad_command_file_with_exit_2(
        key_file: tuple[Path, dict[str, Any]], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], content: Any, says: str) -> None:
    path, _ = key_file
    code, out, err = run(capsys, "sign", "--key", str(path),
                         "--command", str(write(tmp_path, content)))
    assert (code, out) == (2, "")
    assert err.startswith("dataledger sign: ") and says in err and err.count("\n") == 1, err


def test_sign_refuses_a_missing_or_bad_key_and_a_missing_command_file_with_exit_2(
        key_file: tuple[Path, dict[str, Any]], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = key_file
    command = write(tmp_path, COMMAND)
    for key, says in ((tmp_path / "none.pem", "cannot read the key"),
                      (command, "not an unencrypted PEM private key")):
        code, _, err = run(capsys, "sign", "--key", str(key), "--command", str(command))
        assert code == 2 and says in err, err
    code, _, err = run(capsys, "sign", "--key", str(path), "--command", str(tmp_path / "no"))
    assert code == 2 and "cannot read the command file" in err
