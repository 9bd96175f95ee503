"""Checkpoints (C2SP tlog-checkpoint): the signed head of the log.

Like transparency-dev/formats ``log/checkpoint.go``, a :class:`Checkpoint` is
plain data with :meth:`Checkpoint.marshal` / :meth:`Checkpoint.unmarshal`;
the signatures live in the signed note around it (:mod:`chain.note`). The
body is, each line ending in a newline::

    <origin>
    <tree size, decimal, no leading zeros>
    <base64 root hash>
    <extension lines, optional, each non-empty>

dataledger writes two extension lines: ``time <RFC 3339 UTC>`` (when the
checkpoint was cut) and ``prev <base64 hash>`` (:func:`checkpoint_hash` of
the previous checkpoint's full signed note, or NO_PREVIOUS for the first),
so checkpoints form a hash chain. Further committed roots are extra lines
of the same ``<keyword> <value>`` shape (see :func:`hash_extension`).

To read a checkpoint, verify the note's signature first and only then parse
the body (:func:`open_checkpoint`); then check its root with
:func:`chain.verify.verify_consistency`.
"""

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from chain.hasher import HASH_SIZE
from chain.note import NoteSignature, NoteSigner, NoteVerifier, open_note, sign_note
from chain.verify import VerificationError

MAX_SIZE: Final = 2**64 - 1
"""Largest tree size (uint64, as in the reference)."""

TIME: Final = "time"
"""Keyword of the extension line carrying the time the checkpoint was cut."""

PREV: Final = "prev"
"""Keyword of the extension line carrying the hash of the previous signed checkpoint."""

INDEX: Final = "index"
"""Keyword of the extension line carrying the per-actor index's root (docs/INDEX.md)."""

NO_PREVIOUS: Final = hashlib.sha256(b"").digest()
"""The ``prev`` of the first checkpoint: :func:`checkpoint_hash` of the empty text."""

_SIZE = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z", re.ASCII)
_KEYWORD = re.compile(r"[a-z][a-z0-9_-]*", re.ASCII)


