"""compute_nodes.runs: executions in flight, started early, released only once proven.

The executor here is a stand-in that records what it was asked (the real one runs in the
node tests, tests/compute/test_node.py and test_hostile.py)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from compute_nodes.executor import Job, Prepared
from compute_nodes.outcome import Outcome
from compute_nodes.runs import Runs


class Recorder:
    """Prepares by waiting on a gate; releases by recording."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate or threading.Event()
        self.prepared: list[Job] = []
        self.released: list[tuple[Job, Any]] = []
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def prepare(self, job: Job) -> Prepared:
        with self._lock:
            self.prepared.append(job)
            self.running += 1
            self.most = max(self.most, self.running)
        self.gate.wait(5)
        with self._lock:
            self.running -= 1
        return Prepared(f"comp-{job.contract_id}-{job.code}", value=job.code)

    def release(self, job: Job, prepared: Prepared | Outcome) -> Outcome:
        self.released.append((job, prepared))
        assert isinstance(prepared, Prepared)
        return Outcome(job.contract_id, "delivered", str(prepared.value), job.execution)


def job(contract: str = "c1", code: str = "v1") -> Job:
    return Job(contract, 1, code, "sha", 7, ["d1"], None)


def test_an_early_start_of_the_same_job_is_released_once_proven() -> None:
    recorder = Recorder()
    runs = Runs(recorder, parallel=2)  # type: ignore[arg-type]
    runs.start(job())
    runs.start(job())  # in flight already: not started twice
    assert runs.run(job(), wait=False).status == "running"
    assert recorder.released == []  # nothing leaves before it ran and was proven
    recorder.gate.set()
    outcome = runs.run(job())
    assert outcome.status == "delivered" and outcome.detail == "v1"
    assert len(recorder.prepared) == 1 and len(recorder.released) == 1


def test_an_early_start_from_views_that_lied_is_dropped_unreleased() -> None:
    recorder = Recorder()
    runs = Runs(recorder, parallel=2)  # type: ignore[arg-type]
    runs.start(job(code="forged"))
    recorder.gate.set()
    outcome = runs.run(job(code="v1"))  # the proven job differs
    assert outcome.detail == "v1"
    assert [j.code for j in recorder.prepared] == ["forged", "v1"]
    assert [j.code for j, _ in recorder.released] == ["v1"]


def test_executions_run_concurrently_up_to_parallel() -> None:
    recorder = Recorder()
    runs = Runs(recorder, parallel=3)  # type: ignore[arg-type]
    for i in range(6):
        runs.start(job(contract=f"c{i}"))
    deadline = time.monotonic() + 5
    while recorder.running < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert recorder.running == 3
    recorder.gate.set()
    assert all(runs.run(job(contract=f"c{i}")).status == "delivered" for i in range(6))
    assert recorder.most == 3


def test_an_error_while_preparing_is_raised_once_and_asked_again_later() -> None:
    class Failing(Recorder):
        calls = 0

        def prepare(self, job: Job) -> Prepared:
            Failing.calls += 1
            if Failing.calls == 1:
                raise RuntimeError("the platform did not answer")
            return Prepared("comp", value="ok")

    runs = Runs(Failing(), parallel=1)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        runs.run(job())
    assert runs.run(job()).status == "delivered"


def test_parallel_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Runs(Recorder(), parallel=0)  # type: ignore[arg-type]


def test_an_early_run_never_proven_is_dropped_after_a_while(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from compute_nodes import runs as runs_module

    recorder = Recorder()
    recorder.gate.set()
    runs = Runs(recorder, parallel=1)  # type: ignore[arg-type]
    runs.start(job(contract="never"))
    runs.run(job(contract="other"))  # let the pool finish the early one
    assert runs.in_flight(("never", 1))
    monkeypatch.setattr(runs_module, "EARLY_TTL_S", 0.0)
    runs.start(job(contract="next"))
    assert not runs.in_flight(("never", 1))
    assert [j.contract_id for j, _ in recorder.released] == ["other"]
