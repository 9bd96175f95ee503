"""The compute node's side of a joint product, its pure parts: the layout, the vector, the
node key, the stored parts, and :class:`JointNode` against a scripted platform (the real
one is in ``test_joint.py``).

Runs inside the compute venv only: ``compute_nodes/setup-env test``.
"""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from client.platform import PlatformError
from compute_nodes import joint
from compute_nodes.enrollment import ensure_node_key, node_key_path, node_public_key
from compute_nodes.joint import (
    JointFailed,
    JointTerms,
    PartStore,
    check_layout,
    joint_rows,
    layout_of,
    layout_sha256,
    vector,
)
from compute_nodes.trust import TrustError
from core import decision, secagg
from tests.compute.joint_script import (
    JOB,
    KEYS,
    MEMBER_TEXT,
    MEMBERS,
    PROVIDERS,
    ROWS,
    TEXT,
    Scripted,
    node_for,
    signed,
)


def test_the_layout_is_the_sorted_unique_usable_keys() -> None:
    rows = [{"uscc": "B"}, {"uscc": "A"}, {"uscc": "B"}, {"uscc": None}, {"uscc": ""},
            {"uscc": 7}, {"uscc": "x" * 201}, {"other": "C"}, {"uscc": "x" * 200},
            {"uscc": "A\x00"}, {"uscc": ["A"]}]
    keys, unusable = layout_of(rows, "uscc")
    assert keys == ["A", "B", "x" * 200]
    assert unusable == 7
    assert layout_sha256(["A", "B"]) == hashlib.sha256(b'["A","B"]').hexdigest()
    assert layout_sha256(["中"]) == hashlib.sha256('["中"]'.encode()).hexdigest()


@pytest.mark.parametrize("keys", [[], ["b", "a"], ["a", "a"], ["a", 1], "ab", None, [""],
                                  ["x" * 201], ["a\x00"]])
def test_a_layout_that_is_not_sorted_unique_keys_is_refused(keys: Any) -> None:
    with pytest.raises(JointFailed, match="layout_refused"):
        check_layout(keys)
    assert check_layout(["a", "b", "c"]) == ["a", "b", "c"]


def test_the_vector_is_row_major_over_the_layout() -> None:
    rows = [{"k": "b", "x": 2, "y": 0.5}, {"k": "a", "x": 1, "y": None},
            {"k": "b", "x": 3, "y": 1.25}, {"k": "zz", "x": 9, "y": 9}, {"k": "c"},
            {"k": ["a"], "x": 1}, {"x": 1}]
    laid = vector(rows, ["a", "b", "c", "d"], "k", ["x", "y"])
    #               a: x  y   b: x  y     c: x y   d: x y
    assert laid.values == [1, 0, 5, 1.75, 0, 0, 0, 0]
    assert laid.dropped == 3  # zz is not in the layout; a list and no key are no key
    assert laid.nulls == 3  # a's y, c's x and y
    assert secagg.to_fixed(laid.values)[3] == round(1.75 * secagg.SCALE)


@pytest.mark.parametrize("bad", ["12", True, float("inf"), float("nan"), [1], {"v": 1}])
def test_a_value_that_is_not_a_finite_number_fails_without_quoting_it(bad: Any) -> None:
    with pytest.raises(JointFailed) as caught:
        vector([{"k": "a", "x": bad}], ["a"], "k", ["x"])
    assert caught.value.reason.startswith("result_not_reportable: the value column 'x'")
    assert "12" not in caught.value.reason


def test_joint_rows_keep_fractions_and_read_nan_as_null() -> None:
    frame = pd.DataFrame({"k": ["a", "b"], "x": [1.5, float("nan")], "n": [3, 4]})
    rows = joint_rows(frame)
    assert rows == [{"k": "a", "x": 1.5, "n": 3}, {"k": "b", "x": None, "n": 4}]
    assert all(type(r["n"]) is int for r in rows)
    with pytest.raises(JointFailed, match="a table of rows"):
        joint_rows({"total": 3})


