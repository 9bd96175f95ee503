"""audit/replay.py step by step, on small bundles made by hand (tests/unit/audit/handmade.py)
and written as real files: an honest one replays clean, and each kind of wrong is named by
its step and seq, with what was expected and what was found.

The business rules (step 6) are audit/rules' own subject; here they are skipped or stood in
for, so each test judges the step it is about.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from audit.replay import AT_TOLERANCE, Replay
from audit.report import FAILED, PASSED, SKIPPED, STOPPED, UNWITNESSED, Report
from audit.sources import BundleSource
from core.actor_index import IndexFold
from core.record import LogEntry
from tests.unit.audit import handmade as h
from tests.unit.audit.handmade import FORGER, Cut

NO_RULES = "not judged in this test"


def replay(path: Path, rules: Any = NO_RULES, **options: Any) -> Report:
    return Replay(h.trusted(), rules=rules, **options).run(BundleSource(path))


def failed(report: Report, step: int, seq: int | None) -> str:
    """The failure's line, once it is at ``step`` and ``seq``."""
    assert report.failure is not None, "the replay passed"
    assert (report.failure.step, report.failure.seq) == (step, seq), report.failure.line()
    assert report.steps[step].status == FAILED
    return report.failure.line()


def rewrite_file(bundle: Path, rel: str, data: bytes, count_delta: int = 0) -> None:
    """Replace one file of the bundle and its manifest entry (as a forger would)."""
    (bundle / rel).write_bytes(data)
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    for f in manifest["files"]:
        if f["path"] == rel:
            f.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data),
                     count=f["count"] + count_delta)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


# -- an honest log ---------------------------------------------------------------------------
def test_an_honest_bundle_replays_clean_with_its_shape_reported(tmp_path: Path) -> None:
    entries = h.events(10)
    report = replay(h.bundle(tmp_path / "b", entries, [4, Cut(8, anchored=False), 10]))
    assert report.ok, report.failure and report.failure.line()
    assert [report.steps[n].status for n in range(1, 8)] == [
        PASSED, PASSED, PASSED, PASSED, SKIPPED, SKIPPED, SKIPPED]
    assert report.steps[1].checked == 10 and report.steps[3].checked == 3
    assert report.steps[5].reason.startswith("no checkpoint carries an index line")
    assert report.steps[6].reason == NO_RULES
    data = report.to_json()
    assert data["events"] == 10
    assert data["events_per_type"] == {"dataset.registered": 7, "participant.registered": 3}
    assert data["events_per_day"] == {"2030-03-01": 4, "2030-03-02": 4, "2030-03-03": 2}
    assert [(c["size"], c["anchored"], c["signers"]) for c in data["checkpoints"]["list"]] == [
        (4, True, 2), (8, False, 0), (10, True, 2)]
    assert data["checkpoints"]["latest_anchored_size"] == 10


def test_the_tree_is_hashed_across_batches_as_in_one(tmp_path: Path) -> None:
    entries = h.events(37)
    path = h.bundle(tmp_path / "b", entries, [5, 16, 17, 33, 37])
    assert replay(path, batch=3).ok and replay(path, batch=1).ok


def test_a_rule_book_runs_over_every_event_and_its_finding_is_step_6(tmp_path: Path) -> None:
    @dataclass
    class Finding:
        seq: int
        rule: str = "no_delivery_after_termination"
        expected: str = "a live contract"
        found: str = "contract c1 terminated at seq 3"

    @dataclass
    class Book:
        seen: list[int] = field(default_factory=list)

        def feed(self, entry: LogEntry) -> list[Finding]:
            self.seen.append(entry.seq)
            return [Finding(entry.seq)] if entry.seq == 6 else []

        def finish(self) -> list[Finding]:
            return []

    path = h.bundle(tmp_path / "b", h.events(8), [8])
    book = Book()
    report = replay(path, rules=book)
    line = failed(report, 6, 6)
    assert "breaks the rule no_delivery_after_termination" in line
    assert "expected a live contract, found contract c1 terminated at seq 3" in line
    # held until the checkpoint over it held: the tree and the witnesses speak first
    assert book.seen == [1, 2, 3, 4, 5, 6, 7, 8]
    forged = [*h.events(8)[:6], h.changed(h.events(8)[6], name="rewritten")]
    from audit.bundle import write_bundle
    write_bundle(tmp_path / "c", [*forged, h.events(8)[7]],
                 h.checkpoints(h.events(8), [8]), h.trust_doc())
    assert "one of seqs 1 to 8" in failed(replay(tmp_path / "c", rules=Book()), 2, None)

    class Clean(Book):
        def feed(self, entry: LogEntry) -> list[Finding]:
            return []

        def finish(self) -> list[Finding]:
            return [Finding(2, rule="held_request")]

    assert "held_request" in failed(replay(path, rules=Clean()), 6, 2)


