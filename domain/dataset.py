"""Dataset: a catalog entry (数据目录/元数据登记). The data itself stays on the provider's
datasite and is never in the log; only its metadata, classification (分类分级) and fields are.

Also the input checks shared by the aggregates that name datasets and their fields
(scenarios, authorizations, products): ``require_text`` and ``validate_selection``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.event import Event
from core.masking import GRADES, rule
from core.masking import KINDS as FIELD_KINDS
from domain.base import Aggregate, Context, applies, new_id
from domain.errors import DatasetNotPublished, Forbidden, InvalidInput, WrongState
from domain.permissions import permit
from domain.unit_of_work import UnitOfWork

CLASSIFICATIONS = ("L1", "L2", "L3", "L4")
#: from least to most sensitive
SENSITIVITIES = ("public", "internal", "sensitive", "personal")
#: the sensitivities an output may not carry unless a contract allows the field
PROTECTED = ("sensitive", "personal")
FIELD_KEYS = ("name", "sensitivity", "type")
#: a field's optional keys: its grade (分级, ``core.masking.GRADES``) and identifier kind
FIELD_OPTIONAL = ("grade", "kind")
#: the grade of a field that gives none, from its sensitivity
GRADE_OF_SENSITIVITY = {"public": "L1", "internal": "L2", "sensitive": "L3", "personal": "L3"}


def complete_field(item: dict[str, str]) -> dict[str, str]:
    """A field with its ``grade`` (absent: derived from its sensitivity) and ``kind``
    (absent: "none"): stored fields always carry both."""
    return {**item, "grade": item.get("grade") or GRADE_OF_SENSITIVITY[item["sensitivity"]],
            "kind": item.get("kind") or "none"}


def _complete_stored(state: dict[str, Any]) -> None:
    if state.get("fields") is not None:
        state["fields"] = [complete_field(f) for f in state["fields"]]


@dataclass(frozen=True, kw_only=True)
class DatasetRegistered(Event):
    """A provider registered a dataset's metadata (元数据登记): owner, classification, fields."""

    type_name = "dataset.registered"
    class_version = 2
    owner_id: str
    name: str
    description: str
    source_system: str
    classification: str
    #: each {"name", "type", "sensitivity", "grade", "kind"}
    fields: list[dict[str, str]]

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1's fields had no grade and kind: derived (``complete_field``)."""
        _complete_stored(state)


@dataclass(frozen=True, kw_only=True)
class DatasetPublished(Event):
    """The owner published the dataset to the catalog (数据目录)."""

    type_name = "dataset.published"


@dataclass(frozen=True, kw_only=True)
class DatasetUpdated(Event):
    """The owner changed the description and/or the fields (``None``: unchanged)."""

    type_name = "dataset.updated"
    class_version = 2
    description: str | None = None
    fields: list[dict[str, str]] | None = None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1's fields had no grade and kind: derived (``complete_field``)."""
        _complete_stored(state)


@dataclass(frozen=True, kw_only=True)
class DatasetWithdrawn(Event):
    """The owner withdrew the dataset from the platform; terminal."""

    type_name = "dataset.withdrawn"
    reason: str


@dataclass(frozen=True, kw_only=True)
class DatasetDataLoaded(Event):
    """The owner loaded the private data onto its datasite: rows, schema, the file's SHA-256
    (the data itself never leaves the datasite) and the rows of its mock."""

    type_name = "dataset.data_loaded"
    rows: int
    schema: list[dict[str, str]]
    sha256: str
    mock_rows: int


