"""What a computation's result may be, as the ledger takes it: the rows a query asks for,
plain JSON (no floats unless integral), and the reason recorded when it cannot be reported
(which never quotes the result)."""

from __future__ import annotations

import math
from typing import Any

from compute_nodes.outcome import NodeError
from compute_nodes.sandbox.worker import series_value


class ResultError(ValueError):
    """A result the ledger cannot take; ``public`` says why without quoting the result."""

    def __init__(self, message: str, public: str | None = None) -> None:
        super().__init__(message)
        self.public = message if public is None else public


def check_query(query: Any) -> dict[str, Any] | None:
    """None, or ``{"field": column, "values": [str, ...]}``; NodeError otherwise."""
    if query is None:
        return None
    if not isinstance(query, dict) or set(query) != {"field", "values"} \
            or not isinstance(query["field"], str) or not query["field"] \
            or not isinstance(query["values"], list) \
            or not all(isinstance(v, str) for v in query["values"]):
        raise NodeError(f"query {query!r} is not {{field: column, values: [str, ...]}}")
    return {"field": query["field"], "values": list(query["values"])}


def apply_query(value: Any, query: dict[str, Any] | None) -> Any:
    """Keep only the rows whose ``query["field"]`` is one of ``query["values"]`` (as text).

    Raises ValueError when the result is not rows, or no row has that column."""
    if query is None:
        return value
    import pandas as pd  # type: ignore[import-untyped]  # the compute venv has it

    if isinstance(value, pd.DataFrame):
        value = value.to_dict(orient="records")
    column, wanted = query["field"], set(query["values"])
    if not isinstance(value, list) or not all(isinstance(row, dict) for row in value):
        raise ResultError(f"a query on {column!r} needs a table of rows; the result is a "
                          f"{type(value).__name__}")
    if value and not any(column in row for row in value):
        raise ResultError(f"the result has no column {column!r}")
    return [row for row in value if column in row and _text(row[column]) in wanted]


def _text(value: Any) -> str:
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    return value if isinstance(value, str) else str(value)


def to_json_result(value: Any) -> tuple[Any, int]:
    """The result as the ledger takes it (JSON: no floats unless integral) and its rows."""
    import pandas as pd  # the compute venv has it (syft's pin)

    if isinstance(value, pd.DataFrame):
        value = value.to_dict(orient="records")
    elif isinstance(value, pd.Series):
        value = series_value(value)
    plain = _plain(value)
    rows = len(plain) if isinstance(plain, list) else 1
    return plain, rows


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        return _plain(value.item())  # numpy scalars
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        raise ResultError(f"non-integral number {value!r} (report integers or strings)",
                          "a non-integral number in the result (report integers or strings)")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    raise ResultError(f"a {type(value).__name__} is not JSON",
                      f"a {type(value).__name__} in the result is not JSON")
