"""anchoring.witness: the witness co-signs only consistent growth, and remembers what it signed.

Logs are InMemoryTree instances whose checkpoints are signed by a generated
Ed25519 note key; the witness co-signs with blspy (default_backend), so the
file runs in a couple of seconds.
"""

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from anchoring.witness import (
    MAX_PROOF_LINES,
    BadSignature,
    Malformed,
    OldSizeMismatch,
    ProofFailed,
    RootConflict,
    UnknownOrigin,
    Witness,
    WitnessError,
    format_add_checkpoint,
    parse_add_checkpoint,
)
from anchoring.witness_state import LogState, WitnessState, load_or_create_key
from chain.bls import WitnessKey, trust_witness, verify_cosignature
from chain.checkpoint import Checkpoint, sign_checkpoint
from chain.hasher import EMPTY_ROOT, hash_leaf
from chain.note import Signer, generate_ed25519, open_note, sign_note
from chain.proof import InMemoryTree

ORIGIN = "dataledger.test/log"
OTHER_ORIGIN = "dataledger.test/other"
WITNESS_KEY = WitnessKey.generate("dataledger.test/w1")
LOG = Signer.from_key(generate_ed25519(ORIGIN)[0])
IMPOSTOR = Signer.from_key(generate_ed25519(ORIGIN)[0])  # Same name, another key.
OTHER_LOG = Signer.from_key(generate_ed25519(OTHER_ORIGIN)[0])


def tree(n: int, fork_at: int | None = None) -> InMemoryTree:
    """A log of ``n`` leaves; from leaf ``fork_at`` on, the leaves differ (another history)."""
    return InMemoryTree(
        hash_leaf(f"{'B' if fork_at is not None and i >= fork_at else 'A'}{i}".encode())
        for i in range(n)
    )


def note(
    t: InMemoryTree,
    size: int,
    signer: Signer = LOG,
    origin: str = ORIGIN,
    extensions: tuple[str, ...] = (),
) -> str:
    """The signed checkpoint of ``t`` at ``size``."""
    return sign_checkpoint(Checkpoint(origin, size, t.root(size), extensions), [signer])


def body(note_text: str) -> str:
    """The checkpoint body of a signed note."""
    return note_text[: note_text.index("\n\n") + 1]


@pytest.fixture
def state(tmp_path: Path) -> Iterator[WitnessState]:
    s = WitnessState(tmp_path / "witness.db")
    yield s
    s.close()


@pytest.fixture
def witness(state: WitnessState) -> Witness:
    return Witness(WITNESS_KEY, {ORIGIN: LOG.verifier(), OTHER_ORIGIN: OTHER_LOG.verifier()}, state)


def refuse(
    witness: Witness, error: type[WitnessError], old: int, proof: list[bytes], text: str
) -> WitnessError:
    """Assert the witness refuses the request with ``error`` and its state does not change."""
    before = witness.state.all()
    with pytest.raises(error) as caught:
        witness.add_checkpoint(old, proof, text)
    assert witness.state.all() == before
    return caught.value


def test_happy_path_from_zero_then_growth_with_consistency_proofs(witness: Witness) -> None:
    log = tree(13)
    trusted = trust_witness(witness.published())
    # 1. First contact: from size 0, no proof; the witness trusts the first checkpoint.
    first = note(log, 3)
    line = witness.add_checkpoint(0, [], first)
    assert verify_cosignature(body(first), line, [trusted]).name == WITNESS_KEY.name
    # The co-signature appended to the log's note gives a note both keys verify.
    _, sigs = open_note(first + line, [LOG.verifier(), trusted])
    assert {s.name for s in sigs} == {ORIGIN, WITNESS_KEY.name}
    assert witness.state.get(ORIGIN) == LogState(ORIGIN, 3, log.root(3), first)
    # 2. Growth, each step with its consistency proof.
    for old, new in [(3, 8), (8, 13)]:
        text = note(log, new)
        line = witness.add_checkpoint(old, log.consistency_proof(old, new), text)
        verify_cosignature(body(text), line, [trusted])
        assert witness.state.get(ORIGIN) == LogState(ORIGIN, new, log.root(new), text)
    # 3. The same size and root again (a retry, or a new time line): co-signed, no proof.
    again = note(log, 13, extensions=("time 2026-01-01T00:00:00Z",))
    verify_cosignature(body(again), witness.add_checkpoint(13, [], again), [trusted])
    assert witness.state.get(ORIGIN) == LogState(ORIGIN, 13, log.root(13), again)


