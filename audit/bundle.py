"""The bundle: the whole log as a directory a regulator takes home (``dataledger export``,
``GET /ledger/export`` as a tar of the same files).

Layout (``dataledger-bundle/1``):

- ``events/NNNNNNNN.jsonl`` (numbered from ``00000001``): one stored event per line, each line
  exactly its canonical bytes (:meth:`core.record.LogEntry.canonical`; canonical JSON holds no
  raw newline), in seq order, at most ``MAX_EVENTS_PER_FILE`` events and ``MAX_FILE_BYTES``
  bytes per file.
- ``leaves/NNNNNNNN.bin`` (optional, one per events file, same number): the leaf hashes the
  log's tree stored for the seqs of events file N, from its first seq on, 32 bytes each in
  seq order (``count`` of them, seqs ``first_seq`` to ``last_seq``; fewer, or none, where the
  tree holds fewer). Not trusted: the replay compares each leaf it hashes from an event with
  the stored one, to name the very event that changed (step 2); where the stored leaves were
  changed too, the checkpoints' roots still catch it, naming the span of seqs.
- ``keys.jsonl``: the canonical lines of every ``participant.key_registered`` and
  ``participant.key_revoked`` event, a convenience copy (checked against ``events/`` on read).
- ``checkpoints.jsonl``: one canonical JSON object per line, in size order, with exactly the
  fields of ``GET /ledger/checkpoints/{size}``: size, note, cosigned, signers, aggregate
  (base64 or null), anchored, cut_at.
- ``trust.json``: the trust document (``GET /ledger/witnesses``, :mod:`chain.trust`).
  Informational only: a verifier trusts its own copy taken out of band, never this one.
  Left out (and the manifest's ``notes`` say why) where the exporter could not read the log's
  key without making one.
- ``manifest.json``: format, origin, ``tree_size`` (the size of the newest checkpoint in the
  bundle, 0 without one), the counts of events and checkpoints, ``created_at``, and each other
  file with its SHA-256, length, line count and first and last seq (null where lines have none).
  Optionally ``scope`` (``"anchored"``: the events up to the newest anchored checkpoint, the
  export's default; ``"all"``: every stored event), ``log_events`` (the events the log held
  when exported) and ``notes`` (plain sentences: what was left out, and why).

The manifest's hashes catch a damaged or truncated copy, not a dishonest operator (who could
rewrite them too): that is the checkpoints' and witnesses' job, checked by the replay.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from core.canonical import canonical_bytes
from core.record import LogEntry, RecordError

FORMAT = "dataledger-bundle/1"
MANIFEST, KEYS, CHECKPOINTS, TRUST = "manifest.json", "keys.jsonl", "checkpoints.jsonl", "trust.json"
EVENTS_DIR, LEAVES_DIR = "events", "leaves"
MAX_EVENTS_PER_FILE = 100_000
MAX_FILE_BYTES = 64 * 2**20
#: the events whose lines ``keys.jsonl`` copies: the members' public keys as the log holds them
KEY_EVENTS = frozenset({"participant.key_registered", "participant.key_revoked"})
CHECKPOINT_FIELDS = ("size", "note", "cosigned", "signers", "aggregate", "anchored", "cut_at")
_EVENT_FILE = re.compile(r"events/(\d{8})\.jsonl")
_LEAF_FILE = re.compile(r"leaves/(\d{8})\.bin")
_MANIFEST_KEYS = {"format", "origin", "tree_size", "events", "checkpoints", "created_at",
                  "files"}
#: the manifest's optional keys, and their types
_OPTIONAL_KEYS: dict[str, type] = {"scope": str, "log_events": int, "notes": list}
HASH_SIZE = 32
_FILE_KEYS = {"path", "sha256", "bytes", "count", "first_seq", "last_seq"}

Opener = Callable[[str], IO[bytes]]
"""Opens a new file of the bundle, by its path inside it, for writing."""
StoredLeaves = Callable[[int, int], bytes]
"""The leaf hashes the log's tree stored for seqs ``first`` to ``last``, concatenated (32
bytes each, in seq order; shorter where the tree holds fewer)."""


class BundleError(ValueError):
    """A bundle that is not as its manifest says; ``path`` names the file, ``reason`` why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def event_file(number: int) -> str:
    """The path inside the bundle of events file ``number`` (from 1)."""
    return f"{EVENTS_DIR}/{number:08d}.jsonl"


