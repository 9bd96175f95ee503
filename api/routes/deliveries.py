"""Delivered results (交付) in use: downloaded, viewed, and released by the input providers
when the contract holds them.

Every access is decided by the contract's usage controls (``domain/delivery.py``) on the
counters the read model holds (``projections/usage.py``) and recorded: ``delivery.accessed``
when allowed, ``usage.refused`` (the rule and its limit) when refused; a refusal is answered
after it is recorded. ``GET /deliveries/{id}/result`` is a *download* (the bytes);
``GET /deliveries/{id}/view`` is a *view* (the rows inside a JSON answer, for display). The
delivery id is the computation id. Both serve the same bytes to the same reader, never the
bytes the compute node posted: the demander's members the result watermarked for this
delivery when it was recorded (``delivered_sha256`` of ``delivery.made``; docs/PRIVACY.md),
any other reader (the operator, the regulator) the result watermarked for this delivery and
that reader participant (``api.watermarking.reader_copy``); ``delivery.accessed`` records the
served copy's SHA-256 (``served_sha256``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import Commands, CommandsDep, Reader, Services
from api.fields import SignedBody
from api.routes.common import CommandAnswer, answer, run_retried
from api.watermarking import reader_copy
from delivery import results
from domain import delivery as uc
from domain.errors import NotFound, WrongState
from domain.signing import Signed
from projections import computations as q

router = APIRouter(tags=["deliveries"])

REFUSALS = ("409: a usage control refused (``error`` names it: view_count_exhausted, "
            "download_count_exhausted, outside_contract_window, circulation_mode_not_allowed, "
            "release_pending, contract_terminated, contract_not_approved, unknown_constraint) "
            "or nothing is delivered yet (wrong_state); 403 not_designated_user: the contract "
            "names other members of the demander. Each refusal by a usage control is recorded "
            "(usage.refused) before it is answered")


class ResultView(BaseModel):
    delivery_id: str
    contract_id: str
    result_sha256: str = Field(description="the SHA-256 of the result the node posted")
    delivered_sha256: str = Field(description="the SHA-256 of the bytes served (the "
                                  "result watermarked for this delivery and, for a reader "
                                  "other than the demander, for that reader): what `result` is")
    result: Any = Field(description="the delivered result (the rows), watermarked for this "
                                    "delivery (and reader)")
    watermark: dict[str, Any] | None = Field(description="the demander's copy's watermark "
                                             "(`delivery.made`): null when nothing was marked")
    watermark_reason: str | None = Field(description="why nothing was marked (e.g. no "
                                         "markable cell: the result is served unmarked)")
    views_used: int = Field(description="the demander's views of this contract's results, "
                                        "this one included")
    downloads_used: int


class ReleaseAnswer(CommandAnswer):
    delivery_id: str
    contract_id: str
    released_by: list[str] = Field(description="the provider that approved (its part)")
    pending_releases: list[str] = Field(description="those still to approve")
    released: bool = Field(description="every input provider approved: the demander may "
                                       "read the result")


def _delivery(reader: Reader, delivery_id: str) -> dict[str, Any]:
    """The delivery row if the caller may see it: 404 to anyone else, 409 while nothing
    is delivered yet."""
    viewer = reader.actor.participant_id
    with reader.connect() as conn:
        delivery = q.DELIVERIES.find(conn, delivery_id, viewer, reader.sees_all)
        if delivery is None:
            comp = q.COMPUTATIONS.find(conn, delivery_id, viewer, reader.sees_all)
    if delivery is None:
        if comp is None or not (reader.sees_all
                                or viewer in (comp["demander_id"], comp["operator_id"])):
            raise NotFound(f"no delivery {delivery_id}", kind="delivery", id=delivery_id)
        raise WrongState(f"computation {delivery_id} is {comp['state']}; nothing is "
                         "delivered yet", state=comp["state"])
    return delivery


async def access(cmd: CommandsDep, delivery_id: str, kind: str) -> tuple[bytes,
                                                                          dict[str, Any]]:
    """Decide and record one ``kind`` access: the bytes served to the caller (its copy) and
    the command's answer (with the bytes' ``delivered_sha256``); the refusal's error once it
    is recorded (nothing is written while the delivery or its bytes are not there)."""
    # an access is never replayed: an Idempotency-Key would answer a repeated GET with the
    # first access's "allowed" without counting it
    cmd = Commands(cmd.container, cmd.actor, None)
    reader = Reader(cmd.container, cmd.actor)
    delivery = await run_in_threadpool(_delivery, reader, delivery_id)
    content, digest = await run_in_threadpool(_content, cmd.container, delivery,
                                              cmd.actor.participant_id)
    done = await run_retried(cmd, uc.access_result, delivery_id, kind=kind,
                             metered=delivery["contract_id"], served_sha256=digest)
    if not done.body["allowed"]:
        raise uc.refusal_error(done.body)
    return content, {**done.body, "delivered_sha256": digest,
                     "watermark": delivery["watermark"],
                     "watermark_reason": delivery["watermark_reason"]}


def _content(container: Services, delivery: dict[str, Any],
             reader_id: str | None) -> tuple[bytes, str]:
    """The bytes served to ``reader_id`` and their SHA-256: for the demander those
    ``delivery.made`` recorded (watermarked for the delivery), for anyone else its own copy
    (watermarked for the delivery and that reader)."""
    if reader_id is not None and reader_id != delivery["demander_id"]:
        content = reader_copy(container, delivery, reader_id)
        return content, hashlib.sha256(content).hexdigest()
    content = results.get(container.engine, delivery["id"], delivery["delivered_sha256"])
    if content is None:  # only for a delivery recorded before the bytes were stored first
        raise WrongState(f"the result of delivery {delivery['id']} is not stored yet")
    return content, delivery["delivered_sha256"]


@router.get("/deliveries/{delivery_id}/result", responses={200: {
    "description": "the delivered result: the node's, watermarked for this delivery "
                   "(canonical JSON)",
    "content": {"application/json": {"schema": {"description": "any JSON value"}}}}},
    description="Download the delivered result (the delivery id is the computation id), "
    "for the demander, the operator, the regulator and the platform; `X-Result-SHA256` is "
    "the hash of the bytes served (for the demander `delivered_sha256` of `delivery.made`: "
    "the result watermarked for this delivery; for the operator and the regulator their own "
    "copy, watermarked for the delivery and the reader; `served_sha256` of "
    "`delivery.accessed`, docs/PRIVACY.md). A download: recorded (`delivery.accessed`), and for the demander "
    "counted against the contract's `download_count`. 404 to anyone else; " + REFUSALS)
async def get_delivered_result(delivery_id: str, cmd: CommandsDep) -> Response:
    """Download the delivered result (a counted, recorded access)."""
    content, done = await access(cmd, delivery_id, "download")
    digest = done["delivered_sha256"]
    b64 = base64.b64encode(bytes.fromhex(digest)).decode()
    return Response(content, media_type="application/json",
                    headers={"X-Result-SHA256": digest, "Content-Digest": f"sha-256=:{b64}:"})


@router.get("/deliveries/{delivery_id}/view", response_model=ResultView,
            description="View the delivered result: its rows in a JSON answer, for display. "
            "A view: recorded (`delivery.accessed`), and for the demander counted against "
            "the contract's `view_count`. 404 to anyone else; " + REFUSALS)
async def view_delivered_result(delivery_id: str, cmd: CommandsDep) -> JSONResponse:
    """View the delivered result (a counted, recorded access)."""
    content, done = await access(cmd, delivery_id, "view")
    return JSONResponse({"delivery_id": delivery_id, "contract_id": done["contract_id"],
                         "result_sha256": done["result_sha256"],
                         "delivered_sha256": done["delivered_sha256"],
                         "result": json.loads(content), "watermark": done["watermark"],
                         "watermark_reason": done["watermark_reason"],
                         "views_used": done["views_used"],
                         "downloads_used": done["downloads_used"]})


@router.post("/deliveries/{delivery_id}/release-approvals", response_model=ReleaseAnswer)
async def approve_release(delivery_id: str, cmd: CommandsDep,
                          body: SignedBody | None = None) -> JSONResponse:
    """The provider whose computation made this delivery approves its release, when the
    contract holds derivatives (``derivatives_need_approval``): a signed decision
    (``delivery.release_approval`` on the computation; the body is its signature, ``{}``
    signed), recorded as ``delivery.release_approved``. The demander reads the execution's
    result once every input provider released its part (until then 409
    ``release_pending``).

    403 unless that provider; 409 when nothing is delivered, the contract holds no result,
    or it approved already."""
    signed = Signed() if body is None else body.signed()
    return answer(await cmd.run(uc.approve_release, delivery_id, signed=signed))
