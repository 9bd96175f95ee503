"""Joint computations (联合计算, white paper 6.1): what the providers' nodes post, what the
parties see.

A joint product's execution is computed by each input provider on its own datasite and
summed by the platform's aggregation node without anyone seeing a provider's part
(docs/SECAGG.md): the layout provider's node posts the layout (the sorted key list every
part follows), each provider's node posts its masked part, and once all are in the
aggregation node publishes the joint table. Their bytes are kept off the log
(``aggregation/store.py``): stored before the command that records their hash, dropped if
it refuses.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.concurrency import run_in_threadpool

from aggregation import store
from aggregation.hook import PartsComplete
from api.deps import CommandsDep, ReaderDep
from api.errors import TOO_LARGE
from api.fields import Name, NoNul
from api.routes.common import (
    CommandAnswer,
    ReadRoute,
    answer,
    decoded_base64,
    posting,
    run_retried,
    visible_row,
    visible_rows,
)
from core.secagg import MAX_CODE_BYTES, MAX_PROVIDERS, MaskedPart
from domain import joint as uc
from domain import joint_parts as parts_uc
from domain.errors import DomainError, Forbidden, WrongState
from projections import joint as q

router = APIRouter(tags=["joint"], route_class=ReadRoute)

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256")]
Text = Annotated[str, Field(min_length=1, max_length=200), NoNul]


class PartHeader(BaseModel):
    """A masked part's header, as ``core.secagg.mask`` makes it (its canonical JSON's
    SHA-256 is the part's digest, which the ledger records)."""

    model_config = ConfigDict(extra="forbid")

    format: Text
    execution_id: Text = Field(description="the joint id the part was masked for")
    provider_id: Text
    providers: list[Text] = Field(min_length=2, max_length=MAX_PROVIDERS)
    length: StrictInt = Field(ge=1, le=2**53 - 1, description="64-bit words in the body")
    layout_sha256: Sha256 = Field(description="the layout the vector follows, bound into "
                                              "its masks: the joint's own")
    body_sha256: Sha256


class MaskedPartPost(BaseModel):
    header: PartHeader
    body: str = Field(min_length=1, description="base64 of the body: length little-endian "
                                                "unsigned 64-bit words")
    input_hashes: dict[Annotated[str, NoNul], Sha256] = Field(
        description="input dataset id -> SHA-256 of the private data the code read")
    datasite: Name


class PartAnswer(CommandAnswer):
    computation_id: str
    joint_id: str
    digest: str | None = Field(description="the part's digest (MaskedPart.digest()), as "
                                           "joint.part_received records it")
    state: str = Field(description="the computation's: succeeded")
    joint_state: str
    complete: bool = Field(description="every provider's part is in")
    existing: bool = Field(description="true: this very part was recorded already; nothing "
                                       "was written")


class LayoutPost(BaseModel):
    keys: list[str] = Field(min_length=1, max_length=uc.MAX_KEYS, description=(
        f"the layout: sorted unique non-empty keys of at most {MAX_CODE_BYTES} bytes of "
        "UTF-8 (the key column's values of the layout provider's output); at most "
        f"{uc.MAX_PART_WORDS} divided by the joint's value columns of them"))


class LayoutAnswer(CommandAnswer):
    joint_id: str
    state: str
    layout_sha256: str = Field(description="SHA-256 of the key list's canonical JSON")
    length: int


class LayoutView(BaseModel):
    keys: list[str]
    layout_sha256: str


class JointView(BaseModel):
    id: str
    joint_id: str
    contract_id: str
    execution: int
    product_id: str
    demander_id: str
    providers: list[str] = Field(description="in the product's input order; the parts' order")
    layout_provider: str
    key_column: str
    value_columns: list[str]
    state: str = Field(description="started, layout_published, published or failed")
    deadline: str
    layout_sha256: str | None
    length: int | None = Field(description="the layout's keys")
    parts: dict[str, str] = Field(description="provider id -> its part's digest")
    result_sha256: str | None = Field(description="SHA-256 of the joint table's canonical "
                                                  "JSON (published)")
    table_digest: str | None = Field(description="the sealed table's digest (published)")
    rows: int | None
    reason: str | None = Field(description="failed: code: sentence (missing, "
                                           "provider_failed, refused, policy_lapsed)")
    queries: int = Field(description="hidden queries answered")
    queried: int = Field(description="codes they looked up")
    started_at: str
    finished_at: str | None
    updated_at: str
    version: int
    started_seq: int | None = Field(description="the seq of its joint.started, which a "
                                                "provider's node proves the terms from")
    layout_seq: int | None = Field(description="the seq of its joint.layout_published")


def _decoded(text: str) -> tuple[bytes, str | None]:
    """The body's bytes and SHA-256; None for text that is no base64 (the domain refuses
    it once it checked who posts)."""
    raw = decoded_base64(text)
    return (b"", None) if raw is None else (raw, hashlib.sha256(raw).hexdigest())


@router.post("/computations/{computation_id}/masked-part", response_model=PartAnswer,
             responses=TOO_LARGE, tags=["computations"])
