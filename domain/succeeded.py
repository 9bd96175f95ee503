"""``computation.succeeded``: the result of an execution as its provider's node reported it,
the hashes of what went in and came out, and the masking (脱敏) the node applied before the
result left the datasite (core/masking.py, docs/PRIVACY.md, Masking).

The ledger never sees the clear values, so it cannot check the masking itself; it checks
that what the node says it applied is what the product's proven field grades call for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from core.event import Event
from core.masking import column_grades, label, rule
from domain.errors import InvalidInput
from domain.usage import RESULT_FORM

#: the most columns a masking report may name
MAX_MASKED_COLUMNS = 1000


@dataclass(frozen=True, kw_only=True)
class ComputationSucceeded(Event):
    """The code ran on the private data (on the mock data for execution 0): the hashes of
    what went in and came out (the result as masked on the datasite), and which masking
    rule changed each column (``masking``: column -> ``"<grade>:<kind>:<rule>"``)."""

    type_name = "computation.succeeded"
    class_version = 2
    datasite: str
    code_sha256: str
    input_hashes: dict[str, str]
    result_sha256: str
    result_rows: int
    masking: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 was recorded before masking: nothing applied."""
        state["masking"] = {}


class Reported(NamedTuple):
    """A result as its node reports it (``record_success``): the SHA-256 of its canonical
    bytes (as masked on the datasite), its rows, and the masking applied (column -> rule,
    ``check_masking``; None: nothing masked)."""

    sha256: str
    rows: int
    masking: dict[str, str] | None = None


def check_masking(value: Any,
                  field_grades: Mapping[str, Mapping[str, Mapping[str, str]]]) -> dict[str, str]:
    """``value`` (column -> ``"<grade>:<kind>:<rule>"``; None: nothing masked), sorted, if
    each column is a field of the product's inputs whose grade calls for a mask in a
    plaintext result and the rule is the one its grade and kind give; InvalidInput
    naming ``masking`` otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_MASKED_COLUMNS:
        raise InvalidInput("masking", f"must be an object of at most {MAX_MASKED_COLUMNS} "
                                      "columns: column -> the rule applied")
    grades = column_grades(field_grades)
    for column, applied in value.items():
        graded = grades.get(column) if isinstance(column, str) else None
        if graded is None or rule(RESULT_FORM, graded["grade"]) == "clear":
            raise InvalidInput("masking", f"column {column!r} is not a field of the product's "
                                          "inputs whose grade calls for a mask")
        if applied != label(graded, RESULT_FORM):
            raise InvalidInput("masking", f"column {column!r}: the product's grades call for "
                                          f"{label(graded, RESULT_FORM)!r}")
    return dict(sorted(value.items()))
