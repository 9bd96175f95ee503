"""A node process's logs and files (``compute_nodes/logs.py``, ``compute_nodes/hygiene.py``):
secrets redacted wherever they are written, private details in the provider's own log only,
credentials and locks readable by the node's user only.

Runs inside the compute venv: ``compute_nodes/setup-env test tests/compute/test_logs.py``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from compute_nodes import hygiene
from compute_nodes.enrollment import write_json
from compute_nodes.logs import PRIVATE_LOG, REDACTED, RedactingStream, Redactor
from tests.compute import logscan

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "dl_" + "t0ken" * 9
PASSWORD = "Zq7-datasite-password-xK"
PRIVATE = "4810273"  # a private value


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_known_secrets_and_secret_shapes_are_redacted() -> None:
    redactor = Redactor([PASSWORD, PASSWORD + "-runner", "short"])
    text = (f"token {TOKEN}; Authorization: Bearer abcdefghijklmnop123; runner "
            f"{PASSWORD}-runner; kwargs={{'uid': 1, 'password': 'whatever-it-is', "
            f"'password_verify': 'whatever-it-is'}}; \"datasite_password\": \"x y\"; short")
    clean = redactor.redact(text)
    for secret in (TOKEN, PASSWORD, "abcdefghijklmnop123", "whatever-it-is", "x y"):
        assert secret not in clean
    assert "short" in clean  # too short to be taken for a secret
    assert clean.count(REDACTED) == 6  # the runner's password is redacted whole
    assert not logscan.scan(secrets={"token": TOKEN, "password": PASSWORD},
                            texts={"redacted": clean})


def test_a_record_is_redacted_in_its_message_arguments_and_traceback() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(Redactor([PASSWORD]))
    logger = logging.getLogger("test_logs.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("login with %s", PASSWORD)
        try:
            raise ValueError(f"refused {TOKEN}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert PASSWORD not in out and TOKEN not in out
    assert "login with [redacted]" in out and "ValueError: refused [redacted]" in out


def test_a_secret_printed_in_pieces_is_redacted_whole() -> None:
    target = io.StringIO()
    stream = RedactingStream(target, Redactor([PASSWORD]))
    print("a", PASSWORD[:5], end="", file=stream)
    print(PASSWORD[5:], "b", file=stream)
    stream.write("no newline yet " + PASSWORD[:4])
    assert target.getvalue() == f"a {REDACTED} b\n"
    stream.write(PASSWORD[4:])
    stream.flush()
    assert target.getvalue().endswith(f"no newline yet {REDACTED}")


PROVIDER = textwrap.dedent("""
    import logging, os, sys, threading
    from pathlib import Path
    from compute_nodes import logs
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    path = logs.provider_logging(Path(sys.argv[1]), [sys.argv[2]])
    token, private = sys.argv[2], sys.argv[3]
    log = logging.getLogger("compute_nodes.host")
    log.info("hosting with %s", token)                                  # redacted
    print("the product printed", private)                               # private
    os.write(2, f"raw {private}\\n".encode())                           # private
    logging.getLogger("syft.server.server").info("API Call: %s", {"password": "pw-12345"})
    logging.getLogger("syft.server.server").error("datasite error %s", private)  # private
    logs.private_log.warning("the product raised: %s (token %s)", private, token)
    logging.getLogger("httpx").info("HTTP Request: GET /ledger/events")  # held back
    thread = threading.Thread(target=lambda: 1 / 0 if private else None, name="job")
    thread.start(); thread.join()
    log.info("done")
