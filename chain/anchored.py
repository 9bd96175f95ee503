"""The checks of one stored checkpoint that need only its text and the trusted keys.

A stored checkpoint is the platform-signed note, the same note with the witnesses'
co-signature lines (``cosigned``), and the BLS aggregate of those co-signatures. Both
``dataledger chain verify`` (anchoring/check.py, on a live database) and the offline
``dataledger audit replay`` (audit/replay.py, on an exported bundle) hold it to a trust
document with these functions, so the two verifiers apply one definition:

- :func:`cosigned_problem`: the co-signed note carries the very body the platform signed
  (otherwise witnesses' lines of another checkpoint could be passed off as this one's);
- :func:`quorum_problem`: at least ``quorum`` trusted witnesses co-signed, every trusted
  line verifies, and the stored aggregate is the aggregate of the verified ones;
- :func:`link_problem`: the ``prev`` line holds the hash of the previous signed note.

Each returns None when the check holds, else a :class:`Problem` with the evidence.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from chain.bls import TrustedWitness, aggregate, cosignatures
from chain.checkpoint import Checkpoint
from chain.note import parse_note
from chain.verify import VerificationError


@dataclass(frozen=True)
class Problem:
    """What does not hold about a checkpoint, with what was expected and what was found."""

    what: str
    expected: str = ""
    found: str = ""


def b64(raw: bytes | None) -> str:
    """Base64 of ``raw`` for a message, or "nothing"."""
    return "nothing" if raw is None else base64.b64encode(raw).decode("ascii")


def cosigned_problem(note: str, cosigned: str) -> Problem | None:
    """The co-signed note must carry the body of the platform-signed ``note``."""
    try:
        body, _ = parse_note(note)
        cosigned_body, _ = parse_note(cosigned)
    except VerificationError as exc:
        return Problem(f"the co-signed note is malformed: {exc}")
    if cosigned_body != body:
        return Problem("the co-signed note carries another body than the signed checkpoint",
                       _head(body), _head(cosigned_body))
    return None


def _head(body: str) -> str:
    """Origin, size and root of a checkpoint body, on one line."""
    return " / ".join(body.splitlines()[:3])


def quorum_problem(cosigned: str, stored_aggregate: bytes | None,
                   witnesses: Sequence[TrustedWitness], quorum: int) -> Problem | None:
    """At least ``quorum`` of ``witnesses`` co-signed ``cosigned``, and the stored aggregate
    is the aggregate of their verified co-signatures."""
    try:
        valid = cosignatures(cosigned, witnesses)
    except VerificationError as exc:
        return Problem(f"a co-signature does not verify: {exc}")
    if len(valid) < quorum:
        return Problem("anchored without a quorum of co-signatures", str(quorum),
                       str(len(valid)))
    if not valid:  # a quorum of 0: nothing to aggregate
        return None
    agg = aggregate([s.signature for s in valid])
    if stored_aggregate != agg:
        return Problem("stored aggregate signature differs", b64(agg), b64(stored_aggregate))
    return None


def link_problem(checkpoint: Checkpoint, prev: bytes) -> Problem | None:
    """The checkpoint's ``prev`` line must hold ``prev``, the previous signed note's hash."""
    try:
        linked = checkpoint.prev
    except VerificationError as exc:
        return Problem(f"its prev line is malformed: {exc}")
    if linked != prev:
        return Problem("does not link to the checkpoint before it", b64(prev), b64(linked))
    return None