def test_three_providers_vectors_masked_sum_to_the_plain_per_key_sum() -> None:
    tables = [pd.DataFrame({"k": ["a", "b", "c"], "x": [1, 2, 3], "y": [0.5, 0.25, 2.0]}),
              pd.DataFrame({"k": ["b", "c", "d"], "x": [10, 20, 30], "y": [1.0, 1.0, 1.0]}),
              pd.DataFrame({"k": ["a", "d", "q"], "x": [100, 200, 7], "y": [3.5, 0.0, 1.0]})]
    layout, _ = layout_of(joint_rows(tables[0]), "k")  # the first input's owner lays out
    keys = {p: secagg.new_node_key() for p in ("market", "tax", "power")}
    public = {p: secagg.public_key_text(k.public_key()) for p, k in keys.items()}
    parts = []
    for provider, table in zip(keys, tables, strict=True):
        laid = vector(joint_rows(table), layout, "k", ["x", "y"])
        parts.append(secagg.mask(keys[provider], "exec-1", provider, list(keys), public,
                                 secagg.to_fixed(laid.values),
                                 layout_sha256=layout_sha256(layout)))
    total = secagg.from_fixed(secagg.aggregate(parts, "exec-1", list(keys)))
    plain = pd.concat(tables).groupby("k")[["x", "y"]].sum().reindex(layout, fill_value=0)
    assert total == [float(v) for row in plain.itertuples(index=False) for v in row]


def test_the_node_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    path = node_key_path(tmp_path, "p-1")
    key = ensure_node_key(path)
    assert path.read_bytes() == key.private_bytes_raw() and len(path.read_bytes()) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = ensure_node_key(path)
    assert again.private_bytes_raw() == key.private_bytes_raw()
    assert node_public_key(path) == secagg.public_key_text(key.public_key())
    assert list(path.parent.iterdir()) == [path]  # no spare file left behind
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="32 raw bytes"):
        ensure_node_key(path)


def test_a_part_is_stored_privately_and_read_back(tmp_path: Path) -> None:
    store = PartStore(tmp_path / "parts")
    assert store.load("exec-1") is None
    part = _part("exec-1", "tax")
    store.save(part)
    assert store.load("exec-1") == part
    assert stat.S_IMODE(store.path("exec-1").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "parts").stat().st_mode) == 0o700
    store.path("exec-2").write_bytes(store.path("exec-1").read_bytes())
    with pytest.raises(JointFailed, match="not of this execution"):
        store.load("exec-2")


def test_the_terms_come_from_the_proven_payloads() -> None:
    assert JointTerms.of({"joint": None}, {}) is None
    terms = JointTerms.of(
        {"key_column": "uscc", "joint": {"value_columns": ["a", "b"], "min_providers": 3,
                                         "deadline_seconds": 60},
         "inputs": [{"dataset_id": "d1", "fields": []}, {"dataset_id": "d2", "fields": []}]},
        {"required_approvals": ["tax", "power", "operator"]})
    assert terms == JointTerms("uscc", ("a", "b"), 3, 60, ("d1", "d2"),
                               ("tax", "power", "operator"))
    with pytest.raises(TrustError, match="key column"):
        JointTerms.of({"joint": {"value_columns": ["a"]}}, {})


# -- JointNode against a scripted platform --------------------------------------------------

def _part(execution_id: str, provider: str, values: list[int] | None = None) -> Any:
    return secagg.mask(KEYS[provider], execution_id, provider, PROVIDERS, TEXT,
                       values or [1, 2, 3, 4], layout_sha256=layout_sha256(["a", "b"]))


_node = node_for


def test_the_layout_provider_lays_out_masks_stores_then_posts(tmp_path: Path) -> None:
    platform = Scripted("market")
    node = _node(tmp_path, platform)
    outcome = node.deliver(JOB, "comp-1", "J", ROWS, {"d1": "h"}, "site")
    assert platform.layout == ["a", "b"]
    assert outcome.status == "posted" and outcome.extra["rows"] == 2
    [posted] = platform.posted
    stored = node.parts.load("J")  # type: ignore[union-attr]
    assert posted["header"] == dict(stored.header) and outcome.result_sha256 == stored.digest()
    assert posted["input_hashes"] == {"d1": "h"} and posted["datasite"] == "site"
    assert stored.header["providers"] == PROVIDERS and stored.header["length"] == 2
    assert node.verifier.proofs == 3  # its own key and both peers'


