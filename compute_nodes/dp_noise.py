"""Differential privacy on the datasite (差分隐私): the Laplace noise of a dp product's output.

A product that declares ``dp`` on ``product.registered`` (``{"epsilon": ε, "columns":
{column: {"sensitivity": Δ}}}``, exact decimal text; the server's domain/privacy_budget.py)
has each of its n noised columns' values replaced, after the product computed them and the
output passed its contract, and before the result is masked and leaves the datasite, by
``round(value + Laplace(Δ / (ε / n)))``: each column gets ε / n, so the whole output is
ε-differentially private (sequential composition), given Δ bounds how much one person's
records can change the column (summed over its rows). Rounding to an integer (results carry
integers only) is post-processing and costs no privacy.

The noise is IBM's diffprivlib (``diffprivlib.mechanisms.Laplace``, its sampler built against
the floating-point attacks on a naive one), never hand-rolled. In the node ``random_state``
is None: diffprivlib then draws from ``secrets.SystemRandom`` (the operating system's
entropy), so neither the product's code (which ran in another process, before) nor anyone
holding the node's state can reproduce it; a test passes a seed. Nothing of the noise or of
the values before it is logged or reported.

Before the noise, ``dp_violation`` refuses an output that is not a table of the dp columns
and the key column only: a column the product added, or a value nested in a row, would
leave exact while the ledger records ε spent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _cell_violation(column: str, cell: Any, noised: set[str],
                    key_column: str | None) -> str | None:
    """Why cell ``cell`` of column ``column`` may not leave in a dp result, or None."""
    if column in noised:
        if cell is None or (not isinstance(cell, bool) and isinstance(cell, int | float)):
            return None
        return f"the dp column {column!r} must hold numbers (or null)"
    if key_column is not None and column == key_column:
        if cell is None or (not isinstance(cell, bool) and isinstance(cell, str | int)):
            return None
        return f"the key column {column!r} of a dp product must hold strings or integers"
    return ("a row of a dp product's output holds a column that is neither its key column "
            "nor a dp column (it would leave un-noised)")


def dp_violation(value: Any, dp: Mapping[str, Any] | None,
                 key_column: str | None) -> str | None:
    """Why the output ``value`` of a dp product may not leave, noised, as a dp result; None
    if it may (or without ``dp``). It must be a table: a list of row objects holding only
    the dp columns (numbers or null: each is noised) and the key column (a string, an
    integer or null), nothing nested, so no value leaves exact but the key (the registered
    schema says so since domain/privacy_budget.py ``dp_table``; checked here again, for a
    product registered before, whatever its schema let through). The reason names only
    the declared columns, never a value nor a name the product made up."""
    if not dp:
        return None
    noised = {str(c) for c in dp["columns"]}
    if not isinstance(value, list):
        return "a dp product's output must be a table (a list of rows)"
    for row in value:
        if not isinstance(row, dict):
            return "a dp product's output must be a table: each row an object"
        for column, cell in row.items():
            reason = _cell_violation(str(column), cell, noised, key_column)
            if reason is not None:
                return reason
    return None


def mechanisms(dp: Mapping[str, Any], random_state: Any = None) -> dict[str, Any]:
    """Each noised column's diffprivlib Laplace mechanism: ε / n of the declared ε, its Δ."""
    from diffprivlib.mechanisms import Laplace  # the compute venv only; heavy: when needed
    from diffprivlib.utils import check_random_state

    rng = check_random_state(random_state, secure=True)  # one stream for every column
    columns = dp["columns"]
    epsilon = float(dp["epsilon"]) / len(columns)
    return {str(name): Laplace(epsilon=epsilon, sensitivity=float(spec["sensitivity"]),
                               random_state=rng)
            for name, spec in sorted(columns.items())}


def _noised(value: Any, mechanism: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value  # null (or not a number: the output contract already refused those)
    return round(float(mechanism.randomise(float(value))))


def add_noise(value: Any, dp: Mapping[str, Any] | None, random_state: Any = None) -> Any:
    """The output ``value`` (an object, or a list of row objects) with each dp column's
    values noised; unchanged when ``dp`` is None. ``random_state``: a seed or
    ``numpy.random.RandomState`` for a test; None (the node): the system's entropy."""
    if not dp:
        return value
    noise = mechanisms(dp, random_state)
    rows = value if isinstance(value, list) else [value]
    out = []
    for row in rows:
        if isinstance(row, dict):
            row = {k: _noised(v, noise[k]) if k in noise else v for k, v in row.items()}
        out.append(row)
    return out if isinstance(value, list) else out[0]
