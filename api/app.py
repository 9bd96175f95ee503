"""The FastAPI application: one router per resource, errors mapped in one place."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response

from api import edge, errors
from api.deps import Services

log = logging.getLogger("dataledger.api")

#: what serve says at start, and /health shows, while unsigned decisions are let through
UNSIGNED_WARNING = ("DATALEDGER_ALLOW_UNSIGNED_DECISIONS is set: decisions without a "
                    "signature are accepted and recorded with signature null (development "
                    "mode; never in production)")


def create_app(container: Services) -> FastAPI:
    """The app over services built by the composition root (``runtime.build``); their owner
    closes them."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.container.ledger.allow_unsigned_decisions:
            log.warning("WARNING: %s", UNSIGNED_WARNING)
        aggregator = app.state.container.aggregator
        # the aggregation node's sweep: deadlines, and joints whose parts are all in
        sweeps = None if aggregator is None else asyncio.create_task(aggregator.run_sweeps())
        yield
        if sweeps is not None:
            sweeps.cancel()
            await asyncio.gather(sweeps, return_exceptions=True)
            await aggregator.wait_idle()  # an aggregation in flight finishes its record
        await app.state.container.ledger.aclose()  # this loop's connection, if it made one

    app = FastAPI(title="dataledger", version="0.1.0", lifespan=lifespan,
                  description="Public data authorized-operation platform: every step an "
                  "event in one append-only log.", responses=errors.ERROR_RESPONSES)
    app.state.container = container
    errors.install(app)
    edge.install(app, container.settings)
    app.add_middleware(errors.RefuseNul)
    _include_routers(app)
    _document_command_headers(app)

    @app.get("/health", tags=["health"],
             responses={503: {"description": "degraded: the background process (projections, "
                                             "chain) is down and being restarted"}})
    def health(response: Response) -> dict[str, Any]:
        """Liveness and the log's head; whether the witnesses are independent of this server
        (``witnesses``); whether decisions must be signed (``unsigned_decisions``: required,
        or allowed in development mode); 503 ``degraded`` while the background process is down."""
        c: Services = app.state.container
        body: dict[str, Any] = {"status": "ok", "head": c.store.max_seq(),
                                "projected": c.runner.position,
                                "unsigned_decisions": "allowed"
                                if c.ledger.allow_unsigned_decisions else "required"}
        if c.chain is not None:  # whether the witnesses can hold this server to its log
            body["witnesses"] = c.chain.independence()
        if c.background is not None and not c.background.running:
            response.status_code = 503
            body.update(status="degraded", background=c.background.state())
        return body

    @app.get("/noop", tags=["health"], include_in_schema=False)
    async def noop() -> dict[str, str]:
        """A no-op endpoint: the HTTP baseline of `dataledger bench append`."""
        return {"status": "ok"}

    return app


def _document_command_headers(app: FastAPI) -> None:
    """List the command routes' headers in the OpenAPI document.

    The command dependency reads ``Authorization`` and ``Idempotency-Key`` from the
    request itself (declared as FastAPI header parameters they cost every command a
    validation step each), so they are added to the document here, as FastAPI would.
    """
    from fastapi.dependencies.models import Dependant
    from fastapi.routing import APIRoute

    from api.deps import COMMAND_HEADERS, commands
    from api.routes import ROUTERS

    def uses_commands(dependant: Dependant) -> bool:
        return any(d.call is commands or uses_commands(d) for d in dependant.dependencies)

    operations = [(route.path_format, method.lower()) for router in ROUTERS
                  for route in router.routes
                  if isinstance(route, APIRoute) and uses_commands(route.dependant)
                  for method in route.methods or ()]
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build_openapi()
        for path, method in operations:
            operation = schema["paths"][path][method]
            parameters = operation.setdefault("parameters", [])
            names = {p["name"] for p in parameters}
            parameters.extend(dict(h) for h in COMMAND_HEADERS if h["name"] not in names)
            operation["security"] = [{BEARER: []}]
        _document_bearer(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


BEARER = "bearer"


def _document_bearer(schema: dict[str, Any]) -> None:
    """State the bearer token as the document's security scheme, on every operation that
    reads it: the OpenAPI specification ignores a header parameter named Authorization (the
    one FastAPI lists for ``current_actor``), so clients and fuzzers would not know it."""
    for operations in schema["paths"].values():
        for operation in operations.values():
            parameters = operation.get("parameters", [])
            kept = [p for p in parameters
                    if (p["in"], p["name"].lower()) != ("header", "authorization")]
            if len(kept) < len(parameters):
                operation["security"] = [{BEARER: []}]
                if kept:
                    operation["parameters"] = kept
                else:
                    del operation["parameters"]
    schema.setdefault("components", {}).setdefault("securitySchemes", {})[BEARER] = {
        "type": "http", "scheme": "bearer",
        "description": "a member's token (Authorization: Bearer dl_…); 401 without it"}


def _include_routers(app: FastAPI) -> None:
    from api.routes import ROUTERS

    for router in ROUTERS:
        app.include_router(router)