async def post_masked_part(computation_id: str, body: MaskedPartPost,
                           cmd: CommandsDep) -> JSONResponse:
    """The provider that requested a joint execution's computation posts its masked part
    (``core.secagg.mask`` over its output laid out by the joint's layout): recorded as
    ``computation.succeeded`` (``result_sha256`` the part's digest) and
    ``joint.part_received``; nothing is ever delivered of it. The bytes are stored first,
    dropped if the command refuses.

    Refused, storing nothing: 403 another provider's computation; 409 ``part_refused`` with
    ``reason`` and ``field`` for a part masked for another execution (``execution``),
    another list of providers (``providers``), by another provider (``unknown``), of the
    wrong length or a body of another size (``length``), a body not matching its
    ``body_sha256`` (``body``), a second, different part of this provider (``duplicate``);
    409 ``wrong_state`` before the layout is published or after the joint was published or
    failed. The same part again: 200, ``existing: true``. A part that comes after the
    policy lapsed (contract terminated, out of its window, scenario suspended, grant
    revoked) fails the computation and the joint (``policy_lapsed: …``): 409, nothing
    stored. A new part at or after the joint's deadline fails the joint (``missing: …``,
    recorded in the refusal's unit of work): 409, nothing stored. Once the last part is
    in, the aggregation node sums them."""
    raw, body_sha256 = await run_in_threadpool(_decoded, body.body)
    header = body.header.model_dump()
    post = parts_uc.PartPost(header, len(raw), body_sha256)
    c = cmd.container
    record = (parts_uc.record_part, computation_id, post)
    extra = {"input_hashes": dict(body.input_hashes), "datasite": body.datasite}
    async with posting(computation_id):
        try:
            await run_in_threadpool(c.ledger.check, parts_uc.check_part, cmd.actor,
                                    computation_id, post)
        except parts_uc.LatePart:  # nothing stored: record the joint's failure, refuse
            late = await run_retried(cmd, *record, **extra)
            raise WrongState(late.body["reason"], state=late.body["joint_state"]) from None
        part = MaskedPart(header, raw)
        digest = await run_in_threadpool(store.put_part, c.engine, body.header.execution_id,
                                         part)
        drop = (store.discard_part, c.engine, c.store, body.header.execution_id,
                part.provider_id, digest)
        try:
            done = await run_retried(cmd, *record, **extra)
        except DomainError:
            await run_in_threadpool(*drop)
            raise
        if done.body["digest"] is None:  # lapsed or late: recorded, the joint failed
            await run_in_threadpool(*drop)
            raise WrongState(done.body["reason"], state="failed")
    aggregator: PartsComplete | None = getattr(c, "aggregator", None)
    if aggregator is not None and done.body["complete"] and done.body["joint_state"] not in (
            uc.TERMINAL):
        aggregator.on_parts_complete(done.body["joint_id"])
    return answer(done)


@router.post("/joint/{joint_id}/layout", response_model=LayoutAnswer)
async def post_layout(joint_id: str, body: LayoutPost, cmd: CommandsDep) -> JSONResponse:
    """The joint's layout provider (the owner of the product's first input) posts the
    layout: the sorted unique values of the key column in its output, which every
    provider's vector follows. Recorded as ``joint.layout_published`` (its SHA-256 and
    length), the keys stored off the log for the joint's providers (``GET
    /joint/{id}/layout``). The same keys again: 200, nothing written; other keys once one
    is published: 409. 403 for anyone but the layout provider; 409 once the joint was
    published or failed; 422 naming the key out of order or too long (``keys[i]``), or
    ``keys`` when the parts of so many keys would be more than ``MAX_PART_WORDS`` words
    (the answer says how many keys this product's value columns allow)."""
    content, sha = await run_in_threadpool(uc.layout_bytes, body.keys)
    c = cmd.container
    async with posting(joint_id):
        await run_in_threadpool(c.ledger.check, uc.check_layout, cmd.actor, joint_id, sha,
                                len(body.keys))
        await run_in_threadpool(store.put_layout, c.engine, joint_id, sha, content)
        try:
            done = await run_retried(cmd, uc.publish_layout, joint_id, layout_sha256=sha,
                                 length=len(body.keys))
        except DomainError:
            await run_in_threadpool(store.discard_layout, c.engine, c.store, joint_id, sha)
            raise
    return answer(done)


@router.get("/joint", response_model=list[JointView])
def list_joints(reader: ReaderDep,
                contract_id: Annotated[str | None, Query(max_length=200)] = None,
                ) -> list[dict[str, Any]]:
    """The joint executions of the caller's contracts (as demander, operator or provider);
    all of them for the regulator and the platform."""
    return visible_rows(reader, q.JOINTS, contract_id=contract_id)


@router.get("/joint/{joint_id}", response_model=JointView)
def get_joint(joint_id: str, reader: ReaderDep) -> dict[str, Any]:
    """One joint execution, for its contract's parties, the regulator and the platform."""
    return visible_row(reader, q.JOINTS, "joint", joint_id)


@router.get("/joint/{joint_id}/layout", response_model=LayoutView)
def get_layout(joint_id: str, reader: ReaderDep) -> Response:
    """The joint's published layout, for its providers only (403 for the contract's other
    parties, the regulator and the platform: the keys are a provider's output); 409 until
    it is published. Each provider's node checks its SHA-256 against the joint's view."""
    view = visible_row(reader, q.JOINTS, "joint", joint_id)
    if reader.actor.participant_id not in view["providers"]:
        raise Forbidden(f"only the providers of joint {joint_id} read its layout")
    if view["layout_sha256"] is None:
        raise WrongState(f"joint {joint_id} has no layout yet", state=view["state"])
    keys = store.get_layout(reader.container.engine, joint_id, view["layout_sha256"])
    if keys is None:
        raise WrongState(f"the layout of joint {joint_id} is not stored", state=view["state"])
    return Response(json.dumps({"keys": keys, "layout_sha256": view["layout_sha256"]},
                               ensure_ascii=False, separators=(",", ":")),
                    media_type="application/json")
