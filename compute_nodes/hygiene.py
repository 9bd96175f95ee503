"""Process hygiene of the compute node: a process that dies with its parent, a directory only
one process works in, and files and directories only the node's user can read.

- :func:`die_with_parent`: the kernel kills this process (``PR_SET_PDEATHSIG``) when the
  thread that started it ends, even after a ``kill -9`` of its parent. The signal is tied to
  that *thread*, not to the parent process: a process must be started by a thread that lives
  as long as its parent wants it (the host starts its fork server from its main thread, and
  the single-threaded fork server forks the node processes).
- :func:`hold`: an exclusive ``flock`` kept for the life of the process (the kernel drops it
  when the process dies, however it dies); one who finds it taken waits a bounded time.
- ``private_dir`` (``core.files``): a directory of mode 0700 (files are written 0600 by
  ``core.files.write_private``): the product's code runs in a sandbox as another uid, which
  must read none of the node's credentials, datasites or logs.

Standard library only (Linux for the first two; elsewhere :func:`die_with_parent` does
nothing and says so).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
LOCK_POLL_S = 0.2


class Taken(Exception):
    """The lock is held by another process; ``holder`` is its pid if it wrote one."""

    def __init__(self, path: Path, holder: int | None, waited: float) -> None:
        super().__init__(f"{path} is held by another process (pid {holder or 'unknown'}) "
                         f"after waiting {waited:.0f} s")
        self.path, self.holder = path, holder


def _prctl(option: int, value: int | bytes) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(option, value, 0, 0, 0) == 0)


def die_with_parent(parent: int, signum: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``signum`` to this process when the thread that started it ends;
    exit at once if ``parent`` (the pid that started it) is already gone. False where the
    kernel offers no such thing (not Linux)."""
    armed = _prctl(PR_SET_PDEATHSIG, signum)
    if parent and os.getppid() != parent:  # it died before the signal was armed
        os._exit(1)
    return armed


def name_process(name: str) -> None:
    """The name ``ps`` and ``/proc/<pid>/comm`` show (15 bytes at most; Linux only)."""
    _prctl(PR_SET_NAME, name.encode()[:15])


def hold(path: Path, wait: float) -> IO[str]:
    """Take the exclusive lock on ``path`` (created 0600), waiting up to ``wait`` seconds;
    the open file, to be kept for as long as the lock is meant to be held. Raises
    :class:`Taken` if another process still holds it after ``wait``."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+", encoding="utf-8")
    os.fchmod(handle.fileno(), 0o600)  # a file made before keeps no wider mode
    started = time.monotonic()
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() - started >= wait:
                holder = handle.read().strip()
                handle.close()
                raise Taken(path, int(holder) if holder.isdigit() else None,
                            time.monotonic() - started) from None
            time.sleep(LOCK_POLL_S)
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: the signal's answer is all there is
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
