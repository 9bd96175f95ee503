"""Forensics: the clean self-proof (清白自证) a participant hands anyone, checked offline."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from anchoring.actor_index import NoIndexRoot
from anchoring.selfproof import NoIndexedCheckpoint, self_proof
from api.deps import ContainerDep, Reader, ReaderDep
from api.routes.common import ReadRoute
from domain.errors import Forbidden, InvalidInput, NotFound, WrongState
from domain.permissions import permit
from projections.participants import participants

router = APIRouter(prefix="/forensics", tags=["forensics"], route_class=ReadRoute)

RULE = "forensics.self_proof"
#: a resource key: "<kind>:<id>", e.g. "dataset:<id>" (docs/INDEX.md lists the kinds), and
#: an actor id: printable ASCII, as the verifier (audit/selfproof.py) requires
_RESOURCE = re.compile(r"[a-z][a-z_]*:[!-9;-~]+", re.ASCII)
_ACTOR = re.compile(r"[!-~]+", re.ASCII)
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")


class ProvenEventView(BaseModel):
    seq: int
    canonical: str = Field(description="base64 of the event's canonical bytes (the leaf)")
    inclusion: list[str] = Field(description="base64 RFC 9162 inclusion proof in tree_size")


class SelfProofView(BaseModel):
    format: str = Field(description="dataledger-self-proof/1")
    actor: str
    resource: str
    from_: str | None = Field(alias="from", serialization_alias="from")
    to: str | None
    checkpoint: dict[str, Any] = Field(description="the anchored checkpoint it hangs on, as "
                                       "GET /ledger/checkpoints/{size} shows it")
    tree_size: int
    entry: dict[str, Any] | None = Field(description="the index entry {keyhash, value {count, "
                                         "head_seq, chain}}; null when the actor has no "
                                         "event on the resource")
    map_proof: Any = Field(description="the map proof of the entry, or of its absence")
    events: list[ProvenEventView] = Field(description="every event of the actor on the "
                                          "resource up to tree_size, in seq order")

    model_config = {"populate_by_name": True}


@router.get("/self-proof", response_model=SelfProofView, response_model_by_alias=True)
def get_self_proof(
        container: ContainerDep, reader: ReaderDep,
        actor: Annotated[str, Query(min_length=1, max_length=200,
                                    description="the participant id the proof is about")],
        resource: Annotated[str, Query(min_length=3, max_length=300, description=(
            "<kind>:<id>, e.g. dataset:<id> (docs/INDEX.md); 422 query.resource otherwise"))],
        from_: Annotated[str | None, Query(alias="from", max_length=40, description=(
            "RFC 3339 start of the period reported (by each event's at)"))] = None,
        to: Annotated[str | None, Query(max_length=40, description=(
            "RFC 3339 end of the period reported"))] = None) -> dict[str, Any]:
    """Every event of ``actor`` on ``resource`` up to the newest anchored checkpoint that
    commits to the per-actor index, each with its inclusion proof, the index entry (or its
    absence) with its map proof, and the checkpoint: ``dataledger audit verify-proof``
    checks it offline. A participant about itself, the regulator about anyone (403
    otherwise)."""
    permit(reader.actor, RULE)
    if not _ACTOR.fullmatch(actor):
        raise InvalidInput("query.actor", "must be a participant id (printable ASCII)")
    if not _RESOURCE.fullmatch(resource):
        raise InvalidInput("query.resource", "must be <kind>:<id>, e.g. dataset:<id>")
    for field, value in (("query.from", from_), ("query.to", to)):
        if value is not None and not _is_time(value):
            raise InvalidInput(field, "must be an RFC 3339 time with its offset, e.g. "
                               "2025-01-31T00:00:00Z")
    _may_ask(reader, actor)
    chain = container.chain
    if chain is None or chain.index is None:
        raise NotFound("this server keeps no per-actor index (DATALEDGER_CHAIN or "
                       "DATALEDGER_ACTOR_INDEX is false)")
    try:
        return self_proof(container.store, chain.tree, chain.index, actor, resource,
                          (from_, to))
    except (NoIndexedCheckpoint, NoIndexRoot) as exc:
        raise WrongState(f"no self-proof yet: {exc}") from None


def _is_time(text: str) -> bool:
    """RFC 3339 with its offset, and a real date and time (2025-02-30 is not)."""
    if not _TIME.fullmatch(text):
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _may_ask(reader: Reader, actor: str) -> None:
    """An admitted participant about itself, the admitted regulator about anyone."""
    own = reader.actor.participant_id == actor
    if not own and reader.actor.role != "regulator":
        raise Forbidden(f"{RULE}: a participant may ask only about itself (the regulator "
                        "about anyone)", rule=RULE)
    with reader.connect() as conn:
        state = conn.execute(select(participants.c.state).where(
            participants.c.id == reader.actor.participant_id)).scalar()
    if state != "admitted":
        raise Forbidden(f"{RULE}: the caller's participant is {state}, not admitted",
                        rule=RULE)
