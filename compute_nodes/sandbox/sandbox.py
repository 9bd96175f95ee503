"""The sandbox as the node uses it: confined, single-use workers for product code, kept warm.

``Sandbox(limits, warm, hide)`` keeps ``warm`` workers ready (``pool.py``, forked by the
zygote of ``zygote.py``, confined by ``confine.py`` and ``seccomp.py``). ``run()`` takes a
ready worker, hands it the job and gives back its Result or a SandboxError (``job.py``);
the worker is then killed and discarded. See docs/SANDBOX.md.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Self

from .confine import ENVIRONMENT, NEW_ROOT
from .errors import CodeRaised, SandboxUnavailable
from .job import Result, conduct
from .limits import Limits
from .pool import ROOT, Pool
from .uids import DEFAULT_UIDS, Uids, lock_directory
from .worker import check_source

PROBE = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from compute_nodes.sandbox.zygote import probe; probe()")


class Sandbox:
    """Warm, confined, single-use workers for product code; see docs/SANDBOX.md.

    A worker sees the system's files and the Python install only; ``hide``: directories (or
    files) in there it must not see all the same (the repository's and the working
    directory's ``var/`` too). ``uids``: the unprivileged uids workers get, one
    per live worker, leased machine-wide. Starts ``warm`` workers and returns once one is
    ready; SandboxUnavailable if none can be."""

    def __init__(self, limits: Limits | None = None, warm: int = 2,
                 hide: Iterable[Path | str] = (), *, uids: range = DEFAULT_UIDS) -> None:
        if warm < 1:
            raise ValueError(f"warm must be at least 1, not {warm}")
        if os.geteuid() != 0:
            raise SandboxUnavailable(f"the sandbox needs root; this process runs as uid "
                                     f"{os.geteuid()}")
        self.limits = limits or Limits()
        self.hide = hidden_paths(hide)
        config = {"limits": self.limits.as_json(), "hide": [str(p) for p in self.hide],
                  "expose": [str(p) for p in exposed_paths()], "drop_paths": [str(ROOT)]}
        try:
            leases = lock_directory()
        except OSError as exc:
            raise SandboxUnavailable(f"no directory for the uid leases: {exc}") from None
        self._pool = Pool(self.limits, warm, config, Uids(uids, leases))
        self._pool.start()

    @staticmethod
    def check() -> str | None:
        """None if this machine can confine workers (Linux, root, namespaces, mounts, uid
        switch: tried in a throwaway process), else why not."""
        if not sys.platform.startswith("linux"):
            return f"the sandbox needs Linux, not {sys.platform}"
        if os.geteuid() != 0:
            return (f"the sandbox needs root (namespaces, mounts, a switch to an unprivileged "
                    f"uid); this process runs as uid {os.geteuid()}")
        if not hasattr(os, "pidfd_open") or not hasattr(signal, "pidfd_send_signal"):
            return "the sandbox needs pidfds (Linux 5.3, Python 3.9)"
        try:
            done = subprocess.run([sys.executable, "-I", "-c", PROBE, str(ROOT)],
                                  capture_output=True, text=True, timeout=30, cwd="/",
                                  env=dict(ENVIRONMENT), check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"the confinement probe did not run: {exc}"
        lines = done.stdout.strip().splitlines()
        if done.returncode == 0 and lines and lines[-1] == "ok":
            return None
        why = lines[-1] if lines else (done.stderr.strip()[-500:] or f"exit {done.returncode}")
        return f"this machine cannot confine a worker: {why}"

    def run(self, code_source: str, function_name: str, inputs: Sequence[Any],
            timeout_s: float | None = None) -> Result:
        """Run ``function_name`` of ``code_source`` (exactly one top-level ``def``) on
        ``inputs`` (one per parameter, usually DataFrames) in a fresh confined worker.

        The Result's value is plain JSON. Raises CodeRaised, LimitExceeded, OutputRefused or
        SandboxUnavailable (all SandboxError); ``timeout_s`` overrides the wall time."""
        try:
            check_source(code_source, function_name)
        except SyntaxError as exc:
            raise CodeRaised("SyntaxError",
                             "".join(traceback.format_exception_only(exc))) from None
        except ValueError as exc:
            raise CodeRaised("InvalidCode", str(exc)) from None
        wall = self.limits.wall_time_s if timeout_s is None else float(timeout_s)
        if wall <= 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s!r}")
        job = pickle.dumps({"source": code_source, "function": function_name,
                            "inputs": list(inputs)}, protocol=5)
        worker = self._pool.take()
        try:
            return conduct(worker, job, wall, self.limits)
        finally:
            self._pool.retire(worker)

    def close(self) -> None:
        """Kill every worker and the zygote; jobs running now end as LimitExceeded("killed")."""
        self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def hidden_paths(hide: Iterable[Path | str]) -> list[Path]:
    """The paths workers must not see, resolved: ``hide`` (each must exist: a worker's view
    is fixed when it starts) and the ``var/`` of the repository and of the working
    directory. A worker sees only the system's files and the Python install anyway
    (``confine.SYSTEM``, :func:`exposed_paths`); these are hidden where they fall inside."""
    paths = set()
    for given in hide:
        path = Path(given).resolve()
        if not path.exists():
            raise ValueError(f"cannot hide {path}: it does not exist")
        paths.add(path)
    paths |= {(ROOT / "var").resolve(), (Path.cwd() / "var").resolve()}
    return sorted(paths)


def exposed_paths() -> list[Path]:
    """The Python install and the venv, which a worker reads (besides the system's files).
    SandboxUnavailable if one lies under ``NEW_ROOT``, where the worker's root is built."""
    paths = sorted({Path(p).resolve() for p in (sys.base_prefix, sys.prefix, sys.exec_prefix)})
    for path in paths:
        if path == Path(NEW_ROOT) or Path(NEW_ROOT) in path.parents:
            raise SandboxUnavailable(f"the Python install {path} lies under {NEW_ROOT}")
    return [p for p in paths if not any(q in p.parents for q in paths)]