def leaf_file(number: int) -> str:
    """The path inside the bundle of the leaves file going with events file ``number``."""
    return f"{LEAVES_DIR}/{number:08d}.bin"


def note_origin(note: str) -> str:
    """The origin line of a checkpoint's note (its first line), unverified."""
    return note.split("\n", 1)[0]


def checkpoint_record(cp: Any) -> dict[str, Any]:
    """A checkpoint (a stored one, or its JSON view) as a line of ``checkpoints.jsonl``:
    exactly the fields of ``GET /ledger/checkpoints/{size}``, the aggregate in base64."""
    get = cp.get if isinstance(cp, Mapping) else (lambda name: getattr(cp, name))
    record = {name: get(name) for name in CHECKPOINT_FIELDS}
    if isinstance(record["aggregate"], bytes | bytearray):
        record["aggregate"] = base64.b64encode(record["aggregate"]).decode("ascii")
    record["signers"] = list(record["signers"])
    return record


@dataclass
class _File:
    """One file being written: its handle and what the manifest will say of it."""

    path: str
    handle: IO[bytes]
    digest: Any = field(default_factory=hashlib.sha256)
    size: int = 0
    count: int = 0
    first_seq: int | None = None
    last_seq: int | None = None

    def line(self, data: bytes, seq: int | None = None) -> None:
        data += b"\n"
        self.handle.write(data)
        self.digest.update(data)
        self.size += len(data)
        self.count += 1
        if seq is not None:
            self.first_seq = seq if self.first_seq is None else self.first_seq
            self.last_seq = seq

    def hashes(self, data: bytes, first_seq: int) -> None:
        """Write ``data``, leaf hashes of the seqs from ``first_seq`` on (no newlines)."""
        self.handle.write(data)
        self.digest.update(data)
        self.size = len(data)
        self.count = len(data) // HASH_SIZE
        if self.count:
            self.first_seq, self.last_seq = first_seq, first_seq + self.count - 1

    def entry(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.digest.hexdigest(), "bytes": self.size,
                "count": self.count, "first_seq": self.first_seq, "last_seq": self.last_seq}


@dataclass(frozen=True)
class Written:
    """A file of the bundle, complete: its path inside the bundle and its still open handle
    (flushed), which the caller closes."""

    path: str
    handle: IO[bytes]
    size: int


