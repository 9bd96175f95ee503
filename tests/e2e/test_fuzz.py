"""The API fuzzed over its own OpenAPI document (schemathesis, in-process ASGI, SQLite).

Every operation, as the platform admin and as a demander, each on a market of its own:
parties, a published dataset, an approved scenario and authorization, a listed product,
an approved contract, a computation with its result. Ids in valid paths, queries and
bodies are often replaced by real ones (and by ids the run itself creates), and valid
decision bodies often signed with the caller's key, so the fuzzer reaches stored
resources and the domain behind the signature check, not only 404s and 403s. The issue's
poison, a product whose ``output_schema`` nests 256 lists deep, is an explicit example of
``POST /products``, sent by an operator before the reads are fuzzed.

Checks: no 5xx; every status, content type, header and body as the document declares it
(errors included); input the document calls invalid refused; a method a path lacks 405
with a complete ``Allow``; each operation that declares the bearer token refuses a request
without it or with a wrong one. Bounded by ``MAX_EXAMPLES`` fuzzed cases per operation
(plus the coverage phase's boundary cases, once), no shrinking. The operations covered,
the examples run and the server errors are written in pytest's terminal summary."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.core.parameters import ParameterLocation
from schemathesis.python import asgi
from schemathesis.specs.openapi import checks as openapi_checks

from client import signing
from client.platform import Party
from runtime.build import Container
from tests.e2e import test_computations_api as computations
from tests.e2e.conftest import Chain, World, build_chain, list_product, product_body
from tests.e2e.test_hardening import nested
from tests.e2e.test_market_api import proposal

ROLES = ("platform", "demander")
#: fuzzing examples per operation and role (the examples and coverage phases add theirs)
MAX_EXAMPLES = 10
CHECKS = [schemathesis.checks.not_a_server_error, openapi_checks.status_code_conformance,
          openapi_checks.content_type_conformance, openapi_checks.response_headers_conformance,
          openapi_checks.response_schema_conformance, openapi_checks.negative_data_rejection,
          openapi_checks.unsupported_method, openapi_checks.allow_header_conformance,
          openapi_checks.missing_required_header, openapi_checks.ignored_auth]
#: invalid input is met before the role matters (FastAPI validates it first): the coverage
#: phase's cases (boundaries, wrong types, other methods) and invalid fuzzed ones run as
#: one role each, valid fuzzed ones as both
CONFIG: dict[str, dict[str, Any]] = {
    "platform": {"generation": {"with-security-parameters": False},
                 "phases": {"stateful": {"enabled": False},
                            "coverage": {"generation": {"mode": "negative"}},
                            "fuzzing": {"generation": {"mode": "positive"}}}},
    "demander": {"generation": {"mode": "all", "with-security-parameters": False},
                 "phases": {"stateful": {"enabled": False}, "coverage": {"enabled": False}}}}


def poison(chain: Chain) -> dict[str, Any]:
    """The issue's poison: a valid product body whose output schema nests 256 lists deep."""
    valid = product_body(chain)
    return {**valid, "output_schema": {**valid["output_schema"], "enum": nested(256)}}


@dataclass
class FuzzRun:
    """One role's run: who calls, the real ids to draw from, and what was seen."""

    role: str
    party: Party
    operator: Party
    poison: dict[str, Any]
    ids: dict[str, list[Any]]
    #: the app, to read an aggregate's version with
    http: TestClient
    operations: set[str] = field(default_factory=set)
    examples: int = 0
    #: decisions the run signed
    signed: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    phases: Counter[str] = field(default_factory=Counter)
    #: how many operations the document has
    documented: int = 0
    server_errors: list[str] = field(default_factory=list)
    #: what POST /products answered the poison
    poison_status: int | None = None

    def token_for(self, case: schemathesis.Case) -> str:
        """The role's token; the operator's for the poison (only an operator registers)."""
        return self.operator.token if self.is_poison(case) else self.party.token

    def is_poison(self, case: schemathesis.Case) -> bool:
        return case.operation.label == "POST /products" and case.body == self.poison

    def prepare(self, case: schemathesis.Case) -> None:
        """Replace, in three cases of four, each id of a component generated as valid (path,
        query, body) by a real one; sign, one time in two, a valid decision body with the
        party's key at the aggregate's version, so that the command passes the signature
        check and meets the domain. Each choice is the case's own, so a run repeats.
        Invalid components are left as they are, for the checks that expect them refused."""
        if case.meta is None:  # an explicit example: sent as written
            return
        rng = random.Random(repr((case.path_parameters, case.query, case.body)))
        for location, name in ((ParameterLocation.PATH, "path_parameters"),
                               (ParameterLocation.QUERY, "query"),
                               (ParameterLocation.BODY, "body")):
            values = getattr(case, name)
            if not isinstance(values, dict) or case.meta.is_negative_at(location):
                continue
            real = {key: rng.choice(self.ids[key])
                    for key in values if self.ids.get(key) and rng.random() < 0.75}
            if real:
                setattr(case, name, {**values, **real})
        if (isinstance(case.body, dict) and not case.meta.is_negative_at(ParameterLocation.BODY)
                and self.party.key is not None and rng.random() < 0.5):
            made = signing.decision_of(case.method, case.formatted_path, case.body)
            if made is not None:
                version = signing.view_version(self.http.get(made.view,
                                                             headers=self.party.headers))
                body = signing.signed(self.party.key, self.party.member_id, made, version,
                                      case.body)
                if body is not None:
                    case.body = body
                    self.signed += 1

    def seen(self, case: schemathesis.Case, status: int, body: bytes) -> None:
        self.operations.add(case.operation.label)
        if self.is_poison(case):
            self.poison_status = status
        self.examples += 1
        self.phases[case.meta.phase.name.value if case.meta else "examples"] += 1
        self.statuses[status] += 1
        if status >= 500:
            self.server_errors.append(f"{case.operation.label} {status}: {body[:200]!r}")
        if status in (200, 201):
            self.remember(body)

    def remember(self, body: bytes) -> None:
        """Ids the run created join the pools (e.g. the poison product's)."""
        try:
            answer = json.loads(body)
        except ValueError:
            return
        if not isinstance(answer, dict):
            return
        for key, value in answer.items():
            pool = self.ids.get(key)
            if pool is not None and isinstance(value, str) and value not in pool:
                pool.append(value)


