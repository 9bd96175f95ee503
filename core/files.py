"""Private files: what the server and the compute node keep for their owner only."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, text: str | bytes) -> None:
    """Write ``text`` (UTF-8 if a str) to ``path`` atomically, readable by this user only
    (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(text.encode("utf-8") if isinstance(text, str) else text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) a directory only this user can open (0700)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # one made before, or by a umask, keeps no wider mode
    return path