class BundleWriter:
    """Writes a bundle file by file through ``opener``; ``files`` yields each as it is done,
    the manifest last, so a caller can stream them (a tar) or keep them (a directory).

    The entries and checkpoints are read lazily, once, in the order written: the events
    first, so a caller that bounds the events to a snapshot may read the checkpoints after.
    """

    def __init__(self, opener: Opener) -> None:
        self._open = opener
        self.manifest: dict[str, Any] | None = None

    def files(self, entries: Iterable[LogEntry | bytes], checkpoints: Iterable[Any],
              trust_doc: Mapping[str, Any] | None, *, leaves: StoredLeaves | None = None,
              about: Mapping[str, Any] | None = None) -> Iterator[Written]:
        """The bundle's files, each yielded once complete; then ``self.manifest`` is set.

        ``leaves`` gives the tree's stored leaf hashes (a ``leaves/`` file beside each
        events file); ``trust_doc`` None leaves ``trust.json`` out (``about``'s notes should
        say why); ``about`` adds the manifest's optional keys (scope, log_events, notes)."""
        extra = dict(about or {})
        if set(extra) - set(_OPTIONAL_KEYS):
            raise ValueError(f"unknown manifest keys {sorted(set(extra) - set(_OPTIONAL_KEYS))}")
        listed: list[dict[str, Any]] = []
        keys = _File(KEYS, self._open(KEYS))
        events = 0
        for number, done in enumerate(self._events(entries, keys), start=1):
            listed.append(done.entry())
            events += done.count
            yield self._done(done)
            if leaves is not None:
                stored = _File(leaf_file(number), self._open(leaf_file(number)))
                if done.first_seq is not None and done.last_seq is not None:
                    stored.hashes(leaves(done.first_seq, done.last_seq), done.first_seq)
                listed.append(stored.entry())
                yield self._done(stored)
        listed.append(keys.entry())
        yield self._done(keys)
        cps = _File(CHECKPOINTS, self._open(CHECKPOINTS))
        newest, origin = 0, ""
        for cp in checkpoints:
            record = checkpoint_record(cp)
            origin = origin or note_origin(record["note"])
            if record["size"] <= newest:
                raise ValueError(f"checkpoint {record['size']} after {newest}: not in size order")
            newest = record["size"]
            cps.line(canonical_bytes(record))
        listed.append(cps.entry())
        yield self._done(cps)
        if trust_doc is not None:
            trust = _File(TRUST, self._open(TRUST))
            trust.line(json.dumps(dict(trust_doc), indent=2, ensure_ascii=False).encode())
            listed.append(trust.entry())
            yield self._done(trust)
        self.manifest = {
            "format": FORMAT,
            "origin": str(trust_doc.get("origin", "")) if trust_doc is not None else origin,
            "tree_size": newest, "events": events, "checkpoints": cps.count,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "files": listed, **extra}
        manifest = _File(MANIFEST, self._open(MANIFEST))
        manifest.line(json.dumps(self.manifest, indent=2).encode("utf-8"))
        yield self._done(manifest)

    def _events(self, entries: Iterable[LogEntry | bytes], keys: _File) -> Iterator[_File]:
        """Write the events into files of bounded size, copying the key events to ``keys``;
        yield each events file once full (and the last one)."""
        current: _File | None = None
        number = 0
        for item in entries:
            entry = LogEntry.from_canonical(item) if isinstance(item, bytes) else item
            line = entry.canonical()
            if len(line) + 1 > MAX_FILE_BYTES:
                raise ValueError(f"seq {entry.seq}: {len(line)} bytes, more than a file holds")
            if current is not None and (current.count >= MAX_EVENTS_PER_FILE
                                        or current.size + len(line) + 1 > MAX_FILE_BYTES):
                yield current
                current = None
            if current is None:
                number += 1
                current = _File(event_file(number), self._open(event_file(number)))
            current.line(line, entry.seq)
            if entry.type_name in KEY_EVENTS:
                keys.line(line, entry.seq)
        if current is not None:
            yield current

    @staticmethod
    def _done(f: _File) -> Written:
        f.handle.flush()
        return Written(f.path, f.handle, f.size)


