"""The zygote: a root process, started by the node with a cleared environment and no file
of the node's, that imported pandas and numpy once and forks a confined worker on request.

Per worker it forks an intermediate process (root, in the node's pid namespace) that moves
into new namespaces, builds the worker's file view and makes it its root
(``confine.build_filesystem``) and forks the worker, pid 1 of its new pid namespace. The worker mounts its /proc, closes every
inherited descriptor, sets its rlimits, drops to its uid, installs the seccomp filter and
says it is ready; then it takes one job (``worker.serve``) and exits, and every process of
its namespace dies with it. The intermediate reports the worker's end (signal, exit code,
CPU time) on the status socket. Each process dies with its parent (``PR_SET_PDEATHSIG``):
node -> zygote -> intermediate -> worker -> the rest of the namespace.

Messages to and from the node are JSON; descriptors travel with them (SCM_RIGHTS).
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys
from typing import Any

from . import confine, frames, seccomp, worker


def _message(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def main() -> None:
    """``python -I -c <boot> <socket fd> <node pid>``: serve spawn requests until the node
    closes the socket; die with the node."""
    fd, parent = int(sys.argv[1]), int(sys.argv[2])
    confine.die_with_parent()
    if os.getppid() != parent:
        os._exit(0)
    sock = socket.socket(fileno=fd)
    config = json.loads(sock.recv(1 << 20))
    try:
        _warm_up()
        if config["limits"]["seccomp"] and seccomp.supported() is None:
            seccomp.program()
    except BaseException as exc:  # noqa: BLE001 - reported to the node, which gives up
        sock.send(_message({"error": f"the zygote cannot start: {exc!r}"}))
        os._exit(1)
    gc.freeze()  # the workers' collections then skip (and do not copy) the zygote's objects
    sock.send(_message({"ready": True}))
    while True:
        readable, _, _ = select.select([sock], [], [], 0.5)
        _reap()
        if readable:
            request = sock.recv(1 << 16)
            if not request:
                os._exit(0)  # the node closed the sandbox
            _spawn(sock, config, int(json.loads(request)["spawn"]))


def _warm_up() -> None:
    """Import and run once what jobs commonly use. The zygote does it so that every worker
    starts with the modules imported; each worker again, before it says ready, so that the
    pages and caches a job touches first are its own already (copy-on-write)."""
    import collections  # noqa: F401
    import decimal  # noqa: F401
    import itertools  # noqa: F401
    import pickle
    import re  # noqa: F401
    import statistics  # noqa: F401

    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, None, 2.0], "c": ["x", "y", "x"],
                          "d": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"])})
    frame = pickle.loads(pickle.dumps([frame], protocol=5))[0]
    grouped = frame.groupby("c")
    for table in (grouped.a.sum().reset_index(), grouped.agg({"a": "sum", "b": "mean"}),
                  grouped.size(), frame.merge(frame[["c"]].drop_duplicates(), on="c"),
                  frame[frame.a > 1].sort_values("b"),
                  frame.assign(e=frame.a * 2).set_index("c").e, np.arange(3).mean()):
        worker.encode({"ok": worker.plain(table)})


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _spawn(sock: socket.socket, config: dict[str, Any], uid: int) -> None:
    """Fork an intermediate for a worker of ``uid``; hand the node its ends: the job socket,
    stdout, stderr, the status socket and a pidfd of the intermediate."""
    ctl_node, ctl = (s.detach() for s in socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM))
    status_node, status = (s.detach() for s in
                           socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET))
    out_node, out = os.pipe()
    err_node, err = os.pipe()
    ours = [ctl_node, status_node, out_node, err_node]
    try:
        pid = os.fork()
    except OSError as exc:
        for fd in [*ours, ctl, status, out, err]:
            os.close(fd)
        sock.send(_message({"error": f"fork: {exc}"}))
        return
    if pid == 0:
        try:
            sock.detach()
            _intermediate(config, uid, os.getppid(), (ctl, status, out, err))
        finally:
            os._exit(70)
    pidfd = os.pidfd_open(pid)
    for fd in (ctl, status, out, err):
        os.close(fd)
    socket.send_fds(sock, [_message({"pid": pid})], [ctl_node, out_node, err_node, status_node,
                                                     pidfd])
    for fd in [*ours, pidfd]:
        os.close(fd)


def _intermediate(config: dict[str, Any], uid: int, zygote: int,
                  fds: tuple[int, int, int, int]) -> None:
    """Root in new namespaces: build the worker's files, fork it, report how it ended."""
    ctl, status_fd, out, err = fds
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    confine.die_with_parent()
    if os.getppid() != zygote:
        os._exit(0)
    confine.close_all_but(fds)
    for target in (0, 1, 2):  # /dev/null, so that the fds opened from here on are above 2
        os.dup2(os.open("/dev/null", os.O_RDWR), target)
    status = socket.socket(fileno=status_fd)
    try:
        confine.unshare()
        confine.build_filesystem([*confine.SYSTEM, *config["expose"]], config["hide"], uid,
                                 int(config["limits"]["tmp_bytes"]))
        lifeline, keep = os.pipe()
        pid = os.fork()
        if pid == 0:
            status.detach()
            os.close(keep)
            _worker(config, uid, (ctl, out, err), lifeline)
        os.close(lifeline)
        for fd in (ctl, out, err):
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        socket.send_fds(status, [_message({"started": True})], [pidfd])
        os.close(pidfd)
    except BaseException as exc:  # noqa: BLE001 - the node gets the reason
        status.send(_message({"error": f"confining the worker: {exc}"}))
        os._exit(1)
    _, code, usage = os.wait4(pid, 0)
    status.send(_message({"signal": os.WTERMSIG(code) if os.WIFSIGNALED(code) else 0,
                          "code": os.WEXITSTATUS(code) if os.WIFEXITED(code) else -1,
                          "cpu": usage.ru_utime + usage.ru_stime}))
    os._exit(0)