# -- step 1: records -------------------------------------------------------------------------
def test_a_deleted_event_is_a_gap_named_by_its_seq(tmp_path: Path) -> None:
    entries = h.events(8)
    path = h.bundle(tmp_path / "b", entries[:4] + entries[5:], [4])
    line = failed(replay(path), 1, 5)
    assert "missing from the log" in line and "expected seq 5, found seq 6" in line


def test_two_swapped_events_are_named(tmp_path: Path) -> None:
    entries = h.events(8)
    swapped = [*entries[:2], entries[3], entries[2], *entries[4:]]
    line = failed(replay(h.bundle(tmp_path / "b", swapped, [8])), 1, 3)
    assert "expected seq 3, found seq 4" in line


def test_a_line_that_is_not_canonical_is_named_by_its_seq(tmp_path: Path) -> None:
    path = h.bundle(tmp_path / "b", h.events(8), [8])
    lines = (path / "events/00000001.jsonl").read_bytes().split(b"\n")
    lines[5] = lines[5].replace(b'"seq":6', b'"seq": 6')
    rewrite_file(path, "events/00000001.jsonl", b"\n".join(lines))
    line = failed(replay(path), 1, 6)
    assert "events/00000001.jsonl" in line and "canonical" in line


def test_a_file_changed_behind_its_manifest_is_named(tmp_path: Path) -> None:
    path = h.bundle(tmp_path / "b", h.events(8), [8])
    target = path / "events/00000001.jsonl"
    data = bytearray(target.read_bytes())
    data[30] ^= 0x01
    target.write_bytes(bytes(data))
    line = failed(replay(path), 1, None)
    assert "events/00000001.jsonl" in line and "SHA-256" in line


def test_a_log_cut_short_of_its_checkpoint_is_named(tmp_path: Path) -> None:
    entries = h.events(8)
    records = h.checkpoints(entries, [4, 8])
    from audit.bundle import write_bundle
    write_bundle(tmp_path / "b", entries[:6], records, h.trust_doc())
    line = failed(replay(tmp_path / "b"), 1, 7)
    assert "checkpoint 8 covers it, the log ends at seq 6" in line


# -- step 2: the tree ------------------------------------------------------------------------
def test_a_rewritten_event_is_named_by_the_root_it_breaks(tmp_path: Path) -> None:
    entries = h.events(8)
    records = h.checkpoints(entries, [4, 5, 6, 8])
    from audit.bundle import write_bundle
    forged = [*entries[:5], h.changed(entries[5], name="another dataset"), *entries[6:]]
    write_bundle(tmp_path / "b", forged, records, h.trust_doc())
    line = failed(replay(tmp_path / "b"), 2, 6)
    assert "checkpoint 6 (seq 6)" in line and "root" in line
    # where checkpoints are sparser, the span between the good one and the bad one is named
    write_bundle(tmp_path / "c", [*entries[:6], h.changed(entries[6], n=1), entries[7]],
                 records, h.trust_doc())
    assert "checkpoint 8 (one of seqs 7 to 8)" in failed(replay(tmp_path / "c"), 2, None)


# -- step 3: signatures ----------------------------------------------------------------------
def test_a_tree_re_signed_with_another_log_key_fails_its_signature(tmp_path: Path) -> None:
    line = failed(replay(h.bundle(tmp_path / "b", h.events(8), [4, Cut(8, signer=FORGER)])),
                  3, 8)
    assert "checkpoint 8" in line and "log's signature does not verify" in line


def test_an_anchored_checkpoint_without_a_quorum_fails(tmp_path: Path) -> None:
    line = failed(replay(h.bundle(tmp_path / "b", h.events(8), [4, Cut(8, witnesses=1)])), 3, 8)
    assert "without a quorum" in line and "expected 2, found 1" in line


def test_co_signatures_of_another_checkpoint_do_not_count(tmp_path: Path) -> None:
    path = h.bundle(tmp_path / "b", h.events(8), [Cut(8, cosign_other_body=True)])
    assert "another body" in failed(replay(path), 3, 8)


def test_a_stored_aggregate_that_is_not_the_signers_fails(tmp_path: Path) -> None:
    entries = h.events(8)
    records = h.checkpoints(entries, [4, 8])
    records[0]["aggregate"] = records[1]["aggregate"]
    from audit.bundle import write_bundle
    write_bundle(tmp_path / "b", entries, records, h.trust_doc())
    assert "aggregate" in failed(replay(tmp_path / "b"), 3, 4)


