"""``dataledger audit replay`` against a tampered log: each tamper a real change to the real
SQLite file, PostgreSQL table or exported bundle of an honest ledger made through the API,
each caught with exit 1 naming the step and the seq (issue 13, "What must hold").

The replay trusts only the trust file taken when the ledger was made. A changed event is
named exactly, its bytes held to the leaf the log stored (the tree's tiles, a bundle's
``leaves/``); where the stored leaf was changed too, the checkpoint's root still differs and
the replay names the seqs between the last good checkpoint and that one, the tamper's seq
among them. The bundles here are exported with ``--all``: the log as it is, a tail no
witness vouches for included.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from audit.bundle import read_bundle
from chain.hasher import hash_leaf
from tests.integration.audit_ledger import (
    FAILS,
    HOLDS,
    Ledger,
    append_behind_the_tree,
    delete_event,
    delete_read_model_row,
    deliver_after_termination,
    export,
    forge_approval,
    integrate,
    make_market_ledger,
    payload_of,
    reanchor,
    rebuild_tree_keeping,
    replay,
    replay_without_rules,
    rewrite_bundle_events,
    rewrite_bundle_leaf,
    rewrite_event,
    rewrite_read_model,
    swap_events,
)

pytestmark = pytest.mark.slow  # a market walk, and py-ecc BLS for every co-signature checked

RECORDS, TREE, SIGNATURES, CONSISTENCY, RULES, READ_MODELS = 1, 2, 3, 4, 6, 7
#: what step 2 says of an event whose bytes changed behind the log's stored leaf
NOT_ITS_LEAF = "do not hash to the leaf the log stored"


@pytest.fixture
def ledger(database_url: str, tmp_path: Path) -> Ledger:
    return make_market_ledger(database_url, tmp_path / "var")


def audited(ledger: Ledger, tmp_path: Path, *source: str) -> tuple[int, dict[str, Any], str]:
    """Run the replay; (exit code, its --json report, what it printed)."""
    path = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    out = replay(ledger, *source, report=path)
    assert out.returncode in (HOLDS, FAILS), out.stdout + out.stderr
    return out.returncode, json.loads(path.read_text()), out.stdout + out.stderr


def fails(ledger: Ledger, tmp_path: Path, *source: str) -> dict[str, Any]:
    """The replay exits 1; its report's first failure (also printed)."""
    code, report, printed = audited(ledger, tmp_path, *source)
    assert code == FAILS, printed
    failure: dict[str, Any] = report["failure"]
    assert failure is not None and not report["ok"], report
    assert f"step {failure['step']}" in printed, printed
    return failure


def names_seq(failure: dict[str, Any], seq: int, *, span: bool = False) -> None:
    """The failure names ``seq``; with ``span``, a root step may name the seqs between two
    checkpoints instead, ``seq`` among them."""
    if failure["seq"] == seq:
        return
    found = re.search(r"seqs (\d+) to (\d+)", failure["where"])
    assert span and found and int(found[1]) <= seq <= int(found[2]), failure


def bundle_of(ledger: Ledger, tmp_path: Path) -> Path:
    return export(ledger, tmp_path / "bundle", "--all")


def named_by_its_leaf(failure: dict[str, Any], seq: int) -> None:
    """Step 2 names ``seq`` itself: its bytes do not hash to its stored leaf."""
    assert (failure["step"], failure["seq"]) == (TREE, seq), failure
    assert NOT_ITS_LEAF in failure["what"] and failure["where"] == f"seq {seq}", failure


# -- honest ----------------------------------------------------------------------------------


def test_the_honest_ledger_replays_clean_from_its_database_and_its_bundle(
        ledger: Ledger, tmp_path: Path) -> None:
    code, report, printed = audited(ledger, tmp_path)
    assert (code, report["failure"]) == (HOLDS, None), printed
    assert report["events"] == ledger.head
    assert [s["status"] for s in report["steps"] if s["number"] in (1, 2, 3, 4, 6, 7)] == [
        "passed"] * 6, report["steps"]
    bundle = bundle_of(ledger, tmp_path)
    code, report, printed = audited(ledger, tmp_path, "--bundle", str(bundle))
    assert (code, report["failure"]) == (HOLDS, None), printed


# -- the events --------------------------------------------------------------------------------


def test_a_changed_byte_in_a_stored_event_is_named_by_the_tree_step(
        ledger: Ledger, tmp_path: Path) -> None:
    seq = ledger.first["dataset.registered"]
    rewrite_event(ledger, seq, "Enterprise tax records", "Enterprise tax recordz")
    named_by_its_leaf(fails(ledger, tmp_path), seq)


