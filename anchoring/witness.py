"""A checkpoint witness (C2SP tlog-witness), without HTTP: it co-signs only consistent growth.

A witness knows a set of logs, each by its origin and its Ed25519 note key(s),
and remembers for each the last checkpoint it co-signed: (size, root, note).
:meth:`Witness.add_checkpoint` co-signs a new checkpoint only if it is signed
by the log, starts from exactly the size the witness remembers, and a
consistency proof shows the remembered tree is a prefix of the new one. So a
witness never co-signs two checkpoints that are not one prefix of the other:
a log that shows different trees to different parties (a *split view*) gets
at most one of them co-signed by each honest witness.

The request of the ``add-checkpoint`` call (c2sp.org/tlog-witness) is, each
line ending in a newline (U+000A)::

    old <size the client believes the witness last co-signed, canonical decimal>
    <consistency proof hash, base64 of 32 bytes>      (0 to 63 lines)
    <empty line>
    <the signed checkpoint note>

and its answer is the witness's co-signature line. dataledger departs from
the spec in one way only: the co-signature is a BLS signature line over the
checkpoint body (:func:`chain.bls.cosign`, signature type 0xB1), not a
``cosignature/v1`` Ed25519 one; standard Ed25519 note verifiers skip it.

Refusals raise a :class:`WitnessError` whose subclass says which HTTP status
the spec gives it (see :mod:`anchoring.witness_app`): :class:`Malformed` (400),
:class:`BadSignature` (403), :class:`UnknownOrigin` (404),
:class:`OldSizeMismatch` (409, with the size the witness holds),
:class:`RootConflict` (409), :class:`ProofFailed` (422).

The state lives in a SQLite file of its own
(:class:`anchoring.witness_state.WitnessState`). The decision and the new state
are one ``BEGIN IMMEDIATE`` transaction committed with ``synchronous=FULL``
(fsynced) BEFORE the co-signature is computed and returned, as the spec
requires: if the witness dies after answering, it remembers what it signed; if
it dies before committing, it signed nothing.
"""

import base64
import binascii
import logging
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Final

from anchoring.witness_state import MAX_STORED_SIZE, LogState, WitnessState
from chain.bls import WitnessKey, WitnessPublicKey, cosign
from chain.checkpoint import Checkpoint
from chain.hasher import EMPTY_ROOT, HASH_SIZE
from chain.note import NoteVerifier, open_note, parse_note
from chain.verify import VerificationError, verify_consistency

MAX_PROOF_LINES: Final = 63
"""At most this many consistency proof lines (the spec's client limit)."""

TEST_PAUSE_ENV: Final = "DATALEDGER_WITNESS_TEST_PAUSE_{stage}_PERSIST"
"""Test hook, for crash tests only: ``DATALEDGER_WITNESS_TEST_PAUSE_BEFORE_PERSIST`` and
``DATALEDGER_WITNESS_TEST_PAUSE_AFTER_PERSIST`` (seconds, a float). When set, every
accepted checkpoint sleeps that long, after printing a line to stderr, either inside the
state transaction before it commits or after the commit before the co-signature is
made. Read by :func:`_test_pause` only; never set it in production."""

_DECIMAL = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_OLD_LINE = re.compile(r"old (0|[1-9][0-9]*)", re.ASCII)

log = logging.getLogger(__name__)


class WitnessError(Exception):
    """The witness refuses a checkpoint; the subclass says why."""


class Malformed(WitnessError):
    """The request or the checkpoint is not well-formed, or old size > checkpoint size (400)."""


class BadSignature(WitnessError):
    """No known key of the checkpoint's origin signed it, or a known key's signature is bad (403)."""


class UnknownOrigin(BadSignature):
    """The checkpoint's origin is not a log this witness knows (404 in the spec)."""


class OldSizeMismatch(WitnessError):
    """The request's old size is not the size the witness last co-signed (409).

    ``current_size`` is that size (0 if it never co-signed this log).
    """

    def __init__(self, current_size: int, old_size: int) -> None:
        """Record the witness's size and the one the request claimed."""
        super().__init__(f"old size {old_size}, but the witness last co-signed size {current_size}")
        self.current_size = current_size
        self.old_size = old_size


class RootConflict(WitnessError):
    """Same size as the checkpoint the witness co-signed, different root (409)."""


class ProofFailed(WitnessError):
    """The consistency proof does not verify, or is not empty when it must be (422)."""


