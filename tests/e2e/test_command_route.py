"""CommandRoute: the short path for the usual command request answers as FastAPI would."""

from __future__ import annotations

import json

import pytest
from fastapi.routing import APIRoute

from api.routes import ROUTERS, common
from client.platform import bearer
from tests.e2e.conftest import World
from tests.e2e.test_catalog_api import dataset_body


def _route(path: str, method: str) -> APIRoute:
    return next(r for router in ROUTERS for r in router.routes
                if isinstance(r, APIRoute) and r.path == path and method in (r.methods or ()))


def test_command_routes_take_the_short_path_and_queries_do_not() -> None:
    assert common._command_shape(_route("/datasets", "POST")) is not None
    assert common._command_shape(_route("/datasets/{dataset_id}/publication", "POST")) is not None
    assert common._command_shape(_route("/datasets", "GET")) is None
    assert common._command_shape(_route("/participants/me", "GET")) is None


@pytest.fixture
def provider(world: World):  # type: ignore[no-untyped-def]
    return world.onboard("provider", "Tax bureau")


def test_a_valid_command_goes_the_short_path(world: World, provider, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import fastapi.routing

    solved = []
    real = fastapi.routing.solve_dependencies

    async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        solved.append(kwargs["request"].url.path)
        return await real(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)  # FastAPI's handler
    made = world.call("POST", "/datasets", provider, 201, json=dataset_body())
    assert made["state"] == "registered" and made["seqs"]
    assert solved == []
    world.client.post("/datasets", content=b"{", headers={**provider.headers,
                                                         "Content-Type": "application/json"})
    assert solved == []  # a body that does not parse is refused before the dependencies
    world.client.post("/datasets", json={"name": ""}, headers=provider.headers)
    assert solved == ["/datasets"]  # FastAPI's own handler names the invalid fields


@pytest.mark.parametrize("case", ["bad json", "not an object", "missing field", "wrong type",
                                  "nested too deep",
                                  "text/plain", "no auth, bad json", "no auth, missing field",
                                  "unknown token, valid"])
def test_refusals_are_fastapis_own(world: World, provider, case: str) -> None:  # type: ignore[no-untyped-def]
    """Whatever the short path does not take, FastAPI's handler answers (as before)."""
    headers = {**provider.headers, "Content-Type": "application/json"}
    body = json.dumps(dataset_body())
    expect = 422
    if case == "bad json":
        body = "{"
    elif case == "not an object":
        body = "[1]"
    elif case == "nested too deep":  # json.loads raises RecursionError, not ValueError
        body = "[" * 100_000 + "]" * 100_000
        expect = 0  # FastAPI's handler: a 4xx, never a 500
    elif case == "missing field":
        body = json.dumps({k: v for k, v in dataset_body().items() if k != "name"})
    elif case == "wrong type":
        body = json.dumps(dataset_body(classification="L9"))
    elif case == "text/plain":
        headers["Content-Type"] = "text/plain"
    elif case == "no auth, bad json":
        del headers["Authorization"]
        body = "{"  # the body is parsed before the dependencies: 422
    elif case == "no auth, missing field":
        del headers["Authorization"]
        body = json.dumps({k: v for k, v in dataset_body().items() if k != "name"})
        expect = 401  # dependencies before the body's fields
    elif case == "unknown token, valid":
        headers.update(bearer("dl_no_such_token_0123456789"))
        expect = 401
    before = world.client.get("/health").json()["head"]
    r = world.client.post("/datasets", content=body.encode(), headers=headers)
    if expect == 0:
        assert 400 <= r.status_code < 500 and "Traceback" not in r.text, r.text
        assert world.client.get("/health").json()["head"] == before
        return
    assert r.status_code == expect, r.text
    assert world.client.get("/health").json()["head"] == before
    if expect == 422:
        assert r.json()["error"] == "invalid_input"


def test_the_server_keeps_pythons_recursion_limit() -> None:
    """py_ecc raises the limit to 100,000 at import; with it a deeply nested JSON body
    overflows the C stack and kills the server (chain/bls.py puts the limit back)."""
    import subprocess
    import sys

    code = ("import sys; before = sys.getrecursionlimit(); "
            "import cli.main, api.app, runtime.build, chain.bls, anchoring.witness_app; "
            "print(before, sys.getrecursionlimit())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out[0] == out[1] == "1000"
