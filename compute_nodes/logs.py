"""The compute node's logs: what reaches the platform's log, and what stays with the provider.

Two rules (issue 11):

- **No secret in any log.** Each handler the node installs redacts the secrets it knows (a
  provider's node token, its datasite's admin password, the runner's password) and what is
  shaped like one though unknown (a ``dl_`` bearer token, an ``Authorization: Bearer``
  value, a ``password`` given as a keyword, as PySyft logs its API calls:
  ``user.update … 'password': …``); PySyft's loggers are held at WARNING (its INFO records
  list each API call's arguments) and never write to the platform's log.
- **Private details stay in the provider's own data domain.** A provider's node process
  writes its operational log (what it hosts, each outcome, errors without data) to stderr,
  which the host passes on to ``serve``'s output. Everything else goes to ``private.log`` in
  the provider's datasite directory (mode 0600, under the node's 0700 directory; the sandbox
  sees none of it): what the node logs on purpose through :data:`PRIVATE_LOGGER` (the text
  of a product's exception, what its code printed), PySyft's warnings and errors, and
  whatever the process or a library prints (PySyft's notices, progress bars, warnings,
  tracebacks). That file may hold private values; never a token or password.

In a provider's process (``compute_nodes/host.py`` sets it up when the process starts with
:func:`provider_logging`)::

    from compute_nodes.logs import private_log
    private_log.warning("%s raised: %s", function_name, detail)

Elsewhere (a test, a standalone node that did not set it up) its records go nowhere.

Standard library only.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

#: the provider's own log: propagates nowhere, written to :data:`PRIVATE_LOG` only
PRIVATE_LOGGER = "dataledger.provider_private"
PRIVATE_LOG = "private.log"
FORMAT = "%(asctime)s %(levelname)s compute-node: %(message)s"
PRIVATE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[redacted]"
MIN_SECRET = 8  # shorter known "secrets" are not redacted (they would blank common words)
#: PySyft's loggers (and the uvicorn of an HTTP datasite): to the private log only
SYFT_LOGGERS = ("syft", "uvicorn")
#: chatty at INFO (every HTTP request); WARNING and up still reach the operational log
QUIET_LOGGERS = ("httpx", "httpcore")

TOKEN = re.compile(r"\bdl_[A-Za-z0-9_\-]{20,}")
BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/\-]{8,}=*")
PASSWORD = re.compile(r"""(?i)(password\w*['"]?\s*[:=]\s*)(['"])(?:(?!\2).){1,500}?\2""")


#: the provider's private logger: product exception texts and output, anything that may
#: quote private values (its secrets are redacted all the same)
private_log = logging.getLogger(PRIVATE_LOGGER)
private_log.propagate = False
private_log.addHandler(logging.NullHandler())  # until provider_logging: nowhere


class Redactor(logging.Filter):
    """Replaces known secrets and secret-shaped text with :data:`REDACTED`, in a record's
    message, exception text and stack, and in any text (:meth:`redact`)."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        super().__init__()
        self._known: list[str] = []
        self.add(*known)

    def add(self, *secrets: str) -> None:
        """Know more secrets (longest first: a runner's password holds the admin's)."""
        fresh = {s for s in secrets if s and len(s) >= MIN_SECRET} - set(self._known)
        if fresh:
            self._known = sorted({*self._known, *fresh}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._known:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = TOKEN.sub(REDACTED, text)
        text = BEARER.sub(lambda m: m.group(1) + REDACTED, text)
        return PASSWORD.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}{m.group(2)}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format: keep the template, drop the values
            message, record.args = str(record.msg), None
        clean = self.redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class RedactingStream(io.TextIOBase):
    """A text stream that writes whole lines to ``target``, each redacted first (a secret
    printed in pieces is seen whole)."""

    def __init__(self, target: IO[str], redactor: Redactor) -> None:
        super().__init__()
        self.target, self.redactor = target, redactor
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            if "\n" in self._pending:
                done, self._pending = self._pending.rsplit("\n", 1)
                self.target.write(self.redactor.redact(done) + "\n")
                self.target.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self.target.write(self.redactor.redact(self._pending))
                self._pending = ""
            self.target.flush()

    def fileno(self) -> int:
        return self.target.fileno()

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


def _handler(stream: IO[str], redactor: Redactor, fmt: str) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(redactor)
    return handler


def operational_logging(redactor: Redactor, stream: IO[str] | None = None,
                        level: int = logging.INFO) -> None:
    """The root logger writes to ``stream`` (stderr: the platform's log) through
    ``redactor``, replacing the handlers it had; the chatty loggers are held at WARNING."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(_handler(stream or sys.stderr, redactor, FORMAT))
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def provider_logging(directory: Path, secrets: Iterable[str]) -> Path:
    """Set up the logs of a provider's node process (once, first thing): the operational
    log on the process's stderr as it was, redacted; the private log, PySyft's loggers and
    everything printed on stdout or stderr from now on to ``directory/private.log``
    (0600), redacted too. Returns the private log's path."""
    redactor = Redactor(secrets)
    path, fd = _private_file(directory)
    sys.stdout.flush()
    sys.stderr.flush()
    platform = os.fdopen(os.dup(2), "w", encoding="utf-8", errors="backslashreplace",
                         buffering=1)
    os.dup2(fd, 1)  # what a library writes to the descriptors directly: private
    os.dup2(fd, 2)
    private = RedactingStream(os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace",
                                        buffering=1), redactor)
    sys.stdout = sys.stderr = private  # type: ignore[assignment]
    operational_logging(redactor, platform)
    _route_private(_handler(private, redactor, PRIVATE_FORMAT))  # type: ignore[arg-type]
    _report_uncaught()
    return path


def standalone_logging(directory: Path, secrets: Iterable[str]) -> Path:
    """The logs of a standalone node (``compute_nodes/cli.py``), whose stdout carries its
    answers: the operational log on stderr, redacted; the private log and PySyft's loggers
    to ``directory/private.log`` (0600), redacted. Returns the private log's path."""
    redactor = Redactor(secrets)
    path, fd = _private_file(directory)
    operational_logging(redactor)
    _route_private(_handler(os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace",
                                      buffering=1), redactor, PRIVATE_FORMAT))
    return path


