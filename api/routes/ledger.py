"""The raw log, in order: what integrators, witnesses and compute nodes follow."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from anchoring.export import export_source
from api.deps import ContainerDep, ReaderDep
from api.routes.common import ReadRoute
from audit.bundle import tar_stream
from core.record import LogEntry
from domain.errors import Forbidden, NotFound
from domain.permissions import permit
from events.store import MAX_SEQ
from projections.base import may_see_event, visible_events

router = APIRouter(prefix="/ledger", tags=["ledger"], route_class=ReadRoute)


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
    next_after: int = Field(description="the last seq scanned (visible or not): pass as "
                                        "?after= to read on")
    head: int = Field(description="the last seq stored")


@router.get("/events", response_model=LedgerPage)
def events(container: ContainerDep, reader: ReaderDep,
           after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
           limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> LedgerPage:
    """Stored events with seq > ``after``, in order, canonical bytes and decoded payload.

    Scans at most ``limit`` events after ``after`` and returns those the caller may see:
    every one for the regulator and the platform; for any other participant the events of
    the aggregates it was granted (the rule of ``GET /ledger/events/{seq}``: a party to an
    order sees its events, the input providers from the contract's proposal on, so
    ``contract.approved`` and ``contract.query_submitted``). ``next_after`` is the last seq
    scanned, so a caller that sees nothing still moves on. For a participant the scan stops
    at the seq the read models (and so the grants) have reached, never skipping an event
    whose grant is not projected yet.
    """
    if reader.sees_all:
        entries = container.store.read(after, limit)
        return LedgerPage(events=[_event(e) for e in entries],
                          next_after=entries[-1].seq if entries else after,
                          head=container.store.max_seq())
    with reader.connect() as conn:
        projected = container.runner.committed_position(conn)
        scanned = [e for e in container.store.read(after, limit) if e.seq <= projected]
        seen = visible_events(conn, [(e.type_name, e.originator_id) for e in scanned],
                              reader.actor.participant_id)
    return LedgerPage(
        events=[_event(e) for e in scanned if (e.type_name, e.originator_id) in seen],
        next_after=scanned[-1].seq if scanned else after,
        head=container.store.max_seq())


def _event(e: LogEntry) -> LedgerEvent:
    return LedgerEvent(seq=e.seq, originator_id=e.originator_id, version=e.version,
                       type=e.type_name, canonical=base64.b64encode(e.canonical()).decode(),
                       leaf_hash=base64.b64encode(e.leaf_hash()).decode(), payload=e.payload())


@router.get("/events/{seq}", response_model=LedgerEvent)
def event(seq: Annotated[int, Path(ge=1, le=MAX_SEQ)], container: ContainerDep,
          reader: ReaderDep) -> LedgerEvent:
    """One stored event, to anyone who may see its aggregate (a party to an order sees its
    contract's events, with the canonical bytes to check against a checkpoint)."""
    found = container.store.read(seq - 1, 1)
    if not found or found[0].seq != seq:
        raise NotFound(f"no event {seq}")
    entry = found[0]
    if not reader.sees_all:
        with reader.connect() as conn:
            if not may_see_event(conn, entry.type_name, entry.originator_id,
                                 reader.actor.participant_id):
                raise NotFound(f"no event {seq}")
    return _event(entry)


@router.get("/export", response_class=StreamingResponse, responses={200: {
    "description": "the bundle (its layout: audit/bundle.py) as a tar archive",
    "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}})
def export(container: ContainerDep, reader: ReaderDep, include_all: Annotated[bool, Query(
        alias="all", description="every stored event, not only those up to the newest "
        "anchored checkpoint")] = False) -> StreamingResponse:
    """The log as a bundle, for the admitted regulator only: the files of
    ``dataledger export`` (events in seq order, checkpoints with their co-signatures, the
    tree's leaf hashes, the trust document, the key events, the manifest), as a tar archive
    made while it is sent (one file spooled at a time). It stops at the newest anchored
    checkpoint unless ``all=true``; events stored after the request are not in it."""
    permit(reader.actor, "ledger.export")
    if not reader.sees_all:
        raise Forbidden("ledger.export: the caller's regulator is not admitted",
                        rule="ledger.export")
    if container.chain is None:
        raise NotFound("this server does not run the chain (DATALEDGER_CHAIN=false)")
    source = export_source(container.store, container.chain, include_all=include_all)
    return StreamingResponse(
        tar_stream(source.entries, source.checkpoints, source.trust, leaves=source.leaves,
                   about=source.about),
        media_type="application/x-tar", headers={
            "Content-Disposition": f'attachment; filename="dataledger-{source.upto}.tar"'})
