"""What a product's ``output_schema`` may hold: JSON Schema without the keywords that make
checking an output unsafe. The server refuses such a schema at registration; the compute
node, which checks every output against it in its own process, refuses it again (the
registered event is all it trusts).

- ``$ref`` and its kin make the check resolve references (an error, or a fetch);
- ``pattern`` and ``patternProperties`` run a regular expression the operator wrote over
  the output: a catastrophic one holds the node's process for as long as it likes.
"""

from __future__ import annotations

from typing import Any

UNSAFE_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef", "pattern", "patternProperties")


def unsafe_keyword(schema: Any) -> str | None:
    """The first keyword of :data:`UNSAFE_KEYWORDS` anywhere in ``schema``, else None."""
    stack = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found = next((k for k in UNSAFE_KEYWORDS if k in item), None)
            if found is not None:
                return found
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None
