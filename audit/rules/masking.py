"""Masking (脱敏, white paper 5.2.4 处理环节/交换环节; 4.2 分类分级), replayed from the event
catalogue and docs/PRIVACY.md, never from ``domain/``.

A dataset's fields carry a grade (L1 to L4) and an identifier kind (``dataset.registered`` /
``dataset.updated`` version 2; version 1's are derived from the sensitivity: public L1,
internal L2, sensitive and personal L3, kind "none"). ``product.registered`` (version 4)
records ``field_grades``: for each input dataset, exactly its fields' grades and kinds as they
stood at that seq (filled by the platform, so the compute node masks by the provider's
grading, not by one the operator chose). A ``computation.succeeded`` (version 2) records the
masking the node applied, ``column -> "<grade>:<kind>:<rule>"``: each entry names a field of
the product's inputs whose grade calls for a mask in a plaintext result, with the rule its
grade and kind give (core/masking.py's table, the stricter grade where inputs disagree).
What the node did to the values themselves stays on the datasite: only this agreement can
be replayed.
"""

from __future__ import annotations

from typing import Any

from audit.rules.model import Ev, Finding, State
from core.masking import column_grades, label, rule

RULE = "masking"
#: the grade a version-1 field gets from its sensitivity (docs/PRIVACY.md)
DERIVED = {"public": "L1", "internal": "L2", "sensitive": "L3", "personal": "L3"}
MODE = "plaintext"


def _grades(fields: Any) -> dict[str, dict[str, str]]:
    """A stored field list's ``{name: {"grade", "kind"}}``."""
    out: dict[str, dict[str, str]] = {}
    for f in fields if isinstance(fields, list) else []:
        if isinstance(f, dict):
            out[str(f.get("name"))] = {
                "grade": str(f.get("grade") or DERIVED.get(str(f.get("sensitivity")), "L4")),
                "kind": str(f.get("kind") or "none")}
    return out


class MaskingRules:
    """Each dataset's current field grades, each product's column grades."""

    def __init__(self) -> None:
        self.datasets: dict[str, dict[str, dict[str, str]]] = {}
        #: product id -> column -> {"grade", "kind"} (version-3 products: absent)
        self.products: dict[str, dict[str, dict[str, str]]] = {}

    def findings(self, s: State, ev: Ev) -> list[Finding]:
        """The findings on ``ev``; then remember the grades it records."""
        if ev.type in ("dataset.registered", "dataset.updated"):
            if ev.payload.get("fields") is not None:
                self.datasets[ev.id] = _grades(ev.payload.get("fields"))
        elif ev.type == "product.registered":
            return self._registered(ev)
        elif ev.type == "computation.succeeded":
            return self._succeeded(s, ev)
        return []

    def _registered(self, ev: Ev) -> list[Finding]:
        recorded = ev.payload.get("field_grades")
        if ev.payload.get("class_version", 1) < 4:  # registered before grades existed
            return []
        inputs = ev.payload.get("inputs")
        ids = [str(i.get("dataset_id")) for i in inputs if isinstance(i, dict)] \
            if isinstance(inputs, list) else []
        expected = {d: self.datasets.get(d, {}) for d in ids}
        if not isinstance(recorded, dict):
            recorded = {}
        self.products[ev.id] = column_grades(recorded)
        if recorded != expected:
            return [Finding(ev.seq, RULE, f"product {ev.id}'s field_grades: the grades and "
                            "kinds of its input datasets' fields at registration",
                            f"{sorted(recorded)} not as the datasets grade them")]
        return []

    def _succeeded(self, s: State, ev: Ev) -> list[Finding]:
        run = s.computations.get(ev.id)
        masking = ev.payload.get("masking") or {}
        grades = self.products.get(run.product, {}) if run is not None else {}
        if not isinstance(masking, dict):
            masking = {"(not an object)": str(masking)}
        wrong = sorted(column for column, applied in masking.items()
                       if column not in grades or rule(MODE, grades[column]["grade"]) == "clear"
                       or applied != label(grades[column], MODE))
        if not wrong:
            return []
        return [Finding(ev.seq, RULE, f"computation {ev.id}'s masking: the rule its product's "
                        "field grades give each masked column",
                        f"{', '.join(wrong)} not as graded")]