# -- input checks -----------------------------------------------------------------
def require_text(value: Any, field: str) -> str:
    """``value`` if it is a non-empty string (after stripping), else InvalidInput."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(field, "must be a non-empty string")
    return value


def require_names(value: Any, field: str) -> list[str]:
    """A non-empty list of distinct non-empty strings, order kept."""
    if not isinstance(value, list) or not value:
        raise InvalidInput(field, "must be a non-empty list of names")
    for i, item in enumerate(value):
        require_text(item, f"{field}[{i}]")
    if len(set(value)) != len(value):
        raise InvalidInput(field, "names must be distinct")
    return list(value)


def validate_selection(items: Any, field: str) -> list[dict[str, Any]]:
    """A non-empty list of ``{"dataset_id", "fields"}``, each dataset once."""
    if not isinstance(items, list) or not items:
        raise InvalidInput(field, "must be a non-empty list of {dataset_id, fields}")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        path = f"{field}[{i}]"
        if not isinstance(item, dict) or set(item) != {"dataset_id", "fields"}:
            raise InvalidInput(path, "must be an object with exactly dataset_id and fields")
        dataset_id = require_text(item["dataset_id"], f"{path}.dataset_id")
        if any(o["dataset_id"] == dataset_id for o in out):
            raise InvalidInput(f"{path}.dataset_id", f"dataset {dataset_id} is named twice")
        out.append({"dataset_id": dataset_id,
                    "fields": require_names(item["fields"], f"{path}.fields")})
    return out


def validate_fields(value: Any, field: str = "fields") -> list[dict[str, str]]:
    """A non-empty list of ``{"name", "type", "sensitivity"}`` (optionally ``grade`` and
    ``kind``) with distinct names; each returned with its grade and kind (``complete_field``)."""
    if not isinstance(value, list) or not value:
        raise InvalidInput(field, "must be a non-empty list of {name, type, sensitivity}")
    out = [_validate_field(item, f"{field}[{i}]") for i, item in enumerate(value)]
    require_names([f["name"] for f in out], field)
    return out


def grades_refusal(uow: UnitOfWork, product_id: str, inputs: list[dict[str, Any]],
                   snapshot: dict[str, dict[str, dict[str, str]]]) -> str | None:
    """Why an execution of product ``product_id`` may not run because a field it reads is
    graded stricter now than in the product's ``field_grades`` (``snapshot``, taken at its
    registration: what the node masks by), so that the node would mask less than the
    dataset's current grade calls for (``grades_raised: …``); else None. A field the
    snapshot does not grade (a product registered before grades existed) counts as L1."""
    for item in inputs:
        dataset_id = item["dataset_id"]
        now = uow.get(Dataset, dataset_id).field_grades()
        then = snapshot.get(dataset_id) or {}
        for name in item.get("fields") or []:
            current = (now.get(name) or {}).get("grade", GRADES[0])
            recorded = (then.get(name) or {}).get("grade")
            was = recorded if recorded in GRADES else GRADES[0]
            if GRADES.index(current) > GRADES.index(was) and \
                    rule("plaintext", current) != rule("plaintext", was):
                return (f"grades_raised: field {name!r} of dataset {dataset_id} is graded "
                        f"{current} now, product {product_id} was registered with "
                        f"{recorded or 'no grade'} for it (the node would mask it less); "
                        "the operator registers the product again")
    return None


def _validate_field(item: Any, path: str) -> dict[str, str]:
    if (not isinstance(item, dict) or not set(FIELD_KEYS) <= set(item)
            or set(item) - set(FIELD_KEYS) - set(FIELD_OPTIONAL)):
        raise InvalidInput(path, "must be an object with name, type and sensitivity "
                                 "(and optionally grade and kind)")
    if item["sensitivity"] not in SENSITIVITIES:
        raise InvalidInput(f"{path}.sensitivity", f"must be one of {', '.join(SENSITIVITIES)}")
    if item.get("grade") is not None and item["grade"] not in GRADES:
        raise InvalidInput(f"{path}.grade", f"must be one of {', '.join(GRADES)}")
    floor = GRADE_OF_SENSITIVITY[item["sensitivity"]]
    if item.get("grade") is not None and GRADES.index(item["grade"]) < GRADES.index(floor):
        raise InvalidInput(f"{path}.grade", f"must be at least {floor} for a field of "
                                            f"sensitivity {item['sensitivity']}")
    if item.get("kind") is not None and item["kind"] not in FIELD_KINDS:
        raise InvalidInput(f"{path}.kind", f"must be one of {', '.join(FIELD_KINDS)}")
    return complete_field({"name": require_text(item["name"], f"{path}.name"),
                           "type": require_text(item["type"], f"{path}.type"),
                           "sensitivity": item["sensitivity"],
                           "grade": item.get("grade"), "kind": item.get("kind")})


def _count(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(field, "must be an integer >= 0")
    return value


def _validate_schema(value: Any) -> list[dict[str, str]]:
    """The loaded table's columns: a non-empty list of ``{"name", "type"}``, names distinct."""
    if not isinstance(value, list) or not value:
        raise InvalidInput("schema", "must be a non-empty list of {name, type}")
    out: list[dict[str, str]] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"name", "type"}:
            raise InvalidInput(f"schema[{i}]", "must be an object with exactly name and type")
        out.append({"name": require_text(item["name"], f"schema[{i}].name"),
                    "type": require_text(item["type"], f"schema[{i}].type")})
    require_names([c["name"] for c in out], "schema")
    return out


