"""Checkpoints: cut a signed tree head every N leaves or T seconds, have witnesses co-sign it.

The platform signs each checkpoint as a C2SP signed note (Ed25519). For every
configured witness it sends the checkpoint with a consistency proof from the
size that witness last co-signed; a witness that answers with a conflict tells
its size, and gets one more try with a proof from there. The co-signatures are
verified, aggregated into one BLS signature, and the checkpoint is *anchored*
once a quorum signed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from anchoring.checkpoints import StoredCheckpoint
from anchoring.treestore import TreeStore
from chain.bls import TrustedWitness, WitnessPublicKey, aggregate, cosignatures, trust_witness
from chain.checkpoint import (
    NO_PREVIOUS,
    Checkpoint,
    checkpoint_hash,
    ledger_extensions,
    sign_checkpoint,
)
from chain.note import Signer
from chain.verify import VerificationError

log = logging.getLogger(__name__)


class WitnessConflict(Exception):
    """The witness last co-signed another size (C2SP tlog-witness 409)."""

    def __init__(self, current_size: int) -> None:
        super().__init__(f"witness is at size {current_size}")
        self.current_size = current_size


class WitnessRefused(Exception):
    """The witness refused the checkpoint (bad proof, bad signature, malformed, down)."""


class WitnessClient(Protocol):
    """How the platform reaches one witness, in-process or over HTTP."""

    @property
    def name(self) -> str: ...

    def published(self) -> WitnessPublicKey: ...

    def add_checkpoint(self, old_size: int, proof: list[bytes], note: str) -> str:
        """Return the witness's co-signature line; raise WitnessConflict or WitnessRefused."""
        ...


@dataclass(frozen=True)
class CutPolicy:
    """Cut every ``every_leaves`` new leaves or ``every_seconds``, whichever comes first;
    ``index``: each cut carries the per-actor index's root (the ``index`` line)."""

    every_leaves: int = 1000
    every_seconds: float = 5.0
    index: bool = True


class IndexRoots(Protocol):
    """The per-actor index (anchoring/actor_index.py): brought to a size, its map's root."""

    def advance(self, size: int) -> bytes: ...


class Checkpointer:
    """Signs checkpoints of the tree and collects the witnesses' co-signatures.

    With an ``index``, each checkpoint also carries the line ``index <base64 root>``: the
    per-actor index's root at the checkpoint's size, co-signed with the rest.
    """

    def __init__(self, tree: TreeStore, signer: Signer, witnesses: Sequence[WitnessClient],
                 quorum: int, policy: CutPolicy = CutPolicy(),
                 clock: Callable[[], float] = time.time, index: IndexRoots | None = None,
                 ) -> None:
        if not 0 <= quorum <= len(witnesses):
            raise ValueError(f"quorum {quorum} needs 0..{len(witnesses)} witnesses")
        self.tree = tree
        self.checkpoints = tree.checkpoints
        self.signer = signer
        self.witnesses = list(witnesses)
        self.trusted: list[TrustedWitness] = [trust_witness(w.published()) for w in witnesses]
        self.quorum = quorum
        self.policy = policy
        self.clock = clock
        self.index = index

    @property
    def origin(self) -> str:
        """The log's origin line: the platform key's name."""
        return self.signer.name

    def due(self) -> bool:
        """Whether a new checkpoint should be cut now."""
        last = self.checkpoints.latest()
        size = self.tree.size()
        if last is None:
            return size > 0
        if size <= last.size:
            return False
        if size - last.size >= self.policy.every_leaves:
            return True
        cut_at = datetime.fromisoformat(last.cut_at).timestamp()
        return self.clock() - cut_at >= self.policy.every_seconds

    def tick(self) -> StoredCheckpoint | None:
        """Cut a checkpoint if due, and retry co-signing the newest one if not anchored."""
        if self.due():
            self.cut()
        last = self.checkpoints.latest()
        if last is not None and not last.anchored:
            return self.collect(last)
        return last

    def cut(self) -> StoredCheckpoint:
        """Sign a checkpoint of the whole integrated tree and store it."""
        previous = self.checkpoints.latest()
        size = self.tree.size()
        now = datetime.fromtimestamp(self.clock(), UTC)
        prev = NO_PREVIOUS if previous is None else checkpoint_hash(previous.note)
        index_root = None if self.index is None else self.index.advance(size)
        checkpoint = Checkpoint(self.origin, size, self.tree.root(size),
                                ledger_extensions(now, prev, index_root))
        note = sign_checkpoint(checkpoint, [self.signer])
        self.checkpoints.put(size, note, now.isoformat())
        stored = self.checkpoints.get(size)
        assert stored is not None
        return stored

    def collect(self, stored: StoredCheckpoint) -> StoredCheckpoint:
        """Ask every witness that has not signed; aggregate; anchored once a quorum signed."""
        cosigned = stored.cosigned
        for witness in self.witnesses:
            if witness.name in stored.signers:
                continue
            line = self._ask(witness, stored)
            if line is not None:
                cosigned += line
        valid = cosignatures(cosigned, self.trusted)
        signers = sorted(s.name for s in valid)
        agg = aggregate([s.signature for s in valid]) if valid else None
        anchored = len(valid) >= self.quorum
        self.checkpoints.record_cosignatures(stored.size, cosigned, signers, agg, anchored)
        result = self.checkpoints.get(stored.size)
        assert result is not None
        return result

    def _ask(self, witness: WitnessClient, stored: StoredCheckpoint) -> str | None:
        old = self.checkpoints.witness_size(witness.name)
        for _ in range(2):
            proof = self.tree.consistency_proof(old, stored.size) if 0 < old < stored.size else []
            try:
                line = witness.add_checkpoint(old, proof, stored.note)
            except WitnessConflict as conflict:
                if conflict.current_size > stored.size:
                    log.error("witness %s is ahead of us (%d > %d): a fork?", witness.name,
                              conflict.current_size, stored.size)
                    return None
                old = conflict.current_size
                continue
            except (WitnessRefused, VerificationError) as refused:
                log.warning("witness %s refused checkpoint %d: %s", witness.name, stored.size,
                            refused)
                return None
            self.checkpoints.set_witness_size(witness.name, stored.size)
            return line
        return None