def test_logs_are_tracked_separately(witness: Witness) -> None:
    witness.add_checkpoint(0, [], note(tree(4), 4))
    witness.add_checkpoint(0, [], note(tree(2), 2, OTHER_LOG, OTHER_ORIGIN))
    assert [(s.origin, s.size) for s in witness.state.all()] == [(ORIGIN, 4), (OTHER_ORIGIN, 2)]


def test_old_size_mismatch_carries_the_size_the_witness_holds(witness: Witness) -> None:
    log = tree(8)
    witness.add_checkpoint(0, [], note(log, 5))
    error = refuse(witness, OldSizeMismatch, 3, log.consistency_proof(3, 8), note(log, 8))
    assert isinstance(error, OldSizeMismatch) and error.current_size == 5
    # Old size 0 is how a client learns the size.
    error = refuse(witness, OldSizeMismatch, 0, [], note(log, 8))
    assert isinstance(error, OldSizeMismatch) and error.current_size == 5
    # Never co-signed: the size held is 0.
    fresh = refuse(witness, OldSizeMismatch, 2, [], note(tree(2), 2, OTHER_LOG, OTHER_ORIGIN))
    assert isinstance(fresh, OldSizeMismatch) and fresh.current_size == 0


def test_a_rolled_back_checkpoint_is_refused(witness: Witness) -> None:
    log = tree(8)
    witness.add_checkpoint(0, [], note(log, 8))
    # Old size larger than the checkpoint: a bad request (400 in the spec).
    refuse(witness, Malformed, 8, [], note(log, 5))
    # Claiming the smaller size was the last one: not what the witness holds.
    error = refuse(witness, OldSizeMismatch, 5, [], note(log, 5))
    assert isinstance(error, OldSizeMismatch) and error.current_size == 8


def test_same_size_with_another_root_is_refused(witness: Witness) -> None:
    log = tree(8)
    witness.add_checkpoint(0, [], note(log, 8))
    refuse(witness, RootConflict, 8, [], note(tree(8, fork_at=7), 8))
    # Equal sizes take no proof.
    refuse(witness, ProofFailed, 8, [bytes(32)], note(log, 8))


def test_a_bad_consistency_proof_is_refused(witness: Witness) -> None:
    log = tree(13)
    witness.add_checkpoint(0, [], note(log, 5))
    good = log.consistency_proof(5, 13)
    text = note(log, 13)
    for bad in (
        [],
        good[:-1],
        good + [bytes(32)],
        [bytes(32)] + good[1:],
        good[:-1] + [bytes([good[-1][0] ^ 1]) + good[-1][1:]],
        log.consistency_proof(6, 13),
    ):
        refuse(witness, ProofFailed, 5, bad, text)
    # From size 0 the proof must be empty.
    refuse(witness, ProofFailed, 0, [bytes(32)], note(tree(3), 3, OTHER_LOG, OTHER_ORIGIN))
    # Hashes of the wrong length, too many hashes: malformed.
    refuse(witness, Malformed, 5, [b"short"], text)
    refuse(witness, Malformed, 5, [bytes(32)] * (MAX_PROOF_LINES + 1), text)
    witness.add_checkpoint(5, good, text)


