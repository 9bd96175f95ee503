"""Datasets: metadata registration (元数据登记), classification (分类分级), the catalog (数据目录)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import CommandsDep, ReaderDep
from api.fields import NAME, TEXT
from api.routes.common import CommandAnswer, CommandRoute, answer, visible_row, visible_rows
from domain import dataset as uc
from projections import datasets as q

router = APIRouter(prefix="/datasets", tags=["datasets"], route_class=CommandRoute)

Classification = Literal["L1", "L2", "L3", "L4"]
Sensitivity = Literal["public", "internal", "sensitive", "personal"]
DatasetState = Literal["registered", "published", "withdrawn"]
Grade = Literal["L1", "L2", "L3", "L4"]
FieldKind = Literal["id_number", "phone", "name", "address", "account", "email", "none"]
assert get_args(Classification) == uc.CLASSIFICATIONS
assert get_args(Sensitivity) == uc.SENSITIVITIES
assert get_args(Grade) == uc.GRADES
assert get_args(FieldKind) == uc.FIELD_KINDS


class DatasetField(BaseModel):
    """One column of a dataset: its name, type, sensitivity (least to most sensitive), grade
    (分级, L1 to L4) and identifier kind; the compute node masks result columns by grade and
    kind (docs/PRIVACY.md, Masking)."""

    model_config = ConfigDict(extra="forbid")

    name: str = NAME
    type: str = Field(min_length=1, max_length=100, description="e.g. string, integer, date")
    sensitivity: Sensitivity
    grade: Grade | None = Field(default=None, description=(
        "L1 and L2 clear, L3 partially masked, L4 never in a plaintext result; omitted: from "
        "the sensitivity (public L1, internal L2, sensitive and personal L3); while "
        "published it may not be lowered"))
    kind: FieldKind | None = Field(default=None, description=(
        "the identifier the field holds, for a format-preserving mask; omitted: none"))


class DatasetCreate(BaseModel):
    name: str = NAME
    description: str = TEXT
    source_system: str = Field(min_length=1, max_length=200,
                               description="the provider's system the data comes from")
    classification: Classification = Field(description="分类分级 level, L1 (lowest) to L4")
    fields: list[DatasetField] = Field(min_length=1, max_length=1000)


class DatasetUpdate(BaseModel):
    description: str | None = Field(default=None, max_length=5000,
                                    description="the new description (omit: unchanged)")
    fields: list[DatasetField] | None = Field(
        default=None, min_length=1, max_length=1000,
        description="the whole new field list (omit: unchanged); while published, fields "
                    "may only be added or made more sensitive")


class Withdrawal(BaseModel):
    reason: str = Field(min_length=1, max_length=5000)


class DatasetAnswer(CommandAnswer):
    dataset_id: str
    state: DatasetState


class DatasetView(BaseModel):
    id: str
    owner_id: str = Field(description="the providing participant")
    name: str
    description: str
    source_system: str
    classification: Classification
    fields: list[DatasetField]
    state: DatasetState
    registered_at: str
    published_at: str | None
    updated_at: str
    withdrawn_at: str | None
    withdrawal_reason: str | None
    version: int = Field(description="the dataset's stream version")
    registered_seq: int | None = Field(description=(
        "the seq of its dataset.registered: a joint's provider proves the owner from it"))


@router.post("", status_code=201, response_model=DatasetAnswer)
async def register_dataset(body: DatasetCreate, cmd: CommandsDep) -> JSONResponse:
    """A provider registers a dataset's metadata; it is not in the catalog until published."""
    return answer(await cmd.run(uc.register_dataset, name=body.name,
                                description=body.description, source_system=body.source_system,
                                classification=body.classification,
                                fields=[f.model_dump() for f in body.fields]), 201)


@router.post("/{dataset_id}/publication", response_model=DatasetAnswer)
async def publish_dataset(dataset_id: str, cmd: CommandsDep) -> JSONResponse:
    """The owning provider publishes a registered dataset to the catalog."""
    return answer(await cmd.run(uc.publish_dataset, dataset_id))


@router.patch("/{dataset_id}", response_model=DatasetAnswer)
async def update_dataset(dataset_id: str, body: DatasetUpdate, cmd: CommandsDep) -> JSONResponse:
    """The owning provider changes the description and/or fields (published: fields only grow)."""
    fields = None if body.fields is None else [f.model_dump() for f in body.fields]
    return answer(await cmd.run(uc.update_dataset, dataset_id, description=body.description,
                                fields=fields))


@router.post("/{dataset_id}/withdrawal", response_model=DatasetAnswer)
async def withdraw_dataset(dataset_id: str, body: Withdrawal, cmd: CommandsDep) -> JSONResponse:
    """The owning provider withdraws the dataset from the platform (terminal)."""
    return answer(await cmd.run(uc.withdraw_dataset, dataset_id, reason=body.reason))


@router.get("", response_model=list[DatasetView])
def list_datasets(reader: ReaderDep,
                  state: Annotated[DatasetState | None, Query()] = None,
                  owner_id: Annotated[str | None, Query(max_length=100)] = None,
                  classification: Annotated[Classification | None, Query()] = None,
                  ) -> list[dict[str, Any]]:
    """The catalog (published datasets) and the caller's own; everything for the regulator
    and the platform."""
    return visible_rows(reader, q.DATASETS, state=state, owner_id=owner_id,
                        classification=classification)


@router.get("/{dataset_id}", response_model=DatasetView)
def get_dataset(dataset_id: str, reader: ReaderDep) -> dict[str, Any]:
    """One dataset: published ones for everyone, others for the owner (404 otherwise)."""
    return visible_row(reader, q.DATASETS, "dataset", dataset_id)
