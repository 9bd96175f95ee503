"""The host's fork server: one process that imports PySyft once and forks each provider's
node process from that warm state.

Why: a node process that starts as a fresh interpreter spends seconds importing PySyft
(~4 s of CPU; the host starts one per provider at once), so after a restart of the host with
three providers on two CPUs a datasite was ready after 9 s on a quiet machine, 19-24 s on a
busy one; forked from the fork server, a node process pays only its datasite's launch and
two logins (1-3 s). Figures: ``bench/compute_startup.py``, ``docs/BENCHMARKS.md``.

How the processes hang together, and die together:

    host (main thread) --Popen--> fork server --fork--> node process (one per provider)

- The host starts the fork server from its main thread; the fork server arms
  ``PR_SET_PDEATHSIG`` (``compute_nodes.hygiene``), so it is killed when the host dies, even
  by ``kill -9``; it also exits when the host closes its end of the command pipe, killing
  what it forked. It ignores SIGTERM and SIGINT (sent to the whole process group when serve
  stops): the host stops the node processes first, each gracefully, then closes the pipe.
- The fork server is single-threaded and forks each node process from that one thread; the
  node process arms the same signal, so it dies with the fork server. A node process is
  started only from this warm state, never by a thread that may end before it.
- The host's lock (``host.lock``) is handed to the fork server, and so to every node
  process: a new host cannot take it while one process of the old one lives.

Protocol: JSON lines. The host writes ``{"id": n, "start": participant_id, "env": {...}}``
on the fork server's stdin; the fork server answers ``{"ready": pid}`` once, then
``{"id": n, "pid": pid}`` (or ``{"id": n, "error": ...}``) per request, and
``{"exited": pid, "code": code}`` when a node process ends (``code`` as
``subprocess.Popen.returncode``: negative for a signal).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from compute_nodes.hygiene import die_with_parent, name_process

log = logging.getLogger("compute_nodes.host")

READY_TIMEOUT_S = 120.0  # importing PySyft on a busy machine
REPLY_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0
POLL_S = 0.2


class ForkServerError(RuntimeError):
    """The fork server is not running, or did not start a node process."""


# -- the host's side ------------------------------------------------------------------------


class ForkedChild:
    """A node process the fork server started, as ``core.supervise.Supervisor`` drives it."""

    def __init__(self, pid: int, server: ForkServer, generation: subprocess.Popen[bytes]) -> None:
        self._pid, self.server, self.generation = pid, server, generation

    @property
    def pid(self) -> int | None:
        return self._pid

    def wait(self, timeout: float | None) -> int | None:
        """Its exit code once it exited (reported by the fork server; ``-SIGKILL`` if the
        fork server died, which killed it); None while it runs after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.server.changed:
            while True:
                code = self.exit_code()
                if code is not None:
                    return code
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self.server.changed.wait(POLL_S if left is None else min(left, POLL_S))

    def exit_code(self) -> int | None:
        if self._pid in self.server.exits:
            return self.server.exits[self._pid]
        if self.generation.poll() is not None:  # its fork server is gone, and it with it
            return -signal.SIGKILL
        return None

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def close(self) -> None:
        """Forget its exit code."""
        with self.server.changed:
            self.server.exits.pop(self._pid, None)

    def _signal(self, signum: int) -> None:
        # only while the fork server has not reaped it: until then its pid is not reused
        if self.exit_code() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signum)