def test_unknown_origin_and_wrong_keys_are_refused(witness: Witness) -> None:
    log = tree(3)
    # An origin the witness does not know (404 in the spec; a BadSignature still).
    stranger = Signer.from_key(generate_ed25519("stranger.test/log")[0])
    error = refuse(witness, UnknownOrigin, 0, [], note(log, 3, stranger, "stranger.test/log"))
    assert isinstance(error, BadSignature)
    # The right origin, signed by another key of the same name.
    refuse(witness, BadSignature, 0, [], note(log, 3, IMPOSTOR))
    # Signed by another known log's key.
    refuse(witness, BadSignature, 0, [], note(log, 3, OTHER_LOG))
    # A body changed after signing.
    text = note(log, 3)
    refuse(witness, BadSignature, 0, [], text.replace("\n3\n", "\n2\n", 1))
    # An impostor's line next to a good one is skipped, as the spec requires.
    good = sign_checkpoint(Checkpoint(ORIGIN, 3, log.root(3)), [IMPOSTOR, LOG])
    witness.add_checkpoint(0, [], good)


def test_malformed_notes_and_checkpoints_are_refused(witness: Witness) -> None:
    refuse(witness, Malformed, 0, [], "not a note\n")
    refuse(witness, Malformed, 0, [], note(tree(3), 3) + "trailing\n")
    # Signed by the log, but not a checkpoint body.
    refuse(witness, Malformed, 0, [], sign_note(f"{ORIGIN}\n03\nroot\n", [LOG]))


def test_size_zero_checkpoints_carry_the_empty_root(witness: Witness) -> None:
    empty = sign_checkpoint(Checkpoint(ORIGIN, 0, EMPTY_ROOT), [LOG])
    witness.add_checkpoint(0, [], empty)
    assert witness.state.get(ORIGIN) == LogState(ORIGIN, 0, EMPTY_ROOT, empty)
    refuse(witness, ProofFailed, 0, [], sign_checkpoint(Checkpoint(ORIGIN, 0, bytes(32)), [LOG]))
    witness.add_checkpoint(0, [], note(tree(2), 2))


def test_split_view_two_logs_sharing_a_prefix_get_one_cosignature(witness: Witness) -> None:
    log_a = tree(9)
    log_b = tree(9, fork_at=5)  # The same first 5 leaves, then another history.
    assert log_a.root(5) == log_b.root(5) and log_a.root(8) != log_b.root(8)
    # The witness follows the shared prefix, then log A.
    witness.add_checkpoint(0, [], note(log_a, 5))
    witness.add_checkpoint(5, log_a.consistency_proof(5, 8), note(log_a, 8))
    signed_a = witness.state.get(ORIGIN)
    assert signed_a == LogState(ORIGIN, 8, log_a.root(8), note(log_a, 8))
    # Log B at size 8: from 5 with B's valid proof, the old size is stale ...
    refuse(witness, OldSizeMismatch, 5, log_b.consistency_proof(5, 8), note(log_b, 8))
    # ... from 8, the same size with another root.
    refuse(witness, RootConflict, 8, [], note(log_b, 8))
    # Log B at size 9: with a valid consistency proof of B from 5, the old size is stale ...
    refuse(witness, OldSizeMismatch, 5, log_b.consistency_proof(5, 9), note(log_b, 9))
    # ... and from 8 no proof links A's root at 8 to B's root at 9.
    refuse(witness, ProofFailed, 8, log_b.consistency_proof(8, 9), note(log_b, 9))
    refuse(witness, ProofFailed, 8, log_a.consistency_proof(8, 9), note(log_b, 9))
    assert witness.state.get(ORIGIN) == signed_a
    # Log A still grows.
    witness.add_checkpoint(8, log_a.consistency_proof(8, 9), note(log_a, 9))