def write_bundle(directory: str | os.PathLike[str], entries: Iterable[LogEntry | bytes],
                 checkpoints: Iterable[Any], trust_doc: Mapping[str, Any] | None, *,
                 leaves: StoredLeaves | None = None,
                 about: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write a bundle into ``directory`` (made if missing; its files must not exist yet) and
    return its manifest. ``entries`` are the stored events in seq order (LogEntry or their
    canonical bytes); ``checkpoints`` in size order (StoredCheckpoint or their JSON view);
    ``leaves``, ``about`` and a None ``trust_doc``: :meth:`BundleWriter.files`."""
    root = Path(directory)
    (root / EVENTS_DIR).mkdir(parents=True, exist_ok=True)
    if leaves is not None:
        (root / LEAVES_DIR).mkdir(exist_ok=True)
    writer = BundleWriter(lambda rel: open(root / rel, "xb"))  # noqa: SIM115 (closed below)
    for done in writer.files(entries, checkpoints, trust_doc, leaves=leaves, about=about):
        done.handle.close()
    assert writer.manifest is not None
    return writer.manifest


def tar_stream(entries: Iterable[LogEntry | bytes], checkpoints: Iterable[Any],
               trust_doc: Mapping[str, Any] | None, *, leaves: StoredLeaves | None = None,
               about: Mapping[str, Any] | None = None, spool_bytes: int = 8 * 2**20,
               chunk: int = 2**20) -> Iterator[bytes]:
    """The same bundle as a tar archive, made on the fly: each file is spooled (in memory up
    to ``spool_bytes``, on disk beyond) until complete, then sent as a tar member in chunks
    of ``chunk`` bytes. Extracted, it is what :func:`write_bundle` writes."""
    writer = BundleWriter(lambda rel: tempfile.SpooledTemporaryFile(  # noqa: SIM115
        max_size=spool_bytes))
    now = int(time.time())
    sent = 0
    for directory in (EVENTS_DIR, LEAVES_DIR) if leaves is not None else (EVENTS_DIR,):
        head = tarfile.TarInfo(directory)
        head.type, head.mode, head.mtime = tarfile.DIRTYPE, 0o755, now
        header = head.tobuf(tarfile.PAX_FORMAT)
        sent += len(header)
        yield header
    for done in writer.files(entries, checkpoints, trust_doc, leaves=leaves, about=about):
        info = tarfile.TarInfo(done.path)
        info.size, info.mode, info.mtime = done.size, 0o644, now
        header = info.tobuf(tarfile.PAX_FORMAT)
        yield header
        done.handle.seek(0)
        while data := done.handle.read(chunk):
            yield data
        done.handle.close()
        padding = -done.size % tarfile.BLOCKSIZE
        yield b"\0" * padding
        sent += len(header) + done.size + padding
    end = 2 * tarfile.BLOCKSIZE
    yield b"\0" * (end + (-(sent + end) % tarfile.RECORDSIZE))


def _int_or_none(value: Any) -> bool:
    return value is None or (type(value) is int and value >= 0)


def _check_manifest(manifest: Any) -> list[dict[str, Any]]:
    """The manifest's file list, once its shape is as ``FORMAT`` says (BundleError)."""
    if (not isinstance(manifest, dict) or not _MANIFEST_KEYS <= set(manifest)
            or set(manifest) - _MANIFEST_KEYS - set(_OPTIONAL_KEYS)):
        raise BundleError(MANIFEST, f"not a manifest: needs exactly {sorted(_MANIFEST_KEYS)}, "
                          f"and may have {sorted(_OPTIONAL_KEYS)}")
    for name, kind in _OPTIONAL_KEYS.items():
        if name in manifest and type(manifest[name]) is not kind:
            raise BundleError(MANIFEST, f"{name} {manifest[name]!r} is not a {kind.__name__}")
    if manifest["format"] != FORMAT:
        raise BundleError(MANIFEST, f"format {manifest['format']!r}, this reader reads {FORMAT}")
    for name in ("tree_size", "events", "checkpoints"):
        if type(manifest[name]) is not int or manifest[name] < 0:
            raise BundleError(MANIFEST, f"{name} {manifest[name]!r} is not a count")
    files = manifest["files"]
    if not isinstance(files, list):
        raise BundleError(MANIFEST, "files is not a list")
    for f in files:
        if not isinstance(f, dict) or set(f) != _FILE_KEYS or not isinstance(f["path"], str):
            raise BundleError(MANIFEST, f"a file entry needs exactly {sorted(_FILE_KEYS)}: {f!r}")
        if not (re.fullmatch(r"[0-9a-f]{64}", str(f["sha256"])) and type(f["bytes"]) is int
                and type(f["count"]) is int and f["bytes"] >= 0 and f["count"] >= 0
                and _int_or_none(f["first_seq"]) and _int_or_none(f["last_seq"])):
            raise BundleError(MANIFEST, f"malformed entry for {f['path']}")
    paths = [f["path"] for f in files]
    if len(set(paths)) != len(paths):
        raise BundleError(MANIFEST, "a file is listed twice")
    numbered = [p for p in paths if p.startswith(f"{EVENTS_DIR}/")]
    if numbered != [event_file(n) for n in range(1, len(numbered) + 1)]:
        raise BundleError(MANIFEST, f"events files must be {event_file(1)}, {event_file(2)}, "
                          f"… in order; listed: {numbered[:5]}")
    _check_leaves([f for f in files if f["path"].startswith(f"{LEAVES_DIR}/")], len(numbered))
    missing = {KEYS, CHECKPOINTS} - set(paths)
    if missing:
        raise BundleError(MANIFEST, f"{', '.join(sorted(missing))} not listed")
    events = [f for f in files if f["path"] in numbered]
    if sum(f["count"] for f in events) != manifest["events"]:
        raise BundleError(MANIFEST, f"events {manifest['events']}, but its events files "
                          f"hold {sum(f['count'] for f in events)}")
    cps = next(f for f in files if f["path"] == CHECKPOINTS)
    if cps["count"] != manifest["checkpoints"]:
        raise BundleError(MANIFEST, f"checkpoints {manifest['checkpoints']}, but "
                          f"{CHECKPOINTS} is listed with {cps['count']}")
    return files


def _check_leaves(leaves: list[dict[str, Any]], events_files: int) -> None:
    """The ``leaves/`` files: none, or one per events file, each 32 bytes per leaf over seqs
    ``first_seq`` to ``last_seq`` (BundleError)."""
    if not leaves:
        return
    if [f["path"] for f in leaves] != [leaf_file(n) for n in range(1, events_files + 1)]:
        raise BundleError(MANIFEST, f"leaves files must be {leaf_file(1)}, … one per events "
                          f"file ({events_files}); listed: {[f['path'] for f in leaves][:5]}")
    for f in leaves:
        spans = (f["first_seq"] is None and f["last_seq"] is None if f["count"] == 0 else
                 f["first_seq"] is not None and f["last_seq"] is not None
                 and f["last_seq"] - f["first_seq"] + 1 == f["count"])
        if f["bytes"] != HASH_SIZE * f["count"] or not spans:
            raise BundleError(MANIFEST, f"{f['path']}: {f['count']} leaves need "
                              f"{HASH_SIZE * f['count']} bytes over as many seqs")


@dataclass(frozen=True)
class Bundle:
    """A bundle on disk, its manifest read and its files' presence and sizes checked; each
    file's SHA-256 is checked when it is read (:class:`BundleError` naming the file)."""

    root: Path
    manifest: dict[str, Any]
    #: the leaves file last read (``path``, ``data``)
    _leaves: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def files(self) -> list[dict[str, Any]]:
        """The manifest's file entries."""
        files: list[dict[str, Any]] = self.manifest["files"]
        return files

    def _entry(self, path: str) -> dict[str, Any]:
        return next(f for f in self.files if f["path"] == path)

    def read(self, path: str) -> bytes:
        """The bytes of file ``path``, once they match the manifest's length and SHA-256."""
        entry = self._entry(path)
        with open(self.root / path, "rb") as f:
            data = f.read(entry["bytes"] + 1)
        if len(data) != entry["bytes"]:
            raise BundleError(path, f"{len(data)} bytes, the manifest says {entry['bytes']}")
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise BundleError(path, "SHA-256 differs from the manifest's: the file was changed")
        return data

    def _lines(self, path: str) -> list[bytes]:
        data = self.read(path)
        if data and not data.endswith(b"\n"):
            raise BundleError(path, "the last line has no newline")
        lines = data.split(b"\n")[:-1] if data else []
        entry = self._entry(path)
        if len(lines) != entry["count"]:
            raise BundleError(path, f"{len(lines)} lines, the manifest says {entry['count']}")
        return lines

    def _entries(self, path: str) -> list[LogEntry]:
        """The events of one file, parsed, and its seqs held to the manifest's."""
        entries = []
        for number, line in enumerate(self._lines(path), start=1):
            try:
                entries.append(LogEntry.from_canonical(line))
            except RecordError as exc:
                raise BundleError(path, f"line {number}: {exc}") from exc
        entry = self._entry(path)
        seqs = (entries[0].seq, entries[-1].seq) if entries else (None, None)
        if seqs != (entry["first_seq"], entry["last_seq"]):
            raise BundleError(path, f"seqs {seqs[0]} to {seqs[1]}, the manifest says "
                              f"{entry['first_seq']} to {entry['last_seq']}")
        return entries

    def stored_leaves(self, first: int, last: int) -> bytes:
        """The leaf hashes the log's tree stored for seqs ``first`` to ``last`` as the
        ``leaves/`` files hold them (read once each, against the manifest), concatenated;
        shorter where they hold fewer, empty in a bundle without them."""
        out: list[bytes] = []
        want = first
        for f in self.files:
            if not _LEAF_FILE.fullmatch(f["path"]) or f["count"] == 0:
                continue
            lo, hi = f["first_seq"], f["last_seq"]
            if lo > want:
                break  # a seq no leaves file holds: only what comes before it
            if hi < want:
                continue
            if self._leaves.get("path") != f["path"]:
                self._leaves.update(path=f["path"], data=self.read(f["path"]))
            end = min(hi, last)
            out.append(self._leaves["data"][HASH_SIZE * (want - lo):HASH_SIZE * (end - lo + 1)])
            want = end + 1
            if want > last:
                break
        return b"".join(out)

    def event_files(self) -> list[str]:
        """The events files' paths, in order."""
        return [f["path"] for f in self.files if _EVENT_FILE.fullmatch(f["path"])]

    def events(self) -> Iterator[LogEntry]:
        """Every event, in the bundle's order, one file in memory at a time: a file's events
        come once its SHA-256, length and line count match the manifest. At the end,
        ``keys.jsonl`` must be exactly the key events met (BundleError otherwise)."""
        met: list[bytes] = []
        for path in self.event_files():
            for entry in self._entries(path):
                if entry.type_name in KEY_EVENTS:
                    met.append(entry.canonical())
                yield entry
        copied = self._lines(KEYS)
        if copied != met:
            first = next((i for i, (a, b) in enumerate(zip(copied, met, strict=False))
                          if a != b), min(len(copied), len(met)))
            raise BundleError(KEYS, f"line {first + 1} differs from the key events in "
                              f"{EVENTS_DIR}/ ({len(copied)} lines, {len(met)} key events)")

    def key_events(self) -> list[LogEntry]:
        """The key events as ``keys.jsonl`` copies them (checked against ``events/`` only by
        a full pass of :meth:`events`)."""
        return self._entries(KEYS)

    def checkpoints(self) -> list[dict[str, Any]]:
        """The checkpoints, in size order, each exactly the fields of
        ``GET /ledger/checkpoints/{size}`` (the aggregate in base64 or null)."""
        out: list[dict[str, Any]] = []
        for number, line in enumerate(self._lines(CHECKPOINTS), start=1):
            try:
                record = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise BundleError(CHECKPOINTS, f"line {number}: not JSON: {exc}") from exc
            if not isinstance(record, dict) or set(record) != set(CHECKPOINT_FIELDS):
                raise BundleError(CHECKPOINTS, f"line {number}: needs exactly the fields "
                                  f"{', '.join(CHECKPOINT_FIELDS)}")
            if type(record["size"]) is not int or (out and record["size"] <= out[-1]["size"]):
                raise BundleError(CHECKPOINTS, f"line {number}: size {record['size']!r} is "
                                  "not above the line before's")
            out.append(record)
        return out

    def trust_document(self) -> dict[str, Any]:
        """The trust document the exporter saw (informational: trust your own copy);
        BundleError where the bundle has none (its manifest's notes say why)."""
        if not any(f["path"] == TRUST for f in self.files):
            notes = " ".join(self.manifest.get("notes", []))
            raise BundleError(TRUST, f"not in this bundle{': ' + notes if notes else ''}")
        try:
            doc = json.loads(self.read(TRUST))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(TRUST, f"not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise BundleError(TRUST, "not a JSON object")
        return doc

    def check_files(self) -> None:
        """Read every file once and hold it to the manifest's length and SHA-256."""
        for f in self.files:
            self.read(f["path"])


def read_bundle(directory: str | os.PathLike[str]) -> Bundle:
    """Open the bundle in ``directory``: its manifest parsed and checked, every listed file
    present with the listed length and no other file there (BundleError naming the file)."""
    root = Path(directory)
    try:
        manifest = json.loads((root / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise BundleError(MANIFEST, f"missing: {root} is not a bundle") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(MANIFEST, f"unreadable: {exc}") from exc
    files = _check_manifest(manifest)
    for f in files:
        where = root / f["path"]
        if not where.is_file():
            raise BundleError(f["path"], "missing (listed in the manifest)")
        if where.stat().st_size != f["bytes"]:
            raise BundleError(f["path"], f"{where.stat().st_size} bytes, the manifest says "
                              f"{f['bytes']}")
    listed = {f["path"] for f in files} | {MANIFEST}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in listed:
            raise BundleError(rel, "not listed in the manifest")
    return Bundle(root, manifest)
