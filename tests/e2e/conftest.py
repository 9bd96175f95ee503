"""The HTTP API as the parties drive it (through ``client``), on a SQLite file and on
PostgreSQL; and the chain a market test needs: provider → dataset (published) → scenario
(approved) → authorization → product (listed), with a developer and a demander."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from client.market import Market
from client.platform import Party, Platform
from runtime.build import Container, build
from runtime.settings import Settings

ADMIN_TOKEN = "dl_test_admin_token_0123456789abcdef"
FIELDS = [{"name": "taxpayer_id", "type": "string", "sensitivity": "personal"},
          {"name": "annual_revenue", "type": "integer", "sensitivity": "sensitive"},
          {"name": "industry", "type": "string", "sensitivity": "public"}]
USED = ["taxpayer_id", "annual_revenue"]
CODE = "def run(rows):\n    return [{'score': r['annual_revenue'] // 1000} for r in rows]\n"


@pytest.fixture
def settings_changes() -> dict[str, Any]:
    """What a test module changes in the e2e settings (it overrides this fixture)."""
    return {}


@pytest.fixture
def container(database_url: str, tmp_path: Path,
              settings_changes: dict[str, Any]) -> Iterator[Container]:
    settings = Settings(**{"data_dir": tmp_path / "var", "database_url": database_url,
                           "admin_token": ADMIN_TOKEN, "checkpoint_every_seconds": 0.3,
                           **settings_changes})
    c = build(settings)
    yield c
    c.close()


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container=container), raise_server_exceptions=False) as tc:
        yield tc


class Clock:
    """The ledger's clock in a test: the real time, plus however far the test moved it."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> str:
        now = datetime.now(UTC) + self.ahead
        return now.isoformat(timespec="microseconds").replace("+00:00", "Z")

    def move_to(self, instant: datetime) -> None:
        """From now on the ledger's time runs from ``instant``."""
        self.ahead = instant - datetime.now(UTC)


@pytest.fixture
def clock(container: Container) -> Clock:
    """The clock the test app's ledger decides with, for a test to move instead of sleeping
    until an authorization or a window ends."""
    moved = Clock()
    container.ledger.clock = moved
    return moved


class World(Market):
    """The test app's platform operator and regulator, onboarding the other parties over
    HTTP; ``call`` is any request, as a party, that must answer ``expect``."""

    def __init__(self, client: TestClient) -> None:
        super().__init__(Platform(client), ADMIN_TOKEN, "Municipal data bureau 大数据局")
        self.client = client

    def call(self, method: str, path: str, party: Party, expect: int = 200,
             **kwargs: Any) -> Any:
        return self.api.call(method, path, party, expect, **kwargs)

    def member(self, party: Party, name: str, roles: list[str]) -> Party:
        return self.api.add_member(party, name, roles)


@pytest.fixture
def world(client: TestClient) -> World:
    return World(client)


def head(world: World) -> int:
    """The log's head: a test checks with it that a refused command wrote nothing."""
    return int(world.client.get("/health").json()["head"])


@dataclass
class Chain:
    provider: Party
    operator: Party
    developer: Party
    demander: Party
    expert: Party
    dataset_id: str
    scenario_id: str
    authorization_id: str


def build_chain(world: World) -> Chain:
    """Onboard the parties and make an authorization that a product can use."""
    api = world.api
    provider = world.onboard("provider", "Tax bureau 税务局")
    operator = world.onboard("operator", "Data operator 数据运营公司")
    developer = world.onboard("developer", "Model studio 模型工作室")
    demander = world.onboard("demander", "City bank 城市商业银行")
    expert = world.member(world.regulator, "expert reviewer 专家", ["expert"])

    ds = api.register_dataset(provider, name="Enterprise tax records",
                              description="annual filings", source_system="tax-core",
                              fields=FIELDS)
    api.publish_dataset(provider, ds)
    requested = [{"dataset_id": ds, "fields": USED}]
    sc = api.propose_scenario(operator, title="SME credit scoring",
                              purpose="score small firms for loans", sector="finance",
                              requested=requested)
    api.give_opinion(expert, sc, "approve", "proportionate")
    api.decide_scenario(world.regulator, sc, "approved")

    now = datetime.now(UTC)
    auth = api.authorize(provider, sc, requested, (now - timedelta(days=1),
                                                   now + timedelta(days=365)),
                         {"processing_count": 100})
    return Chain(provider, operator, developer, demander, expert, ds, sc, auth)


@pytest.fixture
def chain(world: World) -> Chain:
    return build_chain(world)


def product_body(chain: Chain, **changes: Any) -> dict[str, Any]:
    """A valid POST /products body over the chain's authorization."""
    body: dict[str, Any] = {
        "scenario_id": chain.scenario_id, "authorization_ids": [chain.authorization_id],
        "name": "SME credit score", "kind": "api", "description": "a score per firm",
        "code": CODE, "inputs": [{"dataset_id": chain.dataset_id, "fields": USED}],
        "output_schema": {"type": "object", "properties": {
            "taxpayer_id": {"type": "string"}, "score": {"type": "integer"}}},
        "key_column": "taxpayer_id",
        "quality_report": "AUC 0.81 on the 2023 holdout", "price_fen": 1_250_000,
        "developer_id": chain.developer.participant_id}
    body.update(changes)
    return body


def register_product(world: World, chain: Chain, **changes: Any) -> str:
    """A registered (not listed) product of the chain's operator."""
    return world.api.register_product(chain.operator, product_body(chain, **changes))


def list_product(world: World, chain: Chain, **changes: Any) -> str:
    """A listed product: registered, listing requested, approved by the platform."""
    return world.api.list_product(chain.operator, world.platform,
                                  product_body(chain, **changes))