@dataclass(frozen=True)
class Checkpoint:
    """A log checkpoint: origin, tree size, root hash and extension lines.

    Requires a non-empty origin, 0 <= size <= MAX_SIZE, a 32-byte root, and
    extension lines that are non-empty; no field may hold a newline or
    another control character. Raises ValueError otherwise.
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Check the fields; raise ValueError naming the first bad one."""
        problem = _problem(self.origin, self.size, self.root, self.extensions)
        if problem is not None:
            raise ValueError(problem)

    def marshal(self) -> str:
        """Return the checkpoint body: one line per field, each ending in a newline."""
        root = base64.b64encode(self.root).decode("ascii")
        return "".join(
            f"{line}\n" for line in (self.origin, str(self.size), root, *self.extensions)
        )

    @classmethod
    def unmarshal(cls, text: str) -> "Checkpoint":
        """Parse a checkpoint body strictly.

        Raises VerificationError if ``text`` does not end in a newline, has
        fewer than three lines, an empty origin, a size that is not canonical
        decimal (no sign, no leading zeros) or exceeds MAX_SIZE, a root that
        is not canonical base64 of 32 bytes, an empty extension line, or a
        control character.
        """
        if not text.endswith("\n"):
            raise VerificationError("checkpoint must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise VerificationError(f"checkpoint has {len(lines)} lines, want at least 3")
        origin, size_text, root_text, *extensions = lines
        if not _SIZE.fullmatch(size_text):
            raise VerificationError(f"checkpoint size {size_text!r} is not canonical decimal")
        root = _b64decode_canonical(root_text)
        if root is None:
            raise VerificationError(f"checkpoint root {root_text!r} is not canonical base64")
        size = int(size_text)
        problem = _problem(origin, size, root, tuple(extensions))
        if problem is not None:
            raise VerificationError(problem)
        return cls(origin, size, root, tuple(extensions))

    def extension(self, keyword: str) -> str | None:
        """Return the value of the extension line ``<keyword> <value>``, or None if absent.

        Raises VerificationError if the keyword appears on more than one line.
        """
        prefix = keyword + " "
        values = [line[len(prefix) :] for line in self.extensions if line.startswith(prefix)]
        if len(values) > 1:
            raise VerificationError(f"checkpoint has {len(values)} {keyword!r} extension lines")
        return values[0] if values else None

    @property
    def time(self) -> datetime | None:
        """The time of the ``time`` extension line (UTC), or None if there is none.

        Raises VerificationError if it is not RFC 3339 UTC (``...Z``).
        """
        value = self.extension(TIME)
        return None if value is None else parse_time(value)

    @property
    def prev(self) -> bytes | None:
        """The hash of the ``prev`` extension line, or None if there is none.

        Raises VerificationError if it is not canonical base64 of 32 bytes.
        """
        return self.extension_hash(PREV)

    def extension_hash(self, keyword: str) -> bytes | None:
        """Return the 32-byte hash of the extension line ``<keyword> <base64>``, or None.

        Raises VerificationError if the value is not canonical base64 of 32 bytes.
        """
        value = self.extension(keyword)
        if value is None:
            return None
        digest = _b64decode_canonical(value)
        if digest is None or len(digest) != HASH_SIZE:
            raise VerificationError(f"checkpoint {keyword!r} {value!r} is not a base64 hash")
        return digest


def time_extension(when: datetime) -> str:
    """Return the extension line ``time <RFC 3339 UTC>`` for the aware datetime ``when``.

    Seconds precision, with microseconds only when they are not zero.
    """
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("checkpoint time must be timezone-aware")
    utc = when.astimezone(UTC)
    spec = "seconds" if utc.microsecond == 0 else "microseconds"
    return f"{TIME} {utc.replace(tzinfo=None).isoformat(timespec=spec)}Z"


def parse_time(value: str) -> datetime:
    """Parse ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` into an aware UTC datetime.

    Raises VerificationError if it is not that form or not a real date and time.
    """
    if not _TIME.fullmatch(value):
        raise VerificationError(f"checkpoint time {value!r} is not RFC 3339 UTC")
    try:
        return datetime.fromisoformat(value[:-1]).replace(tzinfo=UTC)
    except ValueError as exc:
        raise VerificationError(f"checkpoint time {value!r} is not a valid time: {exc}") from exc


def prev_extension(previous: bytes) -> str:
    """Return ``prev <base64>`` for the hash of the previous signed checkpoint (or NO_PREVIOUS)."""
    return hash_extension(PREV, previous)


def ledger_extensions(when: datetime, previous: bytes,
                      index_root: bytes | None = None) -> tuple[str, ...]:
    """The extension lines dataledger writes, in order: ``time``, ``prev`` and, when the log
    keeps the per-actor index, ``index``."""
    lines = [time_extension(when), prev_extension(previous)]
    if index_root is not None:
        lines.append(hash_extension(INDEX, index_root))
    return tuple(lines)


def hash_extension(keyword: str, digest: bytes) -> str:
    """Return the extension line ``<keyword> <base64 digest>`` for a 32-byte hash.

    The shape of every committed root or hash carried in a checkpoint
    (``prev``, and later e.g. ``index``). Requires a lower-case keyword.
    """
    if not _KEYWORD.fullmatch(keyword):
        raise ValueError(f"invalid extension keyword {keyword!r}")
    if len(digest) != HASH_SIZE:
        raise ValueError(f"{keyword} hash must be {HASH_SIZE} bytes, got {len(digest)}")
    return f"{keyword} {base64.b64encode(digest).decode('ascii')}"


def checkpoint_hash(signed_note_text: str) -> bytes:
    """Return SHA-256 of the full signed note text (UTF-8): what the next ``prev`` holds."""
    return hashlib.sha256(signed_note_text.encode("utf-8")).digest()


def sign_checkpoint(checkpoint: Checkpoint, signers: Sequence[NoteSigner]) -> str:
    """Return the signed note of ``checkpoint`` (see :func:`chain.note.sign_note`)."""
    return sign_note(checkpoint.marshal(), signers)


def open_checkpoint(
    text: str, verifiers: Sequence[NoteVerifier], origin: str
) -> tuple[Checkpoint, list[NoteSignature]]:
    """Verify a signed checkpoint, then parse it; return it with its verified signatures.

    Raises VerificationError if no known key signed it (see
    :func:`chain.note.open_note`), if the body is not a checkpoint, or if
    its origin is not ``origin``.
    """
    # 1. The signature first: an unverified body is never parsed.
    body, signatures = open_note(text, verifiers)
    # 2. Then the body, and whose log it is.
    checkpoint = Checkpoint.unmarshal(body)
    if checkpoint.origin != origin:
        raise VerificationError(f"checkpoint origin {checkpoint.origin!r}, want {origin!r}")
    return checkpoint, signatures


def _problem(origin: str, size: int, root: bytes, extensions: tuple[str, ...]) -> str | None:
    """Return what is wrong with these checkpoint fields, or None if nothing is."""
    if not origin:
        return "checkpoint origin is empty"
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
        return f"checkpoint size {size!r} is not in [0, 2**64)"
    if not isinstance(root, bytes) or len(root) != HASH_SIZE:
        got = len(root) if isinstance(root, bytes) else type(root).__name__
        return f"checkpoint root must be {HASH_SIZE} bytes, got {got}"
    for i, line in enumerate(extensions):
        if not isinstance(line, str) or not line:
            return f"checkpoint extension line {i} is empty"
    for what, text in (
        ("origin", origin),
        *((f"extension line {i}", e) for i, e in enumerate(extensions)),
    ):
        if _bad_chars(text):
            return f"checkpoint {what} {text!r} has a newline or control character"
    return None


def _bad_chars(text: str) -> bool:
    """Return whether ``text`` has a control character (newline included) or is not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return any(c < " " for c in text)


def _b64decode_canonical(text: str) -> bytes | None:
    """Decode standard padded base64 and require it to be the canonical encoding; else None."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None
