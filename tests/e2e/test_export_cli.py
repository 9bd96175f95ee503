"""``dataledger export`` as a regulator's operator runs it, on a SQLite file and on
PostgreSQL: the bundle holds the store's events, checkpoints and trust document and reads
back; a directory that is not empty is refused; ``--url`` fetches the same from a server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from audit.bundle import checkpoint_record, read_bundle
from cli.main import main
from client import platform as client_platform
from runtime.build import Container
from tests.e2e.conftest import World, head

REPO = Path(__file__).parents[2]


def export(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``dataledger export ARGS`` over the test app's data dir."""
    env = {**os.environ, "DATALEDGER_DATA_DIR": str(tmp_path / "var")}
    env.pop("DATALEDGER_DATABASE_URL", None)
    env.pop("DATALEDGER_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "cli", "export", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)


def stored(container: Container) -> tuple[list[Any], list[dict[str, Any]], dict[str, Any]]:
    """The store's events, its checkpoints as bundle lines, and its trust document."""
    assert container.chain is not None
    events = container.store.read(0, 100_000)
    cps = [checkpoint_record(cp) for cp in container.chain.tree.checkpoints.all()]
    return events, cps, container.chain.trust_document()


def ledger(world: World, container: Container) -> None:
    """A few participants, one key rotated, everything anchored."""
    bank = world.onboard("demander", "City bank 城市商业银行")
    world.onboard("provider", "Tax bureau 税务局")
    world.api.rotate_key(bank)
    assert container.chain is not None
    assert container.chain.wait_anchored(head(world), timeout=20) is not None


def test_export_writes_the_store_as_a_bundle_that_reads_back(
        world: World, container: Container, database_url: str, tmp_path: Path) -> None:
    ledger(world, container)
    out = tmp_path / "exports" / "bundle"
    done = export(tmp_path, "--out", str(out), "--database", database_url)
    assert done.returncode == 0, done.stdout + done.stderr
    events, cps, trust = stored(container)
    assert f"wrote {out}: {len(events)} events, {len(cps)} checkpoints" in done.stdout
    bundle = read_bundle(out)
    assert list(bundle.events()) == events
    assert bundle.checkpoints() == cps
    assert bundle.trust_document() == trust
    assert bundle.manifest["tree_size"] == cps[-1]["size"] == len(events)
    assert {e.type_name for e in bundle.key_events()} == {"participant.key_registered",
                                                          "participant.key_revoked"}
    assert sorted(p.name for p in out.parent.iterdir()) == ["bundle"]  # nothing half-written

    # the directory is not empty now: refused, exit 2, the bundle untouched
    before = (out / "manifest.json").read_bytes()
    again = export(tmp_path, "--out", str(out), "--database", database_url)
    assert again.returncode == 2, again.stdout + again.stderr
    assert "--out" in again.stderr and "not an empty directory" in again.stderr
    assert (out / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["bundle"]
    # an empty directory is fine
    (tmp_path / "empty").mkdir()
    assert export(tmp_path, "--out", str(tmp_path / "empty"),
                  "--database", database_url).returncode == 0
    assert read_bundle(tmp_path / "empty").manifest["events"] == len(events)


def test_usage_errors_exit_2_naming_the_option(tmp_path: Path) -> None:
    for args, named in ((["--out", str(tmp_path / "b"), "--url", "http://127.0.0.1:9"],
                        "--url needs --token"),
                       (["--out", str(tmp_path / "b"), "--database", "mysql://x"],
                        "--database: "),
                       (["--out", str(tmp_path / "b"), "--database", "sqlite:///x",
                         "--url", "http://127.0.0.1:9"], "not allowed with argument")):
        done = export(tmp_path, *args)
        assert done.returncode == 2 and named in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    missing = export(tmp_path, "--out", str(tmp_path / "b"),
                     "--database", f"sqlite:///{tmp_path / 'none.db'}")
    assert missing.returncode == 1 and "no event store at" in missing.stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / "none.db").exists()


class _Shared(client_platform.Platform):
    """The test app's client, left open when the command is done with it."""

    def close(self) -> None:
        pass


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_export_from_a_server_for_the_regulator_only(
        world: World, container: Container, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    ledger(world, container)
    monkeypatch.setattr(client_platform.Platform, "at",
                        classmethod(lambda cls, url, timeout=30: _Shared(world.client)))
    out = tmp_path / "from-server"
    code = main(["export", "--out", str(out), "--url", "http://testserver",
                 "--token", world.regulator.token])
    assert code == 0, capsys.readouterr()
    events, cps, trust = stored(container)
    bundle = read_bundle(out)
    assert (list(bundle.events()), bundle.checkpoints(), bundle.trust_document()) == (
        events, cps, trust)

    bank = world.onboard("demander", "Another bank")
    refused = tmp_path / "refused"
    assert main(["export", "--out", str(refused), "--url", "http://testserver",
                 "--token", bank.token]) == 1
    assert "the server refused: 403" in capsys.readouterr().err
    assert not refused.exists() and sorted(p.name for p in tmp_path.iterdir()
                                           if p.name.startswith(".")) == []


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``directory`` with its size and mtime (SQLite's shared-memory index
    left out: a reader's locks live there)."""
    return {p.relative_to(directory).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file() and not p.name.endswith("-shm")}


def test_export_reads_only_and_leaves_trust_out_without_the_log_key(
        world: World, container: Container, database_url: str, tmp_path: Path) -> None:
    ledger(world, container)
    assert container.chain is not None
    container.chain.stop()  # nothing more is cut: the data dir is at rest
    data = tmp_path / "var"
    (data / "log.key").rename(tmp_path / "log.key.kept")
    before = snapshot(data)
    out = tmp_path / "bundle"
    done = export(tmp_path, "--out", str(out), "--database", database_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"trust.json is left out: no log key at {data / 'log.key'}" in done.stdout
    assert not (data / "log.key").exists() and snapshot(data) == before  # nothing written
    bundle = read_bundle(out)
    assert not (out / "trust.json").exists()
    assert any("no log key" in note for note in bundle.manifest["notes"])
    events, cps, _ = stored(container)
    assert list(bundle.events()) == events and bundle.checkpoints() == cps
    assert bundle.manifest["origin"] == container.settings.log_origin
    # the tree's leaf hashes beside the events, as the tree stored them
    assert bundle.stored_leaves(1, len(events)) == container.chain.tree.leaf_hashes(
        0, len(events))


def test_export_stops_at_the_newest_anchored_checkpoint_unless_all(
        world: World, container: Container, database_url: str, tmp_path: Path) -> None:
    ledger(world, container)
    assert container.chain is not None
    anchored = head(world)
    container.chain.stop()  # what follows lies under no anchored checkpoint
    world.onboard("provider", "Late provider")
    total = head(world)
    assert total > anchored
    done = export(tmp_path, "--out", str(tmp_path / "anchored"), "--database", database_url)
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = read_bundle(tmp_path / "anchored").manifest
    assert (manifest["events"], manifest["tree_size"], manifest["scope"],
            manifest["log_events"]) == (anchored, anchored, "anchored", total)
    assert f"seqs {anchored + 1} to {total}" in done.stdout
    done = export(tmp_path, "--out", str(tmp_path / "all"), "--database", database_url,
                  "--all")
    assert done.returncode == 0, done.stdout + done.stderr
    every = read_bundle(tmp_path / "all")
    assert [e.seq for e in every.events()] == list(range(1, total + 1))
    assert (every.manifest["scope"], every.manifest["tree_size"]) == ("all", anchored)
