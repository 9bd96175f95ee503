"""The rule book in a second process, beside the walk, for a long log (``audit replay``).

Step 6 costs about as much as steps 1 to 5 together. On a machine with two cores the rule
book runs in a worker process, fed the records' canonical bytes in batches over a pipe,
while the walk reads, hashes and indexes them. Its findings are not interleaved with the
walk: the worker returns them all when the walk ends or stops. An honest log has none, and
the walk's report stands as it is; where the worker found any, audit/replay.py replays the
log again in one process, in order, so that the report names exactly the first failure a
replay without the worker names (when a finding waits for its anchored checkpoint, and
which step's failure comes first, is the walk's business: docs/AUDIT.md).

The worker reads the records the walk has already read as canonical (``LogEntry.read``):
it decodes them plainly (``LogEntry.read(..., checked=True)``) and feeds the same
``audit.rules.RuleBook``, so its findings are the rule book's own.
"""

from __future__ import annotations

import gc
import os
import pickle
import queue
import subprocess
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from core.record import LogEntry

#: events per batch sent to the worker (a few MB: the pipe's cost per event stays small)
BATCH = 4096
#: batches queued for the worker at most (memory: a few hundred MB at worst)
QUEUED = 48
#: a log of at least this many events (its length known beforehand) gets the worker
WORKER_FROM = 100_000

_FEED, _STORED, _FINISH, _DRAIN = b"F", b"S", b"E", b"D"


class RulesWorkerError(RuntimeError):
    """The worker process failed: the rule book raised, or the process died."""


def wanted(total: int | None) -> bool:
    """Whether a log of ``total`` events is worth a worker on this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    return total is not None and total >= WORKER_FROM and cores >= 2


class RulesWorker:
    """The replay's ``Rules`` (``feed``, ``finish``) with the rule book in a worker process.

    ``feed`` queues the record and returns no finding; :meth:`finish` returns every finding
    on every record fed and those the book still holds at the end, :meth:`drain` (the walk
    stopped early) those on the records fed so far. :meth:`close` ends the process.
    """

    def __init__(self, *, require_signatures: bool = False) -> None:
        # a fresh interpreter (``python -m audit.rules_worker``), not multiprocessing's
        # fork (the walk may hold threads) or spawn (it re-runs the caller's main module)
        down, to_worker = os.pipe()
        from_worker, up = os.pipe()
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "audit.rules_worker", str(down), str(up),
                 "1" if require_signatures else "0"],
                pass_fds=(down, up), env=env, stdin=subprocess.DEVNULL)
        finally:
            os.close(down)
            os.close(up)
        self._out = Connection(to_worker, readable=False)
        self._in = Connection(from_worker, writable=False)
        self._lines: list[Any] = []
        self._checked = True
        self.found: list[Any] | None = None
        # a sender thread and a queue of batches: the walk does not wait on the worker
        # while the worker (or the walk, on a busy machine) falls a few batches behind
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUED)
        self._sender = threading.Thread(target=self._sending, name="audit-rules-sender",
                                        daemon=True)
        self._sender.start()

    def _sending(self) -> None:
        failed = False
        while (message := self._queue.get()) is not None:
            if not failed:
                try:
                    self._out.send_bytes(message)
                except OSError:  # the worker is gone: _ask names it
                    failed = True

    def feed(self, entry: LogEntry, payload: Any = None) -> list[Any]:
        """Queue ``entry``. With its ``payload`` (a record read as canonical) the worker
        decodes its canonical line plainly; without, it is sent as stored and the rule
        book decodes and checks its payload itself, as it would here."""
        checked = payload is not None
        if checked != self._checked:
            self._send()
            self._checked = checked
        self._lines.append(entry.canonical() if checked else (
            entry.seq, entry.originator_id, entry.version, entry.type_name,
            entry.payload_bytes))
        if len(self._lines) >= BATCH:
            self._send()
        return []

    def _send(self) -> None:
        if self._lines:
            self._queue.put(_FEED + b"\n".join(self._lines) if self._checked
                            else _STORED + pickle.dumps(self._lines))
            self._lines = []

    def finish(self) -> list[Any]:
        """Every finding of the log (the walk reached its end)."""
        return self._ask(_FINISH)

    def drain(self) -> list[Any]:
        """Every finding on the records fed so far (the walk stopped before the end); once
        :meth:`finish` has answered, its answer."""
        return self.found if self.found is not None else self._ask(_DRAIN)

    def _ask(self, what: bytes) -> list[Any]:
        self._send()
        self._queue.put(what)
        try:
            kind, value = self._in.recv()
        except (EOFError, OSError) as exc:
            raise RulesWorkerError(f"the rule book's worker process ended: {exc}") from exc
        if kind != "ok":
            raise RulesWorkerError(f"the rule book failed in its worker process:\n{value}")
        self.found = list(value)
        return self.found

    def close(self) -> None:
        """End the worker: it stops when its pipe closes; one never asked (the walk failed
        otherwise) is stopped at once."""
        if self.found is None:
            self._process.kill()
        self._queue.put(None)
        self._sender.join()
        self._out.close()
        self._in.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def serve(conn: Connection, answer: Connection, require_signatures: bool) -> None:
    """The worker: feed each record received to a rule book; answer with the findings."""
    from audit.rules import RuleBook

    book = RuleBook(require_signatures=require_signatures)
    found: list[Any] = []
    try:
        while True:
            gc.freeze()  # the book's picture of the ledger is long-lived: not scanned again
            message = conn.recv_bytes()
            what = message[:1]
            if what == _FEED:
                feed = book.feed
                for line in message[1:].split(b"\n"):
                    entry, payload = LogEntry.read(line, checked=True)
                    found += feed(entry, payload)
            elif what == _STORED:
                for fields in pickle.loads(message[1:]):
                    found += book.feed(LogEntry(*fields))
            elif what == _FINISH:
                answer.send(("ok", found + book.finish()))
                found = []
            elif what == _DRAIN:
                answer.send(("ok", found))
                found = []
    except EOFError:
        return
    except Exception:  # noqa: BLE001 - handed to the walk, which raises it
        answer.send(("error", traceback.format_exc()))
    finally:
        conn.close()
        answer.close()


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1]), writable=False),
          Connection(int(sys.argv[2]), readable=False), sys.argv[3] == "1")