def test_events_no_anchored_checkpoint_covers_fail_unless_anchored_only(tmp_path: Path) -> None:
    entries = h.events(10)
    from audit.bundle import write_bundle
    write_bundle(tmp_path / "b", entries, h.checkpoints(entries, [4, 8, Cut(9, anchored=False)]),
                 h.trust_doc())
    line = failed(replay(tmp_path / "b"), 3, 9)
    assert "not covered by an anchored checkpoint" in line and "up to seq 10" in line
    report = replay(tmp_path / "b", anchored_only=True)
    assert report.ok and report.events == 8
    assert "after seq 8" in report.notes[0]


# -- step 4: consistency ---------------------------------------------------------------------
def test_a_broken_prev_chain_is_named(tmp_path: Path) -> None:
    path = h.bundle(tmp_path / "b", h.events(8), [4, Cut(6, prev=b"\x07" * 32), 8])
    assert "does not link to the checkpoint before it" in failed(replay(path), 4, 6)


def test_a_checkpoint_cut_before_the_one_before_it_is_named(tmp_path: Path) -> None:
    path = h.bundle(tmp_path / "b", h.events(8), [Cut(4, minutes=30), Cut(8, minutes=10)])
    assert "cut before the checkpoint before it" in failed(replay(path), 4, 8)


def at_of(entry: LogEntry, **delta: float) -> str:
    """The event's ``at`` moved by ``delta`` (timedelta's keywords)."""
    at = datetime.fromisoformat(entry.payload()["at"]) + timedelta(**delta)
    return at.isoformat().replace("+00:00", "Z")


def test_an_event_backdated_beyond_the_tolerance_is_named(tmp_path: Path) -> None:
    """The operator writes seq 6 with a time before seq 5's, re-hashes and re-signs every
    checkpoint (the witnesses co-signing a consistent log): its ``at`` goes back."""
    entries = h.events(8)
    entries[5] = h.changed(entries[5], at=at_of(entries[4], hours=-1))
    line = failed(replay(h.bundle(tmp_path / "b", entries, [4, 8])), 4, 6)
    assert f"goes back more than {AT_TOLERANCE.total_seconds():g} s" in line
    assert "found 2030-03-02T08:05:00Z" in line
    # a step back within the tolerance is two commands sequenced out of order: it holds
    entries[5] = h.changed(entries[5], at=at_of(entries[4],
                                                seconds=-AT_TOLERANCE.total_seconds()))
    assert replay(h.bundle(tmp_path / "c", entries, [4, 8])).ok


def test_an_event_later_than_the_checkpoint_over_it_is_named(tmp_path: Path) -> None:
    entries = h.events(8)
    entries[3] = h.changed(entries[3], at=at_of(entries[3], minutes=20))  # 09:24, the checkpoint was cut at 09:10
    line = failed(replay(h.bundle(tmp_path / "b", entries, [Cut(4, minutes=10), 8])), 4, 4)
    assert "later than the time of checkpoint 4, the first that covers it" in line
    assert "expected at most 2030-03-01T09:10:00Z, found 2030-03-01T09:24:00Z" in line


def test_an_event_without_a_time_is_named(tmp_path: Path) -> None:
    entries = h.events(8)
    entries[2] = h.changed(entries[2], at="the third of March")
    assert "its at is not an RFC 3339 time" in failed(
        replay(h.bundle(tmp_path / "b", entries, [8])), 4, 3)


def test_a_time_finding_waits_for_the_checkpoints_and_a_rule_on_an_earlier_seq(
        tmp_path: Path) -> None:
    entries = h.events(8)
    entries[5] = h.changed(entries[5], at=at_of(entries[4], hours=-1))
    records = h.checkpoints(entries, [4, 8])
    from audit.bundle import write_bundle
    write_bundle(tmp_path / "b", entries, records, h.trust_doc())
    # the log's signature over the tree speaks first
    records[1]["note"] = records[0]["note"]
    write_bundle(tmp_path / "c", entries, records, h.trust_doc())
    assert failed(replay(tmp_path / "c"), 3, 8)

    @dataclass
    class Finding:
        seq: int
        rule: str = "held_request"
        expected: str = "x"
        found: str = "y"

    @dataclass
    class Book:
        on: int

        def feed(self, entry: LogEntry) -> list[Finding]:
            return [Finding(entry.seq)] if entry.seq == self.on else []

        def finish(self) -> list[Finding]:
            return []

    # of a time finding and a rule's, the one on the earlier seq is named
    assert "held_request" in failed(replay(tmp_path / "b", rules=Book(5)), 6, 5)
    assert "goes back" in failed(replay(tmp_path / "b", rules=Book(7)), 4, 6)


# -- step 5: the index -----------------------------------------------------------------------
def index_root(entries: list[LogEntry]) -> bytes:
    fold = IndexFold()
    for e in entries:
        fold.apply(e)
    return fold.root()


