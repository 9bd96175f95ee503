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
with the Bonferroni bound ``p = n * tail`` (``n``: the candidates times the shifts tried,
``SHIFTS``). Every candidate with ``p <= THRESHOLD`` is named (1e-9: a never-delivered
table is named with probability at most one in a billion), by p-value; several named is a
copy merged from several copies (or readers who colluded), never one picked among them.
``confidence`` is the best's ``1 - p``. Otherwise: no match. Votes cast by the same bit are decoded
together (majority) before they are counted, so a table's many cells never overstate the
evidence: the unit is the codeword bit (256 per delivery).

Public functions (the CLI and the bench use them): ``read_table``, ``codebook``, ``trace``,
``trace_file``; ``Candidate``, ``Match`` and ``Trace`` are what they take and give. A
candidate is a copy: the demander's of a delivery, or another reader's (the operator's,
the regulator's copy is marked for that reader: ``privacy.watermark.reader_mark``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from privacy.watermark import SCHEME, codeword, decode, int_cells, reader_mark, votes

#: the Bonferroni-corrected chance at or below which a candidate is named
THRESHOLD = 1e-9
#: the constant shifts undone before voting (a leaker who added 1 to every integer): the
#: smallest p-value over them is taken, so the Bonferroni factor is multiplied by their count
SHIFTS = (0, -1, 1, -2, 2)


class Candidate(NamedTuple):
    """A copy a leak may have come from: the demander's copy of a delivery (``reader_id``
    None) or another reader's (the operator's, the regulator's: marked for that reader)."""

    delivery_id: str
    contract_id: str
    demander_id: str
    reader_id: str | None = None

    @property
    def mark(self) -> str:
        """What the copy's codeword is bound to (``privacy.watermark.reader_mark``)."""
        return reader_mark(self.delivery_id, self.reader_id)


class Match(NamedTuple):
    """A candidate named: its Bonferroni-corrected p-value and the decided bits agreeing."""

    candidate: Candidate
    p_value: float
    agreeing: int

    def record(self) -> dict[str, Any]:
        return {**self.candidate._asdict(), "p_value": f"{self.p_value:.3g}",
                "bits_agreeing": self.agreeing}


class Trace(NamedTuple):
    """The answer: every candidate whose corrected p-value is at or under the threshold
    (``matches``, by p-value; none: no match; several: a copy merged from several copies,
    or colluding readers) and the evidence."""

    matches: list[Match]
    #: the best candidate's Bonferroni-corrected chance for an unrelated table (1.0: none)
    p_value: float
    #: votes cast (distinct marked values read), codeword bits they decided, and how many
    #: of those agree with the best candidate's codeword
    votes: int
    bits: int
    agreeing: int
    candidates: int
    best: Candidate | None
    #: the constant shift undone (0: none)
    shift: int = 0

    @property
    def match(self) -> Candidate | None:
        """The best match (None: no match); ``merged`` says whether others matched too."""
        return self.matches[0].candidate if self.matches else None

    @property
    def merged(self) -> bool:
        """Several candidates match: a merged copy, or readers who colluded."""
        return len(self.matches) > 1

    @property
    def confidence(self) -> str | None:
        """``"1 - p"`` (p in scientific notation) of the best match; None without one."""
        return None if not self.matches else f"1 - {self.p_value:.3g}"

    def record(self) -> dict[str, Any]:
        """The evidence as ``forensics.leak_traced`` records it (no floats: text)."""
        return {"scheme": SCHEME, "confidence": self.confidence,
                "p_value": f"{self.p_value:.3g}", "candidates": self.candidates,
                "matches": [m.record() for m in self.matches], "merged": self.merged,
                "votes": {"cast": self.votes, "bits_decided": self.bits,
                          "bits_agreeing": self.agreeing, "shift": self.shift}}


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
    raw = b"".join(codeword(key, c.mark) for c in candidates)
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8)).reshape(len(candidates), 256)


def binomial_tail(m: int, a: int) -> float:
    """P(Bin(m, 1/2) >= a), exactly (then rounded to a float)."""
    if a <= 0:
        return 1.0
    return sum(math.comb(m, k) for k in range(a, m + 1)) / 2**m


def _scored(columns: dict[str, Sequence[Any]], key: bytes, book: np.ndarray,
            skip: Collection[str], shift: int) -> tuple[int, int, np.ndarray]:
    """(votes cast, bits decided, each candidate's agreeing bits) at one shift."""
    cast = votes(columns, key, skip, shift)
    decided, bits = decode(cast)
    return cast.count, int(decided.sum()), ((book == bits) & decided).sum(axis=1)


def trace(columns: dict[str, Sequence[Any]], key: bytes, candidates: Sequence[Candidate], *,
          book: np.ndarray | None = None, skip: Collection[str] = ()) -> Trace:
    """Trace a table (column name -> values) among ``candidates`` (``book``: their
    ``codebook``, if the caller made it already; ``skip``: columns that cast no vote, the
    products' key columns, never marked), under each shift of ``SHIFTS``: the shift whose
    best candidate is the most likely, and there every candidate under the threshold."""
    if book is None:
        book = codebook(key, candidates)
    n = len(candidates) * len(SHIFTS)
    # each column's distinct integers, once (a shift keeps them sorted and distinct)
    columns = {name: np.unique(int_cells(values)[1]) for name, values in columns.items()}
    found = None
    for shift in SHIFTS:
        if found is not None and found[0] <= THRESHOLD:
            break  # matched: the other shifts would only read a true copy as noise
        count, m, agree = _scored(columns, key, book, skip, shift)
        if not len(candidates) or not m:
            if found is None:
                found = (1.0, shift, count, m, agree)
            continue
        p = min(1.0, binomial_tail(m, int(agree.max())) * n)
        if found is None or p < found[0]:
            found = (p, shift, count, m, agree)
    assert found is not None
    p, shift, count, m, agree = found
    if not len(candidates) or not m:
        return Trace([], 1.0, count, m, 0, len(candidates), None)
    matches = []
    for a in sorted(set(agree.tolist()), reverse=True):  # every candidate under the threshold
        tail = min(1.0, binomial_tail(m, a) * n)
        if tail > THRESHOLD:
            break
        matches += [Match(candidates[i], tail, a) for i in np.flatnonzero(agree == a).tolist()]
    matches.sort(key=lambda x: (x.p_value, x.candidate.delivery_id, x.candidate.reader_id or ""))
    best = matches[0].candidate if matches else candidates[int(np.argmax(agree))]
    return Trace(matches, p, count, m, int(agree.max()), len(candidates), best, shift)


def trace_file(path: Path, key: bytes, candidates: Sequence[Candidate], *,
               skip: Collection[str] = ()) -> tuple[Trace, str]:
    """Trace the file at ``path`` (``skip`` as for ``trace``): the answer and the file's
    SHA-256."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return trace(read_table(path), key, candidates, skip=skip), digest