class Witness:
    """A witness: its BLS key, the logs it knows and its persistent state."""

    def __init__(
        self,
        key: WitnessKey,
        logs: Mapping[str, NoteVerifier | Sequence[NoteVerifier]],
        state: WitnessState,
    ) -> None:
        """Create the witness of ``key`` for ``logs`` (origin -> the log's note key or keys)."""
        self.key = key
        self.state = state
        self._logs: dict[str, list[NoteVerifier]] = {}
        for origin, verifiers in logs.items():
            listed = list(verifiers) if isinstance(verifiers, Sequence) else [verifiers]
            if not origin or not listed:
                raise ValueError(f"log {origin!r} needs an origin and at least one key")
            self._logs[origin] = listed
        self._published: WitnessPublicKey | None = None

    @property
    def name(self) -> str:
        """The witness's name (its key name)."""
        return self.key.name

    @property
    def origins(self) -> list[str]:
        """The origins of the logs this witness knows, sorted."""
        return sorted(self._logs)

    def published(self) -> WitnessPublicKey:
        """Return the witness's public descriptor: name, BLS public key, proof of possession.

        The platform accepts the witness through :func:`chain.bls.trust_witness`.
        """
        if self._published is None:
            self._published = self.key.published()
        return self._published

    def add_checkpoint(self, old_size: int, proof: Sequence[bytes], note_text: str) -> str:
        """Co-sign the signed checkpoint ``note_text`` if it extends what the witness co-signed.

        ``old_size`` is the size the client believes the witness last
        co-signed for this log and ``proof`` the consistency proof from it to
        the checkpoint. Returns the co-signature line (newline included);
        raises a :class:`WitnessError` subclass and changes nothing on refusal.
        """
        # 1. The log's signature. The origin (the first line, not yet trusted)
        #    only picks the keys; the body is parsed after they verified it.
        try:
            body, _ = parse_note(note_text)
        except VerificationError as exc:
            raise Malformed(f"malformed checkpoint note: {exc}") from exc
        origin = body.split("\n", 1)[0]
        verifiers = self._logs.get(origin)
        if verifiers is None:
            raise UnknownOrigin(f"unknown log origin {origin!r}")
        try:
            open_note(note_text, verifiers)
        except VerificationError as exc:
            raise BadSignature(f"checkpoint of {origin!r} is not signed by its log: {exc}") from exc
        # 2. The body: a checkpoint of that origin.
        try:
            checkpoint = Checkpoint.unmarshal(body)
        except VerificationError as exc:
            raise Malformed(f"malformed checkpoint: {exc}") from exc
        if checkpoint.size > MAX_STORED_SIZE:
            raise Malformed(f"tree size {checkpoint.size} is beyond what this witness stores")
        # 3. The request's shape: old size <= checkpoint size (400), a bounded proof of hashes.
        _check_old_and_proof(old_size, proof)
        if old_size > checkpoint.size:
            raise Malformed(
                f"old size {old_size} is larger than the checkpoint size {checkpoint.size}"
            )

        def decide(current: LogState | None) -> LogState:
            """Judge the request against the state held, inside the state transaction."""
            # 4. The old size must be the one the witness holds (0 on first contact).
            held = current or LogState(origin, 0, EMPTY_ROOT, "")
            if old_size != held.size:
                raise OldSizeMismatch(held.size, old_size)
            # 5. The new checkpoint must extend the held one.
            _check_consistency(held, checkpoint, proof, note_text)
            _test_pause("BEFORE")
            return LogState(origin, checkpoint.size, checkpoint.root, note_text)

        # 6. Decide and persist in one transaction, fsynced before anything is signed.
        self.state.update(origin, decide)
        _test_pause("AFTER")
        # 7. Only now co-sign.
        return cosign(body, self.key)


def _check_old_and_proof(old_size: int, proof: Sequence[bytes]) -> None:
    """Raise Malformed unless old_size is a stored size and proof is <= 63 hashes of 32 bytes."""
    if isinstance(old_size, bool) or not isinstance(old_size, int):
        raise Malformed(f"old size must be an integer, got {type(old_size).__name__}")
    if not 0 <= old_size <= MAX_STORED_SIZE:
        raise Malformed(f"old size {old_size} out of range")
    if len(proof) > MAX_PROOF_LINES:
        raise Malformed(f"{len(proof)} consistency proof hashes, at most {MAX_PROOF_LINES}")
    for i, node in enumerate(proof):
        if not isinstance(node, bytes) or len(node) != HASH_SIZE:
            raise Malformed(f"consistency proof hash {i} is not {HASH_SIZE} bytes")


