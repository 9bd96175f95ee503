"""chain.checkpoint: the C2SP tlog-checkpoint body, its extension lines and the hash chain.

The real checkpoint of sum.golang.org and its verifier key come from
transparency-dev/formats ``log/note_test.go`` (TestSumDBNoteParsing).
"""

import base64
import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.checkpoint import (
    MAX_SIZE,
    NO_PREVIOUS,
    Checkpoint,
    checkpoint_hash,
    hash_extension,
    open_checkpoint,
    parse_time,
    prev_extension,
    sign_checkpoint,
    time_extension,
)
from chain.hasher import EMPTY_ROOT, hash_leaf
from chain.note import Signer, Verifier, open_note, sign_note
from chain.proof import InMemoryTree
from chain.verify import VerificationError, verify_consistency
from tests.unit.chain.test_note import SUMDB_NOTE, SUMDB_VKEY  # sum.golang.org's note

ROOT = bytes(range(32))
ROOT64 = base64.b64encode(ROOT).decode()  # AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
LOG_SKEY = "PRIVATE+KEY+Log+2271c621+AdEIq9FLRQni54Wg68T96VJO+iayOaulswav2DUMKgvQ"
OTHER_SKEY = "PRIVATE+KEY+Known+451c786d+AQPRoE2+Z+Ed1HaHBA9F/FfracvcZ2rDU39kCecMEoci"


# --- Marshal / unmarshal --------------------------------------------------------


def test_marshals_to_the_c2sp_lines() -> None:
    checkpoint = Checkpoint("example.com/log", 123, ROOT)
    assert checkpoint.marshal() == f"example.com/log\n123\n{ROOT64}\n"


def test_round_trips_with_extension_lines() -> None:
    when = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    index_root = hashlib.sha256(b"index").digest()
    checkpoint = Checkpoint(
        "example.com/log",
        42,
        ROOT,
        (time_extension(when), prev_extension(NO_PREVIOUS), hash_extension("index", index_root)),
    )
    text = checkpoint.marshal()
    assert text == (
        f"example.com/log\n42\n{ROOT64}\n"
        "time 2025-03-04T05:06:07Z\n"
        "prev 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
        f"index {base64.b64encode(index_root).decode()}\n"
    )
    parsed = Checkpoint.unmarshal(text)
    assert parsed == checkpoint
    assert parsed.time == when
    assert parsed.prev == NO_PREVIOUS
    assert parsed.extension_hash("index") == index_root
    assert parsed.extension("missing") is None


def test_an_unknown_extension_line_survives_a_round_trip() -> None:
    text = f"Moon Log\n4027504\n{ROOT64}\nphase Waxing gibbous\n"
    checkpoint = Checkpoint.unmarshal(text)
    assert checkpoint.extensions == ("phase Waxing gibbous",)
    assert checkpoint.extension("phase") == "Waxing gibbous"
    assert checkpoint.marshal() == text


# Any UTF-8 text without control characters (0x7f and above are allowed).
LINE_TEXT = st.text(st.characters(min_codepoint=0x20, codec="utf-8"), min_size=1)


@given(
    origin=LINE_TEXT,
    size=st.integers(0, MAX_SIZE),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(LINE_TEXT, max_size=3),
)
def test_every_valid_checkpoint_round_trips(
    origin: str, size: int, root: bytes, extensions: list[str]
) -> None:
    checkpoint = Checkpoint(origin, size, root, tuple(extensions))
    assert Checkpoint.unmarshal(checkpoint.marshal()) == checkpoint


