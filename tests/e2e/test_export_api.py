"""The log exported over HTTP: ``GET /ledger/export`` streams the bundle to the admitted
regulator (and 403 to anyone else), and ``GET /ledger/checkpoints`` pages through every
stored checkpoint; on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

from audit.bundle import KEY_EVENTS, read_bundle
from core.record import LogEntry
from runtime.build import Container
from tests.e2e.conftest import World, head


def anchored(world: World, container: Container) -> int:
    """The log's head, once an anchored checkpoint covers it."""
    size = head(world)
    assert container.chain is not None
    assert container.chain.wait_anchored(size, timeout=20) is not None
    return size


def every_event(world: World) -> list[LogEntry]:
    """The whole log as the regulator reads it, page after page of ``GET /ledger/events``."""
    out: list[LogEntry] = []
    after = 0
    while page := world.call("GET", f"/ledger/events?after={after}&limit=1000",
                             world.regulator)["events"]:
        out += [LogEntry.from_view(view) for view in page]
        after = out[-1].seq
    return out


def every_checkpoint(world: World, limit: int) -> list[dict[str, Any]]:
    """Every stored checkpoint, paged through ``GET /ledger/checkpoints``, ``limit`` a page."""
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        r = world.client.get(f"/ledger/checkpoints?after_size={after}&limit={limit}")
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["checkpoints"]) <= limit
        if not page["checkpoints"]:
            assert page["next_after_size"] == after
            return out
        out += page["checkpoints"]
        after = page["next_after_size"]
        assert after == out[-1]["size"]


def test_the_regulator_downloads_the_log_as_a_bundle_that_reads_back(
        world: World, container: Container, tmp_path: Path) -> None:
    bank = world.onboard("demander", "City bank 城市商业银行")
    world.api.rotate_key(bank)  # a key revoked and one registered: both in keys.jsonl
    size = anchored(world, container)

    with world.client.stream("GET", "/ledger/export", headers=world.regulator.headers) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"] == "application/x-tar"
        assert f'filename="dataledger-{size}.tar"' in r.headers["content-disposition"]
        data = b"".join(r.iter_bytes())
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        tar.extractall(tmp_path / "bundle", filter="data")
    bundle = read_bundle(tmp_path / "bundle")

    events = list(bundle.events())
    assert events == every_event(world)
    assert [e.seq for e in events] == list(range(1, size + 1))
    keys = bundle.key_events()
    assert keys == [e for e in events if e.type_name in KEY_EVENTS]
    assert {e.type_name for e in keys} == KEY_EVENTS
    assert bundle.checkpoints() == every_checkpoint(world, 1000)
    assert bundle.manifest["tree_size"] == bundle.checkpoints()[-1]["size"] == size
    assert bundle.manifest["events"] == size
    witnesses = world.client.get("/ledger/witnesses").json()
    trust = bundle.trust_document()
    assert (trust["origin"], trust["log_vkey"], trust["quorum"]) == (
        witnesses["origin"], witnesses["log_vkey"], witnesses["quorum"])
    assert bundle.manifest["origin"] == witnesses["origin"]


def test_no_one_but_the_admitted_regulator_exports(world: World, container: Container) -> None:
    bank = world.onboard("demander", "City bank 城市商业银行")
    pending = world.onboard("provider", "Pending provider", admit=False)
    for party in (bank, world.platform, pending):
        r = world.client.get("/ledger/export", headers=party.headers)
        assert r.status_code == 403, r.text
        assert (r.json()["error"], r.json()["rule"]) == ("forbidden", "ledger.export")
    assert world.client.get("/ledger/export").status_code == 401
    expert = world.member(world.regulator, "expert 专家", ["expert"])
    r = world.client.get("/ledger/export", headers=expert.headers)
    assert r.status_code == 200 and r.content[:6] == b"events"


def test_checkpoints_are_listed_in_size_order_a_page_at_a_time(
        world: World, container: Container) -> None:
    for i in range(4):
        world.onboard("provider", f"provider {i}")
        anchored(world, container)
    listed = every_checkpoint(world, 1000)
    sizes = [cp["size"] for cp in listed]
    assert len(sizes) >= 4 and sizes == sorted(set(sizes))
    assert every_checkpoint(world, 1) == listed == every_checkpoint(world, 3)
    for cp in listed:
        assert world.client.get(f"/ledger/checkpoints/{cp['size']}").json() == cp
    later = world.client.get(f"/ledger/checkpoints?after_size={sizes[1]}&limit=2").json()
    assert later == {"checkpoints": listed[2:4], "next_after_size": sizes[3]}
    default = world.client.get("/ledger/checkpoints").json()
    assert default["checkpoints"] == listed[:100]


def test_bad_checkpoint_paging_is_422_naming_the_field(world: World) -> None:
    for query, field in (("after_size=-1", "query.after_size"),
                         ("after_size=x", "query.after_size"),
                         ("after_size=9223372036854775808", "query.after_size"),
                         ("limit=0", "query.limit"), ("limit=1001", "query.limit"),
                         ("limit=ten", "query.limit")):
        r = world.client.get(f"/ledger/checkpoints?{query}")
        assert r.status_code == 422, (query, r.text)
        assert [f["field"] for f in r.json()["fields"]] == [field], (query, r.text)


def downloaded(world: World, tmp_path: Path, query: str = "") -> Any:
    """``GET /ledger/export`` as the regulator, unpacked and read back."""
    with world.client.stream("GET", f"/ledger/export{query}",
                             headers=world.regulator.headers) as r:
        assert r.status_code == 200, r.read()
        data = b"".join(r.iter_bytes())
    where = tmp_path / f"bundle{len(list(tmp_path.glob('bundle*')))}"
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        tar.extractall(where, filter="data")
    return read_bundle(where)


def test_the_export_stops_at_the_newest_anchored_checkpoint_unless_all_is_asked(
        world: World, container: Container, tmp_path: Path) -> None:
    world.onboard("demander", "City bank 城市商业银行")
    size = anchored(world, container)
    assert container.chain is not None
    container.chain.stop()  # what follows lies under no anchored checkpoint
    world.onboard("provider", "Late provider")
    total = head(world)
    bundle = downloaded(world, tmp_path)
    assert [e.seq for e in bundle.events()] == list(range(1, size + 1))
    assert (bundle.manifest["scope"], bundle.manifest["log_events"]) == ("anchored", total)
    assert f"seqs {size + 1} to {total}" in " ".join(bundle.manifest["notes"])
    assert bundle.stored_leaves(1, size) == container.chain.tree.leaf_hashes(0, size)
    every = downloaded(world, tmp_path, "?all=true")
    assert [e.seq for e in every.events()] == list(range(1, total + 1))
    assert (every.manifest["scope"], every.manifest["tree_size"]) == ("all", size)
    assert every.checkpoints() == bundle.checkpoints()
    r = world.client.get("/ledger/export?all=maybe", headers=world.regulator.headers)
    assert r.status_code == 422 and [f["field"] for f in r.json()["fields"]] == ["query.all"]
