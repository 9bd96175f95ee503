"""The HTTP API as the parties drive it, on a SQLite file and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from runtime.build import Container, build
from runtime.settings import Settings

ADMIN_TOKEN = "dl_test_admin_token_0123456789abcdef"


@pytest.fixture
def container(database_url: str, tmp_path: Path) -> Iterator[Container]:
    settings = Settings(data_dir=tmp_path / "var", database_url=database_url,
                        admin_token=ADMIN_TOKEN, checkpoint_every_seconds=0.3)
    c = build(settings)
    yield c
    c.close()


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container=container), raise_server_exceptions=False) as tc:
        yield tc


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Party:
    """An onboarded participant and one member's token."""

    participant_id: str
    token: str
    role: str
    member_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


class World:
    """Onboards the six parties over HTTP, as the platform and regulator would."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        me = client.get("/participants/me", headers=bearer(ADMIN_TOKEN)).json()
        self.platform = Party(me["participant"]["id"], ADMIN_TOKEN, "platform", me["member_id"])
        self.regulator = self.onboard("regulator", "Municipal data bureau 大数据局")

    def call(self, method: str, path: str, party: Party, expect: int = 200,
             **kwargs: Any) -> Any:
        """One request; asserts the status (showing the body on failure)."""
        response = self.client.request(method, path, headers=party.headers, **kwargs)
        assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def onboard(self, role: str, name: str, admit: bool = True) -> Party:
        body = {"name": name, "role": role, "credit_code": "91110000MA01ABCDE" + role[0].upper(),
                "admin_name": f"{role} admin"}
        made = self.call("POST", "/participants", self.platform, 201, json=body)
        party = Party(made["participant_id"], made["token"], role, made["member_id"])
        if admit:
            judge = self.regulator if role == "operator" else self.platform
            self.call("POST", f"/participants/{party.participant_id}/admission", judge,
                      json={"approve": True, "comment": "meets the admission criteria"})
        return party

    def member(self, party: Party, name: str, roles: list[str]) -> Party:
        made = self.call("POST", f"/participants/{party.participant_id}/members", party, 201,
                         json={"name": name, "roles": roles})
        return Party(party.participant_id, made["token"], party.role, made["member_id"])


@pytest.fixture
def world(client: TestClient) -> World:
    return World(client)