@pytest.mark.parametrize(
    ("desc", "text", "want_err"),
    [
        ("valid", f"Log\n123\n{ROOT64}\n", False),
        ("valid, empty tree", f"Log\n0\n{base64.b64encode(EMPTY_ROOT).decode()}\n", False),
        ("valid, largest size", f"Log\n{MAX_SIZE}\n{ROOT64}\n", False),
        ("valid, spaces in origin", f"go.sum database tree\n1\n{ROOT64}\n", False),
        ("valid, extensions", f"Log\n1\n{ROOT64}\nlots\nof\nlines\n", False),
        ("too few lines", "Log\n9944\n", True),
        ("no final newline", f"Log\n123\n{ROOT64}", True),
        ("empty", "", True),
        ("empty origin", f"\n123\n{ROOT64}\n", True),
        ("size not a number", f"Log\nbananas\n{ROOT64}\n", True),
        ("size empty", f"Log\n\n{ROOT64}\n", True),
        ("size negative", f"Log\n-34\n{ROOT64}\n", True),
        ("size with plus sign", f"Log\n+34\n{ROOT64}\n", True),
        ("size with leading zero", f"Log\n034\n{ROOT64}\n", True),
        ("size zero padded", f"Log\n00\n{ROOT64}\n", True),
        ("size with spaces", f"Log\n 34\n{ROOT64}\n", True),
        ("size with underscore", f"Log\n1_000\n{ROOT64}\n", True),
        ("size in other digits", f"Log\n\u0663\u0664\n{ROOT64}\n", True),
        ("size too large", f"Log\n{MAX_SIZE + 1}\n{ROOT64}\n", True),
        ("root not base64", "Log\n123\nThisIsn'tBase64\n", True),
        ("root too short", f"Log\n123\n{base64.b64encode(b'bananas').decode()}\n", True),
        ("root too long", f"Log\n123\n{base64.b64encode(bytes(33)).decode()}\n", True),
        ("root unpadded", f"Log\n123\n{ROOT64.rstrip('=')}\n", True),
        ("root non-canonical bits", f"Log\n123\n{ROOT64[:-2]}9=\n", True),  # 8 -> 9.
        (
            "root url-safe base64",
            f"Log\n123\n{base64.urlsafe_b64encode(bytes([251] * 32)).decode()}\n",
            True,
        ),
        ("empty extension line", f"Log\n123\n{ROOT64}\n\n", True),
        ("empty line between extensions", f"Log\n123\n{ROOT64}\na\n\nb\n", True),
        ("control character in origin", f"Lo\tg\n123\n{ROOT64}\n", True),
        ("carriage return", f"Log\r\n123\n{ROOT64}\n", True),
    ],
)
def test_unmarshal_is_strict(desc: str, text: str, want_err: bool) -> None:
    if want_err:
        with pytest.raises(VerificationError):
            Checkpoint.unmarshal(text)
    else:
        assert Checkpoint.unmarshal(text).marshal() == text


@pytest.mark.parametrize(
    ("desc", "fields"),
    [
        ("empty origin", ("", 1, ROOT, ())),
        ("newline in origin", ("a\nb", 1, ROOT, ())),
        ("negative size", ("Log", -1, ROOT, ())),
        ("size too large", ("Log", MAX_SIZE + 1, ROOT, ())),
        ("bool size", ("Log", True, ROOT, ())),
        ("short root", ("Log", 1, ROOT[:31], ())),
        ("empty extension", ("Log", 1, ROOT, ("",))),
        ("newline in extension", ("Log", 1, ROOT, ("a\nb",))),
    ],
)
def test_refuses_invalid_fields(desc: str, fields: tuple[str, int, bytes, tuple[str, ...]]) -> None:
    with pytest.raises(ValueError):
        Checkpoint(*fields)


# --- Extension helpers -----------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "line"),
    [
        (datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), "time 2025-01-02T03:04:05Z"),
        (datetime(2025, 1, 2, 3, 4, 5, 120000, tzinfo=UTC), "time 2025-01-02T03:04:05.120000Z"),
        (
            datetime(2025, 1, 2, 11, 4, 5, tzinfo=timezone(timedelta(hours=8))),
            "time 2025-01-02T03:04:05Z",
        ),
    ],
)
def test_time_extension_is_rfc3339_utc(when: datetime, line: str) -> None:
    assert time_extension(when) == line
    assert parse_time(line.removeprefix("time ")) == when


def test_time_extension_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError):
        time_extension(datetime(2025, 1, 2))


@pytest.mark.parametrize(
    "value",
    [
        "2025-01-02T03:04:05+00:00",
        "2025-01-02 03:04:05Z",
        "2025-01-02T03:04:05z",
        "2025-13-02T03:04:05Z",
        "2025-01-02T03:04:05.1234567Z",
        "yesterday",
    ],
)
def test_refuses_malformed_times(value: str) -> None:
    checkpoint = Checkpoint("Log", 1, ROOT, (f"time {value}",))
    with pytest.raises(VerificationError):
        _ = checkpoint.time


