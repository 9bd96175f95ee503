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

from anchoring.checkpoints import StoredCheckpoint
from anchoring.tiles import TILE_HEIGHT, TILE_WIDTH
from anchoring.treestore import TreeStore
from chain import merkle
from chain.anchored import cosigned_problem, link_problem, quorum_problem
from chain.bls import TrustedWitness
from chain.checkpoint import NO_PREVIOUS, Checkpoint, checkpoint_hash, open_checkpoint
from chain.compact import Node, fold
from chain.hasher import EMPTY_ROOT, HASH_SIZE
from chain.note import NoteVerifier
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
        wanted = {cp.size for cp in self.tree.checkpoints.all()}
        findings = []
        for finding in self._tree_findings(wanted):
            findings.append(finding)
            if len(findings) >= limit:
                break
        return findings + self._checkpoint_findings()

    # -- (1) + (2) ----------------------------------------------------------------------
    def _tree_findings(self, wanted: set[int]) -> Iterator[Finding]:
        """Events past the tree's size are sequenced but not yet integrated: not checked.

        Leaves are recomputed in batches with the tree's own hashing core
        (:func:`chain.merkle.append`, C when built) and compared with the leaf hashes stored
        in the tiles; every completed node of level >= 8 is compared with its row.
        """
        done, size = 0, self.tree.size()
        roots: list[bytes] = []
        created: list[Node] = []
        if 0 in wanted:
            self.roots[0] = EMPTY_ROOT
        while done < size:
            entries = self.store.read(done, min(self.batch, size - done))
            if not entries:
                break
            gap = next((k for k, e in enumerate(entries) if e.seq != done + k + 1), None)
            data = [entry.canonical() for entry in (entries if gap is None else entries[:gap])]
            hashes, created = b"", []
            cuts = sorted(w for w in wanted if done < w <= done + len(data))
            at = done
            for cut in [*cuts, done + len(data)]:
                part, nodes, roots = merkle.append(at, roots, data[at - done:cut - done],
                                                   store_from=TILE_HEIGHT)
                hashes += part
                created += nodes
                at = cut
                if cut in wanted:
                    self.roots[cut] = fold(roots) if roots else EMPTY_ROOT
            yield from self._compare_leaves(done, hashes)
            yield from self._compare(created)
            done += len(data)
            if gap is not None:
                yield Finding(f"seq {done + 1}", "missing from the log", f"seq {done + 1}",
                              f"seq {entries[gap].seq}")
                return
        if done != size:
            yield Finding("log", "the tree has more leaves than the log has events",
                          f"{size} events", f"{done} events")
            return
        extra = self.tree.leaf_hashes(size, size + TILE_WIDTH)
        if extra:
            yield Finding(f"leaf tile {size >> TILE_HEIGHT}", "stores leaf hashes beyond the "
                          "tree's size", f"{size} leaves", f"{size + len(extra) // HASH_SIZE}")

    def _compare_leaves(self, begin: int, want: bytes) -> Iterator[Finding]:
        got = self.tree.leaf_hashes(begin, begin + len(want) // HASH_SIZE)
        if got == want:
            return
        for k in range(len(want) // HASH_SIZE):
            w, g = want[k * HASH_SIZE:(k + 1) * HASH_SIZE], got[k * HASH_SIZE:(k + 1) * HASH_SIZE]
            if w != g:
                index = begin + k
                yield Finding(f"seq {index + 1}", "stored event does not hash to its stored "
                              f"leaf (leaf tile {index >> TILE_HEIGHT}, hash "
                              f"{index % TILE_WIDTH})", _b64(g or None), _b64(w))

    def _compare(self, created: list[Node]) -> Iterator[Finding]:
        stored = self.tree.nodes_between(created)
        for level, index, want in created:
            got = stored.get((level, index))
            if got != want:
                yield Finding(f"node ({level}, {index})", "stored tree hash differs from the "
                              "hash recomputed from the events", _b64(want), _b64(got))

    # -- (3) + (4) ----------------------------------------------------------------------
    def _checkpoint_findings(self) -> list[Finding]:
        findings: list[Finding] = []
        prev = NO_PREVIOUS
        last_anchored: StoredCheckpoint | None = None
        for stored in self.tree.checkpoints.all():
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
        if last_anchored is None and max(self.tree.size(), self.store.max_seq()) > 0:
            findings.append(Finding("checkpoints", "no anchored checkpoint covers the log"))
        return findings

    def _check_one(self, where: str, cp: Checkpoint, stored: StoredCheckpoint,
                   prev: bytes) -> list[Finding]:
        out = []
        if cp.size != stored.size:
            out.append(Finding(where, "signed size differs from its row", str(stored.size),
                               str(cp.size)))
        for problem in (link_problem(cp, prev), cosigned_problem(stored.note, stored.cosigned)):
            if problem is not None:
                out.append(Finding(where, problem.what, problem.expected, problem.found))
        recomputed = self.roots.get(cp.size)
        if recomputed != cp.root:
            out.append(Finding(where, "signed root differs from the tree recomputed from "
                               "the events", _b64(recomputed), _b64(cp.root)))
        if stored.anchored:
            out += self._check_cosigned(where, stored)
        return out

    def _check_cosigned(self, where: str, stored: StoredCheckpoint) -> list[Finding]:
        problem = quorum_problem(stored.cosigned, stored.aggregate, self.witnesses, self.quorum)
        return [] if problem is None else [Finding(where, problem.what, problem.expected,
                                                   problem.found)]
