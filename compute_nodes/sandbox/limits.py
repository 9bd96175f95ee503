"""The sandbox's settings: every limit a job runs under, with defaults that let pandas work
and make a 10 GiB allocation fail."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


@dataclass(frozen=True)
class Limits:
    """Limits per job. The rlimits apply to each process of the job (``processes`` to all
    of them together: each worker has a uid of its own); ``wall_time_s`` is enforced by the
    parent, which kills the worker."""

    wall_time_s: float = 60.0           #: the job's wall time (``run(timeout_s=...)`` overrides)
    cpu_time_s: int = 60                #: RLIMIT_CPU, seconds (SIGXCPU, then SIGKILL 1 s later)
    memory_bytes: int = 2 * GIB         #: RLIMIT_AS: address space, pandas' own ~0.3 GiB included
    processes: int = 32                 #: RLIMIT_NPROC for the worker's uid (threads count)
    file_bytes: int = 16 * MIB          #: RLIMIT_FSIZE: largest file the code may write
    open_files: int = 256               #: RLIMIT_NOFILE
    tmp_bytes: int = 64 * MIB           #: size of the private tmpfs on /tmp (the working dir)
    output_bytes: int = 64 * MIB        #: the JSON answer, at most
    print_bytes: int = 64 * KIB         #: what the code prints, kept per stream (the rest dropped)
    seccomp: bool = True                #: a syscall filter (x86_64 only; skipped elsewhere)
    start_timeout_s: float = 30.0       #: starting the pool or a worker, at most

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, bool) and value <= 0:
                raise ValueError(f"Limits.{name} must be positive, not {value!r}")

    def as_json(self) -> dict[str, Any]:
        """The limits as the zygote receives them."""
        return asdict(self)