@pytest.mark.parametrize(
    "value", ["", "AAAA", ROOT64.rstrip("="), base64.b64encode(bytes(31)).decode(), "!" * 44]
)
def test_refuses_malformed_prev_hashes(value: str) -> None:
    checkpoint = Checkpoint("Log", 1, ROOT, (f"prev {value}" if value else "prev ",))
    with pytest.raises(VerificationError):
        _ = checkpoint.prev


def test_refuses_a_repeated_extension_keyword() -> None:
    line = prev_extension(NO_PREVIOUS)
    with pytest.raises(VerificationError, match="2 'prev' extension lines"):
        _ = Checkpoint("Log", 1, ROOT, (line, line)).prev


def test_absent_extensions_are_none() -> None:
    checkpoint = Checkpoint("Log", 1, ROOT)
    assert checkpoint.time is None and checkpoint.prev is None


@pytest.mark.parametrize(
    ("keyword", "digest"), [("Index", ROOT), ("a b", ROOT), ("index", ROOT[:8])]
)
def test_hash_extension_refuses_bad_input(keyword: str, digest: bytes) -> None:
    with pytest.raises(ValueError):
        hash_extension(keyword, digest)


def test_no_previous_is_the_hash_of_the_empty_text() -> None:
    assert NO_PREVIOUS == checkpoint_hash("") == hashlib.sha256(b"").digest()


# --- Signed checkpoints, the hash chain and consistency -------------------------------


def test_opens_a_real_sum_golang_org_checkpoint() -> None:
    checkpoint, sigs = open_checkpoint(
        SUMDB_NOTE, [Verifier.from_vkey(SUMDB_VKEY)], "go.sum database tree"
    )
    assert checkpoint.size == 6476701
    assert (
        base64.b64encode(checkpoint.root).decode() == "mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk="
    )
    assert checkpoint.extensions == ()
    assert [s.name for s in sigs] == ["sum.golang.org"]


def test_refuses_the_wrong_origin() -> None:
    with pytest.raises(VerificationError, match="origin"):
        open_checkpoint(SUMDB_NOTE, [Verifier.from_vkey(SUMDB_VKEY)], "Go rocks")


def test_checks_the_signature_before_the_body() -> None:
    log = Signer.from_key(LOG_SKEY)
    stranger = Signer.from_key(OTHER_SKEY)
    # A body that is no checkpoint, signed by an unknown key: the signature fails first.
    with pytest.raises(VerificationError, match="no verifiable signatures"):
        open_checkpoint(sign_note("not a checkpoint\n", [stranger]), [log.verifier()], "Log")
    # Signed by the log, the body is parsed and refused.
    with pytest.raises(VerificationError, match="at least 3"):
        open_checkpoint(sign_note("not a checkpoint\n", [log]), [log.verifier()], "Log")


def test_checkpoints_chain_by_hash_and_grow_consistently() -> None:
    log = Signer.from_key(LOG_SKEY)
    tree = InMemoryTree(hash_leaf(bytes([i])) for i in range(5))
    when = datetime(2025, 1, 1, tzinfo=UTC)
    first = sign_checkpoint(
        Checkpoint(
            "Log", tree.size, tree.root(), (time_extension(when), prev_extension(NO_PREVIOUS))
        ),
        [log],
    )
    for i in range(5, 13):
        tree.append(hash_leaf(bytes([i])))
    second = sign_checkpoint(
        Checkpoint(
            "Log",
            tree.size,
            tree.root(),
            (time_extension(when + timedelta(seconds=30)), prev_extension(checkpoint_hash(first))),
        ),
        [log],
    )
    # A verifier holding `first` checks `second`: signature, chain link, then the roots.
    old, _ = open_checkpoint(first, [log.verifier()], "Log")
    new, _ = open_checkpoint(second, [log.verifier()], "Log")
    assert new.prev == checkpoint_hash(first)
    verify_consistency(old.size, new.size, tree.consistency_proof(old.size), old.root, new.root)
    # Any change to the first signed note breaks the link.
    assert checkpoint_hash(first.replace("Log\n5", "Log\n6")) != new.prev
    assert open_note(second, [log.verifier()])[0] == new.marshal()
