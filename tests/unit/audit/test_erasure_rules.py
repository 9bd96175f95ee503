"""The rule book on ``privacy.subject_erased`` (密钥销毁): recorded by the server's own actor,
of a member of the participant it names, once; anything else is a finding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from audit.rules import RuleBook
from core.canonical import canonical_bytes
from core.record import LogEntry
from tests.unit.audit.rules_log import HonestLog, actor, build_honest_log, renumbered

SYSTEM = {"participant": "system", "member": "system", "role": "system"}


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> HonestLog:
    return build_honest_log(Path(tmp_path_factory.mktemp("erasure-rules")))


def erasure(log: HonestLog, subject: str, participant: str, *, by: dict[str, str] = SYSTEM,
            version: int = 1, stream: str | None = None) -> LogEntry:
    at = log.entries[-1].payload()["at"]
    payload: dict[str, Any] = {"actor": by, "at": at, "subject_id": subject,
                               "participant_id": participant}
    return LogEntry(0, stream or subject, version, "privacy.subject_erased",
                    canonical_bytes(payload))


def rules(log: HonestLog, *new: LogEntry) -> list[tuple[int, str]]:
    entries = renumbered([*log.entries, *new])
    return [(f.seq, f.rule) for f in RuleBook().run(entries)]


def test_an_erasure_of_a_member_by_the_system_actor_breaks_no_rule(log: HonestLog) -> None:
    provider = log.parties["provider"]
    assert rules(log, erasure(log, provider.member_id, provider.participant_id)) == []


def test_an_erasure_by_a_participant_or_of_a_non_member_or_twice_is_found(
        log: HonestLog) -> None:
    provider, demander = log.parties["provider"], log.parties["demander"]
    end = len(log.entries)
    by_party = erasure(log, provider.member_id, provider.participant_id, by=actor(provider))
    assert (end + 1, "actor_identity") in rules(log, by_party)
    elsewhere = erasure(log, provider.member_id, demander.participant_id)
    assert rules(log, elsewhere) == [(end + 1, "party")]
    once = erasure(log, provider.member_id, provider.participant_id)
    twice = erasure(log, provider.member_id, provider.participant_id, version=2)
    assert rules(log, once, twice) == [(end + 2, "lifecycle")]