def _worker(config: dict[str, Any], uid: int, fds: tuple[int, int, int], lifeline: int) -> None:
    """Pid 1 of the new pid namespace: finish the confinement, say ready, serve one job."""
    ctl_fd, out, err = fds
    ctl = socket.socket(fileno=ctl_fd)
    try:
        confine.die_with_parent()
        _lifeline(lifeline)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # too large a file: EFBIG, not death
        confine.mount_proc()
        null = os.open("/dev/null", os.O_RDWR)
        for fd, target in ((null, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
        confine.close_all_but([0, 1, 2, ctl_fd, lifeline])
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        os.chdir(confine.WORKDIR)
        os.environ.clear()
        os.environ.update(confine.ENVIRONMENT)
        confine.set_limits(config["limits"])
        confine.drop_privileges(uid)
        confine.die_with_parent()  # a change of uid clears it
        _lifeline(lifeline)
        os.close(lifeline)
        if config["limits"]["seccomp"] and seccomp.supported() is None:
            seccomp.install(confine.LIBC)
        _fresh_state(config)
        _warm_up()
    except BaseException as exc:  # noqa: BLE001 - the node gets the reason
        frames.send(ctl, _message({"error": f"confining the worker: {exc}"}))
        os._exit(1)
    frames.send(ctl, _message({"ready": True}))
    try:
        worker.serve(ctl, config["limits"])
    finally:
        os._exit(0)


def _lifeline(fd: int) -> None:
    """Exit if the intermediate already ended (it holds the pipe's other end): then the
    death signal just set would never come."""
    if select.select([fd], [], [], 0)[0]:
        os._exit(0)


def _fresh_state(config: dict[str, Any]) -> None:
    """What the zygote shares with every worker and must not: numpy's global random state;
    the node's repository on ``sys.path``."""
    import numpy as np

    np.random.seed()
    sys.path[:] = [p for p in sys.path if p not in config["drop_paths"]]


def probe() -> None:
    """Print "ok" if this machine can confine a worker, else why not (``Sandbox.check``)."""
    pid = os.fork()
    if pid == 0:
        try:
            confine.die_with_parent()
            confine.unshare()
            confine.mount(None, "/", None, confine.MS_REC | confine.MS_PRIVATE)
            confine.mount("tmpfs", "/tmp", "tmpfs", confine.MS_NOSUID, "size=64k")
            child = os.fork()
            if child == 0:
                confine.mount_proc()
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
                os._exit(0 if os.getpid() == 1 else 3)
            _, code = os.waitpid(child, 0)
            os._exit(os.waitstatus_to_exitcode(code))
        except BaseException as exc:  # noqa: BLE001 - the reason is the answer
            print(f"{exc}", flush=True)
            os._exit(1)
    _, code = os.waitpid(pid, 0)
    print("ok" if code == 0 else f"a confined test process failed ({code})", flush=True)
