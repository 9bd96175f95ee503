"""The content check after masking: no clear value of an input field graded L3 or L4 leaves
the datasite, whatever the product's code named the column it put it in.

Masking goes by column *name* (``core/masking.py``); the product's code is not trusted
(DESIGN.md section 8) and may copy an L4 column under another name, into an object's keys
(``df.groupby("id_number").sum()`` as a dict), into a list without names
(``df.values.tolist()``) or nested anywhere. So once the result is masked, the node, which
holds the private tables the code ran on, compares every value and every object key of the
output, at any depth, with the clear values of the L3/L4 fields the code was handed: one equal
(after stripping and case-folding; a text is also split at separators, so ``"id: 1101..."``
matches) refuses the output. A masked value is never equal to its clear value.

Which values take part (``ClearValues.of``):
- texts of at least ``MIN_CHARS`` characters (``MIN_WIDE_CHARS`` if any character is not
  ASCII: a Chinese name has two or three), so that short codes and small numbers an honest
  output holds (a count ``"12"``, a band ``"L3"``) do not refuse it by coincidence;
- integers only of identifier kinds (an ID number, a phone or an account held as a number)
  with at least ``MIN_ID_DIGITS`` digits. Other integers (amounts, ages, counts) are left
  out: an honest sum or count equals some input amount too often, and L3 integers leave
  generalised (two significant digits) anyway.

What it cannot see: a value transformed by the code (reversed, re-spelt, split into parts,
arithmetic on a number) is not equal to its clear form. docs/PRIVACY.md "Masking" says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from compute_nodes.output_contract import OutputViolation

#: the grades whose clear values may not leave in a plaintext result
PROTECTED = ("L3", "L4")
#: the shortest text (all ASCII) that takes part in the check
MIN_CHARS = 4
#: the shortest text with a character outside ASCII (e.g. a Chinese name) that takes part
MIN_WIDE_CHARS = 2
#: the fewest digits of an integer identifier (kind other than "none") that takes part
MIN_ID_DIGITS = 10
#: where a text is split to find a clear value inside it
SEPARATORS = re.compile(r"[\s,;:|=/\\()\[\]{}<>\"'`]+")


def _normal(text: str) -> str:
    return text.strip().casefold()


def _long_enough(text: str) -> bool:
    return len(text) >= (MIN_CHARS if text.isascii() else MIN_WIDE_CHARS)


@dataclass(frozen=True)
class ClearValues:
    """The clear values of the L3/L4 fields one execution's code was handed, each with the
    field it came from (a declared name, safe to quote) and that field's grade."""

    owner: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, frames: Sequence[Any], grades: Mapping[str, Mapping[str, str]],
           ) -> ClearValues:
        """From the tables handed to the code (pandas DataFrames) and the columns' grades
        (``OutputContract.grades``: column -> {"grade", "kind"})."""
        owner: dict[str, tuple[str, str]] = {}
        for frame in frames:
            for name in frame.columns:
                graded = grades.get(str(name))
                if graded is None or graded.get("grade") not in PROTECTED:
                    continue
                for text in _texts(frame[name], str(graded.get("kind") or "none")):
                    owner.setdefault(text, (str(name), str(graded["grade"])))
        return cls(owner)

    def check(self, value: Any, name: Callable[[str | None], str]) -> None:
        """OutputViolation if a value or key of ``value`` (JSON) equals a clear value;
        ``name`` quotes an output column only if declared (``OutputContract.quote``)."""
        if not self.owner:
            return
        for text, where in _cells(value):
            hit = self._find(text)
            if hit is not None:
                field_name, grade = hit
                place = "as an object key" if where == _KEY else (
                    f"in column {name(where)}" if where is not None
                    else "in a value without a column name")
                raise OutputViolation(
                    f"output_violation: a clear value of the {grade} field {field_name!r} "
                    f"appears {place}; a value of an L3/L4 field leaves the datasite masked "
                    "or not at all")

    def _find(self, text: str) -> tuple[str, str] | None:
        normal = _normal(text)
        hit = self.owner.get(normal)
        if hit is not None:
            return hit
        for part in SEPARATORS.split(normal):
            if part != normal and part in self.owner:
                return self.owner[part]
        return None


def _texts(column: Any, kind: str) -> Iterator[str]:
    """The normalised clear values of one input column that take part in the check."""
    for item in column.dropna().unique():
        if isinstance(item, bool):
            continue
        if hasattr(item, "item") and callable(item.item) and getattr(item, "ndim", 0) == 0:
            item = item.item()
        if isinstance(item, int) or isinstance(item, float) and item.is_integer():
            digits = str(abs(int(item)))
            if kind != "none" and len(digits) >= MIN_ID_DIGITS:
                yield str(int(item))
            continue
        if isinstance(item, str):
            text = _normal(item)
            if _long_enough(text):
                yield text


#: the position of an object key (``_cells``)
_KEY = "\x00key"


def _cells(value: Any) -> Iterator[tuple[str, str | None]]:
    """Every text (and integer, as text) in a JSON value with where it is: ``_KEY`` for an
    object key, else the name of the nearest object key above it (None: none)."""
    stack: list[tuple[Any, str | None]] = [(value, None)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                yield str(key), _KEY
                stack.append((inner, str(key)))
        elif isinstance(item, list):
            stack.extend((inner, where) for inner in item)
        elif isinstance(item, str):
            yield item, where
        elif isinstance(item, int) and not isinstance(item, bool) \
                and len(str(abs(item))) >= MIN_ID_DIGITS:
            yield str(item), where
