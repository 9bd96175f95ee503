"""Every event type in the catalogue survives the trip through the log's canonical bytes."""

from __future__ import annotations

import dataclasses
import re
import types
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest

from core.canonical import canonical_bytes, decode
from core.event import Event, event_class
from events.catalogue import catalogue


def sample(tp: Any, none: bool = False) -> Any:
    """A JSON-native value of type ``tp`` (non-ASCII text, nested containers).

    ``none``: an optional value is None rather than a value.
    """
    if tp is str:
        return "数据-x"
    if tp is bool:
        return True
    if tp is int:
        return 10000
    if tp is Any:
        return {"k": [1, "v", None, False, {"n": -2}]}
    origin, args = get_origin(tp), get_args(tp)
    if origin is list:
        return [sample(args[0]), sample(args[0])]
    if origin is dict:
        return {"b": sample(args[1]), "a": sample(args[1])}
    if origin in (Union, types.UnionType):
        return None if none else sample(next(a for a in args if a is not type(None)))
    raise AssertionError(f"no JSON-native sample for {tp!r}; events hold JSON values only")


def example(cls: type[Event], none: bool = False) -> Event:
    hints = get_type_hints(cls)
    values = {f.name: sample(hints[f.name], none) for f in dataclasses.fields(cls)}
    return cls(**{**values, "originator_id": "agg-1", "originator_version": 3})


def test_catalogue_holds_every_aggregates_events() -> None:
    prefixes = {name.split(".")[0] for name in catalogue()}
    assert {"participant", "dataset", "scenario", "authorization", "product", "order",
            "contract"} <= prefixes


@pytest.mark.parametrize("none", [False, True], ids=["values", "optionals-none"])
@pytest.mark.parametrize("type_name", sorted(catalogue()))
def test_event_round_trips_through_canonical_bytes(type_name: str, none: bool) -> None:
    cls = catalogue()[type_name]
    assert re.fullmatch(r"[a-z_]+\.[a-z_]+", type_name)
    assert event_class(type_name) is cls
    event = example(cls, none)
    decoded = decode(canonical_bytes(event.payload()))
    assert cls.from_payload("agg-1", 3, decoded) == event
