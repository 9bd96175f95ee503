"""The server under test: ``dataledger serve`` in a subprocess on a free loopback port, and
the CPU it spends (its child process included)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from client.platform import Platform


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_command() -> list[str]:
    exe = Path(sys.executable).with_name("dataledger")
    if exe.exists():
        return [str(exe), "serve"]
    found = shutil.which("dataledger")
    return [found, "serve"] if found else [sys.executable, "-m", "cli", "serve"]


def cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds of a process and its live descendants (Linux /proc), or None.

    ``serve`` runs its projections and chain in a child process by default: its CPU is
    the server's too.
    """
    def stat(p: int) -> list[str]:
        return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()

    try:
        own = stat(pid)
    except (OSError, IndexError, ValueError):
        return None
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents.setdefault(int(stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    ticks = int(own[11]) + int(own[12])
    todo = list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        try:
            fields = stat(child)
        except (OSError, IndexError, ValueError):
            continue
        ticks += int(fields[11]) + int(fields[12])
        todo += parents.get(child, [])
    return ticks / os.sysconf("SC_CLK_TCK")


@contextmanager
def running_server(env_extra: dict[str, str], workdir: Path,
                   timeout: float) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``dataledger serve`` on a free loopback port, up (``/health`` answers) until exit."""

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATALEDGER_")}
    env.update(env_extra)
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen([*_server_command(), "--host", "127.0.0.1", "--port", str(port)],
                            env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        with Platform.at(base) as api:
            up = api.wait_until_up(timeout, alive=lambda: proc.poll() is None)
        if proc.poll() is not None:
            raise RuntimeError(f"dataledger serve exited with {proc.returncode}; see "
                               f"{workdir / 'server.log'}: {_tail(workdir / 'server.log')}")
        if not up:
            raise RuntimeError(f"dataledger serve not healthy after {timeout:.0f} s")
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()


def _tail(path: Path, n: int = 600) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""