def test_a_retry_posts_the_stored_part_and_never_masks_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = Scripted("tax", layout_sha256=layout_sha256(["a", "b"]))
    platform.layout = ["a", "b"]
    node = _node(tmp_path, platform)
    node.deliver(JOB, "comp-2", "J", ROWS, {}, "site")
    first = platform.posted[0]

    def masked_twice(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("masked twice")

    monkeypatch.setattr(joint.secagg, "mask", masked_twice)
    other_rows = [{"k": "a", "x": 1000}]  # even were the rows different, the part is not
    node.deliver(JOB, "comp-2", "J", other_rows, {}, "site")
    assert platform.posted[1] == first


def test_a_node_whose_key_is_not_the_registered_one_fails(tmp_path: Path) -> None:
    platform = Scripted("tax", layout_sha256=layout_sha256(["a"]))
    platform.keys["tax"] = {**platform.keys["tax"], "public_key": TEXT["power"]}
    with pytest.raises(JointFailed, match="^node_key_not_registered: the node key regis"):
        _node(tmp_path, platform).deliver(JOB, "c", "J", ROWS, {}, "site")
    with pytest.raises(JointFailed, match="^node_key_not_registered: this node has no"):
        _node(tmp_path / "none", Scripted("tax"), key=False).deliver(JOB, "c", "J", ROWS, {},
                                                                     "site")
    platform = Scripted("tax")
    platform.keys["tax"] = None  # type: ignore[assignment]
    with pytest.raises(JointFailed, match="node_key_not_registered"):
        _node(tmp_path / "unregistered", platform).deliver(JOB, "c", "J", ROWS, {}, "site")


def test_a_peer_without_a_key_or_a_missing_layout_fails_at_the_deadline(
        tmp_path: Path) -> None:
    # the clock counts a second per look: the deadline is 50 looks away
    soon = "1970-01-01T00:00:50Z"
    platform = Scripted("tax", deadline=soon)
    with pytest.raises(JointFailed, match="^layout_missing: the layout provider posted no"):
        _node(tmp_path, platform).deliver(JOB, "c", "J", ROWS, {}, "site")
    platform = Scripted("market", deadline=soon)
    platform.keys["power"] = None  # type: ignore[assignment]
    with pytest.raises(JointFailed, match="provider power has no node key proven"):
        _node(tmp_path / "m", platform).deliver(JOB, "c", "J", ROWS, {}, "site")
    assert platform.posted == []


def test_a_failed_joint_stops_the_wait(tmp_path: Path) -> None:
    platform = Scripted("tax", state="failed", reason="missing: provider power sent no part")
    with pytest.raises(JointFailed, match=r"^joint_failed: .*\(missing: provider power"):
        _node(tmp_path, platform).deliver(JOB, "c", "J", ROWS, {}, "site")


@pytest.mark.parametrize(("change", "problem"), [
    ({"providers": ["market", "tax"]}, "owners of the product's inputs"),
    ({"providers": ["tax", "market", "power"]}, "owners of the product's inputs"),
    ({"layout_provider": "tax"}, "layout provider"),
    ({"execution": 2}, "not the proven"),
    ({"value_columns": ["x", "y"]}, "not the proven"),
    ({"deadline": "tomorrow"}, "not an ISO time"),
])
def test_a_joint_view_that_is_not_the_proven_terms_is_refused(
        tmp_path: Path, change: dict[str, Any], problem: str) -> None:
    platform = Scripted("tax", **change)
    with pytest.raises(TrustError, match=problem):
        _node(tmp_path, platform).deliver(JOB, "c", "J", ROWS, {}, "site")
    assert platform.posted == []


def test_a_served_layout_that_is_not_the_views_is_refused(tmp_path: Path) -> None:
    platform = Scripted("tax", layout_sha256=layout_sha256(["a", "b"]))
    platform.layout = ["a", "c"]
    with pytest.raises(TrustError, match="not the joint's"):
        _node(tmp_path, platform).deliver(JOB, "c", "J", ROWS, {}, "site")


@pytest.mark.parametrize(("status", "body", "reason"), [
    (409, '{"error":"part_refused","reason":"execution"}',
     ("part_refused: the ledger refused the masked part (HTTP 409, error part_refused, "
     "reason execution)")),
    (409, '{"error":"wrong_state"}', "joint_failed: the joint execution ended before"),
    (422, '{"error":"invalid_input","field":"header.length","detail":"9 words, not 7"}',
     ("part_refused: the ledger refused the masked part (HTTP 422, error invalid_input, "
     "field header.length)")),
])
def test_a_refused_part_fails_with_the_ledgers_status(tmp_path: Path, status: int, body: str,
                                                       reason: str) -> None:
    platform = Scripted("tax", layout_sha256=layout_sha256(["a"]))
    platform.layout = ["a"]

    def refuse(computation_id: str, posted: dict[str, Any]) -> dict[str, Any]:
        raise PlatformError("POST", "/computations/c/masked-part", status, body)

    platform.post_masked_part = refuse  # type: ignore[method-assign]
    with pytest.raises(JointFailed) as caught:
        _node(tmp_path, platform).deliver(JOB, "c", "J", ROWS, {}, "site")
    assert caught.value.reason.startswith(reason) and body in caught.value.detail


def test_a_part_posted_after_the_policy_lapsed_is_a_recorded_failure(tmp_path: Path) -> None:
    platform = Scripted("tax", layout_sha256=layout_sha256(["a"]))
    platform.layout = ["a"]

    def lapsed(computation_id: str, posted: dict[str, Any]) -> dict[str, Any]:
        return {"computation_id": computation_id, "joint_id": "J", "digest": None,
                "state": "failed", "reason": "policy_lapsed: the contract ended"}

    platform.post_masked_part = lapsed  # type: ignore[method-assign]
    outcome = _node(tmp_path, platform).deliver(JOB, "c", "J", ROWS, {}, "site")
    assert (outcome.status, outcome.detail) == ("failed", "policy_lapsed: the contract ended")


def test_a_key_not_yet_under_an_anchored_checkpoint_is_waited_for(tmp_path: Path) -> None:
    platform = Scripted("market", deadline="1970-01-01T00:00:50Z")
    platform.keys["power"] = {**platform.keys["power"], "seq": 150}  # not anchored yet
    node = _node(tmp_path, platform)
    with pytest.raises(JointFailed, match="provider power has no node key proven"):
        node.deliver(JOB, "c", "J", ROWS, {}, "site")
    assert platform.posted == [] and node.parts.load("J") is None  # type: ignore[union-attr]
    # anchored before the deadline: proven, then used
    platform = Scripted("market")
    platform.keys["power"] = {**platform.keys["power"], "seq": 150}
    node = _node(tmp_path / "later", platform)
    proving = node.verifier
    looks = iter([None, None, SimpleNamespace(size=200)])
    proving.anchored = lambda seq: SimpleNamespace(size=100) if seq <= 100 else next(looks)
    assert node.deliver(JOB, "c", "J", ROWS, {}, "site").status == "posted"


# -- a platform that lies (DESIGN.md 8: the operator is not trusted) ------------------------

MARKET_ROWS = [{"k": "a", "x": 1234}, {"k": "b", "x": 5678}]
OTHER_ROWS = [{"k": "a", "x": 7}, {"k": "b", "x": 9}]


def _posted(platform: Scripted) -> secagg.MaskedPart:
    body = platform.posted[0]
    return secagg.MaskedPart(body["header"], base64.b64decode(body["body"]))


def test_a_layout_the_log_does_not_hold_is_refused(tmp_path: Path) -> None:
    market = Scripted("market")
    _node(tmp_path / "m", market).deliver(JOB, "c-m", "J", MARKET_ROWS, {}, "s")
    assert _posted(market).header["layout_sha256"] == layout_sha256(["a", "b"])
    fake = ["zz-1", "zz-2"]  # the platform's layout, of the real one's length
    for pid in ("tax", "power"):
        platform = Scripted(pid, layout_sha256=layout_sha256(fake), state="layout_published")
        platform.layout = fake
        platform.layout_event = {"layout_sha256": layout_sha256(["a", "b"]), "length": 2}
        with pytest.raises(TrustError, match="layout_sha256"):
            _node(tmp_path / pid, platform).deliver(JOB, f"c-{pid}", "J", OTHER_ROWS, {}, "s")
        assert platform.posted == []
    # a view naming no layout event (waited for until the deadline), or the joint's start
    # as its layout: refused
    for seq, error in ((None, JointFailed), (20, TrustError)):
        platform = Scripted("tax", layout_sha256=layout_sha256(["a", "b"]), layout_seq=seq,
                            deadline="1970-01-01T00:00:50Z")
        platform.layout = ["a", "b"]
        with pytest.raises(error):
            _node(tmp_path / f"t{seq}", platform).deliver(JOB, "c", "J", OTHER_ROWS, {}, "s")
        assert platform.posted == []


def test_parts_masked_over_a_layout_the_platform_forged_never_unmask_a_provider(
        tmp_path: Path) -> None:
    """Even a platform that writes a forged layout into its log for two providers gets
    nothing: their masks are bound to another layout than market's, and do not cancel."""
    market = Scripted("market")
    _node(tmp_path / "m", market).deliver(JOB, "c-m", "J", MARKET_ROWS, {}, "s")
    fake = ["zz-1", "zz-2"]
    parts = [_posted(market)]
    for pid in ("tax", "power"):
        platform = Scripted(pid, layout_sha256=layout_sha256(fake), state="layout_published")
        platform.layout = fake
        _node(tmp_path / pid, platform).deliver(JOB, f"c-{pid}", "J", [], {}, "s")
        parts.append(_posted(platform))
    with pytest.raises(secagg.AggregationRefused, match="layout"):
        secagg.aggregate(parts, "J", PROVIDERS)
    # relabelled to pass the header checks, the sum is noise, not market's values
    relabelled = [secagg.MaskedPart({**p.header, "layout_sha256": layout_sha256(["a", "b"])},
                                    p.body) for p in parts]
    total = secagg.aggregate(relabelled, "J", PROVIDERS)
    assert secagg.from_fixed(total) != [1234.0, 5678.0]


def test_a_joint_view_that_is_not_its_proven_start_is_refused(tmp_path: Path) -> None:
    for change in ({"deadline": "2999-06-01T00:00:00Z"}, {"providers": ["market", "tax"]},
                   {"layout_provider": "tax"}):
        platform = Scripted("tax")
        platform.started_event = {**platform.log()[20][2], **change}
        with pytest.raises(TrustError, match="joint.started"):
            _node(tmp_path / str(len(change)), platform).deliver(JOB, "c", "J", ROWS, {}, "s")
        assert platform.posted == []


def test_providers_come_from_the_proven_dataset_registrations(tmp_path: Path) -> None:
    """The platform says d3 is tax's, so that market masks against tax alone (whom it
    then joins to unmask market): the owners are proven, and the view's list refused."""
    market = Scripted("market", providers=["market", "tax"])
    market.dataset_owner = lambda d: {"d1": "market", "d2": "tax", "d3": "tax"}[d]  # type: ignore
    with pytest.raises(TrustError, match="owners of the product's inputs"):
        _node(tmp_path / "m", market).deliver(JOB, "c-m", "J", MARKET_ROWS, {}, "s")
    assert market.posted == []
    # a dataset view naming another event than its registration
    market = Scripted("market")
    market.dataset = lambda d: {"id": d, "owner_id": "market", "registered_seq": 4}  # type: ignore
    with pytest.raises(TrustError, match="dataset.registered"):
        _node(tmp_path / "m2", market).deliver(JOB, "c-m", "J", MARKET_ROWS, {}, "s")


def _forged_keys(market: Scripted) -> dict[str, Any]:
    evil = {p: secagg.new_node_key() for p in ("tax", "power")}
    for p, k in evil.items():
        market.keys[p] = {**market.keys[p], "public_key": secagg.public_key_text(k.public_key()),
                          "seq": 50 + PROVIDERS.index(p)}
    return evil


@pytest.mark.parametrize("forgery", ["unsigned", "made_up_key", "another_member",
                                     "other_statement", "revoked", "newer"])
def test_a_peer_key_event_without_its_members_valid_signature_is_refused(
        tmp_path: Path, forgery: str) -> None:
    market = Scripted("market")
    evil = _forged_keys(market)
    if forgery == "unsigned":
        market.signers.update(tax=None, power=None)
    elif forgery == "made_up_key":
        market.signers.update(tax=decision.new_private_key(), power=decision.new_private_key())
    elif forgery == "another_member":  # signed by market's member, shown as tax's signer
        market.signers.update(tax=MEMBERS["market"])
        market.keys["tax"]["signer_seq"] = 4
    elif forgery == "other_statement":  # tax's real signature, of its real key, replayed
        market.extra[51] = ("participant.node_key_registered", "tax", {
            **market.log()[51][2], "signature": signed("tax", TEXT["tax"], 2)})
    elif forgery == "revoked":  # tax's member key revoked before the registration
        market.keys = {p: {**v, "seq": 60 + i} for i, (p, v) in enumerate(
            Scripted("market").keys.items())}
        market.extra[30] = ("participant.key_revoked", "tax", {
            "member_id": "tax-admin", "key_id": decision.key_id(MEMBER_TEXT["tax"]),
            "reason": "lost"})
    elif forgery == "newer":  # the view shows an older key than the latest registration
        market.keys = {p: {**v, "seq": 60 + i} for i, (p, v) in enumerate(
            Scripted("market").keys.items())}
        market.extra[70] = ("participant.node_key_registered", "tax", {
            "public_key": TEXT["power"], "key_id": "x", "signature": None})
    node = _node(tmp_path / "m", market)
    with pytest.raises(TrustError):
        node.deliver(JOB, "c-m", "J", MARKET_ROWS, {}, "s")
    assert market.posted == [] and node.parts.load("J") is None  # type: ignore[union-attr]
    assert evil  # what a platform would unmask market with, had it posted


def test_the_registered_keys_signed_by_their_members_are_used(tmp_path: Path) -> None:
    market = Scripted("market")
    node = _node(tmp_path, market)
    assert node.deliver(JOB, "c-m", "J", MARKET_ROWS, {}, "s").status == "posted"
    assert node.verifier.proofs == 3


def test_a_key_longer_than_a_code_is_no_layout_key() -> None:
    long_key = "中" * (secagg.MAX_CODE_BYTES // 3 + 1)  # under 200 characters, over the bytes
    assert len(long_key) <= joint.MAX_KEY_CHARS
    keys, unusable = layout_of([{"k": long_key}, {"k": "a"}, {"k": "\ud800"}], "k")
    assert (keys, unusable) == (["a"], 2)
    with pytest.raises(JointFailed, match="layout_refused"):
        check_layout(["a", long_key])
    assert check_layout(["a", "中" * (secagg.MAX_CODE_BYTES // 3)])


def test_a_key_proven_once_is_still_checked_for_a_later_registration(tmp_path: Path) -> None:
    market = Scripted("market")
    node = _node(tmp_path, market)
    shown = market.keys["tax"]
    for size in (60, 80):
        checkpoint = SimpleNamespace(size=size)
        assert node.proofs.node_key("tax", shown, checkpoint) == TEXT["tax"]
    assert node.verifier.proofs == 1  # proven and verified once
    # registered again after the log the node read: found under a larger checkpoint
    market.extra[90] = ("participant.node_key_registered", "tax", {
        "public_key": TEXT["power"], "key_id": "x", "signature": None})
    with pytest.raises(TrustError, match="registered another node key .event 90."):
        node.proofs.node_key("tax", shown, SimpleNamespace(size=100))