class ForkServer:
    """The host's handle on its fork server (``command``, in environment ``env``, given the
    descriptors ``pass_fds``). :meth:`start` it from the host's main thread."""

    def __init__(self, command: list[str], env: dict[str, str],
                 pass_fds: tuple[int, ...] = ()) -> None:
        self.command, self.env, self.pass_fds = command, env, pass_fds
        self.process: subprocess.Popen[bytes] | None = None
        self.ready = threading.Event()
        self.exits: dict[int, int] = {}
        self.changed = threading.Condition()
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._ask = threading.Lock()
        self._requests = 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the fork server (it becomes :attr:`ready` once it imported PySyft)."""
        self.ready.clear()
        self._replies = queue.Queue()
        self.process = subprocess.Popen(self.command, env=self.env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, pass_fds=self.pass_fds)
        threading.Thread(target=self._read, args=(self.process,), name="fork-server",
                         daemon=True).start()
        log.info("started the fork server (pid %d)", self.process.pid)

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "ready" in message:
                self.ready.set()
            elif "exited" in message:
                with self.changed:
                    self.exits[int(message["exited"])] = int(message["code"])
                    self.changed.notify_all()
            else:
                self._replies.put(message)
        code = process.wait()
        if process is self.process:
            self.ready.clear()
        with self.changed:
            self.changed.notify_all()
        log.log(logging.INFO if code == 0 else logging.ERROR,
                "the fork server (pid %d) exited with code %s", process.pid, code)

    def spawn(self, participant_id: str, env: dict[str, str]) -> ForkedChild:
        """Fork the node process of ``participant_id`` with environment ``env``."""
        if not self.ready.wait(READY_TIMEOUT_S) or not self.alive:
            raise ForkServerError("the fork server is not running")
        with self._ask:
            process = self.process
            assert process is not None and process.stdin is not None
            self._requests += 1
            request = {"id": self._requests, "start": participant_id, "env": env}
            try:
                process.stdin.write(json.dumps(request).encode() + b"\n")
                process.stdin.flush()
            except (BrokenPipeError, ValueError) as exc:
                raise ForkServerError(f"the fork server is gone: {exc}") from exc
            deadline = time.monotonic() + REPLY_TIMEOUT_S
            while True:
                try:
                    reply = self._replies.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise ForkServerError("the fork server did not answer") from None
                if reply.get("id") == request["id"]:
                    break
        if "pid" not in reply:
            raise ForkServerError(f"the fork server could not start it: {reply.get('error')}")
        return ForkedChild(int(reply["pid"]), self, process)

    def stop(self) -> None:
        """Close its command pipe (it kills what it still runs, then exits); kill it after a
        grace period."""
        process = self.process
        if process is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert process.stdin is not None
            process.stdin.close()
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the fork server's side -----------------------------------------------------------------


def preload(modules: tuple[str, ...]) -> None:
    """Import ``modules`` once for every node process (PySyft without what only a notebook
    uses of it: ``compute_nodes/lean_import.py``)."""
    from compute_nodes import lean_import

    lean_import.install()
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - the node process says what fails, again
            log.warning("the fork server could not import %s: %s", module, exc)
    with contextlib.suppress(Exception):  # PySyft reads it at each launch otherwise
        from syft.protocol.data_protocol import get_data_protocol

        get_data_protocol()


def serve(run_child: Callable[[str], int], preload: Callable[[], None]) -> int:
    """The fork server's loop (``python -m compute_nodes.host fork-server``): ``preload``,
    then fork a process running ``run_child(participant_id)`` per request, until the host
    closes the pipe or dies."""
    die_with_parent(int(os.environ.get("DATALEDGER_NODE_PARENT_PID") or 0))
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the host stops us, after the nodes
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    name_process("dl-fork-server")
    commands, replies = os.dup(0), os.dup(1)  # the pipes, kept off stdin and stdout
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)  # what a library prints must not break the protocol
    with contextlib.redirect_stdout(io.StringIO()):
        preload()
    _send(replies, {"ready": os.getpid()})
    children: set[int] = set()
    pending = b""
    while True:
        readable, _, _ = select.select([commands], [], [], POLL_S)
        _reap(children, replies)
        if not readable:
            continue
        data = os.read(commands, 1 << 16)
        if not data:
            break  # the host closed the pipe (or died)
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            try:
                pid = _fork(request, run_child, (commands, replies))
            except OSError as exc:
                _send(replies, {"id": request.get("id"), "error": str(exc)})
                continue
            children.add(pid)
            _send(replies, {"id": request.get("id"), "pid": pid})
    for pid in children:  # no node process outlives its fork server
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return 0


def _send(fd: int, message: dict[str, Any]) -> None:
    os.write(fd, json.dumps(message).encode() + b"\n")


def _reap(children: set[int], replies: int) -> None:
    for pid in list(children):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if done:
            children.discard(pid)
            _send(replies, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def _fork(request: dict[str, Any], run_child: Callable[[str], int],
          pipes: tuple[int, int]) -> int:
    parent = os.getpid()
    forked_at = time.time()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        for fd in pipes:
            os.close(fd)
        die_with_parent(parent)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.clear()
        os.environ.update({**request["env"], "DATALEDGER_NODE_PARENT_PID": str(parent),
                           "DATALEDGER_NODE_STARTED_AT": repr(forked_at)})
        name_process("dl-node")
        if "numpy" in sys.modules:  # the fork server's seed is every node's otherwise
            sys.modules["numpy"].random.seed()
        code = run_child(str(request["start"]))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - the node process ends here in any case
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
