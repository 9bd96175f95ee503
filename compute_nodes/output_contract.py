"""What a product may output, checked on the datasite before anything leaves it.

The terms come from proven events only: the product's ``output_schema``, ``key_column``
and ``sensitive_fields`` from its ``product.registered``, the columns the contract allows
(its usage policy's ``allowed_fields``) from ``contract.proposed``, and the execution's
query. The checks, in order:

1. a query may name only the product's key column (checked before anything runs);
2. no column a dataset marks sensitive (or personal) appears anywhere in the output,
   unless the contract allows that column;
3. the output fits ``output_schema`` (JSON Schema: types, allowed columns,
   ``additionalProperties``, ...);
4. a row-level output answering a query has at most one row per key asked.

Then, before the result leaves the datasite, :meth:`OutputContract.noise` adds a dp product's
Laplace noise to its declared columns (``dp`` of ``product.registered``, ``dp_noise.py``), and
:meth:`OutputContract.mask` masks its columns by
the grade and kind of the input fields they are named like (``field_grades`` of
``product.registered``, ``core/masking.py``): the rows reported are the masked ones. Last,
the masked output may hold no clear value of an L3/L4 input field under any name, key or
depth (``clear_values.py``: the product's code is not trusted to keep the names).

A violation is an :class:`OutputViolation` whose reason is recorded on the log as
``computation.failed``: it names the column and the rule, never a value of the output.
A column name the product made up is product output too (it could spell a private value):
the reason names only columns the product or its datasets declare.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

from compute_nodes.dp_noise import add_noise, dp_violation
from core.masking import column_grades, mask_result
from core.output_schema import unsafe_keyword

#: the form a result leaves the datasite in (the server's domain/usage.py RESULT_FORM)
MODE = "plaintext"


class OutputViolation(ValueError):
    """The output breaks the product's or the contract's terms; the message is public."""


@dataclass(frozen=True)
class OutputContract:
    """The proven terms one execution's output must meet."""

    schema: Mapping[str, Any] = field(default_factory=dict)
    key_column: str | None = None
    #: dataset id -> its fields marked sensitive or personal (from product.registered)
    sensitive: Mapping[str, list[str]] = field(default_factory=dict)
    #: columns the contract lets through although sensitive (usage policy allowed_fields)
    allowed: frozenset[str] = frozenset()
    #: every column name the product or its inputs declare (safe to quote in a reason)
    declared: frozenset[str] = frozenset()
    #: why the registered schema cannot be checked (then no output can pass), else None
    invalid: str | None = None
    #: column -> {"grade", "kind"} of the input fields named like it (core.masking)
    grades: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: the differential privacy declared ({"epsilon", "columns"}, decimal text), or None
    dp: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, registered: Mapping[str, Any], policy: Mapping[str, Any] | None) -> OutputContract:
        """The terms from a proven ``product.registered`` payload and the proven usage
        policy of the contract (None for a trial)."""
        schema = registered.get("output_schema")
        invalid = None
        if not isinstance(schema, Mapping):
            schema, invalid = {}, "product.registered has no output_schema object"
        elif (unsafe := unsafe_keyword(schema)) is not None:
            invalid = f"the product's output_schema uses {unsafe!r}, which the node refuses"
        else:
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as exc:
                invalid = f"the product's output_schema is not a JSON Schema: {exc.message}"
        sensitive = registered.get("sensitive_fields") or {}
        allowed = (policy or {}).get("allowed_fields") or []
        declared = {str(f) for i in registered.get("inputs") or [] for f in i.get("fields", [])}
        declared |= set(_schema_columns(schema))
        declared |= {str(f) for names in sensitive.values() for f in names}
        key = registered.get("key_column")
        return cls(schema=schema, key_column=key if isinstance(key, str) else None,
                   sensitive={str(d): [str(f) for f in names]
                              for d, names in sensitive.items()},
                   allowed=frozenset(str(a) for a in allowed), declared=frozenset(declared),
                   invalid=invalid,
                   grades=column_grades(registered.get("field_grades") or {}),
                   dp=registered.get("dp") or None)

    def check_query(self, query: Mapping[str, Any] | None) -> None:
        """Rule 1, and a schema the node can check: before anything runs."""
        if self.invalid is not None:
            raise OutputViolation(f"output_schema_refused: {self.invalid[:500]}")
        if query is None:
            return
        if self.key_column is None:
            raise OutputViolation(f"query_refused: the query names column {query['field']!r}"
                                  "; the product declares no key column, so it takes no query")
        if query["field"] != self.key_column:
            raise OutputViolation(f"query_refused: the query names column {query['field']!r}"
                                  f", not the product's key column {self.key_column!r}")

    def check(self, value: Any, query: Mapping[str, Any] | None) -> None:
        """Rules 2 to 4 on the output as it would be reported."""
        self._check_sensitive(value)
        self._check_schema(value)
        if query is not None and isinstance(value, list):
            self._check_rows(value, query)

    def noise(self, value: Any) -> Any:
        """The output with a dp product's Laplace noise on its declared columns
        (``dp_noise.add_noise``, the system's entropy); unchanged without ``dp``. Refused
        (OutputViolation) unless a dp product's output is a table of its dp columns and
        its key column only (``dp_noise.dp_violation``): nothing leaves exact."""
        violation = dp_violation(value, self.dp, self.key_column)
        if violation is not None:
            raise OutputViolation(f"output_violation: {violation}")
        return add_noise(value, self.dp)

    def mask(self, value: Any) -> tuple[Any, dict[str, str]]:
        """The output as it leaves the datasite, its columns masked by their grade and kind
        in plaintext form, and which rule changed each column (``core.masking.mask_rows``)."""
        return mask_result(value, self.grades, MODE)

    def quote(self, column: str | None) -> str:
        """How a reason may name an output column: quoted if the product or its datasets
        declare it, else withheld (a made-up name could spell a private value)."""
        return self._name(column)

    def _check_rows(self, rows: list[Any], query: Mapping[str, Any]) -> None:
        """At most one row per distinct key asked. The reason gives no count: a product
        could spell a private value in how many rows it returns."""
        asked = {str(v) for v in query["values"]}
        keys = [str(row.get(query["field"])) if isinstance(row, dict) else None
                for row in rows]
        if len(rows) > len(asked) or len(set(keys)) != len(keys):
            raise OutputViolation("output_violation: more rows than keys asked; at most one "
                                  "row per key the query names")

    def _check_sensitive(self, value: Any) -> None:
        owners = {}
        for dataset_id, names in self.sensitive.items():
            for name in names:
                owners.setdefault(name, dataset_id)
        for column in _keys(value):
            if column in owners and column not in self.allowed:
                raise OutputViolation(
                    f"output_violation: column {column!r} is sensitive in dataset "
                    f"{owners[column]} and the contract does not allow it")

    def _check_schema(self, value: Any) -> None:
        validator = Draft202012Validator(self.schema)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            raise OutputViolation(f"output_violation: {self._describe(errors[0])}")

    def _describe(self, error: ValidationError) -> str:
        """The rule broken and where, naming only declared columns, quoting no value."""
        column = next((p for p in reversed(error.absolute_path) if isinstance(p, str)), None)
        where = f"column {self._name(column)}" if column is not None else "the output"
        rule = error.validator
        if rule == "additionalProperties":
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            return (f"column {self._name(extra[0]) if extra else '?'} is not in the "
                    "product's output_schema")
        if rule == "required":
            missing = sorted(set(error.validator_value) - set(error.instance))
            return f"column {self._name(missing[0]) if missing else '?'} is missing"
        if rule == "type":
            return f"{where} must be of type {error.validator_value}"
        return f"{where} breaks the output_schema's {rule!r} rule"

    def _name(self, column: str | None) -> str:
        if column is not None and column in self.declared:
            return repr(column)
        return "(a name the product made up, withheld)"


def _keys(value: Any) -> Iterator[str]:
    """Every key of every object in a JSON value."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield from (str(k) for k in item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _schema_columns(schema: Mapping[str, Any]) -> Iterator[str]:
    """The property names a schema declares, at any depth."""
    stack: list[Any] = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            properties = item.get("properties")
            if isinstance(properties, Mapping):
                yield from (str(k) for k in properties)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
