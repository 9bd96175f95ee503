"""docs/SIGNING.md's standalone example (``cryptography`` alone) signs what
``core.decision.signed_body`` signs: an integrator following the page is accepted."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from core import decision as d

DOC = Path(__file__).resolve().parents[2] / "docs" / "SIGNING.md"


def doc_function() -> Any:
    block = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert block is not None and "def sign_decision" in block.group(1)
    namespace: dict[str, Any] = {}
    exec(compile(block.group(1), str(DOC), "exec"), namespace)  # noqa: S102 - our own doc
    return namespace["sign_decision"]


def test_the_documented_function_signs_as_the_server_verifies() -> None:
    key = d.new_private_key()
    body = {"approve": True, "comment": "同意 \u00e9", "n": 2**53 - 1, "list": [{"b": 1, "a": 2}]}
    documented = doc_function()(key, "scenario.decision", "sc-1", 7, "m-1", body)
    assert documented == d.signed_body(key, "scenario.decision", "sc-1", 7, "m-1", body)
    stmt = d.statement("scenario.decision", "sc-1", 7, "m-1", documented)
    assert d.verifies(d.public_key_text(key.public_key()), stmt,
                      documented["signature"]["value"])


def test_the_documented_table_names_every_signed_command() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert all(f"| `{command}` |" in text for command in d.COMMANDS)