def _private_file(directory: Path) -> tuple[Path, int]:
    """``directory/private.log`` opened for appending, mode 0600 (a file made before keeps
    no wider mode), its directory 0700."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / PRIVATE_LOG
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return path, fd


def _route_private(handler: logging.Handler) -> None:
    """The private logger and PySyft's write through ``handler`` only (PySyft's at WARNING:
    its INFO records list each API call's arguments)."""
    for name in (PRIVATE_LOGGER, *SYFT_LOGGERS):
        logger = logging.getLogger(name)
        logger.propagate = False
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
    private_log.setLevel(logging.DEBUG)
    for name in SYFT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _report_uncaught() -> None:
    """An uncaught exception: its type on the operational log, its text (which may quote
    data) on the private one."""
    operational = logging.getLogger("compute_nodes.host")

    def report(kind: type[BaseException], exc: BaseException,
               tb: TracebackType | None, where: str) -> None:
        operational.error("uncaught %s in %s (its text is in the provider's private log)",
                          kind.__name__, where)
        private_log.error("uncaught in %s", where, exc_info=(kind, exc, tb))

    def in_thread(args: Any) -> None:
        if args.exc_type is not SystemExit:
            name = args.thread.name if args.thread is not None else "a thread"
            report(args.exc_type, args.exc_value, args.exc_traceback, f"thread {name}")

    sys.excepthook = lambda kind, exc, tb: report(kind, exc, tb, "the main thread")
    threading.excepthook = in_thread
