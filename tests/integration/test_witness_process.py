"""The witness as a separate process on a loopback port, spoken to over real HTTP.

Every status of the add-checkpoint call, then ``kill -9`` in the middle of the
work: after persisting but before answering, and before persisting. The
crash points come from the test hook of :mod:`anchoring.witness`
(``DATALEDGER_WITNESS_TEST_PAUSE_{BEFORE,AFTER}_PERSIST``: the witness prints a
line to stderr and sleeps there). Every wait is bounded; every process started
here is killed, by its pid, in a finally.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from anchoring.witness import format_add_checkpoint
from anchoring.witness_state import LogState, WitnessState
from chain.bls import TrustedWitness, WitnessPublicKey, trust_witness, verify_cosignature
from chain.checkpoint import Checkpoint, sign_checkpoint
from chain.hasher import hash_leaf
from chain.note import Signer, generate_ed25519, open_note
from chain.proof import InMemoryTree
from tests.conftest import free_port

ROOT = Path(__file__).parents[2]
ORIGIN = "dataledger.test/log"
WITNESS_NAME = "dataledger.test/w1"
LOG = Signer.from_key(generate_ed25519(ORIGIN)[0])
START_TIMEOUT = 20.0
REQUEST_TIMEOUT = 10.0
PAUSE = "30"  # Seconds the witness sleeps at a crash point; it is killed long before.


def tree(n: int, fork_at: int | None = None) -> InMemoryTree:
    """A log of ``n`` leaves; from leaf ``fork_at`` on, the leaves differ (another history)."""
    return InMemoryTree(
        hash_leaf(f"{'B' if fork_at is not None and i >= fork_at else 'A'}{i}".encode())
        for i in range(n)
    )


def note(t: InMemoryTree, size: int, signer: Signer = LOG, origin: str = ORIGIN) -> str:
    """The signed checkpoint of ``t`` at ``size``."""
    return sign_checkpoint(Checkpoint(origin, size, t.root(size)), [signer])


def body_of(note_text: str) -> str:
    """The checkpoint body of a signed note."""
    return note_text[: note_text.index("\n\n") + 1]


class Witnesses:
    """Starts witness processes on one state dir; kills every one it started."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.state_dir = tmp / "state"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.port = 0
        self.stderr = tmp / "none"

    def start(self, env: dict[str, str] | None = None) -> str:
        """Start a witness on a fresh loopback port; return its base URL once it answers."""
        self.port = free_port()
        n = len(self.procs)
        self.stderr = self.tmp / f"witness-{n}.err"
        argv = [
            "--name", WITNESS_NAME,
            "--state-dir", str(self.state_dir),
            "--log-key", LOG.verifier().vkey,
            "--host", "127.0.0.1",
            "--port", str(self.port),
        ]  # fmt: skip
        code = f"from anchoring.witness_app import main; raise SystemExit(main({argv!r}))"
        clean = {k: v for k, v in os.environ.items() if "WITNESS_TEST_PAUSE" not in k}
        with open(self.tmp / f"witness-{n}.out", "wb") as out, open(self.stderr, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", code],
                cwd=ROOT,
                env={**clean, **(env or {})},
                stdout=out,
                stderr=err,
            )
        self.procs.append(proc)
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"witness exited with {proc.returncode}: {self.stderr.read_text()}")
            try:
                if httpx.get(url + "/", timeout=1.0).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"witness did not answer within {START_TIMEOUT} s: {self.stderr.read_text()}")

    def wait_for_stderr(self, text: str, timeout: float = REQUEST_TIMEOUT) -> None:
        """Wait until the current witness printed ``text`` on stderr."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stderr.read_text():
                return
            time.sleep(0.02)
        pytest.fail(f"witness never printed {text!r}: {self.stderr.read_text()}")

    def kill9(self) -> None:
        """SIGKILL the current witness and reap it."""
        proc = self.procs[-1]
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=REQUEST_TIMEOUT) == -signal.SIGKILL

    def kill_all(self) -> None:
        """Kill, by pid, every witness started here that still runs."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=REQUEST_TIMEOUT)

    def stored(self) -> LogState | None:
        """Read the state file directly (the witness is dead or idle)."""
        state = WitnessState(self.state_dir / "witness.db")
        try:
            return state.get(ORIGIN)
        finally:
            state.close()