class Dataset(Aggregate):
    """registered → published → withdrawn; registered → withdrawn. Withdrawn is terminal."""

    kind = "dataset"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.state = "new"
        self.owner_id = ""
        self.name = ""
        self.description = ""
        self.source_system = ""
        self.classification = ""
        self.fields: list[dict[str, str]] = []
        #: the SHA-256 of the private data last loaded onto the datasite ("" until loaded)
        self.data_sha256 = ""
        self.data_rows = 0

    # -- queries ----------------------------------------------------------------
    def field_names(self) -> list[str]:
        return [f["name"] for f in self.fields]

    def field_grades(self) -> dict[str, dict[str, str]]:
        """Each field's ``{"grade", "kind"}`` (what the compute node masks by)."""
        return {f["name"]: {"grade": f["grade"], "kind": f["kind"]} for f in self.fields}

    def protected_field_names(self) -> list[str]:
        """The fields marked sensitive or personal (``PROTECTED``), sorted."""
        return sorted(f["name"] for f in self.fields if f["sensitivity"] in PROTECTED)

    def missing_fields(self, names: list[str]) -> list[str]:
        """Those of ``names`` that the dataset does not have."""
        have = set(self.field_names())
        return [n for n in names if n not in have]

    def require_published(self) -> None:
        """Raise (409 ``dataset_not_published``) unless the dataset is in the catalog."""
        if self.state != "published":
            raise DatasetNotPublished(f"dataset {self.id} is {self.state}, not published",
                             state=self.state)

    # -- decide -----------------------------------------------------------------
    @classmethod
    def register(cls, id: str, ctx: Context, *, name: str, description: str,
                 source_system: str, classification: str, fields: Any) -> Dataset:
        if classification not in CLASSIFICATIONS:
            raise InvalidInput("classification", f"must be one of {', '.join(CLASSIFICATIONS)}")
        agg = cls(id)
        agg.trigger(DatasetRegistered, ctx, owner_id=ctx.actor.participant_id,
                    name=require_text(name, "name"), description=description,
                    source_system=require_text(source_system, "source_system"),
                    classification=classification, fields=validate_fields(fields))
        return agg

    def publish(self, ctx: Context) -> None:
        self._require_owner(ctx)
        self.require_state(["registered"], "publish")
        self.trigger(DatasetPublished, ctx)

    def update(self, ctx: Context, *, description: str | None, fields: Any) -> None:
        self._require_owner(ctx)
        self.require_state(["registered", "published"], "update")
        if description is None and fields is None:
            raise InvalidInput("fields", "an update needs a description or fields")
        new_fields = None if fields is None else validate_fields(fields)
        if new_fields is not None and self.state == "published":
            self._require_growth(new_fields)
        self.trigger(DatasetUpdated, ctx, description=description, fields=new_fields)

    def withdraw(self, ctx: Context, *, reason: str) -> None:
        self._require_owner(ctx)
        self.require_state(["registered", "published"], "withdraw")
        self.trigger(DatasetWithdrawn, ctx, reason=require_text(reason, "reason"))

    def record_data_loaded(self, ctx: Context, *, rows: Any, schema: Any, sha256: Any,
                           mock_rows: Any) -> None:
        self._require_owner(ctx)
        self.require_state(["registered", "published"], "record loaded data")
        digest = sha256.lower() if isinstance(sha256, str) else ""
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise InvalidInput("sha256", "must be a hex SHA-256 digest (64 hex digits)")
        self.trigger(DatasetDataLoaded, ctx, rows=_count(rows, "rows"),
                     schema=_validate_schema(schema), sha256=digest,
                     mock_rows=_count(mock_rows, "mock_rows"))

    def _require_owner(self, ctx: Context) -> None:
        if ctx.actor.participant_id != self.owner_id:
            raise Forbidden(f"only the owning provider changes dataset {self.id}")

    def _require_growth(self, new_fields: list[dict[str, str]]) -> None:
        """A published dataset's fields only grow: none removed, retyped, made less sensitive
        or given a lower grade."""
        new = {f["name"]: f for f in new_fields}
        for old in self.fields:
            name, now = old["name"], new.get(old["name"])
            if now is None:
                raise WrongState(f"field {name!r} cannot be removed while published")
            if now["type"] != old["type"]:
                raise WrongState(f"field {name!r} cannot be retyped while published")
            if SENSITIVITIES.index(now["sensitivity"]) < SENSITIVITIES.index(old["sensitivity"]):
                raise WrongState(f"field {name!r} cannot be made less sensitive while published")
            if GRADES.index(now["grade"]) < GRADES.index(old["grade"]):
                raise WrongState(f"field {name!r} cannot be given a lower grade while published")

    # -- evolve -----------------------------------------------------------------
    @applies(DatasetRegistered)
    def _registered(self, e: DatasetRegistered) -> None:
        self.state, self.owner_id, self.name = "registered", e.owner_id, e.name
        self.description, self.source_system = e.description, e.source_system
        self.classification, self.fields = e.classification, [dict(f) for f in e.fields]

    @applies(DatasetPublished)
    def _published(self, e: DatasetPublished) -> None:
        self.state = "published"

    @applies(DatasetUpdated)
    def _updated(self, e: DatasetUpdated) -> None:
        if e.description is not None:
            self.description = e.description
        if e.fields is not None:
            self.fields = [dict(f) for f in e.fields]

    @applies(DatasetWithdrawn)
    def _withdrawn(self, e: DatasetWithdrawn) -> None:
        self.state = "withdrawn"

    @applies(DatasetDataLoaded)
    def _data_loaded(self, e: DatasetDataLoaded) -> None:
        self.data_sha256, self.data_rows = e.sha256, e.rows


