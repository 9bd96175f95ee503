"""The verifiable log: checkpoints, proofs and witnesses. Hashes only, so no token needed."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from anchoring.checkpoints import StoredCheckpoint
from anchoring.service import ChainService
from api.deps import ContainerDep
from api.routes.common import ReadRoute
from domain.errors import InvalidInput, NotFound
from events.store import MAX_SEQ

router = APIRouter(prefix="/ledger", tags=["chain"], route_class=ReadRoute)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _chain(container: Any) -> ChainService:
    if container.chain is None:
        raise NotFound("this server does not run the chain (DATALEDGER_CHAIN=false)")
    chain: ChainService = container.chain
    return chain


class CheckpointView(BaseModel):
    size: int = Field(description="tree size (number of events covered)")
    note: str = Field(description="the C2SP signed note, platform signature only")
    cosigned: str = Field(description="the same note with every witness co-signature line")
    signers: list[str] = Field(description="witnesses whose co-signature verified")
    aggregate: str | None = Field(description="base64 aggregate BLS signature of the signers")
    anchored: bool = Field(description="a quorum of witnesses co-signed")
    cut_at: str


def _view(cp: StoredCheckpoint) -> CheckpointView:
    return CheckpointView(size=cp.size, note=cp.note, cosigned=cp.cosigned, signers=cp.signers,
                          aggregate=None if cp.aggregate is None else _b64(cp.aggregate),
                          anchored=cp.anchored, cut_at=cp.cut_at)


class CheckpointPage(BaseModel):
    checkpoints: list[CheckpointView] = Field(description="in size order")
    next_after_size: int = Field(description="the last size listed (after_size if none): "
                                             "pass as ?after_size= to read on")


@router.get("/checkpoints", response_model=CheckpointPage)
def checkpoints(container: ContainerDep,
                after_size: Annotated[int, Query(ge=0, le=MAX_SEQ, description=(
                    "list those of a larger tree size (422 query.after_size otherwise)"))] = 0,
                limit: Annotated[int, Query(ge=1, le=1000, description=(
                    "at most this many (422 query.limit otherwise)"))] = 100) -> CheckpointPage:
    """The stored checkpoints above ``after_size``, in size order, with their co-signatures:
    an auditor pages through them all without knowing a size first."""
    page = _chain(container).tree.checkpoints.page(after_size, limit)
    return CheckpointPage(checkpoints=[_view(cp) for cp in page],
                          next_after_size=page[-1].size if page else after_size)


@router.get("/checkpoints/latest", response_model=CheckpointView)
def latest_checkpoint(container: ContainerDep, anchored: bool = False) -> CheckpointView:
    """The newest checkpoint (``?anchored=true``: the newest a quorum of witnesses co-signed)."""
    cp = _chain(container).tree.checkpoints.latest(anchored=anchored)
    if cp is None:
        raise NotFound("no checkpoint yet")
    return _view(cp)


@router.get("/checkpoints/{size}", response_model=CheckpointView)
def checkpoint(size: Annotated[int, Path(ge=1, le=MAX_SEQ)],
               container: ContainerDep) -> CheckpointView:
    """The checkpoint cut at tree size ``size``."""
    cp = _chain(container).tree.checkpoints.get(size)
    if cp is None:
        raise NotFound(f"no checkpoint at size {size}")
    return _view(cp)


class InclusionProof(BaseModel):
    index: int = Field(description="leaf index = seq - 1")
    size: int
    leaf_hash: str = Field(description="base64 SHA-256(0x00 ‖ canonical event bytes)")
    proof: list[str] = Field(description="base64 hashes, RFC 9162 order")


@router.get("/proofs/inclusion", response_model=InclusionProof)
def inclusion(container: ContainerDep,
              index: Annotated[int, Query(ge=0, le=MAX_SEQ - 1, description=(
                  "leaf index (seq - 1); below size (422 query.index otherwise)"),
                  json_schema_extra={"x-less-than": "size"})],
              size: Annotated[int, Query(ge=1, le=MAX_SEQ, description=(
                  "tree size: above index, at most the tree's (422 query.size otherwise)"))],
              ) -> InclusionProof:
    """Proof that leaf ``index`` is in the tree of ``size`` leaves (``index`` < ``size``)."""
    tree = _chain(container).tree
    _within(index < size, "query.index", f"must be below size {size}")
    _within(size <= tree.size(), "query.size", f"the tree has {tree.size()} leaves")
    return InclusionProof(index=index, size=size, leaf_hash=_b64(tree.node(0, index)),
                          proof=[_b64(h) for h in tree.inclusion_proof(index, size)])


class ConsistencyProof(BaseModel):
    old: int
    new: int
    proof: list[str] = Field(description="base64 hashes, RFC 9162 order")


@router.get("/proofs/consistency", response_model=ConsistencyProof)
def consistency(container: ContainerDep,
                old: Annotated[int, Query(ge=1, le=MAX_SEQ, description=(
                    "the older tree size; at most new (422 query.old otherwise)"),
                    json_schema_extra={"x-at-most": "new"})],
                new: Annotated[int, Query(ge=1, le=MAX_SEQ, description=(
                    "the newer tree size: at least old, at most the tree's (422 query.new "
                    "otherwise)"))]) -> ConsistencyProof:
    """Proof that the tree of ``old`` leaves is a prefix of the tree of ``new`` leaves
    (``old`` ≤ ``new``)."""
    tree = _chain(container).tree
    _within(old <= new, "query.old", f"must not exceed new ({new})")
    _within(new <= tree.size(), "query.new", f"the tree has {tree.size()} leaves")
    return ConsistencyProof(old=old, new=new,
                            proof=[_b64(h) for h in tree.consistency_proof(old, new)])


class WitnessView(BaseModel):
    name: str
    public_key: str = Field(description="base64 BLS12-381 G1 public key (48 bytes)")
    pop: str = Field(description="base64 proof of possession")
    vkey: str


class WitnessesView(BaseModel):
    origin: str
    log_vkey: str = Field(description="the platform's Ed25519 note verifier key")
    quorum: int
    witnesses: list[WitnessView]


@router.get("/witnesses", response_model=WitnessesView)
def witnesses(container: ContainerDep) -> WitnessesView:
    """The log's key and the witnesses whose co-signatures anchor checkpoints."""
    chain = _chain(container)
    cp = chain.checkpointer
    return WitnessesView(origin=cp.origin, log_vkey=cp.signer.verifier().vkey,
                         quorum=cp.quorum,
                         witnesses=[_witness(w.published()) for w in chain.witnesses])


def _witness(p: Any) -> WitnessView:
    return WitnessView(name=p.name, public_key=_b64(p.public_key), pop=_b64(p.pop),
                       vkey=p.encode())


def _within(ok: bool, field: str, reason: str) -> None:
    if not ok:
        raise InvalidInput(field, reason)