@pytest.fixture
def witnesses(tmp_path: Path) -> Iterator[Witnesses]:
    w = Witnesses(tmp_path)
    try:
        yield w
    finally:
        w.kill_all()


def add(url: str, old: int, proof: list[bytes], note_text: str) -> httpx.Response:
    """POST one add-checkpoint request."""
    return post_raw(url, format_add_checkpoint(old, proof, note_text).encode())


def post_raw(url: str, content: bytes) -> httpx.Response:
    """POST a raw add-checkpoint body."""
    return httpx.post(url + "/add-checkpoint", content=content, timeout=REQUEST_TIMEOUT)


def trusted(url: str) -> TrustedWitness:
    """Trust the witness from its GET / descriptor (checking its proof of possession)."""
    info = httpx.get(url + "/", timeout=REQUEST_TIMEOUT).json()
    published = WitnessPublicKey.parse(info["vkey"])
    assert info["name"] == WITNESS_NAME and info["origins"] == [ORIGIN]
    assert info["key_id"] == f"{published.key_id:08x}"
    return trust_witness(published)


def assert_size_conflict(response: httpx.Response, size: int) -> None:
    """409 with the spec's exact body and Content-Type."""
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "text/x.tlog.size"
    assert response.content == f"{size}\n".encode()


def assert_cosigned(response: httpx.Response, note_text: str, witness: TrustedWitness) -> None:
    """200 with one co-signature line that verifies, alone and appended to the note."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text.startswith("\u2014 ") and response.text.count("\n") == 1
    verify_cosignature(body_of(note_text), response.text, [witness])
    open_note(note_text + response.text, [witness])


def test_http_statuses(witnesses: Witnesses) -> None:
    url = witnesses.start()
    cosigner = trusted(url)
    log = tree(13)
    # 200: first contact from 0, then growth with a proof.
    assert_cosigned(add(url, 0, [], note(log, 5)), note(log, 5), cosigner)
    assert_cosigned(add(url, 5, log.consistency_proof(5, 8), note(log, 8)), note(log, 8), cosigner)
    # 409 + text/x.tlog.size: a stale old size (0 is how a client asks).
    assert_size_conflict(add(url, 0, [], note(log, 13)), 8)
    assert_size_conflict(add(url, 5, log.consistency_proof(5, 13), note(log, 13)), 8)
    # 409, plain text: the same size with another root.
    other = add(url, 8, [], note(tree(8, fork_at=7), 8))
    assert other.status_code == 409 and other.headers["content-type"].startswith("text/plain")
    # 422: a proof that does not verify.
    bad = add(url, 8, log.consistency_proof(7, 13), note(log, 13))
    assert bad.status_code == 422 and bad.text.endswith("\n"), bad.text
    # 403: signed by another key of the same name.
    impostor = Signer.from_key(generate_ed25519(ORIGIN)[0])
    forged = add(url, 8, log.consistency_proof(8, 13), note(log, 13, impostor))
    assert forged.status_code == 403, forged.text
    # 404: an origin the witness does not know (the spec's status for it).
    stranger = Signer.from_key(generate_ed25519("stranger.test/log")[0])
    unknown = add(url, 0, [], note(log, 3, stranger, "stranger.test/log"))
    assert unknown.status_code == 404, unknown.text
    # 400: malformed bodies, and old size > checkpoint size.
    for raw in (b"", b"old 08\n\n" + note(log, 13).encode(), b"\xff\xfe", b"old 8\n\nnot a note\n"):
        response = post_raw(url, raw)
        assert response.status_code == 400, (raw, response.text)
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert add(url, 13, [], note(log, 8)).status_code == 400
    # 413: an oversized body.
    assert post_raw(url, b"old 0\n" + b"A" * 70_000).status_code == 413
    # After all the refusals: still size 8, and it grows on.
    assert_cosigned(
        add(url, 8, log.consistency_proof(8, 13), note(log, 13)), note(log, 13), cosigner
    )


def submit_in_background(url: str, request: bytes) -> tuple[threading.Thread, list[object]]:
    """POST in a thread (the witness will die under it); the outcome lands in the list."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(post_raw(url, request))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_kill_9_after_persisting_before_answering(witnesses: Witnesses) -> None:
    log_a = tree(9)
    log_b = tree(9, fork_at=5)  # Shares the first 5 leaves with A.
    url = witnesses.start()
    cosigner = trusted(url)
    assert_cosigned(add(url, 0, [], note(log_a, 5)), note(log_a, 5), cosigner)
    witnesses.kill9()
    # 1. A witness that stops between persisting size 8 and answering.
    url = witnesses.start({"DATALEDGER_WITNESS_TEST_PAUSE_AFTER_PERSIST": PAUSE})
    request = format_add_checkpoint(5, log_a.consistency_proof(5, 8), note(log_a, 8)).encode()
    thread, outcome = submit_in_background(url, request)
    witnesses.wait_for_stderr("PAUSE_AFTER_PERSIST")
    witnesses.kill9()
    thread.join(timeout=REQUEST_TIMEOUT)
    assert not thread.is_alive() and len(outcome) == 1
    assert isinstance(outcome[0], httpx.HTTPError)  # No co-signature ever left the witness.
    assert witnesses.stored() == LogState(ORIGIN, 8, log_a.root(8), note(log_a, 8))
    # 2. Restarted on the same state dir, it remembers size 8.
    url = witnesses.start()
    assert_size_conflict(add(url, 5, log_a.consistency_proof(5, 8), note(log_a, 8)), 8)
    # 3. And never co-signs a checkpoint inconsistent with it: log B is refused.
    assert_size_conflict(add(url, 5, log_b.consistency_proof(5, 8), note(log_b, 8)), 8)
    assert add(url, 8, [], note(log_b, 8)).status_code == 409  # Same size, other root.
    assert_size_conflict(add(url, 5, log_b.consistency_proof(5, 9), note(log_b, 9)), 8)
    assert add(url, 8, log_b.consistency_proof(8, 9), note(log_b, 9)).status_code == 422
    assert witnesses.stored() == LogState(ORIGIN, 8, log_a.root(8), note(log_a, 8))
    # 4. The client recovers its lost co-signature by resubmitting from the size it was told.
    assert_cosigned(add(url, 8, [], note(log_a, 8)), note(log_a, 8), cosigner)
    assert_cosigned(
        add(url, 8, log_a.consistency_proof(8, 9), note(log_a, 9)), note(log_a, 9), cosigner
    )