""")


def test_a_provider_process_keeps_private_details_and_no_secret(tmp_path: Path) -> None:
    site = tmp_path / "datasites" / "site"
    done = subprocess.run([sys.executable, "-c", PROVIDER, str(site), TOKEN, PRIVATE],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    platform = done.stdout + done.stderr  # what reaches serve's output
    private = (site / PRIVATE_LOG).read_text()
    assert "hosting with [redacted]" in platform and "done" in platform
    assert "uncaught ZeroDivisionError in thread job" in platform
    for line in ("the product printed " + PRIVATE, "raw " + PRIVATE,
                 "datasite error " + PRIVATE, "the product raised: " + PRIVATE,
                 "ZeroDivisionError: division by zero"):
        assert line in private
    assert "API Call" not in private + platform  # PySyft's INFO records are never made
    assert "HTTP Request" not in private + platform
    leaks = logscan.scan([tmp_path], secrets={"token": TOKEN},
                         private={"the private value": PRIVATE},
                         texts={"serve's output": platform})
    assert leaks == []
    assert mode(site / PRIVATE_LOG) == 0o600 and mode(site) == 0o700


def test_credential_files_and_their_directories_are_the_node_users_only(
        tmp_path: Path) -> None:
    loose = tmp_path / "node" / "providers"
    loose.mkdir(parents=True, mode=0o755)
    loose.chmod(0o755)
    write_json(loose / "p.json", {"token": TOKEN})
    assert mode(loose) == 0o700 and mode(loose / "p.json") == 0o600
    write_json(tmp_path / "node" / "jobs" / "x" / "a.json", {})
    assert mode(tmp_path / "node" / "jobs" / "x") == 0o700


HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from compute_nodes import hygiene
    try:
        hygiene.hold(Path(sys.argv[1]), 0.5)
    except hygiene.Taken as exc:
        print(exc.holder)
        sys.exit(75)
""")


def test_a_lock_is_held_by_one_process_the_other_waits_then_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "site" / "node.lock"
    held = hygiene.hold(path, 0)
    assert mode(path) == 0o600
    other = subprocess.run([sys.executable, "-c", HOLDER, str(path)], cwd=ROOT, timeout=30,
                           capture_output=True, text=True, check=False,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert other.returncode == 75, other.stderr
    assert other.stdout.strip() == str(os.getpid())
    held.close()  # released: the next one takes it at once
    started = time.monotonic()
    hygiene.hold(path, 5).close()
    assert time.monotonic() - started < 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_process_dies_with_the_thread_that_started_it(tmp_path: Path) -> None:
    """The grandchild arms the signal; its parent is killed with SIGKILL: it dies too."""
    pid_file = tmp_path / "grandchild.pid"
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c",
            "import os, time; from compute_nodes import hygiene; "
            "hygiene.die_with_parent(os.getppid()); "
            "open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"])
        time.sleep(600)
    """)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        grandchild = int(pid_file.read_text())
        assert hygiene.alive(grandchild)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 5
        while hygiene.alive(grandchild):
            assert time.monotonic() < deadline, "the child outlived its parent's kill -9"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_the_scan_reports_labels_and_places_never_values(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "serve.log").write_text(f"ok\nuser.update {{'password': 'p4ss-word'}}\n"
                                              f"id 9{PRIVATE} and {PRIVATE}.5 are other\n"
                                              f"row {PRIVATE}\n")
    (tmp_path / "a" / "datasites").mkdir()
    (tmp_path / "a" / "datasites" / PRIVATE_LOG).write_text(f"raised {PRIVATE}\n{TOKEN}\n")
    (tmp_path / "a" / "data.csv").write_text(f"{TOKEN}\n")  # not a log
    leaks = logscan.scan([tmp_path], secrets={"token": TOKEN},
                         private={"tax paid": PRIVATE}, texts={"output": "fine"})
    found = sorted((Path(leak.where).name, leak.line, leak.what) for leak in leaks)
    assert found == [(PRIVATE_LOG, 2, "a platform bearer token (dl_...)"),
                     (PRIVATE_LOG, 2, "token"),
                     ("serve.log", 2, "a password given as a keyword"),
                     ("serve.log", 4, "private value tax paid")]
    assert all(PRIVATE not in str(leak) and TOKEN not in str(leak) for leak in leaks)
    assert json.dumps([str(leak) for leak in leaks])
