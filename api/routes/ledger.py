"""The raw log, in order: what integrators, witnesses and compute nodes follow."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import ContainerDep, CurrentActor
from chain.integrator import leaf_hash

router = APIRouter(prefix="/ledger", tags=["ledger"])


class LedgerEvent(BaseModel):
    seq: int = Field(description="global, gap-free sequence number (leaf index = seq - 1)")
    originator_id: str
    version: int
    type: str = Field(description="stable event type name, e.g. contract.approved")
    canonical: str = Field(description="base64 of the canonical bytes of the stored event")
    leaf_hash: str = Field(description="base64 Merkle leaf: SHA-256(0x00 ‖ canonical bytes)")
    payload: dict[str, Any]


class LedgerPage(BaseModel):
    events: list[LedgerEvent]
    next_after: int = Field(description="pass as ?after= to read on")
    head: int = Field(description="the last seq stored")


@router.get("/events", response_model=LedgerPage)
def events(container: ContainerDep, actor: CurrentActor,
           after: Annotated[int, Query(ge=0)] = 0,
           limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> LedgerPage:
    """Stored events with seq > ``after``, in order, canonical bytes and decoded payload.

    The whole log (every tenant's payloads) is for the regulator and the platform.
    """
    actor.require_role("regulator", "platform")
    entries = container.store.read(after, limit)
    return LedgerPage(
        events=[LedgerEvent(seq=e.seq, originator_id=e.originator_id, version=e.version,
                            type=e.type_name, canonical=base64.b64encode(e.canonical()).decode(),
                            leaf_hash=base64.b64encode(leaf_hash(e)).decode(),
                            payload=e.payload()) for e in entries],
        next_after=entries[-1].seq if entries else after,
        head=container.store.max_seq())