def test_kill_9_before_persisting(witnesses: Witnesses) -> None:
    log = tree(8)
    url = witnesses.start()
    cosigner = trusted(url)
    assert_cosigned(add(url, 0, [], note(log, 5)), note(log, 5), cosigner)
    witnesses.kill9()
    # 1. A witness that stops inside the transaction, before it commits size 8.
    url = witnesses.start({"DATALEDGER_WITNESS_TEST_PAUSE_BEFORE_PERSIST": PAUSE})
    request = format_add_checkpoint(5, log.consistency_proof(5, 8), note(log, 8)).encode()
    thread, outcome = submit_in_background(url, request)
    witnesses.wait_for_stderr("PAUSE_BEFORE_PERSIST")
    witnesses.kill9()
    thread.join(timeout=REQUEST_TIMEOUT)
    assert not thread.is_alive() and len(outcome) == 1
    assert isinstance(outcome[0], httpx.HTTPError)
    # 2. Restarted: the old state is intact (size 5, its root and note).
    url = witnesses.start()
    assert witnesses.stored() == LogState(ORIGIN, 5, log.root(5), note(log, 5))
    assert_size_conflict(add(url, 0, [], note(log, 8)), 5)
    # 3. The same request now goes through.
    assert_cosigned(add(url, 5, log.consistency_proof(5, 8), note(log, 8)), note(log, 8), cosigner)


def test_cli_refuses_a_malformed_log_key(tmp_path: Path) -> None:
    from anchoring.witness_app import main

    argv = ["--name", WITNESS_NAME, "--state-dir", str(tmp_path), "--log-key", "not-a-vkey"]
    assert main(argv) == 2
    assert not (tmp_path / "witness.key").exists()
