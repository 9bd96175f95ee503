"""Leak tracing (溯源): which delivery a leaked table came from, with a confidence figure.

``read_table(path)`` reads a leaked copy (CSV, Parquet, JSON: a list of rows, a delivery's
``/view`` answer, a column -> values or column -> {row: value} object, or JSON lines) into
column name -> values, integral floats as integers (a CSV re-saved by pandas may write
``123.0``). ``trace(columns, key, candidates)`` decodes the watermark's votes
(``privacy/watermark.py``) and scores every candidate delivery: the decided codeword bits
that agree with its codeword.

The confidence: for a table that did not come from delivery d, d's codeword is independent
of the table (HMAC under a key the table's maker never held), so each decided bit agrees
with it with probability 1/2: the chance of ``a`` or more agreeing of ``m`` decided bits is
the binomial tail ``P(Bin(m, 1/2) >= a)``; over ``n`` candidates the best one is judged
with the Bonferroni bound ``p = n * tail``. A match is declared only if ``p <= THRESHOLD``
(1e-9: a never-delivered table is named with probability at most one in a billion);
``confidence`` is ``1 - p``. Otherwise: no match. Votes cast by the same bit are decoded
together (majority) before they are counted, so a table's many cells never overstate the
evidence: the unit is the codeword bit (256 per delivery).

Public functions (the CLI and the bench use them): ``read_table``, ``codebook``, ``trace``,
``trace_file``; ``Candidate`` and ``Trace`` are what they take and give.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from privacy.watermark import SCHEME, codeword, decode, votes

#: the Bonferroni-corrected chance at or below which a candidate is named
THRESHOLD = 1e-9


class Candidate(NamedTuple):
    """A delivery a leak may have come from."""

    delivery_id: str
    contract_id: str
    demander_id: str


class Trace(NamedTuple):
    """The answer: the matched delivery (None: no match) and the evidence."""

    match: Candidate | None
    #: the best candidate's Bonferroni-corrected chance for an unrelated table (1.0: none)
    p_value: float
    #: votes cast (distinct marked values read), codeword bits they decided, and how many
    #: of those agree with the best candidate's codeword
    votes: int
    bits: int
    agreeing: int
    candidates: int
    best: Candidate | None

    @property
    def confidence(self) -> str | None:
        """``"1 - p"`` (p in scientific notation) for a match; None otherwise."""
        return None if self.match is None else f"1 - {self.p_value:.3g}"

    def record(self) -> dict[str, Any]:
        """The evidence as ``forensics.leak_traced`` records it (no floats: text)."""
        return {"scheme": SCHEME, "confidence": self.confidence,
                "p_value": f"{self.p_value:.3g}", "candidates": self.candidates,
                "votes": {"cast": self.votes, "bits_decided": self.bits,
                          "bits_agreeing": self.agreeing}}


# -- reading a leaked copy ----------------------------------------------------------------
def read_table(path: Path) -> dict[str, list[Any]]:
    """The leaked table at ``path`` as column name -> values (ValueError if unreadable)."""
    data = Path(path).read_bytes()
    suffix = Path(path).suffix.lower()
    try:
        if suffix in (".parquet", ".pq") or data[:4] == b"PAR1":
            import pyarrow as pa
            import pyarrow.parquet as pq

            return _arrow_columns(pq.read_table(pa.BufferReader(data)))
        if suffix in (".jsonl", ".ndjson"):
            return _json_columns([json.loads(line) for line in data.splitlines()
                                  if line.strip()])
        head = data.lstrip()[:1]
        if suffix == ".json" or head in (b"[", b"{"):
            return _json_columns(json.loads(data))
        import pyarrow as pa
        from pyarrow import csv

        return _arrow_columns(csv.read_csv(pa.BufferReader(data)))
    except (OSError, ValueError, TypeError) as exc:  # pyarrow's errors are ValueErrors too
        raise ValueError(f"{path}: not a table this reads (CSV, Parquet, JSON): "
                         f"{str(exc)[:300]}") from None


def _arrow_columns(table: Any) -> dict[str, list[Any]]:
    return {name: _ints(table.column(name).to_pylist()) for name in table.column_names}


def _json_columns(doc: Any) -> dict[str, list[Any]]:
    if isinstance(doc, dict) and isinstance(doc.get("result"), list):
        doc = doc["result"]  # a delivery's /view answer
    if isinstance(doc, list) and all(isinstance(r, dict) for r in doc):
        names: dict[str, None] = {}
        for row in doc:
            names.update(dict.fromkeys(row))
        return {n: _ints([row.get(n) for row in doc]) for n in names}
    if isinstance(doc, dict) and all(isinstance(v, list | dict) for v in doc.values()):
        return {str(n): _ints(list(v.values()) if isinstance(v, dict) else v)
                for n, v in doc.items()}
    raise ValueError("JSON that is neither rows nor columns")


def _ints(values: list[Any]) -> list[Any]:
    """Integral floats as integers (what a CSV re-save makes of an integer column)."""
    return [int(v) if type(v) is float and math.isfinite(v) and v.is_integer() else v
            for v in values]


# -- scoring ------------------------------------------------------------------------------
def codebook(key: bytes, candidates: Sequence[Candidate]) -> np.ndarray:
    """The candidates' codewords as a (len(candidates), 256) matrix of bits (uint8)."""
    if not candidates:
        return np.zeros((0, 256), dtype=np.uint8)
    raw = b"".join(codeword(key, c.delivery_id) for c in candidates)
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8)).reshape(len(candidates), 256)


def binomial_tail(m: int, a: int) -> float:
    """P(Bin(m, 1/2) >= a), exactly (then rounded to a float)."""
    if a <= 0:
        return 1.0
    return sum(math.comb(m, k) for k in range(a, m + 1)) / 2**m


def trace(columns: dict[str, Sequence[Any]], key: bytes, candidates: Sequence[Candidate], *,
          book: np.ndarray | None = None, skip: Collection[str] = ()) -> Trace:
    """Trace a table (column name -> values) among ``candidates`` (``book``: their
    ``codebook``, if the caller made it already; ``skip``: columns that cast no vote, the
    products' key columns, never marked)."""
    cast = votes(columns, key, skip)
    decided, bits = decode(cast)
    m = int(decided.sum())
    if book is None:
        book = codebook(key, candidates)
    if not len(candidates) or not m:
        return Trace(None, 1.0, cast.count, m, 0, len(candidates), None)
    agree = ((book == bits) & decided).sum(axis=1)
    best = int(np.argmax(agree))
    a = int(agree[best])
    p = min(1.0, binomial_tail(m, a) * len(candidates))
    chosen = candidates[best]
    return Trace(chosen if p <= THRESHOLD else None, p, cast.count, m, a, len(candidates),
                 chosen)


def trace_file(path: Path, key: bytes, candidates: Sequence[Candidate], *,
               skip: Collection[str] = ()) -> tuple[Trace, str]:
    """Trace the file at ``path`` (``skip`` as for ``trace``): the answer and the file's
    SHA-256."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return trace(read_table(path), key, candidates, skip=skip), digest