def test_concurrent_requests_from_the_same_size_get_one_cosignature(tmp_path: Path) -> None:
    """Two witnesses (two connections) on one state file: the check-and-persist is atomic."""
    log_a, log_b = tree(8), tree(8, fork_at=5)
    states = [WitnessState(tmp_path / "w.db") for _ in range(2)]
    witnesses = [Witness(WITNESS_KEY, {ORIGIN: LOG.verifier()}, s) for s in states]
    witnesses[0].add_checkpoint(0, [], note(log_a, 5))
    results: list[object] = []
    barrier = threading.Barrier(2)

    def submit(w: Witness, log: InMemoryTree) -> None:
        barrier.wait(timeout=10)
        try:
            results.append(w.add_checkpoint(5, log.consistency_proof(5, 8), note(log, 8)))
        except WitnessError as exc:
            results.append(exc)

    threads = [
        threading.Thread(target=submit, args=(w, log))
        for w, log in zip(witnesses, [log_a, log_b], strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert len(results) == 2
    assert sum(isinstance(r, str) for r in results) == 1
    refused = [r for r in results if isinstance(r, OldSizeMismatch)]
    assert len(refused) == 1 and refused[0].current_size == 8
    stored = states[0].get(ORIGIN)
    assert stored is not None and stored.root in (log_a.root(8), log_b.root(8))
    for s in states:
        s.close()


def test_state_is_durable_and_fsynced(tmp_path: Path) -> None:
    log = tree(5)
    state = WitnessState(tmp_path / "sub" / "witness.db")
    assert state.synchronous == 2  # FULL
    Witness(WITNESS_KEY, {ORIGIN: LOG.verifier()}, state).add_checkpoint(0, [], note(log, 5))
    state.close()
    reopened = WitnessState(tmp_path / "sub" / "witness.db")
    assert reopened.get(ORIGIN) == LogState(ORIGIN, 5, log.root(5), note(log, 5))
    again = Witness(WITNESS_KEY, {ORIGIN: LOG.verifier()}, reopened)
    error = refuse(again, OldSizeMismatch, 0, [], note(log, 5))
    assert isinstance(error, OldSizeMismatch) and error.current_size == 5
    reopened.close()


def test_request_body_round_trip() -> None:
    log = tree(13)
    proof = log.consistency_proof(5, 13)
    text = note(log, 13)
    request = format_add_checkpoint(5, proof, text)
    assert request.startswith("old 5\n") and request.count("\n\n") == 2
    assert parse_add_checkpoint(request) == (5, proof, text)
    assert parse_add_checkpoint(format_add_checkpoint(0, [], text)) == (0, [], text)


@pytest.mark.parametrize(
    "request_body",
    [
        "",
        "old 5",
        "old 05\n\nx\n",
        "old -1\n\nx\n",
        "old +1\n\nx\n",
        "Old 1\n\nx\n",
        "old  1\n\nx\n",
        "old 1\r\n\nx\n",
        "old 99999999999999999999\n\nx\n",
        "old 1\n",
        "old 1\nAAAA\n\nx\n",
        "old 1\n" + "A" * 43 + "=\n",
        "old 1\n" + "A" * 43 + "\n\nx\n",
        "old 1\n" + "A" * 43 + "=\r\n\nx\n",
        "old 1\n" + ("A" * 43 + "=\n") * (MAX_PROOF_LINES + 1) + "\nx\n",
        "old 1\n\n",
    ],
)
def test_malformed_request_bodies(request_body: str) -> None:
    with pytest.raises(Malformed):
        parse_add_checkpoint(request_body)


def test_sixty_three_proof_lines_parse() -> None:
    lines = ("A" * 43 + "=\n") * MAX_PROOF_LINES
    old, proof, rest = parse_add_checkpoint("old 1\n" + lines + "\nx\n")
    assert (old, len(proof), rest) == (1, MAX_PROOF_LINES, "x\n")


def test_key_file_is_created_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "witness.key"
    key = load_or_create_key(path, "dataledger.test/w9")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == key.secret_key and len(key.secret_key) == 32
    again = load_or_create_key(path, "dataledger.test/w9")
    assert again.public_key == key.public_key and again.key_id == key.key_id
    assert [p.name for p in path.parent.iterdir()] == ["witness.key"]  # No temp file left.
    trust_witness(again.published())


def test_key_file_refuses_bad_length_and_open_modes(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 31)
    os.chmod(short, 0o600)
    with pytest.raises(ValueError, match="31 bytes"):
        load_or_create_key(short, "w")
    shared = tmp_path / "shared.key"
    shared.write_bytes(WITNESS_KEY.secret_key)
    os.chmod(shared, 0o644)
    with pytest.raises(ValueError, match="0644"):
        load_or_create_key(shared, "w")
