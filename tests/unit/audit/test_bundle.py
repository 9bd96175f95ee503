"""The bundle format (audit/bundle.py) on real files: written, read back event for event, and
each kind of damage named with its file: a changed byte, a missing file, a count the manifest
gets wrong, a key copy that is not the log's."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from audit import bundle
from audit.bundle import BundleError, read_bundle, tar_stream, write_bundle
from core.canonical import canonical_bytes
from core.record import LogEntry

TRUST = {"origin": "ledger.example/log", "log_vkey": "ledger.example/log+0+AAAA", "quorum": 1,
         "witnesses": [{"name": "w1", "vkey": "w1+1+BBBB"}]}


def entries(n: int) -> list[LogEntry]:
    """``n`` stored events; every fifth registers a key (a line of keys.jsonl)."""
    out = []
    for seq in range(1, n + 1):
        if seq % 5 == 0:
            kind, payload = "participant.key_registered", {"member_id": f"m{seq}",
                                                           "public_key": "AAAA", "key_id": "k"}
        else:
            kind, payload = "dataset.registered", {"name": f"数据集 {seq}", "n": seq}
        out.append(LogEntry(seq, f"agg-{seq % 3}", seq, kind, canonical_bytes(payload)))
    return out


def checkpoints() -> list[dict[str, Any]]:
    return [{"size": size, "note": f"ledger.example/log\n{size}\nroot\n", "cosigned": "c",
             "signers": ["w1"], "aggregate": base64.b64encode(b"\1" * 96).decode(),
             "anchored": True, "cut_at": "2030-01-01T00:00:00Z"} for size in (4, 9, 12)]


def made(tmp_path: Path, n: int = 12) -> Path:
    out = tmp_path / "bundle"
    write_bundle(out, entries(n), checkpoints(), TRUST)
    return out


def test_a_bundle_reads_back_exactly_what_was_written(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle, "MAX_EVENTS_PER_FILE", 5)
    written = entries(12)
    manifest = write_bundle(tmp_path / "b", written, checkpoints(), TRUST)
    assert (manifest["events"], manifest["checkpoints"], manifest["tree_size"]) == (12, 3, 12)
    assert manifest["origin"] == "ledger.example/log"
    read = read_bundle(tmp_path / "b")
    assert read.event_files() == ["events/00000001.jsonl", "events/00000002.jsonl",
                                  "events/00000003.jsonl"]
    assert list(read.events()) == written
    assert read.checkpoints() == checkpoints()
    assert read.trust_document() == TRUST
    assert [e.seq for e in read.key_events()] == [5, 10]
    # each line is exactly the canonical bytes; the manifest lists each file's SHA-256
    first = (tmp_path / "b/events/00000001.jsonl").read_bytes()
    assert first == b"".join(e.canonical() + b"\n" for e in written[:5])
    listed = {f["path"]: f for f in manifest["files"]}
    assert listed["events/00000001.jsonl"]["sha256"] == hashlib.sha256(first).hexdigest()
    assert (listed["events/00000003.jsonl"]["first_seq"],
            listed["events/00000003.jsonl"]["last_seq"]) == (11, 12)
    assert json.loads((tmp_path / "b/manifest.json").read_text()) == manifest


def test_the_tar_stream_extracts_to_the_same_bundle(tmp_path: Path) -> None:
    direct = write_bundle(tmp_path / "direct", entries(12), checkpoints(), TRUST)
    data = b"".join(tar_stream(entries(12), checkpoints(), TRUST, spool_bytes=64, chunk=100))
    assert len(data) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        tar.extractall(tmp_path / "from_tar", filter="data")
    read = read_bundle(tmp_path / "from_tar")
    assert list(read.events()) == entries(12)
    assert read.manifest["files"] == direct["files"]  # byte for byte the same files


def test_an_empty_log_makes_a_bundle_too(tmp_path: Path) -> None:
    manifest = write_bundle(tmp_path / "b", [], [], TRUST)
    assert (manifest["events"], manifest["tree_size"]) == (0, 0)
    assert list(read_bundle(tmp_path / "b").events()) == []


def test_a_changed_byte_in_an_events_file_is_caught_naming_the_file(tmp_path: Path) -> None:
    out = made(tmp_path)
    path = out / "events/00000001.jsonl"
    data = bytearray(path.read_bytes())
    at = data.index(b'"n":7')
    data[at + 4] = ord("8")  # seq 7's payload says n 8: same length, still canonical
    path.write_bytes(bytes(data))
    read = read_bundle(out)  # the lengths still agree
    with pytest.raises(BundleError) as caught:
        list(read.events())
    assert caught.value.path == "events/00000001.jsonl"
    assert "SHA-256" in caught.value.reason


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    out = made(tmp_path)
    (out / "checkpoints.jsonl").unlink()
    with pytest.raises(BundleError) as caught:
        read_bundle(out)
    assert (caught.value.path, caught.value.reason) == ("checkpoints.jsonl",
                                                        "missing (listed in the manifest)")
    (out / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json: missing"):
        read_bundle(out)


def test_a_count_the_manifest_gets_wrong_is_named(tmp_path: Path) -> None:
    out = made(tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["events"] = 11
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as caught:
        read_bundle(out)
    assert caught.value.path == "manifest.json"
    assert "events 11, but its events files hold 12" in caught.value.reason
    # a file's own count, with the total made to agree: the file's lines say otherwise
    manifest["events"] = 13
    manifest["files"][0]["count"] = 13
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as caught:
        list(read_bundle(out).events())
    assert (caught.value.path, caught.value.reason) == (
        "events/00000001.jsonl", "12 lines, the manifest says 13")


def test_an_unlisted_file_and_a_key_copy_that_is_not_the_log_s_are_named(
        tmp_path: Path) -> None:
    out = made(tmp_path)
    (out / "events/00000002.jsonl").write_bytes(b"")
    with pytest.raises(BundleError, match="events/00000002.jsonl: not listed"):
        read_bundle(out)
    (out / "events/00000002.jsonl").unlink()
    # keys.jsonl rewritten with its manifest entry: the copy no longer matches events/
    keys = out / "keys.jsonl"
    lines = keys.read_bytes().splitlines(keepends=True)
    keys.write_bytes(lines[0])
    manifest = json.loads((out / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["path"] == "keys.jsonl")
    entry.update(sha256=hashlib.sha256(lines[0]).hexdigest(), bytes=len(lines[0]), count=1,
                 last_seq=5)
    (out / "manifest.json").write_text(json.dumps(manifest))
    read = read_bundle(out)
    with pytest.raises(BundleError) as caught:
        list(read.events())
    assert caught.value.path == "keys.jsonl" and "line 2" in caught.value.reason


def test_a_line_that_is_not_a_canonical_event_is_named_by_file_and_line(
        tmp_path: Path) -> None:
    out = made(tmp_path)
    path = out / "events/00000001.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'{"id"', b'{ "id"')
    data = b"".join(lines)
    path.write_bytes(data)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"][0].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as caught:
        list(read_bundle(out).events())
    assert caught.value.path == "events/00000001.jsonl"
    assert caught.value.reason.startswith("line 3: seq 3: the bytes are not in canonical form")


def stored_tree(n: int) -> bytes:
    """The leaf hashes a tree holds for the first ``n`` of :func:`entries`."""
    from chain.hasher import hash_leaf

    return b"".join(hash_leaf(e.canonical()) for e in entries(n))


def test_the_stored_leaves_go_beside_each_events_file_and_read_back_by_seq(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle, "MAX_EVENTS_PER_FILE", 5)
    tree = stored_tree(10)  # the tree holds fewer leaves than the log has events
    asked: list[tuple[int, int]] = []

    def leaves(first: int, last: int) -> bytes:
        asked.append((first, last))
        return tree[32 * (first - 1):32 * last]

    about = {"scope": "all", "log_events": 12, "notes": ["every stored event"]}
    manifest = write_bundle(tmp_path / "b", entries(12), checkpoints(), TRUST, leaves=leaves,
                            about=about)
    assert asked == [(1, 5), (6, 10), (11, 12)]
    assert (manifest["scope"], manifest["log_events"], manifest["notes"]) == (
        "all", 12, ["every stored event"])
    listed = {f["path"]: f for f in manifest["files"]}
    assert [tuple(listed[f"leaves/0000000{n}.bin"][k] for k in ("count", "first_seq",
                                                                "last_seq"))
            for n in (1, 2, 3)] == [(5, 1, 5), (5, 6, 10), (0, None, None)]
    read = read_bundle(tmp_path / "b")
    assert read.stored_leaves(1, 12) == tree  # across files, as far as they go
    assert read.stored_leaves(4, 7) == tree[32 * 3:32 * 7]
    assert read.stored_leaves(11, 12) == b""
    # the tar stream carries them too
    data = b"".join(tar_stream(entries(12), checkpoints(), TRUST, leaves=leaves, about=about))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(tmp_path / "t", filter="data")
    assert read_bundle(tmp_path / "t").stored_leaves(1, 12) == tree


def test_a_leaves_file_that_does_not_fit_its_manifest_entry_is_named(tmp_path: Path) -> None:
    write_bundle(tmp_path / "b", entries(4), checkpoints()[:1], TRUST,
                 leaves=lambda a, b: stored_tree(4)[32 * (a - 1):32 * b])
    manifest = json.loads((tmp_path / "b/manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["path"] == "leaves/00000001.bin")
    entry["count"] = 3
    (tmp_path / "b/manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="leaves/00000001.bin: 3 leaves need 96 bytes"):
        read_bundle(tmp_path / "b")
    entry["count"], entry["sha256"] = 4, "0" * 64
    (tmp_path / "b/manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="leaves/00000001.bin: SHA-256 differs"):
        read_bundle(tmp_path / "b").stored_leaves(1, 4)


def test_a_bundle_without_a_trust_document_says_why(tmp_path: Path) -> None:
    why = "trust.json is left out: no log key at /var/log.key"
    manifest = write_bundle(tmp_path / "b", entries(4), checkpoints()[:1], None,
                            about={"notes": [why]})
    assert manifest["origin"] == "ledger.example/log"  # the checkpoints' origin line
    read = read_bundle(tmp_path / "b")
    assert not (tmp_path / "b/trust.json").exists() and len(list(read.events())) == 4
    with pytest.raises(BundleError, match=f"trust.json: not in this bundle: {why}"):
        read.trust_document()
