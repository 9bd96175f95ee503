"""audit/rules_worker.py: the rule book in a worker process beside the replay's walk. Over a
real market's log (tests/unit/audit/rules_log.py), written as a bundle with checkpoints
signed and co-signed, the worker finds what the rule book finds, and a replay with the
worker reports exactly what a replay without it reports: clean for the honest log, and the
same first failure (step 6, same seq) for a log with a delivery after its contract's
termination."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from audit.replay import Replay
from audit.report import Report
from audit.rules import RuleBook
from audit.rules_worker import RulesWorker, RulesWorkerError
from audit.sources import BundleSource
from core.record import LogEntry
from tests.unit.audit import handmade as h
from tests.unit.audit.rules_log import HonestLog, build_honest_log, insert, with_payload
from tests.unit.audit.test_rules import at


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> HonestLog:
    return build_honest_log(Path(tmp_path_factory.mktemp("rules")))


def late_delivery(log: HonestLog) -> tuple[list[LogEntry], int]:
    """The second execution's delivery moved behind the contract's termination."""
    delivery = log.seq_of("delivery.made", log.ids["run2"])
    terminated = log.seq_of("contract.terminated", log.ids["order"])
    moved = with_payload(log.entry(delivery), at=at(log.entry(terminated)))
    return insert([e for e in log.entries if e.seq != delivery], terminated - 1, moved), \
        terminated


def in_worker(entries: list[LogEntry], every: int) -> list[Any]:
    """The worker's findings; every ``every``-th entry is sent as stored (no payload: the
    worker's rule book decodes and checks it), the others as canonical lines."""
    worker = RulesWorker()
    try:
        for entry in entries:
            payload = None if entry.seq % every == 0 else entry.payload()
            assert worker.feed(entry, payload) == []
        return worker.finish()
    finally:
        worker.close()


@pytest.mark.parametrize("every", [1, 3, 10**9])
def test_the_worker_finds_what_the_rule_book_finds(log: HonestLog, every: int) -> None:
    assert in_worker(log.entries, every) == [] == RuleBook().run(log.entries)
    entries, terminated = late_delivery(log)
    found = in_worker(entries, every)
    assert found == RuleBook().run(entries)
    assert [(f.seq, f.rule) for f in found] == [(terminated, "contract_live")]


def report_of(path: Path, workers: bool) -> dict[str, Any]:
    report: Report = Replay(h.trusted(), workers=workers).run(BundleSource(path))
    out = report.to_json()
    out.pop("seconds"), out.pop("started_at")
    return out


@pytest.mark.parametrize("tampered", [False, True])
def test_a_replay_with_the_worker_reports_what_one_without_reports(
        log: HonestLog, tmp_path: Path, tampered: bool) -> None:
    entries, terminated = late_delivery(log) if tampered else (log.entries, 0)
    cuts = [*range(10, len(entries), 10), len(entries)]
    path = h.bundle(tmp_path / "b", entries, cuts)
    alone, beside = report_of(path, workers=False), report_of(path, workers=True)
    assert beside == alone
    if tampered:
        failure = alone["failure"]
        assert (failure["step"], failure["seq"]) == (6, terminated)
        assert "contract_live" in failure["what"]
    else:
        assert alone["ok"] is True, alone["failure"]
        assert alone["events"] == len(entries)


def test_a_worker_that_died_is_named_not_waited_for(log: HonestLog) -> None:
    worker = RulesWorker()
    try:
        worker._process.kill()
        worker._process.wait()
        worker.feed(log.entries[0])
        with pytest.raises(RulesWorkerError, match="worker process ended"):
            worker.finish()
    finally:
        worker.close()