# -- use cases ------------------------------------------------------------------
def register_dataset(uow: UnitOfWork, ctx: Context, *, name: str, description: str,
                     source_system: str, classification: str,
                     fields: list[dict[str, str]]) -> dict[str, str]:
    """A provider registers a dataset's metadata (it is not yet in the catalog)."""
    permit(ctx.actor, "dataset.registration")
    agg = Dataset.register(new_id(), ctx, name=name, description=description,
                           source_system=source_system, classification=classification,
                           fields=fields)
    uow.add(agg)
    return {"dataset_id": agg.id, "state": agg.state}


def publish_dataset(uow: UnitOfWork, ctx: Context, dataset_id: str) -> dict[str, str]:
    """The owner publishes the dataset to the catalog."""
    permit(ctx.actor, "dataset.publication")
    agg = uow.get(Dataset, dataset_id)
    agg.publish(ctx)
    return {"dataset_id": agg.id, "state": agg.state}


def update_dataset(uow: UnitOfWork, ctx: Context, dataset_id: str, *,
                   description: str | None = None,
                   fields: list[dict[str, str]] | None = None) -> dict[str, str]:
    """The owner changes the description and/or fields (published: fields only grow)."""
    permit(ctx.actor, "dataset.update")
    agg = uow.get(Dataset, dataset_id)
    agg.update(ctx, description=description, fields=fields)
    return {"dataset_id": agg.id, "state": agg.state}


def withdraw_dataset(uow: UnitOfWork, ctx: Context, dataset_id: str, *,
                     reason: str) -> dict[str, str]:
    """The owner withdraws the dataset (terminal)."""
    permit(ctx.actor, "dataset.withdrawal")
    agg = uow.get(Dataset, dataset_id)
    agg.withdraw(ctx, reason=reason)
    return {"dataset_id": agg.id, "state": agg.state}


def record_data_loaded(uow: UnitOfWork, ctx: Context, dataset_id: str, *, rows: int,
                       schema: list[dict[str, str]], sha256: str,
                       mock_rows: int) -> dict[str, Any]:
    """The owner records that its datasite holds the data (by hash) and a mock of it."""
    permit(ctx.actor, "dataset.data_loaded")
    agg = uow.get(Dataset, dataset_id)
    agg.record_data_loaded(ctx, rows=rows, schema=schema, sha256=sha256, mock_rows=mock_rows)
    return {"dataset_id": agg.id, "state": agg.state, "sha256": agg.data_sha256,
            "rows": agg.data_rows}
