"""`serve`'s default: the projections and the chain run in a child process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.bootstrap import Container, build
from api.settings import Settings
from tests.e2e.conftest import ADMIN_TOKEN, World
from tests.e2e.test_catalog_api import dataset_body


@pytest.fixture
def container(database_url: str, tmp_path: Path) -> Iterator[Container]:
    settings = Settings(data_dir=tmp_path / "var", database_url=database_url,
                        admin_token=ADMIN_TOKEN, checkpoint_every_seconds=0.3,
                        background_process=True)
    c = build(settings)
    yield c
    c.close()


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container=container), raise_server_exceptions=False) as tc:
        yield tc


def test_reads_see_this_process_writes_though_another_process_projects(
        container: Container, world: World) -> None:
    assert container.background is not None and container.background.process.is_alive()
    provider = world.onboard("provider", "Tax bureau")  # its token works at once
    made = world.call("POST", "/datasets", provider, 201, json=dataset_body())
    seen = world.call("GET", f"/datasets/{made['dataset_id']}", provider)  # read-your-writes
    assert seen["state"] == "registered"
    assert world.client.get("/health").json()["projected"] >= made["seqs"][-1]


def test_a_suspended_participants_token_cache_is_cleared(container: Container,
                                                         world: World) -> None:
    provider = world.onboard("provider", "Tax bureau")
    world.call("GET", "/participants/me", provider)  # cached
    world.call("POST", f"/participants/{provider.participant_id}/suspension", world.platform,
               json={"reason": "audit"})
    generation = container.auth_cache.generation
    deadline = time.monotonic() + 10  # the follower sees the child project the suspension
    while container.auth_cache.generation == generation and time.monotonic() < deadline:
        time.sleep(0.02)
    assert container.auth_cache.generation > generation
    world.call("POST", "/datasets", provider, 409, json=dataset_body())


def test_the_child_integrates_the_chain_and_stops_with_the_server(
        container: Container, world: World) -> None:
    head = world.client.get("/health").json()["head"]
    deadline = time.monotonic() + 20
    latest = None
    while time.monotonic() < deadline:
        r = world.client.get("/ledger/checkpoints/latest")
        if r.status_code == 200 and r.json()["size"] >= head:
            latest = r.json()
            break
        time.sleep(0.1)
    assert latest is not None and latest["size"] >= head
    process = container.background.process  # type: ignore[union-attr]
    container.close()
    assert not process.is_alive()
    container.background = None  # closed already
