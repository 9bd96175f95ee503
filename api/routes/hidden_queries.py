"""The hidden query (隐匿查询, white paper 6.1 steps 3 to 5; docs/HIDDEN_QUERY.md).

``GET /joint/{joint_id}/table``: the demander downloads the published sealed table once
(``HiddenTable.to_bytes``; ``X-Table-Digest`` is the digest ``joint.published`` recorded).
``POST /orders/{order_id}/hidden-queries``: the demander posts a request blinded on its own
machine (``core.hidden_query.blind``); the ledger checks it like any use of the contract
(``domain/joint_query.py``), the aggregation node evaluates it with the table's OPRF key
(``aggregation/service.py``), the ledger records its commitment, its size and the answer's
hash (``joint.queried``), and only then is the response returned. Neither the request nor the
response is logged or stored; a refusal by a usage control is recorded (``usage.refused``)
before it is answered, a refusal for a lapsed grant is not (see ``hidden_query``).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import Commands, CommandsDep, ContainerDep, CurrentActor, Services
from api.fields import Id
from api.routes.common import decoded_base64, run_retried
from core import hidden_query as hq
from domain import joint_query as uc
from domain.base import Actor
from domain.delivery import refusal_error
from domain.errors import Forbidden, NotFound, WrongState
from domain.usage import UsageDenied, UsageForbidden

router = APIRouter(tags=["hidden queries"])


class HiddenQueryBody(BaseModel):
    joint_id: Id = Field(description="the published joint execution of this contract to "
                                     "query (GET /joint?contract_id=)")
    request: str = Field(description="base64 of the request core.hidden_query.blind made "
                                     f"on the bank's machine: 1 to {hq.MAX_CODES} blinded "
                                     "codes (the body is capped for that many)")


class HiddenQueryAnswer(BaseModel):
    joint_id: str
    request_commitment: str = Field(description="SHA-256 of the request's bytes, recorded")
    request_size: int = Field(description="the codes asked about, recorded and counted "
                                          "against the contract's query_count")
    answer_hash: str = Field(description="SHA-256 of the response's bytes, recorded")
    response: str = Field(description="base64 of the node's response (evaluated elements): "
                                      "the bank unblinds it and opens its rows in its table")
    seqs: list[int]


def _aggregator(container: Services) -> Any:
    aggregator = container.aggregator
    if aggregator is None:
        raise WrongState("this process runs no aggregation node")
    return aggregator


async def _record(cmd: Commands, order_id: str, query: uc.Query,
                  answer_hash: str | None) -> dict[str, Any]:
    """Record the query (or, ``answer_hash`` None, its refusal), deciding again on fresh
    usage counters each time another use moved the contract's usage stream or the joint
    first."""
    done = await run_retried(cmd, uc.record_query, order_id, query=query,
                             answer_hash=answer_hash, metered=order_id)
    return done.body


@router.post("/orders/{order_id}/hidden-queries", response_model=HiddenQueryAnswer)
async def hidden_query(order_id: str, body: HiddenQueryBody, cmd: CommandsDep) -> JSONResponse:
    """The demander's hidden query on a published joint table of contract ``order_id``:
    checked like any use of the contract (403 for anyone but its demander's members; 404
    for a joint not of this contract; 409 until it is published, outside the contract's
    window, terminated, over its ``query_count`` (count_exhausted): each refusal by a
    usage control recorded, ``usage.refused``, before it is answered), evaluated by the
    aggregation node, recorded (``joint.queried``: commitment, size, answer hash), then
    answered. 409 too when a grant the product rests on lapsed (``authorization_revoked``,
    ``authorization_expired``, ``scenario_suspended``): that refusal is *not* recorded, as
    a delivery's access records none for a lapsed grant (a grant is no usage control of
    the contract); the node evaluates nothing either way. 422 ``request`` for a body that
    is not a hidden-query request."""
    cmd = Commands(cmd.container, cmd.actor, None)  # each query is new: never a replay
    ledger, aggregator = cmd.container.ledger, _aggregator(cmd.container)
    request = decoded_base64(body.request)
    try:  # the checks first: a refused query costs the node nothing
        await run_in_threadpool(ledger.check, uc.check_query, cmd.actor, order_id,
                                joint_id=body.joint_id, request=request)
    except (UsageDenied, UsageForbidden):
        query = await run_in_threadpool(uc.read_query, body.joint_id, request)
        raise refusal_error(await _record(cmd, order_id, query, None)) from None
    query = await run_in_threadpool(uc.read_query, body.joint_id, request)
    response = await asyncio.to_thread(aggregator.answer, body.joint_id, request)
    done = await _record(cmd, order_id, query, hq.answer_hash(response))
    if not done["allowed"]:
        raise refusal_error(done)
    return JSONResponse({"joint_id": done["joint_id"],
                         "request_commitment": done["request_commitment"],
                         "request_size": done["request_size"],
                         "answer_hash": done["answer_hash"],
                         "response": base64.b64encode(response).decode("ascii"),
                         "seqs": done["seqs"]})


def _table(container: Services, actor: Actor, joint_id: str) -> tuple[bytes, str]:
    aggregator = _aggregator(container)
    joint = aggregator.joint(joint_id)
    if joint is None:
        raise NotFound(f"no joint execution {joint_id}", kind="joint", id=joint_id)
    if actor.participant_id != joint.demander_id:
        raise Forbidden(f"only the demander {joint.demander_id} of contract "
                        f"{joint.contract_id} downloads the joint table")
    digest = aggregator.table_digest(joint_id)
    content = None if digest is None else aggregator.table_bytes(joint_id, digest)
    if digest is None or content is None:
        raise WrongState(f"joint {joint_id} is {joint.state}; its table is downloaded once "
                         "published", state=joint.state)
    return content, digest


@router.get("/joint/{joint_id}/table", responses={200: {
    "description": "the sealed table (core.hidden_query.HiddenTable.to_bytes)",
    "content": {"application/octet-stream": {"schema": {"type": "string",
                                                        "format": "binary"}}}}})
async def joint_table(joint_id: str, container: ContainerDep, actor: CurrentActor) -> Response:
    """The published sealed table of joint execution ``joint_id``, for the contract's
    demander only (403 for anyone else; 404 if there is no such joint; 409 until it is
    published). ``X-Table-Digest``: the digest ``joint.published`` recorded. The table
    names no code: each row opens only under the OPRF output of its key."""
    content, digest = await run_in_threadpool(_table, container, actor, joint_id)
    return Response(content, media_type="application/octet-stream",
                    headers={"X-Table-Digest": digest})
