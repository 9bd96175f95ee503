"""``computation.succeeded``: the result of an execution as its provider's node reported it,
the hashes of what went in and came out, and the masking (脱敏) the node applied before the
result left the datasite (core/masking.py, docs/PRIVACY.md, Masking).

The ledger checks that what the node says it applied is what the product's proven field
grades call for, and (``verify_masked``, the result route) that the posted result is masked:
the masks are idempotent, so masking the posted result again changes nothing if the node
masked it; a result that changes is refused, and the masking recorded is the server's own."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from core.event import Event
from core.masking import column_grades, label, mask_result, rule
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


def verify_masked(value: Any, field_grades: Mapping[str, Mapping[str, Mapping[str, str]]],
                  reported: Any) -> dict[str, str]:
    """The masking of the posted result ``value`` as the server applies it
    (``core.masking.mask_result`` with the product's grades, plaintext form), if it changes
    nothing and equals what the node ``reported`` (``check_masking``). InvalidInput naming
    ``result`` (the first column a mask would change and its grade, never a value) when the
    result is not masked as its grades call for; naming ``masking`` when the report differs."""
    grades = column_grades(field_grades)
    masked, applied = mask_result(value, grades, RESULT_FORM)
    if masked != value:
        column = _first_change(value, masked)
        graded = grades.get(column or "", {"grade": "?", "kind": "none"})
        raise InvalidInput("result", f"column {column!r} of grade {graded['grade']} is not "
                                     f"masked as the product's grades call for "
                                     f"({label(graded, RESULT_FORM)}); nothing was stored")
    if check_masking(reported, field_grades) != applied:
        raise InvalidInput("masking", "differs from the masking the product's grades give "
                                      f"the posted result: {applied}")
    return applied


def _first_change(before: Any, after: Any) -> str | None:
    """The name of the first object key, at any depth, whose value differs between
    ``before`` and ``after`` (the same JSON value but for masked cells)."""
    stack = [(before, after)]
    while stack:
        old, new = stack.pop(0)
        if isinstance(old, dict) and isinstance(new, dict):
            for key in old:
                if old[key] != new.get(key):
                    inner = _first_change(old[key], new.get(key))
                    return key if inner is None else inner
        elif isinstance(old, list) and isinstance(new, list):
            stack.extend(zip(old, new, strict=False))
    return None
