"""The joint execution's own rules (domain/joint.py), without a store: its id, the layout's
bytes, the joint declaration, and the states."""

from __future__ import annotations

import hashlib
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from core.canonical import canonical_bytes
from core.hidden_query import MAX_CODE_BYTES, code_bytes
from domain.base import Actor, Context
from domain.errors import Forbidden, InvalidInput, WrongState
from domain.joint import MAX_PART_WORDS, NS, JointExecution, joint_id, layout_bytes
from domain.product import check_joint

AT = "2026-12-04T10:00:00.000000Z"
SCHEMA = {"type": "array", "items": {"type": "object", "properties": {
    "code": {"type": "string"}, "score": {"type": "integer"}, "w": {"type": "number"},
    "name": {"type": "string"}}}}
PROVIDERS = ["p-market", "p-tax", "p-power"]


def ctx(participant: str = "p-market", role: str = "provider") -> Context:
    return Context(Actor(participant, "m-1", role, ("member",)), AT)


def started() -> JointExecution:
    order = SimpleNamespace(id="order-1", demander_id="bank")
    product = SimpleNamespace(id="product-1", key_column="code",
                              joint={"value_columns": ["score", "w"], "min_providers": 2,
                                     "deadline_seconds": 90})
    return JointExecution.start(ctx(), order=order, product=product,  # type: ignore[arg-type]
                                execution=1, providers=PROVIDERS)


def test_the_joint_id_is_the_uuid5_of_the_contract_and_execution() -> None:
    assert NS == uuid.uuid5(uuid.NAMESPACE_URL, "dataledger:joint")
    assert joint_id("c", 2) == str(uuid.uuid5(NS, "c#2#joint"))
    assert joint_id("c", 1) != joint_id("c", 2) != joint_id("d", 2)


def test_a_layout_is_sorted_unique_keys_and_its_hash_is_of_its_canonical_json() -> None:
    content, sha = layout_bytes(["a", "b", "中"])
    assert content == canonical_bytes(["a", "b", "中"])
    assert sha == hashlib.sha256(content).hexdigest()
    for keys, field in ((["b", "a"], "keys[1]"), (["a", "a"], "keys[1]"), ([""], "keys[0]"),
                        (["x" * 257], "keys[0]"), ([1], "keys[0]"), ([], "keys"), ("ab", "keys"),
                        (["a", "企" * 86], "keys[1]"), (["a\x00"], "keys[0]")):
        with pytest.raises(InvalidInput) as info:
            layout_bytes(keys)
        assert info.value.field == field


def test_a_joint_declaration_gets_its_defaults_and_names_what_is_wrong() -> None:
    assert check_joint(None, "code", SCHEMA) is None
    assert check_joint({"value_columns": ["score"]}, "code", SCHEMA) == {
        "value_columns": ["score"], "min_providers": 2, "deadline_seconds": 600}
    cases: list[tuple[Any, Any, str]] = [
        ({"value_columns": ["score"]}, None, "key_column"),
        ({"value_columns": ["score"]}, "score", "key_column"),
        ({"value_columns": ["name"]}, "code", "joint.value_columns[0]"),
        ({"value_columns": ["score", "score"]}, "code", "joint.value_columns[1]"),
        ({"value_columns": ["score"] * 9}, "code", "joint.value_columns"),
        ({"value_columns": ["score"], "min_providers": True}, "code", "joint.min_providers"),
        ({"value_columns": ["score"], "deadline_seconds": 86401}, "code",
         "joint.deadline_seconds"),
        ({"min_providers": 2}, "code", "joint"),
        ([], "code", "joint")]
    for joint, key, field in cases:
        with pytest.raises(InvalidInput) as info:
            check_joint(joint, key, SCHEMA)
        assert info.value.field == field, (joint, key)


