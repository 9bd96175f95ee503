"""The per-delivery watermark (水印) of a plaintext tabular result (docs/PRIVACY.md).

Scheme ``dataledger-wm-v1``, keyed by the platform's watermark key (``load_or_create_key``:
32 random bytes in ``<data dir>/watermark.key``, mode 0600, never sent anywhere, never in
the log; ``key_id`` its public name) and bound to the delivery id (``reader_mark``: and to
the reader participant, for a copy served to anyone but the demander):

- the delivery's codeword: the 256 bits of HMAC-SHA256(key, "dataledger-wm-v1|" + id);
- a *markable cell*: an integer (not a boolean) of a column other than the product's key
  column and the columns the caller skips (masked, identifiers) or the output schema
  declares neither integer nor number, inside the 64-bit range, whose ``hi = v >> 1`` is
  >= 8 or < -8 (that is v >= 16 or v <= -17: small counts are left alone, and a mark never
  moves a cell across the line);
- per column, two 64-bit keys from HMAC-SHA256(key, "dataledger-wm-v1|column|" + name);
  ``x = mix(hi)`` (a keyed 64-bit mixer, ``_mix``) picks the codeword bit ``idx = x >> 56``
  and a pad bit ``flip = (x >> 55) & 1``; the cell becomes ``2 * hi + (codeword[idx] XOR
  flip)``: only its lowest bit changes, by at most 1.

Detection (``votes``, ``decode``) reads each column's distinct markable values: one vote
``(idx, parity XOR flip)`` per distinct (column, hi); a hi seen with both parities is no
mark and votes nothing. The votes of one codeword bit are decoded by majority, and a
candidate delivery's score is how many decoded bits agree with its codeword
(``privacy/trace.py`` turns that into a confidence). Row order, dropped rows and dropped
columns change nothing but the number of votes; CSV and Parquet keep the integers.

Public functions (the bench and the trace use them): ``load_or_create_key`` (serve),
``load_key`` (trace-leak: never makes one), ``key_id``, ``reader_mark``, ``codeword``,
``mark_rows``, ``votes``, ``decode``. numpy does the per-cell arithmetic.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Collection, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

SCHEME = "dataledger-wm-v1"
#: bits in a delivery's codeword (HMAC-SHA256's output)
BITS = 256
KEY_FILE = "watermark.key"
#: markable iff hi = v >> 1 is outside [LOW_HI, HIGH_HI): v >= 16 or v <= -17
HIGH_HI, LOW_HI = 8, -8
_INT64 = (-(2**63), 2**63 - 1)
_M1, _M2, _M3 = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9),
                 np.uint64(0x94D049BB133111EB))


class Marking(NamedTuple):
    """What ``mark_rows`` did: cells changed or kept as marked, and the marked columns;
    ``reason`` says why nothing was marked (then ``cells`` is 0); ``key_id`` names the key
    (``key_id``)."""

    cells: int
    columns: list[str]
    reason: str | None = None
    key_id: str | None = None

    def record(self) -> dict[str, Any] | None:
        """The ``watermark`` of ``delivery.made``: ``{"scheme", "cells", "key_id"}`` (no
        column name: the log holds nothing of the result), or None when nothing was marked
        (``reason`` says why)."""
        if not self.cells:
            return None
        return {"scheme": SCHEME, "cells": self.cells, "key_id": self.key_id}


class KeyMissing(LookupError):
    """No usable watermark key in the data directory (absent, malformed, or readable by
    others than its owner)."""


# -- the key ------------------------------------------------------------------------------
def _read_key(path: Path) -> bytes:
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise KeyMissing(f"{path} does not hold a 32-byte watermark key")
    return key


def load_key(data_dir: Path) -> bytes:
    """The platform's watermark key, never made here (``trace-leak`` must not trace with a
    fresh key): KeyMissing if ``<data_dir>/watermark.key`` is absent, malformed, or open to
    its group or others (mode wider than 0600)."""
    path = Path(data_dir) / KEY_FILE
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyMissing(f"no watermark key in {path.parent} ({KEY_FILE}); only serve "
                         "makes it, at its first delivery") from None
    if mode & 0o077:
        raise KeyMissing(f"{path} is readable by others (mode {mode & 0o777:o}); it must "
                         "be 0600")
    return _read_key(path)


def key_id(key: bytes) -> str:
    """The key's public name: the first 8 bytes of HMAC-SHA256(key, "dataledger-wm-v1|key-id")
    in hex, recorded on each ``delivery.made``'s ``watermark`` so a trace can tell a key
    that marked no delivery (another host's, a wrong data directory) from "no match"."""
    return hmac.new(key, f"{SCHEME}|key-id".encode(), hashlib.sha256).digest()[:8].hex()


def reader_mark(delivery_id: str, reader_id: str | None) -> str:
    """What a copy's codeword is bound to: the delivery id for the demander's copy; the
    delivery id and the reader participant for any other reader's (operator, regulator)."""
    return delivery_id if reader_id is None else f"{delivery_id}|reader|{reader_id}"


def load_or_create_key(data_dir: Path) -> bytes:
    """The platform's watermark key: ``<data_dir>/watermark.key`` (64 hex digits, mode 0600),
    made at first use (``serve`` only). Two processes making it at once agree: the file is
    linked into place only if absent, and the loser reads the winner's."""
    path = Path(data_dir) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            with contextlib.suppress(FileExistsError):  # another process linked its key first
                os.link(tmp, path)
        finally:
            tmp.unlink()
    try:
        return _read_key(path)
    except KeyMissing as exc:
        raise ValueError(str(exc)) from None


# -- the codeword and the per-column mixer ------------------------------------------------
def codeword(key: bytes, delivery_id: str) -> bytes:
    """The delivery's 256-bit codeword (32 bytes)."""
    return hmac.new(key, f"{SCHEME}|{delivery_id}".encode(), hashlib.sha256).digest()


def codeword_bits(key: bytes, delivery_id: str) -> np.ndarray:
    """The codeword as 256 bits (uint8 0/1, most significant bit of byte 0 first)."""
    return np.unpackbits(np.frombuffer(codeword(key, delivery_id), dtype=np.uint8))


def _column_keys(key: bytes, column: str) -> tuple[np.uint64, np.uint64]:
    d = hmac.new(key, f"{SCHEME}|column|{column}".encode(), hashlib.sha256).digest()
    return (np.uint64(int.from_bytes(d[:8], "little")),
            np.uint64(int.from_bytes(d[8:16], "little")))


def _mix(hi: np.ndarray, keys: tuple[np.uint64, np.uint64]) -> tuple[np.ndarray, np.ndarray]:
    """(idx, flip) of each hi under a column's keys: SplitMix64's finalizer, keyed twice."""
    a, b = keys
    with np.errstate(over="ignore"):
        x = (hi.view(np.uint64) + a) * _M1
        x ^= x >> np.uint64(31)
        x *= _M2
        x ^= x >> np.uint64(29)
        x ^= b
        x *= _M3
        x ^= x >> np.uint64(32)
    return (x >> np.uint64(56)).astype(np.intp), ((x >> np.uint64(55)) & np.uint64(1)).astype(
        np.int64)


def int_cells(values: Sequence[Any]) -> tuple[list[int] | None, np.ndarray]:
    """The integer cells of a column: (their positions, or None for all; their int64s)."""
    if isinstance(values, np.ndarray) and values.dtype == np.int64:
        return None, values
    if set(map(type, values)) <= {int}:  # one pass in C: no bool, no float, no None
        with contextlib.suppress(OverflowError):  # beyond 64 bits: the cells one by one below
            return None, np.array(values, dtype=np.int64)
    low, high = _INT64
    pos = [i for i, v in enumerate(values) if type(v) is int and low <= v <= high]
    return pos, np.array([values[i] for i in pos], dtype=np.int64)


def _markable(hi: np.ndarray) -> np.ndarray:
    return (hi >= HIGH_HI) | (hi < LOW_HI)


# -- marking ------------------------------------------------------------------------------
def columns_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every column the rows name, in order of first appearance."""
    first = rows[0].keys() if rows else {}.keys()
    if all(map(first.__eq__, map(dict.keys, rows))):  # a table: every row names the same columns
        return list(first)
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _integer_column(rows: Sequence[dict[str, Any]], column: str) -> bool:
    """Whether the column holds an integer (not a boolean) in any row (not only its first:
    a null or a string ahead of the integers does not hide them)."""
    return any(type(row.get(column)) is int for row in rows)


def _declared(output_schema: Any) -> dict[str, bool]:
    """The row columns the product's ``output_schema`` declares, and whether each may hold
    an integer (type integer or number): the others are passed over without a scan."""
    schema = output_schema if isinstance(output_schema, dict) else {}
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        schema = schema["items"]
    props = schema.get("properties")
    if not isinstance(props, dict):
        return {}
    out = {}
    for name, spec in props.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        kinds = set(kind) if isinstance(kind, list) else {kind}
        out[str(name)] = None in kinds or bool(kinds & {"integer", "number"})
    return out


def mark_rows(rows: Any, key: bytes, delivery_id: str, *, key_column: str | None = None,
              skip: Collection[str] = (), output_schema: Any = None) -> tuple[Any, Marking]:
    """Watermark ``rows`` (the result as the node posted it: a list of JSON objects) for
    ``delivery_id`` (``reader_mark``'s for a reader's copy): a copy with every markable
    cell of its integer columns set to carry the codeword, and what was marked. A column
    is passed over when it is ``key_column`` (a demander joins on it), in ``skip`` (the
    columns the masking generalised or that hold identifiers), declared by
    ``output_schema`` as neither integer nor number, or holds no integer. A result that is
    not a table of rows, or has no markable cell, is returned unchanged with
    ``Marking(0, [], reason)``."""
    if not isinstance(rows, list) or not rows or not all(map(isinstance, rows, repeat(dict))):
        what = "no rows" if rows == [] else "not a table of rows (a JSON list of objects)"
        return rows, Marking(0, [], f"the result is {what}")
    bits = codeword_bits(key, delivery_id).astype(np.int64)
    declared = _declared(output_schema)
    out: list[dict[str, Any]] | None = None
    cells, marked = 0, []
    for column in columns_of(rows):
        if column == key_column or column in skip or not declared.get(column, True) \
                or not _integer_column(rows, column):
            continue
        pos, arr = int_cells(list(map(dict.get, rows, repeat(column))))
        hi = arr >> 1
        ok = _markable(hi)
        n = int(ok.sum())
        if not n:
            continue
        idx, flip = _mix(hi, _column_keys(key, column))
        new = np.where(ok, 2 * hi + (bits[idx] ^ flip), arr)
        moved = np.flatnonzero(new != arr)
        if out is None:
            out = list(map(dict, rows))
        at = moved.tolist() if pos is None else [pos[i] for i in moved.tolist()]
        for i, value in zip(at, new[moved].tolist(), strict=True):
            out[i][column] = value
        cells += n
        marked.append(column)
    if not cells:
        return rows, Marking(0, [], "no markable cell: no integer of magnitude >= 16 outside "
                                    "the key column and the masked or identifier columns")
    return ((out if out is not None else [dict(r) for r in rows]),
            Marking(cells, marked, key_id=key_id(key)))


# -- detection ----------------------------------------------------------------------------
class Votes(NamedTuple):
    """The votes a table casts: per codeword bit, how many voted 1 and how many in all."""

    ones: np.ndarray
    total: np.ndarray

    @property
    def count(self) -> int:
        return int(self.total.sum())


def votes(columns: dict[str, Sequence[Any]], key: bytes,
          skip: Collection[str] = (), shift: int = 0) -> Votes:
    """The votes of a table given as column name -> values (integers; anything else is
    passed over): one per distinct (column, hi) of its markable cells, none for a hi seen
    with both parities; none from the columns ``skip`` (key columns, never marked: a CSV
    reader may take digits for integers). ``shift`` is added to every integer first (to
    undo a constant shift a leaker applied)."""
    ones = np.zeros(BITS, dtype=np.int64)
    total = np.zeros(BITS, dtype=np.int64)
    for name, values in columns.items():
        if name in skip:
            continue
        _, arr = int_cells(values)
        if shift:
            with np.errstate(over="ignore"):
                arr = arr + np.int64(shift)
        arr = arr[_markable(arr >> 1)]
        if arr.size > 1 and not bool((arr[1:] > arr[:-1]).all()):  # not already distinct
            arr = np.unique(arr)
        if not arr.size:
            continue
        hi = arr >> 1
        both = np.zeros(hi.size, dtype=bool)
        same = hi[1:] == hi[:-1]
        both[1:] |= same
        both[:-1] |= same
        arr, hi = arr[~both], hi[~both]
        idx, flip = _mix(hi, _column_keys(key, name))
        bit = (arr & 1) ^ flip
        ones += np.bincount(idx, weights=bit, minlength=BITS).astype(np.int64)
        total += np.bincount(idx, minlength=BITS)
    return Votes(ones, total)


def decode(v: Votes) -> tuple[np.ndarray, np.ndarray]:
    """(decided, bit): the codeword bits the votes decide (a strict majority), and their
    values (uint8); a bit with no vote or a tie is undecided."""
    zeros = v.total - v.ones
    return v.ones != zeros, (v.ones > zeros).astype(np.uint8)