def _check_consistency(
    held: LogState, checkpoint: Checkpoint, proof: Sequence[bytes], note_text: str
) -> None:
    """Raise unless ``checkpoint`` extends ``held``: ProofFailed (422) or RootConflict (409).

    Requires held.size <= checkpoint.size. From size 0 there is nothing to
    prove (chain.verify refuses proofs from the empty tree), so the proof must
    be empty; a size-0 checkpoint must carry the empty tree's root.
    """
    if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
        raise ProofFailed("a checkpoint of size 0 must carry the empty tree's root")
    if held.size == 0:
        if proof:
            raise ProofFailed("the consistency proof must be empty when the old size is 0")
        return
    if held.size == checkpoint.size:
        if checkpoint.root != held.root:
            _evidence("same size, different root", held, note_text)
            raise RootConflict(
                f"size {held.size} was co-signed with root {_b64(held.root)}, "
                f"this checkpoint has root {_b64(checkpoint.root)}"
            )
        if proof:
            raise ProofFailed("the consistency proof must be empty when the sizes are equal")
        return
    try:
        verify_consistency(held.size, checkpoint.size, proof, held.root, checkpoint.root)
    except VerificationError as exc:
        _evidence(f"consistency proof failed: {exc}", held, note_text)
        raise ProofFailed(
            f"consistency proof from size {held.size} to {checkpoint.size} failed: {exc}"
        ) from exc


def _evidence(reason: str, held: LogState, note_text: str) -> None:
    """Log a validly signed checkpoint the witness refused: possible proof of log misbehaviour."""
    log.warning(
        "refused a signed checkpoint of %r (%s); held size %d root %s; refused note:\n%s",
        held.origin,
        reason,
        held.size,
        _b64(held.root),
        note_text,
    )


def parse_add_checkpoint(body: str) -> tuple[int, list[bytes], str]:
    """Parse an ``add-checkpoint`` request body; return (old size, proof, checkpoint note).

    The body is ``old <size>\\n``, zero to 63 lines of one base64 hash each
    (canonical, 32 bytes), an empty line, then the signed checkpoint. Raises
    Malformed otherwise. The note itself is checked by :meth:`Witness.add_checkpoint`.
    """
    # 1. The old size line.
    first, newline, rest = body.partition("\n")
    match = _OLD_LINE.fullmatch(first) if newline else None
    if match is None:
        raise Malformed(f"the body must start with 'old <size>' and a newline, got {first[:40]!r}")
    old_size = int(match.group(1))
    if old_size > MAX_STORED_SIZE:
        raise Malformed(f"old size {old_size} out of range")
    # 2. The proof lines, up to the empty line.
    proof: list[bytes] = []
    while True:
        line, newline, rest = rest.partition("\n")
        if not newline:
            raise Malformed("no empty line between the consistency proof and the checkpoint")
        if not line:
            break
        if len(proof) == MAX_PROOF_LINES:
            raise Malformed(f"more than {MAX_PROOF_LINES} consistency proof lines")
        node = _b64decode_hash(line)
        if node is None:
            raise Malformed(
                f"consistency proof line {len(proof)} is not a base64 hash: {line[:60]!r}"
            )
        proof.append(node)
    # 3. The rest is the signed checkpoint.
    if not rest:
        raise Malformed("no checkpoint after the empty line")
    return old_size, proof, rest


def format_add_checkpoint(old_size: int, proof: Sequence[bytes], note_text: str) -> str:
    """Return the ``add-checkpoint`` request body (the client side of :func:`parse_add_checkpoint`)."""
    if not _DECIMAL.fullmatch(str(old_size)):
        raise ValueError(f"old size {old_size!r} is not a non-negative integer")
    lines = [f"old {old_size}\n"]
    lines += [base64.b64encode(node).decode("ascii") + "\n" for node in proof]
    return "".join(lines) + "\n" + note_text


def _test_pause(stage: str) -> None:
    """The crash-test hook (see TEST_PAUSE_ENV): sleep if the variable of ``stage`` is set."""
    variable = TEST_PAUSE_ENV.format(stage=stage)
    value = os.environ.get(variable)
    if not value:
        return
    seconds = float(value)
    print(f"witness: {variable}: pausing {seconds} s", file=sys.stderr, flush=True)
    time.sleep(seconds)


def _b64(raw: bytes) -> str:
    """Standard base64 of ``raw``."""
    return base64.b64encode(raw).decode("ascii")


def _b64decode_hash(text: str) -> bytes | None:
    """Decode canonical padded base64 of a 32-byte hash; None if it is not one."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None
    if len(raw) != HASH_SIZE or _b64(raw) != text:
        return None
    return raw