def test_index_lines_are_recomputed_from_the_events(tmp_path: Path) -> None:
    entries = h.events(8)
    cuts = [Cut(4, index_root=index_root(entries[:4])), Cut(8, index_root=index_root(entries))]
    report = replay(h.bundle(tmp_path / "b", entries, cuts))
    assert report.ok and report.steps[5].status == PASSED and report.steps[5].checked == 2


def test_an_index_root_that_omits_an_event_is_caught(tmp_path: Path) -> None:
    entries = h.events(8)
    # the index at 8 leaves out seq 6: the map would say its actor did nothing then
    omitted = index_root([*entries[:5], *[replace(e, seq=e.seq - 1) for e in entries[6:]]])
    cuts = [Cut(4, index_root=index_root(entries[:4])), Cut(8, index_root=omitted)]
    line = failed(replay(h.bundle(tmp_path / "b", entries, cuts)), 5, None)
    assert "checkpoint 8 (the index over seqs 1 to 8)" in line
    b64 = base64.b64encode(index_root(entries)).decode()
    assert f"expected {b64}" in line


def test_a_checkpoint_without_the_index_line_after_one_with_it_fails(tmp_path: Path) -> None:
    entries = h.events(10)
    cuts = [4, Cut(8, index_root=index_root(entries[:8])), 10]
    line = failed(replay(h.bundle(tmp_path / "b", entries, cuts)), 5, 10)
    assert "checkpoint 10" in line and "carries no index line, though checkpoint 8 did" in line


def test_checkpoints_without_the_index_line_are_said_so(tmp_path: Path) -> None:
    entries = h.events(8)
    report = replay(h.bundle(tmp_path / "b", entries, [4, Cut(8, index_root=index_root(entries))]))
    assert report.ok and report.steps[5].checked == 1
    assert "1 checkpoints carry no index line" in report.notes[0]


# -- step 7 and the verdict's shape ----------------------------------------------------------
def test_read_models_that_differ_are_step_7(tmp_path: Path) -> None:
    @dataclass
    class Diff:
        table: str = "orders"
        key: str = "('o-1',)"
        column: str = "state"
        expected: str = "'terminated'"
        found: str = "'active'"

    @dataclass
    class Comparison:
        ok: bool = False
        tables: list[str] = field(default_factory=lambda: ["orders", "datasets"])
        problems: list[str] = field(default_factory=list)
        findings: list[Diff] = field(default_factory=lambda: [Diff()])

    source = BundleSource(h.bundle(tmp_path / "b", h.events(4), [4]))
    source.read_models = lambda upto: Comparison()  # type: ignore[method-assign]
    report = Replay(h.trusted(), rules=NO_RULES).run(source)
    line = failed(report, 7, None)
    assert "read model orders, row ('o-1',)" in line and "column state" in line
    assert "expected 'terminated', found 'active'" in line
    assert [report.steps[n].status for n in (1, 2, 3, 4)] == [PASSED] * 4


def test_the_first_failure_stops_the_walk_and_the_other_steps_say_so(tmp_path: Path) -> None:
    entries = h.events(8)
    report = replay(h.bundle(tmp_path / "b", entries[:4] + entries[5:], [4]))
    assert report.steps[1].status == FAILED
    assert report.steps[3].status == STOPPED and "step 1" in report.steps[3].reason
    data = report.to_json()
    assert data["ok"] is False and data["failure"]["seq"] == 5
    assert data["failure"]["step_name"] == "records"


@pytest.mark.parametrize("quorum", [0, 1])
def test_a_smaller_quorum_in_the_trust_file_is_what_counts(tmp_path: Path, quorum: int) -> None:
    from chain.trust import TrustedKeys
    path = h.bundle(tmp_path / "b", h.events(4), [Cut(4, witnesses=quorum)])
    trust = TrustedKeys.from_json({**h.trust_doc(), "quorum": quorum})
    report = Replay(trust, rules=NO_RULES).run(BundleSource(path))
    assert report.ok
    # quorum 0: a pass that no witness vouches for, and the report says so first
    assert report.to_json()["unwitnessed"] is (quorum == 0)
    assert (report.notes[:1] == [UNWITNESSED]) is (quorum == 0)


def test_a_malformed_checkpoint_record_is_named(tmp_path: Path) -> None:
    entries = h.events(4)
    records = h.checkpoints(entries, [4])
    records[0]["anchored"] = "yes"
    from audit.bundle import write_bundle
    write_bundle(tmp_path / "b", entries, records, h.trust_doc())
    assert "a malformed record: anchored" in failed(replay(tmp_path / "b"), 3, 4)
