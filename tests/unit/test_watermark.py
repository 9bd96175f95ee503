"""The watermark (privacy/watermark.py) and the leak trace (privacy/trace.py) on real files:
a marked copy moves each markable integer by at most 1 and nothing else; a leaked copy,
shuffled, cut to half its rows, with columns dropped, re-saved as CSV, Parquet or JSON, is
traced to its delivery among 50 of the same table; an unmarked or never-delivered table
matches nothing; and the false-match rate over 1,000 random tables, measured against 1,000
candidate deliveries, is 0 at the threshold (the figure is in docs/PRIVACY.md)."""

from __future__ import annotations

import json
import random
import stat
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from core.canonical import canonical_bytes, decode
from core.event import event_class
from events.catalogue import catalogue
from privacy import trace as tr
from privacy import watermark as wm
from tests.conftest import require_service

KEY = bytes(range(32))
ACTOR = {"participant": "p", "member": "m", "role": "provider"}


def table(rows: int, seed: int = 7) -> list[dict[str, Any]]:
    """One product's result: a key column, four integer columns of several ranges, a string,
    a boolean and small counts (never marked)."""
    rng = random.Random(seed)
    return [{"taxpayer_id": f"9111{i:014d}", "revenue": rng.randint(10_000, 90_000_000),
             "tax": rng.randint(-50_000, 2_000_000), "employees": rng.randint(16, 4_000),
             "score": rng.randint(300, 850), "industry": rng.choice(["retail", "farming"]),
             "active": rng.random() < 0.5, "branches": rng.randint(0, 15)}
            for i in range(rows)]


def deliveries(n: int) -> list[tr.Candidate]:
    return [tr.Candidate(str(uuid.UUID(int=random.Random(i).getrandbits(128))),
                         f"contract-{i % 10}", f"demander-{i % 10}") for i in range(n)]


def test_the_key_is_made_once_private_and_read_back(tmp_path: Path) -> None:
    key = wm.load_or_create_key(tmp_path / "var")
    path = tmp_path / "var" / wm.KEY_FILE
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert wm.load_or_create_key(tmp_path / "var") == key
    assert [p.name for p in path.parent.iterdir()] == [wm.KEY_FILE]  # no temporary left
    path.write_text("00" * 31 + "\n")
    with pytest.raises(ValueError, match="32-byte"):
        wm.load_or_create_key(tmp_path / "var")


def test_a_mark_moves_each_markable_integer_by_at_most_one_and_nothing_else() -> None:
    rows = table(300)
    marked, marking = wm.mark_rows(rows, KEY, "delivery-1", key_column="taxpayer_id")
    assert rows == table(300)  # the input is not changed
    assert marking.columns == ["revenue", "tax", "employees", "score"]
    assert marking.record() == {"scheme": wm.SCHEME, "cells": 1200, "key_id": wm.key_id(KEY)}
    moved = 0
    for before, after in zip(rows, marked, strict=True):
        assert set(after) == set(before)
        for column in ("taxpayer_id", "industry", "active", "branches"):
            assert after[column] == before[column] and type(after[column]) is type(
                before[column])
        for column in marking.columns:
            assert type(after[column]) is int and after[column] >> 1 == before[column] >> 1
            moved += after[column] != before[column]
    assert 450 < moved < 750  # about half the cells already had the codeword's parity
    # the same delivery marks the same; another delivery differently
    assert wm.mark_rows(rows, KEY, "delivery-1", key_column="taxpayer_id")[0] == marked
    assert wm.mark_rows(rows, KEY, "delivery-2", key_column="taxpayer_id")[0] != marked
    # a marked copy marked again for the same delivery is unchanged
    assert wm.mark_rows(marked, KEY, "delivery-1", key_column="taxpayer_id")[0] == marked


@pytest.mark.parametrize("result", [{"total": 12345}, [1, 2, 3], "text", [],
                                    [{"code": "a", "n": 3}, {"code": "b", "n": -16}]])
def test_what_cannot_be_marked_is_delivered_as_is_with_the_reason(result: Any) -> None:
    out, marking = wm.mark_rows(result, KEY, "delivery-1", key_column="code")
    assert out is result and marking.cells == 0 and marking.record() is None
    assert marking.reason


