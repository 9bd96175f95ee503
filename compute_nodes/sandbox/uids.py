"""Leases on the sandbox's uids: each worker gets a uid no other live worker has, on this
machine, so that RLIMIT_NPROC counts one job's processes and nothing else.

A lease is an exclusive ``flock`` on ``<directory>/<uid>`` (root's, mode 0700): it holds
across the node processes of the machine and ends by itself when its holder dies."""

from __future__ import annotations

import fcntl
import os
import secrets
import stat
from pathlib import Path

#: above systemd's container range (to 0x6FFFFFFF) and below its 0x7FFE0000 one
DEFAULT_UIDS = range(1_900_000_000, 1_900_000_000 + 4096)


def lock_directory() -> Path:
    """Root's directory for the leases: /run/dataledger-sandbox (created 0700)."""
    path = Path("/run/dataledger-sandbox")
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise PermissionError(f"{path} is not a private directory of this user")
    return path


class Uids:
    """The uids of ``uids`` this process holds a lease on."""

    def __init__(self, uids: range, directory: Path) -> None:
        if len(uids) == 0 or uids.start < 1000 or uids.stop > 2**32 - 2:
            raise ValueError(f"{uids} is not a range of unprivileged uids")
        self.uids = uids
        self.directory = directory
        self._held: dict[int, int] = {}
        self._next = secrets.randbelow(len(uids))

    def claim(self) -> int | None:
        """A uid no live worker of this machine has, now leased to us; None if all are."""
        for step in range(len(self.uids)):
            uid = self.uids[(self._next + step) % len(self.uids)]
            if uid in self._held:
                continue
            fd = os.open(self.directory / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._held[uid] = fd
            self._next = (self._next + step + 1) % len(self.uids)
            return uid
        return None

    def release(self, uid: int) -> None:
        """End the lease (once no process of that uid is left)."""
        fd = self._held.pop(uid, None)
        if fd is not None:
            os.close(fd)

    def release_all(self) -> None:
        for uid in list(self._held):
            self.release(uid)
