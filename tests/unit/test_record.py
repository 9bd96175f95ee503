"""core/record.py reads a stored event from its canonical bytes: the fast check (one decode,
one encode, a compare) accepts exactly what the full check accepts, and for anything else the
error is the full check's, naming what is off."""

from __future__ import annotations

import random

import pytest

from core.record import LogEntry, RecordError

GOOD = b'{"id":"d1","payload":{"at":"2030-01-01T00:00:00Z","n":3},"seq":7,"type":"x.y","version":2}'


def outcome(read: object, data: bytes) -> tuple[object, ...]:
    try:
        entry, payload = read(data)  # type: ignore[operator]
    except RecordError as exc:
        return ("refused", str(exc))
    return ("read", entry, entry.canonical(), payload)


def both(data: bytes) -> tuple[object, ...]:
    fast = outcome(LogEntry.read, data)
    assert fast == outcome(LogEntry._read_slowly, data), data
    return fast


def test_a_canonical_record_is_read_with_its_payload_and_its_bytes_kept() -> None:
    kind, entry, canonical, payload = both(GOOD)
    assert kind == "read" and canonical is GOOD
    assert (entry.seq, entry.originator_id, entry.version, entry.type_name) == (7, "d1", 2, "x.y")
    assert entry.payload_bytes == b'{"at":"2030-01-01T00:00:00Z","n":3}'
    assert payload == {"at": "2030-01-01T00:00:00Z", "n": 3} == entry.payload()
    assert LogEntry.from_canonical(GOOD) == entry
    assert LogEntry.read(GOOD, checked=True) == (entry, payload)


@pytest.mark.parametrize(("data", "why"), [
    (b'{"id":"a","payload":{"x":1.5},"seq":1,"type":"t","version":1}', "float 1.5"),
    (b'{"id":"a","payload":{"x":9007199254740992},"seq":1,"type":"t","version":1}',
     "$.payload.x: integers must lie within"),
    (b'{"id":"a","payload":{"x":"\\u0000"},"seq":1,"type":"t","version":1}',
     "$.payload.x: the NUL character"),
    (b'{"id":"a","payload":{"x":"\\ud800"},"seq":1,"type":"t","version":1}', "lone surrogate"),
    (b'{"id":"a","payload":{"x":"\\u00e9"},"seq":1,"type":"t","version":1}', "canonical form"),
    (b'{"id":"a","payload":{"x":1,"x":2},"seq":1,"type":"t","version":1}', "canonical form"),
    (b'{"id":"a","payload":{"x":-0},"seq":1,"type":"t","version":1}', "canonical form"),
    (b'{"id":"a","payload":{"n":null,"b":false},"seq":1,"type":"t","version":1}',
     "canonical form"),
    (b'{"id":"a","payload":{"n":NaN},"seq":1,"type":"t","version":1}', "float NaN"),
    (b'{"id":"a","payload":[],"seq":1,"type":"t","version":1}', "malformed stored event"),
    (b'{"id":"a","payload":{},"seq":0,"type":"t","version":1}', "malformed stored event"),
    (b'{"id":"a","payload":{},"seq":1,"type":"t"}', "keys id, payload, seq, type, version"),
    (GOOD + b" ", "canonical form"),
    (b"\xff", "not canonical JSON"),
])
def test_what_is_not_canonical_is_refused_naming_why(data: bytes, why: str) -> None:
    kind, message = both(data)
    assert kind == "refused" and why in str(message)


@pytest.mark.parametrize("data", [
    b'{"id":"a","payload":{"x":"\\\\u0000"},"seq":1,"type":"t","version":1}',
    (b'{"id":"a,\\"payload\\":","payload":{"q":",\\"seq\\":"},"seq":1,"type":"t,\\"seq\\":",'
     b'"version":1}'),
    '{"id":"数据","payload":{"big":9007199254740991,"x":"é"},"seq":1,"type":"t","version":1}'
    .encode(),
])
def test_unusual_but_canonical_records_are_read_whole(data: bytes) -> None:
    kind, entry, canonical, _ = both(data)
    assert kind == "read" and canonical == data
    assert entry.canonical() == LogEntry._read_slowly(data)[0].canonical() == data


def test_damaged_records_meet_the_same_verdict_either_way() -> None:
    rnd = random.Random(13)
    read = 0
    for _ in range(3000):
        data = bytearray(GOOD)
        for _ in range(rnd.randint(1, 3)):
            k = rnd.randrange(len(data))
            if rnd.random() < 0.5:
                data[k] = rnd.choice(b'"\\:,{}[]0123456789 -eE.u\x00a')
            else:
                data.insert(k, rnd.choice(b'"\\:,{}[]09 -.u'))
        read += both(bytes(data))[0] == "read"
    assert read > 0
