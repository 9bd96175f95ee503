"""What can go wrong with a job in the sandbox, as one hierarchy under :class:`SandboxError`.

``str()`` of every error is fixed text (or a value from a fixed set): the node may put it in
a public reason. What the product's code said or printed (``detail``, ``stdout``,
``stderr``) may quote private values and belongs in the provider's own log only.
"""

from __future__ import annotations

#: the limits a job can exceed; "killed": the worker died by a signal or without answering
LIMITS = frozenset({"wall_time", "cpu_time", "memory", "output_size", "processes",
                    "file_size", "killed"})


class SandboxError(Exception):
    """A job did not give a result. ``stdout``/``stderr``: what the code printed (capped),
    for the provider's own log only; empty when nothing ran."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.stdout = ""
        self.stderr = ""


class CodeRaised(SandboxError):
    """The code raised. ``kind``: the exception's type name as the worker reported it (an
    identifier of at most 100 characters, yet untrusted text: the code names its classes);
    ``detail``: its message and traceback, which may quote private values."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__("the product's code raised an exception")
        self.kind = kind if kind.isidentifier() and len(kind) <= 100 else "Exception"
        self.detail = detail


class LimitExceeded(SandboxError):
    """The job hit a limit; ``which`` is one of :data:`LIMITS`. ``detail``: the code's
    traceback when it raised on the limit (MemoryError...), else empty."""

    def __init__(self, which: str, detail: str = "") -> None:
        which = which if which in LIMITS else "killed"
        super().__init__("the worker was killed" if which == "killed"
                         else f"the job exceeded its {which} limit")
        self.which = which
        self.detail = detail


class OutputRefused(SandboxError):
    """The output has no JSON form (an object of a type the sandbox does not convert, a key
    that is not text, too deep, or a malformed answer). ``reason`` never quotes the value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SandboxUnavailable(SandboxError):
    """Workers cannot be started or confined here (not root, no namespaces, closed...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
