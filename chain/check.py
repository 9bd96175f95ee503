"""``dataledger chain verify``: recompute the whole tree from the stored events.

Steps: (1) recompute every leaf from the canonical bytes of each stored event and
compare it with the stored leaf hash; (2) recompute every perfect-subtree hash and
compare it with the stored node; (3) check each checkpoint: the platform's
signature, the ``prev`` link to the checkpoint before it, its root against the
recomputed tree, and for anchored ones the witnesses' co-signatures and their
aggregate; (4) the latest anchored checkpoint must match the recomputed tree.
Each finding names the seq, node or checkpoint, and what was expected and found.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from chain.bls import TrustedWitness, aggregate, cosignatures
from chain.checkpoint import NO_PREVIOUS, Checkpoint, checkpoint_hash, open_checkpoint
from chain.compact import CompactRange, Node
from chain.integrator import leaf_hash
from chain.note import NoteVerifier
from chain.treestore import StoredCheckpoint, TreeStore
from chain.verify import VerificationError
from events.store import EventStore


@dataclass(frozen=True)
class Finding:
    """One thing that does not hold, with the evidence."""

    where: str
    what: str
    expected: str = ""
    found: str = ""

    def __str__(self) -> str:
        evidence = f" (expected {self.expected}, found {self.found})" if self.expected else ""
        return f"{self.where}: {self.what}{evidence}"


def _b64(raw: bytes | None) -> str:
    return "nothing" if raw is None else base64.b64encode(raw).decode("ascii")


class ChainChecker:
    """Recomputes the tree from the log and checks it against what is stored and signed."""

    def __init__(self, store: EventStore, tree: TreeStore, log_key: NoteVerifier, origin: str,
                 witnesses: Sequence[TrustedWitness], quorum: int, batch: int = 5000) -> None:
        self.store, self.tree, self.log_key, self.origin = store, tree, log_key, origin
        self.witnesses, self.quorum, self.batch = list(witnesses), quorum, batch
        self.roots: dict[int, bytes] = {}

    def run(self, limit: int = 20) -> list[Finding]:
        """Every finding (at most ``limit`` of the tree kind), empty when all holds."""
        wanted = {cp.size for cp in self.tree.checkpoints()}
        findings = []
        for finding in self._tree_findings(wanted):
            findings.append(finding)
            if len(findings) >= limit:
                break
        return findings + self._checkpoint_findings()

    # -- (1) + (2) ----------------------------------------------------------------------
    def _tree_findings(self, wanted: set[int]) -> Iterator[Finding]:
        """Events past the tree's size are sequenced but not yet integrated: not checked."""
        compact, after, size = CompactRange(), 0, self.tree.size()
        if 0 in wanted:
            self.roots[0] = compact.root()
        while after < size:
            entries = self.store.read(after, min(self.batch, size - after))
            if not entries:
                break
            created: list[Node] = []
            for entry in entries:
                if entry.seq != compact.size + 1:
                    yield Finding(f"seq {compact.size + 1}", "missing from the log",
                                  f"seq {compact.size + 1}", f"seq {entry.seq}")
                    return
                created += compact.append(leaf_hash(entry))
                if compact.size in wanted:
                    self.roots[compact.size] = compact.root()
            yield from self._compare(created)
            after = entries[-1].seq
        if compact.size != size:
            yield Finding("log", "the tree has more leaves than the log has events",
                          f"{size} events", f"{compact.size} events")

    def _compare(self, created: list[Node]) -> Iterator[Finding]:
        stored = self.tree.nodes_between(created)
        for level, index, want in created:
            got = stored.get((level, index))
            if got == want:
                continue
            if level == 0:
                yield Finding(f"seq {index + 1}", "stored event does not hash to its stored leaf",
                              _b64(got), _b64(want))
            else:
                yield Finding(f"node ({level}, {index})", "stored tree hash differs from the "
                              "hash recomputed from the events", _b64(want), _b64(got))

    # -- (3) + (4) ----------------------------------------------------------------------
    def _checkpoint_findings(self) -> list[Finding]:
        findings: list[Finding] = []
        prev = NO_PREVIOUS
        last_anchored: StoredCheckpoint | None = None
        for stored in self.tree.checkpoints():
            where = f"checkpoint {stored.size}"
            try:
                cp, _ = open_checkpoint(stored.note, [self.log_key], self.origin)
            except VerificationError as exc:
                findings.append(Finding(where, f"platform signature does not verify: {exc}"))
                continue
            findings += self._check_one(where, cp, stored, prev)
            prev = checkpoint_hash(stored.note)
            if stored.anchored:
                last_anchored = stored
        if last_anchored is None and self.tree.size() > 0:
            findings.append(Finding("checkpoints", "no anchored checkpoint covers the log"))
        return findings

    def _check_one(self, where: str, cp: Checkpoint, stored: StoredCheckpoint,
                   prev: bytes) -> list[Finding]:
        out = []
        if cp.size != stored.size:
            out.append(Finding(where, "signed size differs from its row", str(stored.size),
                               str(cp.size)))
        if cp.prev != prev:
            out.append(Finding(where, "does not link to the checkpoint before it",
                               _b64(prev), _b64(cp.prev)))
        recomputed = self.roots.get(cp.size)
        if recomputed != cp.root:
            out.append(Finding(where, "signed root differs from the tree recomputed from "
                               "the events", _b64(recomputed), _b64(cp.root)))
        if stored.anchored:
            out += self._check_cosigned(where, stored)
        return out

    def _check_cosigned(self, where: str, stored: StoredCheckpoint) -> list[Finding]:
        try:
            valid = cosignatures(stored.cosigned, self.witnesses)
        except VerificationError as exc:
            return [Finding(where, f"a co-signature does not verify: {exc}")]
        if len(valid) < self.quorum:
            return [Finding(where, "anchored without a quorum of co-signatures",
                            str(self.quorum), str(len(valid)))]
        agg = aggregate([s.signature for s in valid])
        if stored.aggregate != agg:
            return [Finding(where, "stored aggregate signature differs", _b64(agg),
                            _b64(stored.aggregate))]
        return []
