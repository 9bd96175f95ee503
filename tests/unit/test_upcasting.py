"""An event type that changed shape reads its old stored payloads through its upcasters."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from core.canonical import CanonicalEncodingError, canonical_bytes, decode, stored_event_bytes
from core.event import Event, UnknownEventTypeError, event_class


@dataclass(frozen=True, kw_only=True)
class GradeAssigned(Event):
    """Test-only event, now at version 3: ``grade`` was ``level`` (v1), then gained ``scale`` (v2)."""

    type_name = "test.grade_assigned"
    class_version = 3
    grade: str
    scale: str

    @staticmethod
    def upcast_v1_v2(state: dict[str, object]) -> None:
        state["grade"] = state.pop("level")

    @staticmethod
    def upcast_v2_v3(state: dict[str, object]) -> None:
        state["scale"] = "A-D"


ACTOR = {"participant": "p", "member": "m", "role": "regulator"}


def test_a_v1_payload_is_upcast_to_the_current_version() -> None:
    stored_v1 = canonical_bytes({"at": "2026-01-01T00:00:00Z", "actor": ACTOR, "level": "B"})
    event = event_class("test.grade_assigned").from_payload("agg", 1, decode(stored_v1))
    assert event == GradeAssigned(originator_id="agg", originator_version=1,
                                  at="2026-01-01T00:00:00Z", actor=ACTOR, grade="B", scale="A-D")


def test_a_current_payload_records_its_version_and_reads_back_unchanged() -> None:
    event = GradeAssigned(originator_id="agg", originator_version=2, at="t", actor=ACTOR,
                          grade="A", scale="1-5")
    payload = decode(canonical_bytes(event.payload()))
    assert payload["class_version"] == 3
    assert GradeAssigned.from_payload("agg", 2, payload) == event


def test_an_unknown_type_name_is_refused() -> None:
    with pytest.raises(UnknownEventTypeError):
        event_class("no.such_event")


@pytest.mark.parametrize("value, path", [
    ({"a": 1.5}, "$.a"), ({"a": [1, {"b": 2**60}]}, "$.a[1].b"), ({"a": "x\x00"}, "$.a"),
    ({1: "x"}, "$"),
])
def test_values_without_a_canonical_form_are_refused_naming_their_path(
        value: object, path: str) -> None:
    with pytest.raises(CanonicalEncodingError) as err:
        canonical_bytes(value)
    assert err.value.path == path


def test_canonical_bytes_sort_keys_and_keep_utf8() -> None:
    assert canonical_bytes({"b": 1, "a": "数据"}) == '{"a":"数据","b":1}'.encode()


@given(st.text(), st.integers(1, 2**40), st.integers(1, 2**20), st.text(min_size=1),
       st.dictionaries(st.text(), st.one_of(st.integers(-2**50, 2**50), st.text(), st.booleans())))
def test_the_stored_event_envelope_equals_the_canonical_encoding_of_the_whole(
        oid: str, seq: int, version: int, type_name: str, payload: dict[str, object]) -> None:
    assume("\x00" not in oid + type_name and all("\x00" not in k for k in payload)
           and all("\x00" not in v for v in payload.values() if isinstance(v, str)))
    whole = {"seq": seq, "id": oid, "version": version, "type": type_name, "payload": payload}
    assert stored_event_bytes(seq, oid, version, type_name, canonical_bytes(payload)) == \
        canonical_bytes(whole)


def test_a_v1_order_placed_reads_as_version_2_with_no_query() -> None:
    from domain.order import OrderPlaced  # registers the domain's events

    stored_v1 = canonical_bytes({"at": "2026-01-01T00:00:00Z", "actor": ACTOR,
                                 "demander_id": "d", "product_id": "p", "operator_id": "o",
                                 "purpose": "loans"})
    event = event_class("order.placed").from_payload("order-1", 1, decode(stored_v1))
    assert event == OrderPlaced(originator_id="order-1", originator_version=1,
                                at="2026-01-01T00:00:00Z", actor=ACTOR, demander_id="d",
                                product_id="p", operator_id="o", purpose="loans", query=None)
    assert OrderPlaced.class_version == 2
    query = {"field": "credit_code", "values": ["a", "b"]}
    current = OrderPlaced(originator_id="order-1", originator_version=1, at="t", actor=ACTOR,
                          demander_id="d", product_id="p", operator_id="o", purpose="x",
                          query=query)
    payload = decode(canonical_bytes(current.payload()))
    assert payload["class_version"] == 2 and payload["query"] == query
    assert OrderPlaced.from_payload("order-1", 1, payload) == current
