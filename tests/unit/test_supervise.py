"""The restart-with-backoff supervisor (core/supervise.py) with children of its own kind."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from core.supervise import Backoff, Supervisor


class FakeChild:
    """A child that exits with ``code`` when told to (``exit``), or on terminate/kill."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.code: int | None = None
        self.closed = 0
        self._exited = threading.Event()

    def exit(self, code: int) -> None:
        self.code = code
        self._exited.set()

    def wait(self, timeout: float | None) -> int | None:
        self._exited.wait(timeout)
        return self.code

    def terminate(self) -> None:
        self.exit(-15)

    def kill(self) -> None:
        self.exit(-9)

    def close(self) -> None:
        self.closed += 1


def test_a_failed_restart_is_tried_again_after_a_longer_pause_not_counted_as_an_exit(
        caplog: pytest.LogCaptureFixture) -> None:
    children: list[FakeChild] = []
    failures = [RuntimeError("cannot start")]

    def start() -> FakeChild:
        if len(children) == 1 and failures:
            raise failures.pop()
        children.append(FakeChild(len(children) + 1))
        return children[-1]

    backoff = Backoff(0.01, 1.0, 60.0)
    supervisor = Supervisor("fake", start, backoff, log=logging.getLogger("test"), poll=0.01)
    with caplog.at_level(logging.ERROR, logger="test"):
        supervisor.start()
        children[0].exit(3)
        deadline = time.monotonic() + 5
        while len(children) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        supervisor.stop(1.0)
    exits = [r for r in caplog.records if "exited with code" in r.getMessage()]
    assert len(children) == 2 and supervisor.starts == 2
    assert len(exits) == 1 and children[0].closed == 1  # the dead child seen and closed once
    assert any("starting fake failed; trying again in 0.0" in r.getMessage()
               for r in caplog.records)
    assert backoff._next > 0.02  # the failed start made the next pause longer