def test_a_changed_byte_in_a_bundles_event_is_named_by_the_tree_step(
        ledger: Ledger, tmp_path: Path) -> None:
    seq = ledger.first["dataset.registered"]
    bundle = bundle_of(ledger, tmp_path)

    def edit(lines: list[bytes]) -> list[bytes]:
        assert b"Enterprise tax records" in lines[seq - 1]
        lines[seq - 1] = lines[seq - 1].replace(b"Enterprise tax records",
                                                b"Enterprise tax recordz")
        return lines

    rewrite_bundle_events(bundle, edit)
    named_by_its_leaf(fails(ledger, tmp_path, "--bundle", str(bundle)), seq)
    # the stored leaf rewritten to match: the checkpoint's root names the span
    changed = next(e for e in read_bundle(bundle).events() if e.seq == seq)
    rewrite_bundle_leaf(bundle, seq, hash_leaf(changed.canonical()))
    failure = fails(ledger, tmp_path, "--bundle", str(bundle))
    assert failure["step"] == TREE and NOT_ITS_LEAF not in failure["what"], failure
    assert "signed root differs" in failure["what"], failure
    names_seq(failure, seq, span=True)


def test_a_deleted_event_is_named_by_the_records_step(ledger: Ledger, tmp_path: Path) -> None:
    seq = ledger.first["contract.accepted"]
    delete_event(ledger, seq)
    failure = fails(ledger, tmp_path)
    assert (failure["step"], failure["seq"]) == (RECORDS, seq), failure
    assert "missing" in failure["what"], failure


def test_an_event_deleted_from_a_bundle_is_named_by_the_records_step(
        ledger: Ledger, tmp_path: Path) -> None:
    seq = ledger.first["contract.accepted"]
    bundle = bundle_of(ledger, tmp_path)
    rewrite_bundle_events(bundle, lambda lines: lines[:seq - 1] + lines[seq:])
    failure = fails(ledger, tmp_path, "--bundle", str(bundle))
    assert (failure["step"], failure["seq"]) == (RECORDS, seq), failure


def test_two_swapped_events_are_named_by_the_tree_step(ledger: Ledger, tmp_path: Path) -> None:
    a, b = ledger.first["contract.proposed"], ledger.first["contract.accepted"]
    swap_events(ledger, a, b)
    named_by_its_leaf(fails(ledger, tmp_path), a)


def test_two_events_swapped_in_a_bundle_are_out_of_order(ledger: Ledger,
                                                         tmp_path: Path) -> None:
    a, b = ledger.first["contract.proposed"], ledger.first["contract.accepted"]
    bundle = bundle_of(ledger, tmp_path)

    def swap(lines: list[bytes]) -> list[bytes]:
        lines[a - 1], lines[b - 1] = lines[b - 1], lines[a - 1]
        return lines

    rewrite_bundle_events(bundle, swap)
    failure = fails(ledger, tmp_path, "--bundle", str(bundle))
    assert (failure["step"], failure["seq"]) == (RECORDS, a), failure


def test_an_event_appended_behind_the_trees_back_is_not_anchored(
        ledger: Ledger, tmp_path: Path) -> None:
    seq = append_behind_the_tree(ledger)
    failure = fails(ledger, tmp_path)
    assert (failure["step"], failure["seq"]) == (SIGNATURES, seq), failure
    assert "anchored" in failure["what"], failure


def test_an_event_appended_behind_the_trees_back_is_not_anchored_in_the_bundle(
        ledger: Ledger, tmp_path: Path) -> None:
    seq = append_behind_the_tree(ledger)
    failure = fails(ledger, tmp_path, "--bundle", str(bundle_of(ledger, tmp_path)))
    assert (failure["step"], failure["seq"]) == (SIGNATURES, seq), failure
    # exported by default, the bundle stops at the newest anchored checkpoint, and says so
    anchored = export(ledger, tmp_path / "anchored")
    manifest = read_bundle(anchored).manifest
    assert (manifest["events"], manifest["tree_size"], manifest["scope"],
            manifest["log_events"]) == (seq - 1, seq - 1, "anchored", seq), manifest
    assert f"seqs {seq} to {seq}" in " ".join(manifest["notes"]), manifest
    code, report, printed = audited(ledger, tmp_path, "--bundle", str(anchored))
    assert (code, report["failure"], report["events"]) == (HOLDS, None, seq - 1), printed


# -- the business rules --------------------------------------------------------------------------


def test_a_forged_approval_anchored_by_honest_witnesses_breaks_the_rules(
        ledger: Ledger, tmp_path: Path) -> None:
    """The developer, no party to the contract, "approves" it: the event is well formed and
    signed by a registered key, the chain integrates it and the witnesses co-sign it (a
    consistent extension): only the rule book can tell."""
    seq = forge_approval(ledger)
    integrate(ledger)
    failure = fails(ledger, tmp_path)
    assert (failure["step"], failure["seq"]) == (RULES, seq), failure
    bundle = bundle_of(ledger, tmp_path)
    failure = fails(ledger, tmp_path, "--bundle", str(bundle))
    assert (failure["step"], failure["seq"]) == (RULES, seq), failure
    # every signature holds: the witnesses co-signed the forged event
    assert replay_without_rules(ledger, bundle).ok