def test_the_line_between_markable_and_not_is_never_crossed() -> None:
    rows = [{"v": v} for v in range(-40, 41)] + [{"v": 2**63 - 1}, {"v": -(2**63)},
                                                  {"v": 2**70}, {"v": None}, {"v": 3.5}]
    marked, marking = wm.mark_rows(rows, KEY, "d")
    for before, after in zip(rows, marked, strict=True):
        v = before["v"]
        if type(v) is int and -(2**63) <= v < 2**63 and (v >= 16 or v <= -17):
            assert after["v"] >> 1 == v >> 1 and (after["v"] >= 16 or after["v"] <= -17)
        else:
            assert after["v"] == v
    assert marking.cells == 25 + 24 + 2


def leak(marked: list[dict[str, Any]], keep: tuple[str, ...], seed: int) -> list[dict[str, Any]]:
    """The leaker's copy: shuffled, half the rows, only the columns ``keep``."""
    rng = random.Random(seed)
    rows = rng.sample(marked, len(marked) // 2)
    return [{c: r[c] for c in keep} for r in rows]


def save(rows: list[dict[str, Any]], path: Path) -> Path:
    if path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        pacsv.write_csv(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
@pytest.mark.parametrize("keep", [("taxpayer_id", "revenue", "tax"), ("score", "employees"),
                                  ("taxpayer_id", "industry", "revenue", "employees", "score")],
                         ids=["key+2", "2-small", "5"])
def test_a_leaked_copy_is_traced_to_its_delivery_among_fifty(
        tmp_path: Path, fmt: str, keep: tuple[str, ...]) -> None:
    rows, candidates = table(240), deliveries(50)
    book = tr.codebook(KEY, candidates)
    copies = {c.delivery_id: wm.mark_rows(rows, KEY, c.delivery_id,
                                          key_column="taxpayer_id")[0] for c in candidates}
    for n, leaked in enumerate((candidates[3], candidates[27], candidates[49])):
        path = save(leak(copies[leaked.delivery_id], keep, n), tmp_path / f"leak{n}.{fmt}")
        found, digest = tr.trace_file(path, KEY, candidates, skip=("taxpayer_id",))
        assert found.match == leaked, found
        assert found.p_value <= tr.THRESHOLD and found.confidence.startswith("1 - ")
        assert found.agreeing == found.bits and found.candidates == 50
        assert tr.trace(tr.read_table(path), KEY, candidates, book=book,
                        skip=("taxpayer_id",)) == found
        assert len(digest) == 64


def test_an_unmarked_table_and_a_never_delivered_one_match_nothing(tmp_path: Path) -> None:
    rows, candidates = table(240), deliveries(50)
    original = tr.trace(tr.read_table(save(rows, tmp_path / "original.csv")), KEY, candidates)
    assert original.match is None and original.best is not None and original.votes > 500
    other = wm.mark_rows(table(240, seed=8), KEY, "never-delivered")[0]
    found = tr.trace(tr.read_table(save(other, tmp_path / "other.parquet")), KEY, candidates)
    assert found.match is None and found.p_value > tr.THRESHOLD
    # a copy marked under another platform's key is not this platform's delivery
    foreign = wm.mark_rows(rows, bytes(32), candidates[0].delivery_id)[0]
    assert tr.trace(tr.read_table(save(foreign, tmp_path / "f.json")), KEY,
                    candidates).match is None
    # nothing to read: no match, no vote
    empty = tr.trace({"name": ["a", "b"]}, KEY, candidates)
    assert (empty.match, empty.votes, empty.bits, empty.p_value) == (None, 0, 0, 1.0)


def random_table(rng: random.Random) -> dict[str, list[Any]]:
    """A table of 10 to 600 rows and 1 to 6 integer columns of assorted ranges (some with
    repeats, some negative), as a leak tracer might be handed."""
    rows = rng.randint(10, 600)
    out: dict[str, list[Any]] = {}
    for c in range(rng.randint(1, 6)):
        low = rng.choice([-10**6, 0, 16, 1000, 10**8])
        high = low + rng.choice([100, 5_000, 10**6, 10**9])
        out[rng.choice(["revenue", "tax", "score", f"c{c}", "employees"]) + str(c)] = [
            rng.randint(low, high) for _ in range(rows)]
    return out


def test_the_false_match_rate_over_1000_random_tables_is_zero_at_the_threshold(
        capsys: pytest.CaptureFixture[str]) -> None:
    candidates = deliveries(1000)
    book = tr.codebook(KEY, candidates)
    rng = random.Random(20261204)
    traces = [tr.trace(random_table(rng), KEY, candidates, book=book) for _ in range(1000)]
    matches = [t for t in traces if t.match is not None]
    smallest = min(t.p_value for t in traces)
    with capsys.disabled():
        print(f"\nwatermark false matches: {len(matches)} of 1000 random tables against 1000 "
              f"deliveries; smallest corrected p-value {smallest:.3g} (threshold "
              f"{tr.THRESHOLD:g}); mean votes {sum(t.votes for t in traces) / 1000:.0f}")
    assert matches == []
    assert smallest > tr.THRESHOLD
    assert all(t.bits > 0 for t in traces)  # every table did vote: the test is not vacuous


def test_the_binomial_tail_is_exact() -> None:
    assert tr.binomial_tail(10, 0) == 1.0 and tr.binomial_tail(10, 11) == 0.0
    assert tr.binomial_tail(10, 10) == 2**-10 and tr.binomial_tail(4, 2) == 11 / 16
    assert tr.binomial_tail(256, 256) == 2.0**-256


def test_a_version_1_delivery_reads_as_unmarked() -> None:
    stored = canonical_bytes({"at": "2026-01-01T00:00:00Z", "actor": ACTOR,
                              "demander_id": "d", "result_sha256": "ab" * 32})
    assert "delivery.made" in catalogue()
    event: Any = event_class("delivery.made").from_payload("c", 3, decode(stored))
    assert (event.delivered_sha256, event.watermark) == ("ab" * 32, None)
    assert "v1" in event.watermark_reason


def test_json_shapes_a_leak_may_take(tmp_path: Path) -> None:
    rows = [{"a": 1000, "b": "x"}, {"a": 2001.0, "b": "y"}]
    view = {"delivery_id": "d", "result": rows}
    columns = {"a": {"0": 1000, "1": 2001}, "b": {"0": "x", "1": "y"}}
    for n, doc in enumerate((rows, view, columns)):
        path = tmp_path / f"t{n}.json"
        path.write_text(json.dumps(doc))
        assert tr.read_table(path) == {"a": [1000, 2001], "b": ["x", "y"]}
    lines = tmp_path / "t.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert tr.read_table(lines)["a"] == [1000, 2001]
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"a,b\n1,2,3\n")
    with pytest.raises(ValueError, match="not a table"):
        tr.read_table(bad)


COMPUTE_PYTHON = Path(__file__).resolve().parents[2] / ".venv-compute" / "bin" / "python"
#: pandas (the compute environment's) re-saves a leaked copy: half the rows, shuffled, three
#: columns, a gap in one integer column (pandas writes that column as floats: 123.0), and
#: its index column
RESAVE = """
import json, sys
import pandas as pd
df = pd.DataFrame(json.load(open(sys.argv[1])))
df = df.sample(frac=0.5, random_state=3)[["taxpayer_id", "revenue", "score"]]
df.loc[df.index[:5], "revenue"] = None
df.to_csv(sys.argv[2])
df.to_json(sys.argv[3])
df.to_parquet(sys.argv[4])
"""


def test_a_copy_re_saved_by_pandas_is_traced(tmp_path: Path) -> None:
    import subprocess

    require_service("the compute environment (pandas)",
                    None if COMPUTE_PYTHON.exists() else f"{COMPUTE_PYTHON} is missing")
    rows, candidates = table(240), deliveries(50)
    source = tmp_path / "delivered.json"
    source.write_text(json.dumps(wm.mark_rows(rows, KEY, candidates[11].delivery_id,
                                              key_column="taxpayer_id")[0]))
    out = [tmp_path / f"pandas.{s}" for s in ("csv", "json", "parquet")]
    subprocess.run([str(COMPUTE_PYTHON), "-c", RESAVE, str(source), *map(str, out)],
                   check=True, timeout=120)
    text = out[0].read_text()
    assert text.startswith(",taxpayer_id,revenue,score\n") and ".0," in text  # floats, index
    for path in out:
        found, _ = tr.trace_file(path, KEY, candidates, skip=("taxpayer_id",))
        assert found.match == candidates[11], (path.name, found)
        assert found.p_value <= tr.THRESHOLD


def test_load_key_never_makes_one_and_refuses_a_key_open_to_others(tmp_path: Path) -> None:
    with pytest.raises(wm.KeyMissing, match="no watermark key"):
        wm.load_key(tmp_path)
    assert not (tmp_path / wm.KEY_FILE).exists()
    key = wm.load_or_create_key(tmp_path)
    assert wm.load_key(tmp_path) == key
    (tmp_path / wm.KEY_FILE).chmod(0o640)
    with pytest.raises(wm.KeyMissing, match="0600"):
        wm.load_key(tmp_path)
    assert len(wm.key_id(key)) == 16 and wm.key_id(key) != wm.key_id(KEY)


def test_columns_are_marked_whatever_their_first_value_but_never_masked_ones() -> None:
    rows = table(200)
    rows[0]["revenue"], rows[1]["tax"] = None, "n/a"  # a null and a string first
    _, marking = wm.mark_rows(rows, KEY, "d", key_column="taxpayer_id")
    assert marking.columns == ["revenue", "tax", "employees", "score"]
    # graded L3/L4 or identifier columns (skip), and a column the schema declares as text
    schema = {"type": "array", "items": {"properties": {"score": {"type": "string"},
                                                        "tax": {"type": ["integer", "null"]}}}}
    out, marking = wm.mark_rows(rows, KEY, "d", key_column="taxpayer_id",
                                skip={"revenue", "employees"}, output_schema=schema)
    assert marking.columns == ["tax"]
    assert [r["revenue"] for r in out] == [r["revenue"] for r in rows]
    assert [r["score"] for r in out] == [r["score"] for r in rows]
    assert wm.mark_rows(rows, KEY, "d", skip={"revenue", "tax", "employees", "score"})[1] \
        .reason.startswith("no markable cell")


def test_merged_copies_name_every_source_and_a_reader_copy_its_reader() -> None:
    rows, candidates = table(240), deliveries(20)
    readers = [tr.Candidate(*candidates[4][:3], "operator-1"),
               tr.Candidate(*candidates[4][:3], "regulator-1")]
    everyone = candidates + readers
    copy = {c: wm.mark_rows(rows, KEY, c.mark, key_column="taxpayer_id")[0] for c in everyone}
    assert copy[readers[0]] != copy[candidates[4]] != copy[readers[1]]
    columns = tr._json_columns

    found = tr.trace(columns(copy[readers[0]]), KEY, everyone, skip=("taxpayer_id",))
    assert found.match == readers[0] and not found.merged
    # two copies of the same rows stacked (ties): both named, flagged, in a stable order
    merged = tr.trace(columns(copy[candidates[2]] + copy[candidates[9]]), KEY, everyone,
                      skip=("taxpayer_id",))
    assert merged.merged and {m.candidate for m in merged.matches} == {candidates[2],
                                                                       candidates[9]}
    assert merged.record()["merged"] is True and len(merged.record()["matches"]) == 2
    # half of one and half of another (of a larger table: each half decides fewer bits)
    big = table(480)
    a, b = (wm.mark_rows(big, KEY, candidates[n].mark, key_column="taxpayer_id")[0]
            for n in (2, 9))
    half = a[:240] + b[240:]
    assert {m.candidate for m in tr.trace(columns(half), KEY, everyone,
                                          skip=("taxpayer_id",)).matches} == {
        candidates[2], candidates[9]}


@pytest.mark.parametrize("shift", [-2, -1, 1, 2])
def test_a_constant_shift_of_every_integer_is_undone(shift: int) -> None:
    rows, candidates = table(240), deliveries(50)
    marked = wm.mark_rows(rows, KEY, candidates[6].delivery_id, key_column="taxpayer_id")[0]
    moved = [{k: v + shift if type(v) is int else v for k, v in r.items()} for r in marked]
    found = tr.trace(tr._json_columns(moved), KEY, candidates,
                     skip=("taxpayer_id",))
    assert found.match == candidates[6] and found.shift == -shift


def test_a_version_1_trace_and_access_read_as_version_2() -> None:
    match = {"delivery_id": "c", "contract_id": "o", "demander_id": "d"}
    stored = canonical_bytes({"at": "2026-01-01T00:00:00Z", "actor": ACTOR,
                              "file_sha256": "ab" * 32, "match": match,
                              "confidence": "1 - 1e-20", "p_value": "1e-20", "candidates": 5,
                              "votes": {"cast": 9, "bits_decided": 70, "bits_agreeing": 70},
                              "scheme": wm.SCHEME})
    event: Any = event_class("forensics.leak_traced").from_payload("t", 1, decode(stored))
    assert event.matches == [{**match, "reader_id": None, "p_value": "1e-20",
                              "bits_agreeing": 70}] and event.merged is False
    stored = canonical_bytes({"at": "2026-01-01T00:00:00Z", "actor": ACTOR,
                              "contract_id": "o", "computation_id": "c", "member_id": "m",
                              "kind": "view", "counted": True})
    event = event_class("delivery.accessed").from_payload("u", 1, decode(stored))
    assert event.served_sha256 is None