def test_started_then_the_layout_then_the_parts_then_published() -> None:
    agg = started()
    assert (agg.state, agg.layout_provider, agg.deadline) == (
        "started", "p-market", "2026-12-04T10:01:30Z")
    with pytest.raises(Forbidden):
        agg.publish_layout(ctx("p-tax"), layout_sha256="a" * 64, length=3)
    with pytest.raises(WrongState):
        agg.receive_part(ctx(), provider_id="p-market", computation_id="c", digest="d")
    agg.publish_layout(ctx(), layout_sha256="a" * 64, length=3)
    agg.publish_layout(ctx(), layout_sha256="a" * 64, length=3)  # the same: nothing
    assert [e.type_name for e in agg.pending] == ["joint.started", "joint.layout_published"]
    with pytest.raises(WrongState):
        agg.publish_layout(ctx(), layout_sha256="b" * 64, length=3)
    assert agg.part_length == 6
    system = ctx("system", "system")
    for p in PROVIDERS[:2]:
        agg.receive_part(ctx(p), provider_id=p, computation_id=f"c-{p}", digest=f"d-{p}")
    with pytest.raises(WrongState, match="p-power"):
        agg.publish(system, result_sha256="r", table_digest="t", rows=3)
    agg.receive_part(ctx("p-power"), provider_id="p-power", computation_id="c", digest="d")
    assert agg.complete()
    agg.publish(system, result_sha256="r", table_digest="t", rows=3)
    with pytest.raises(WrongState):
        agg.fail(system, reason="missing: too late")
    with pytest.raises(WrongState):
        agg.publish_layout(ctx(), layout_sha256="a" * 64, length=3)


def test_a_failure_is_terminal_and_starts_with_one_of_its_codes() -> None:
    agg = started()
    for reason in ("nope: no code", "missing:", "missing", "refused : x"):
        with pytest.raises(InvalidInput):
            agg.fail(ctx("system", "system"), reason=reason)
    agg.fail(ctx("system", "system"), reason="missing: provider p-tax sent no part")
    assert (agg.state, agg.reason) == ("failed", "missing: provider p-tax sent no part")
    with pytest.raises(WrongState, match="failed"):
        agg.fail(ctx("system", "system"), reason="refused: body: x")


def test_a_layout_key_is_bounded_in_utf8_bytes_as_the_hidden_table_s_codes_are() -> None:
    """Every key a layout takes is a code the hidden table can take: 256 bytes of ASCII
    or 85 three-byte characters pass; 86 (258 bytes) are refused naming the key."""
    longest = ["a" * MAX_CODE_BYTES, "企" * 85]
    layout_bytes(sorted(longest))
    for key in longest:
        code_bytes(key)
    with pytest.raises(InvalidInput, match="at most 256 bytes of UTF-8") as info:
        layout_bytes(["a", "b", "企" * 86])
    assert info.value.field == "keys[2]"


def test_a_layout_whose_parts_would_not_fit_is_refused_naming_the_most_keys() -> None:
    agg = started()  # two value columns: at most MAX_PART_WORDS // 2 keys
    with pytest.raises(InvalidInput, match=f"at most {MAX_PART_WORDS // 2} keys") as info:
        agg.publish_layout(ctx(), layout_sha256="a" * 64, length=MAX_PART_WORDS // 2 + 1)
    assert info.value.field == "keys" and agg.pending[-1].type_name == "joint.started"
    agg.publish_layout(ctx(), layout_sha256="a" * 64, length=MAX_PART_WORDS // 2)
    assert agg.part_length == MAX_PART_WORDS


def test_missing_fails_only_an_incomplete_joint() -> None:
    """The sweep reads a joint incomplete and fails it ``missing``; if the last part came
    in between, the failure is refused (the joint is aggregated instead)."""
    agg = started()
    system = ctx("system", "system")
    assert agg.missing_reason() == ("missing: layout provider p-market published no layout "
                                    "by the deadline 2026-12-04T10:01:30Z")
    agg.publish_layout(ctx(), layout_sha256="a" * 64, length=3)
    agg.receive_part(ctx("p-tax"), provider_id="p-tax", computation_id="c", digest="d")
    assert agg.missing_reason().startswith("missing: providers p-market, p-power sent no")
    for p in ("p-market", "p-power"):
        agg.receive_part(ctx(p), provider_id=p, computation_id=f"c-{p}", digest=f"d-{p}")
    with pytest.raises(WrongState, match="every part"):
        agg.fail(system, reason="missing: provider p-power sent no part")
    agg.fail(system, reason="refused: table: a key too long")
    assert agg.state == "failed"
    assert not agg.past_deadline(AT) and agg.past_deadline("2026-12-04T10:01:30Z")