def test_a_delivery_after_termination_re_signed_with_the_platforms_keys_breaks_the_rules(
        ledger: Ledger, tmp_path: Path) -> None:
    """The operator writes a delivery right after the contract's termination, rebuilds the
    tree and re-signs every checkpoint with the keys it holds (the log key and the
    in-process witnesses'): every signature verifies, so the rule book must catch it."""
    seq = deliver_after_termination(ledger)
    reanchor(ledger)
    failure = fails(ledger, tmp_path)
    assert (failure["step"], failure["seq"]) == (RULES, seq), failure
    bundle = bundle_of(ledger, tmp_path)
    failure = fails(ledger, tmp_path, "--bundle", str(bundle))
    assert (failure["step"], failure["seq"]) == (RULES, seq), failure
    # what the operator's keys bought it: the rewritten log is anchored throughout, every
    # signature holds
    without = replay_without_rules(ledger, bundle)
    assert without.ok and without.checkpoints[-1].size == ledger.head + 1


def test_a_backdated_event_re_signed_with_the_platforms_keys_is_named_by_its_time(
        ledger: Ledger, tmp_path: Path) -> None:
    """The operator moves the delivery's ``at`` an hour back (as it would to slip an
    execution into its window), rebuilds the tree and re-signs every checkpoint with the
    keys it holds: every signature verifies, the rules judge by the time written, but the
    time goes back behind the events before it (step 4)."""
    seq = ledger.last["delivery.made"]
    honest = payload_of(ledger, seq)["at"]
    back = (datetime.fromisoformat(honest) - timedelta(hours=1)).isoformat(
        timespec="microseconds").replace("+00:00", "Z")
    rewrite_event(ledger, seq, honest, back)
    reanchor(ledger)
    for source in ((), ("--bundle", str(bundle_of(ledger, tmp_path)))):
        failure = fails(ledger, tmp_path, *source)
        assert (failure["step"], failure["seq"]) == (CONSISTENCY, seq), failure
        assert "goes back more than 5 s before an earlier event's" in failure["what"], failure
        assert failure["found"] == back, failure


# -- the read models -------------------------------------------------------------------------------


def test_a_rewritten_read_model_row_is_named_by_table_key_and_column(
        ledger: Ledger, tmp_path: Path) -> None:
    rewrite_read_model(ledger, "rm_orders", "state", "approved", ledger.order_id)
    failure = fails(ledger, tmp_path)
    assert failure["step"] == READ_MODELS, failure
    assert "rm_orders" in failure["where"] and ledger.order_id in failure["where"], failure
    assert "state" in failure["what"], failure
    assert (failure["expected"], failure["found"]) == ('"terminated"', '"approved"'), failure


def test_a_deleted_read_model_row_is_named_by_table_and_key(ledger: Ledger,
                                                            tmp_path: Path) -> None:
    delete_read_model_row(ledger, "rm_orders", ledger.pending_order_id)
    failure = fails(ledger, tmp_path)
    assert failure["step"] == READ_MODELS, failure
    assert "rm_orders" in failure["where"] and ledger.pending_order_id in failure["where"]
    assert (failure["expected"], failure["found"]) == ("the row", "no such row"), failure


@pytest.fixture
def witnessed(database_url: str, tmp_path: Path, witness_urls: list[str]) -> Ledger:
    """The honest ledger, co-signed by two witnesses running as processes of their own."""
    return make_market_ledger(database_url, tmp_path / "var", witnesses=",".join(witness_urls))


def test_a_delivery_after_termination_is_refused_by_witnesses_of_their_own(
        witnessed: Ledger, tmp_path: Path, witness_urls: list[str]) -> None:
    """The same rewrite, the checkpoints before the termination kept, a new one cut over the
    rest and re-signed with the platform's key: witnesses with keys and state of their own
    refuse to co-sign it, so their co-signatures catch it (step 3) at the delivery's seq,
    before the rule book would."""
    ledger, ended = witnessed, witnessed.last["contract.terminated"]
    seq = deliver_after_termination(ledger)
    rebuilt = rebuild_tree_keeping(ledger, ended,
                                   DATALEDGER_WITNESS_URLS=",".join(witness_urls))
    assert f"latest checkpoint {ledger.head + 1} (anchored: False)" in rebuilt.stdout
    for source in ((), ("--bundle", str(bundle_of(ledger, tmp_path)))):
        failure = fails(ledger, tmp_path, *source)
        assert (failure["step"], failure["seq"]) == (SIGNATURES, seq), failure
        assert "not covered by an anchored checkpoint" in failure["what"], failure
