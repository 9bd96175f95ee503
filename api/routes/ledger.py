"""The raw log, in order: what integrators, witnesses and compute nodes follow."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import ContainerDep, CurrentActor, ReaderDep
from chain.integrator import leaf_hash
from domain.errors import NotFound
from events.store import LogEntry
from projections.base import may_see_event

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
        events=[_event(e) for e in entries],
        next_after=entries[-1].seq if entries else after,
        head=container.store.max_seq())


def _event(e: LogEntry) -> LedgerEvent:
    return LedgerEvent(seq=e.seq, originator_id=e.originator_id, version=e.version,
                       type=e.type_name, canonical=base64.b64encode(e.canonical()).decode(),
                       leaf_hash=base64.b64encode(leaf_hash(e)).decode(), payload=e.payload())


@router.get("/events/{seq}", response_model=LedgerEvent)
def event(seq: int, container: ContainerDep, reader: ReaderDep) -> LedgerEvent:
    """One stored event, to anyone who may see its aggregate (a party to an order sees its
    contract's events, with the canonical bytes to check against a checkpoint)."""
    found = container.store.read(seq - 1, 1) if seq >= 1 else []
    if not found or found[0].seq != seq:
        raise NotFound(f"no event {seq}")
    entry = found[0]
    if not reader.sees_all:
        with reader.connect() as conn:
            if not may_see_event(conn, entry.type_name, entry.originator_id,
                                 reader.actor.participant_id):
                raise NotFound(f"no event {seq}")
    return _event(entry)