class Report:
    """The fuzz runs' figures, written in pytest's terminal summary."""

    def __init__(self) -> None:
        self.runs: list[FuzzRun] = []

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.runs:
            return
        terminalreporter.section("fuzz (schemathesis)")
        for run in self.runs:
            phases = ", ".join(f"{name} {n}" for name, n in sorted(run.phases.items()))
            statuses = ", ".join(f"{s}: {n}" for s, n in sorted(run.statuses.items()))
            terminalreporter.write_line(
                f"fuzz as {run.role}: {len(run.operations)} of {run.documented} operations "
                f"covered, {run.examples} examples ({phases}; {run.signed} decisions "
                f"signed), {len(run.server_errors)} "
                f"server errors; statuses {statuses}; the 256-deep poison answered "
                f"{run.poison_status}")
            for error in run.server_errors[:20]:
                terminalreporter.write_line(f"  server error: {error}")


@pytest.fixture(scope="session")
def report(pytestconfig: pytest.Config) -> Report:
    plugin = Report()
    pytestconfig.pluginmanager.register(plugin, "dataledger-fuzz-report")
    return plugin


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """SQLite only: the fuzz is about the API, not the store."""
    return sqlite_url


def market(world: World, container: Container) -> tuple[Chain, dict[str, list[Any]]]:
    """Parties, a published dataset, an approved scenario and authorization, a listed
    product, an order with an approved contract, a computation with its result: their ids,
    by the name of the parameter or field that takes them."""
    api = world.api
    chain = build_chain(world)
    product = list_product(world, chain)
    order = api.place_order(chain.demander, product, "credit decisions on SMEs")
    api.propose_contract(chain.operator, order, **proposal())
    api.accept_contract(chain.demander, order)
    for approver in (chain.provider, chain.operator):
        api.approve_contract(approver, order)
    contract = order  # the contract id is the order id
    computation = world.call("POST", "/computations", chain.provider, 201,
                             json=computations.ask(contract))["computation_id"]
    world.call("POST", f"/computations/{computation}/result", chain.provider,
               json=computations.report(chain))
    parties = [world.platform, world.regulator, chain.provider, chain.operator,
               chain.developer, chain.demander]
    head = container.store.max_seq()
    ids: dict[str, list[Any]] = {
        "participant_id": [p.participant_id for p in parties],
        "dataset_id": [chain.dataset_id], "scenario_id": [chain.scenario_id],
        "authorization_id": [chain.authorization_id], "product_id": [product],
        "order_id": [order], "contract_id": [contract],
        "computation_id": [computation], "delivery_id": [computation],
        "developer_id": [chain.developer.participant_id],
        "key_id": [p.key_id for p in parties if p.key_id],
        "seq": [1, head // 2, head], "size": [1, head], "index": [0, head - 1],
        "after": [0, head - 1]}
    return chain, ids


@pytest.fixture(params=ROLES)
def fuzz_run(request: pytest.FixtureRequest, world: World, container: Container,
             report: Report) -> FuzzRun:
    """One role's run over a market of its own. The poison is sent by the operator of a
    chain of its own, kept out of the pools: fuzzing the operations before ``POST
    /products`` (suspensions, revocations) does not spoil its inputs."""
    chain, ids = market(world, container)
    poisoner = build_chain(world)
    party = world.platform if request.param == "platform" else chain.demander
    run = FuzzRun(request.param, party, poisoner.operator, poison(poisoner), ids, world.client)
    report.runs.append(run)
    return run


@pytest.fixture
def fuzzed(fuzz_run: FuzzRun, client: TestClient) -> Iterator[schemathesis.schemas.BaseSchema]:
    """The app's OpenAPI document, loaded in-process, the poison among its examples."""
    run = fuzz_run
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app,
                                            config=schemathesis.Config.from_dict(CONFIG[run.role]))

    run.documented = sum(1 for _ in schema.get_all_operations())

    @schema.hook
    def before_add_examples(context: Any, examples: list[schemathesis.Case]) -> None:
        if context.operation.label == "POST /products":
            examples.append(context.operation.Case(body=run.poison,
                                                   media_type="application/json"))

    try:
        yield schema
    finally:
        asgi.shutdown_lifespans()
    assert run.poison_status is not None, "the poison example was not sent"


schema = schemathesis.pytest.from_fixture("fuzzed")


@schema.parametrize()
# derandomized, so that a run repeats; no shrinking: a failure is reported as found, in time
@hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                     derandomize=True,
                     phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_every_operation_fuzzed(case: schemathesis.Case, fuzz_run: FuzzRun) -> None:
    """No 5xx and no answer the document does not describe, as each role."""
    run = fuzz_run
    run.prepare(case)
    headers = {**(case.headers or {}), "Authorization": f"Bearer {run.token_for(case)}"}
    response = case.call(headers=headers)
    run.seen(case, response.status_code, response.content)
    case.validate_response(response, checks=CHECKS, headers=headers)
