"""Masking (脱敏) of a result's columns by their fields' grade and kind, before a result
leaves the datasite (white paper 4.2 分类分级, 5.2.4 处理环节/交换环节 脱敏; docs/PRIVACY.md).

A dataset's field has a grade (``GRADES``, L1 least sensitive to L4 most) and a kind
(``KINDS``: what sort of identifier it is, "none" for others). A result column named like an
input field takes that field's grade and kind (``column_grades``: the stricter grade if two
inputs disagree), and ``RULES`` says what the circulation mode does to each grade: in a
plaintext result (the only form results are delivered in, domain/usage.py ``RESULT_FORM``)
L1 and L2 stay clear, L3 is partially masked (``partial``: format-preserving by kind, numbers
generalised to two significant digits, under 100 to tens) and L4 never appears (its values replaced by null).

Standard library only: the server (its domain validates grades and kinds), the compute node
(which masks) and the bench import it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

#: a field's grade (分级), from least to most sensitive
GRADES = ("L1", "L2", "L3", "L4")
#: a field's kind: the identifier it holds ("none": not an identifier of a person)
KINDS = ("id_number", "phone", "name", "address", "account", "email", "none")
#: the circulation modes a result leaves a datasite in
MODES = ("plaintext",)
#: what each mode does to a column of each grade: "clear" (unchanged), "partial" (masked
#: by kind, ``mask_value``) or "withheld" (every value replaced by null)
RULES: dict[str, dict[str, str]] = {
    "plaintext": {"L1": "clear", "L2": "clear", "L3": "partial", "L4": "withheld"},
}
#: the character a mask writes in place of a hidden one
STAR = "*"


def column_grades(field_grades: Mapping[str, Mapping[str, Mapping[str, str]]],
                  ) -> dict[str, dict[str, str]]:
    """Each field name's ``{"grade", "kind"}`` over every input dataset of
    ``product.registered``'s ``field_grades`` (dataset -> field -> grade and kind): where
    two inputs disagree, the stricter grade, and of equal grades an identifier kind over
    "none" (then the first in ``KINDS``)."""
    out: dict[str, dict[str, str]] = {}
    for dataset_id in sorted(field_grades):
        for name, graded in field_grades[dataset_id].items():
            grade, kind = str(graded.get("grade")), str(graded.get("kind") or "none")
            if grade not in GRADES:  # an unknown grade is treated as the strictest
                grade = GRADES[-1]
            kind = kind if kind in KINDS else "none"
            seen = out.get(name)
            if seen is None or GRADES.index(grade) > GRADES.index(seen["grade"]) or (
                    grade == seen["grade"] and KINDS.index(kind) < KINDS.index(seen["kind"])):
                out[name] = {"grade": grade, "kind": kind}
    return out


# -- the partial masks, by kind --------------------------------------------------------
def _keep(text: str, head: int, tail: int) -> str:
    """``text`` with all but its first ``head`` and last ``tail`` characters starred; a text
    too short for that shows at most half its characters, shared in the same proportion."""
    n = len(text)
    if head + tail >= n:
        budget = n // 2
        head, tail = head * budget // (head + tail), budget - head * budget // (head + tail)
    return text[:head] + STAR * (n - head - tail) + text[n - tail:]


def mask_id_number(text: str) -> str:
    """A resident ID number (18 characters): the first 6 (the region) and the last 4."""
    return _keep(text, 6, 4)


def mask_phone(text: str) -> str:
    """A phone number: the first 3 and the last 4."""
    return _keep(text, 3, 4)


def mask_name(text: str) -> str:
    """A person's name: the first character (the family name), a star for each other."""
    return _keep(text, 1, 0)


def mask_address(text: str) -> str:
    """An address: its first 6 characters (province, city), a star for each other."""
    return _keep(text, 6, 0)


def mask_account(text: str) -> str:
    """An account or card number: its last 4."""
    return _keep(text, 0, 4)


def mask_email(text: str) -> str:
    """An e-mail address: the first character of the local part, then ``***@domain``."""
    local, at, domain = text.rpartition("@")
    if not at or not local:
        return mask_text(text)
    return local[0] + "***@" + domain


#: a text (kind "none") shorter than this keeps its first character only
SHORT_TEXT = 5


def mask_text(text: str) -> str:
    """Any other text: its first and last characters; one shorter than ``SHORT_TEXT``
    its first only (``王小明`` -> ``王**``: two of three would be kept otherwise)."""
    return _keep(text, 1, 0 if len(text) < SHORT_TEXT else 1)


MASKS: dict[str, Callable[[str], str]] = {
    "id_number": mask_id_number, "phone": mask_phone, "name": mask_name,
    "address": mask_address, "account": mask_account, "email": mask_email, "none": mask_text}


def generalise(number: int) -> int:
    """An integer rounded to two significant digits (123456 -> 120000, -987 -> -990); one
    under 100 to the nearest ten (7 -> 10, 42 -> 40: an age or a count of children is not
    left exact)."""
    magnitude = abs(number)
    step = 10 ** max(1, len(str(magnitude)) - 2)
    rounded = (magnitude + step // 2) // step * step
    return rounded if number >= 0 else -rounded


def mask_value(value: Any, kind: str) -> Any:
    """A value's partial mask: text by ``kind`` (``MASKS``), an integer (or an integral
    float) generalised, null and booleans as they are; any other value (a list, an object,
    a fraction) cannot be masked in part and is withheld (null)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return MASKS.get(kind, mask_text)(value)
    if isinstance(value, int):
        return generalise(value)
    if isinstance(value, float) and value.is_integer():
        return generalise(int(value))
    return None


# -- a result ---------------------------------------------------------------------------
def rule(mode: str, grade: str) -> str:
    """What ``mode`` does to a column of ``grade`` (``RULES``); an unknown mode or grade is
    treated as the strictest: withheld."""
    return RULES.get(mode, {}).get(grade, "withheld")


def label(graded: Mapping[str, str], mode: str) -> str:
    """How a column's masking is recorded: ``"<grade>:<kind>:<rule>"`` (``mask_rows``'s
    ``applied``, ``computation.succeeded``'s ``masking``)."""
    return f"{graded['grade']}:{graded['kind']}:{rule(mode, graded['grade'])}"


def mask_rows(rows: list[dict[str, Any]], grades: Mapping[str, Mapping[str, str]],
              mode: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The rows with each column that ``grades`` (column -> ``{"grade", "kind"}``) names
    masked by ``mode``'s rule, and ``applied``: for each column present in some row that a
    rule changed, ``"<grade>:<kind>:<rule>"`` (e.g. ``"L3:phone:partial"``). The rows given
    are not modified; rows that need no change are returned as they are."""
    plan: dict[str, Callable[[Any], Any]] = {}
    for column, graded in grades.items():
        action = rule(mode, graded["grade"])
        if action != "clear":
            plan[column] = _masker(action, graded["kind"])
    if not plan:
        return rows, {}
    steps = list(plan.items())
    present: set[str] = set()
    out = []
    for row in rows:
        copy = None
        for column, masker in steps:
            if column in row:
                if copy is None:
                    copy = dict(row)
                copy[column] = masker(row[column])
        if copy is None:
            out.append(row)
        else:
            if len(present) < len(plan):
                present.update(c for c in plan if c in row)
            out.append(copy)
    applied = {c: label(grades[c], mode) for c in sorted(present)}
    return out, applied


def _masker(action: str, kind: str) -> Callable[[Any], Any]:
    """The function one column's values go through under ``action``."""
    if action != "partial":
        return lambda value: None
    if kind in _HEAD_TAIL:  # one call a cell: a text long enough for the mask done here
        head, tail = _HEAD_TAIL[kind]
        keep, star = head + tail, STAR

        def fixed(value: Any) -> Any:
            if type(value) is str and len(value) > keep:
                return value[:head] + star * (len(value) - keep) + value[len(value) - tail:]
            return mask_value(value, kind)
        return fixed
    text = MASKS.get(kind, mask_text)

    def partial(value: Any) -> Any:
        return text(value) if type(value) is str else mask_value(value, kind)
    return partial


#: the kinds whose partial mask keeps a fixed head and tail (``_keep``'s arguments)
_HEAD_TAIL = {"id_number": (6, 4), "phone": (3, 4), "name": (1, 0), "address": (6, 0),
              "account": (0, 4)}


def mask_result(value: Any, grades: Mapping[str, Mapping[str, str]],
                mode: str) -> tuple[Any, dict[str, str]]:
    """``mask_rows`` for any JSON result: a table of flat rows directly; otherwise every
    object at any depth has its graded keys masked (a nested object or list under a masked
    key is withheld, ``mask_value``)."""
    if isinstance(value, list) and all(isinstance(row, dict) for row in value) and not any(
            isinstance(cell, dict | list) for row in value for cell in row.values()):
        return mask_rows(value, grades, mode)
    applied: dict[str, str] = {}

    def walk(item: Any) -> Any:
        if isinstance(item, list):
            return [walk(v) for v in item]
        if not isinstance(item, dict):
            return item
        masked, hit = mask_rows([{k: walk(v) for k, v in item.items()}], grades, mode)
        applied.update(hit)
        return masked[0]

    return walk(value), dict(sorted(applied.items()))
