"""Errors at the boundary: every failure is ``{"error": CODE, "detail": ...}``, no stack trace."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from domain import errors as e

log = logging.getLogger("dataledger.api")

STATUS: dict[type[e.DomainError], int] = {
    e.InvalidInput: 422,
    e.IdempotencyKeyReused: 422,
    e.NotFound: 404,
    e.Unauthenticated: 401,
    e.Forbidden: 403,
    e.WrongState: 409,
    e.ConcurrencyConflict: 409,
}


class Problem(BaseModel):
    field: str = Field(description="the invalid field (``query.NAME``, a body field's path)")
    reason: str


class ErrorBody(BaseModel):
    """The body of every error answer (``error_body``), stated in OpenAPI so that a client,
    and the fuzz test, can hold each refusal to it."""

    model_config = ConfigDict(extra="allow")
    error: str = Field(description="the code: invalid_input, forbidden, wrong_state, …")
    detail: Any = Field(description="what went wrong, for a person")
    fields: list[Problem] = Field(default_factory=list,
                                  description="422: each invalid field and why")
    rule: str = Field(default="", description="403 forbidden: the permission the caller lacks")


#: each error status: its usual code, what it means, more of its example body
_ERRORS: list[tuple[int, str, str, dict[str, Any]]] = [
    (400, "bad_request", "malformed request", {}),
    (401, "unauthenticated", "missing or unknown bearer token", {}),
    (403, "forbidden", ("the caller's role may not do this: `forbidden` naming the `rule` "
     "(docs/PERMISSIONS.md), or `separation_of_duties`"), {"rule": "scenario.decision"}),
    (404, "not_found", "no such resource visible to the caller", {}),
    (409, "wrong_state", ("the command does not fit the current state: the aggregate's "
     "(`wrong_state`) or another's, named (e.g. `scenario_suspended`, "
     "`authorization_revoked`); a concurrent change carries `Retry-After`"), {}),
    (422, "invalid_input", "invalid field(s), each named in `fields`",
     {"fields": [{"field": "price_fen", "reason": "must be an integer number of fen >= 0"}]}),
]
#: the shape of every error body, for OpenAPI
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "model": ErrorBody, "content": {"application/json": {
        "example": {"error": name, "detail": text, **extra}}}}
    for code, name, text, extra in _ERRORS
}
#: a result post's body over the limit (only that route says it may answer this)
TOO_LARGE: dict[int | str, dict[str, Any]] = {413: {
    "description": "the body is larger than DATALEDGER_MAX_RESULT_BYTES; nothing was stored",
    "content": {"application/json": {"example": {"error": "too_large", "detail": "…"}}}}}


def error_body(code: str, detail: Any, **extra: Any) -> dict[str, Any]:
    return {"error": code, "detail": detail, **extra}


def _status_of(exc: e.DomainError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


async def domain_error(_: Request, exc: Exception) -> JSONResponse:
    """A domain error as its status and body: invalid input in the one validation shape
    (``fields``, as pydantic's), a refusal naming its rule, ``Retry-After`` on a 409 a
    retry may cure (a concurrent change)."""
    assert isinstance(exc, e.DomainError)
    extra: dict[str, Any] = {}
    if isinstance(exc, e.InvalidInput):
        extra["fields"] = [{"field": exc.field, "reason": exc.reason}]
    if isinstance(exc, e.Forbidden) and "rule" in exc.context:
        extra["rule"] = exc.context["rule"]
    extra.update({k: exc.context[k] for k in exc.shown if k in exc.context})
    headers: dict[str, str] = {}
    if isinstance(exc, e.Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse(error_body(exc.code, exc.detail, **extra), _status_of(exc),
                        headers=headers or None)


async def validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [{"field": ".".join(str(p) for p in err["loc"] if p != "body") or "body",
                 "reason": err["msg"]} for err in exc.errors()]
    fields = ", ".join(p["field"] for p in problems)
    return JSONResponse(error_body("invalid_input", f"invalid field(s): {fields}",
                                   fields=problems), 422)


async def http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated",
            400: "bad_request", 413: "too_large"}.get(exc.status_code, "http_error")
    return JSONResponse(error_body(code, exc.detail), exc.status_code, headers=exc.headers)


async def unexpected_error(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(error_body("internal_error", "the server failed; nothing was written "
                                   "unless the response said so"), 500)


class RefuseNul:
    """ASGI middleware: a NUL character in a URL names nothing (PostgreSQL text cannot hold
    one): in the path it is 404; in a query parameter, 422 naming the parameter.

    Plain ASGI rather than Starlette's BaseHTTPMiddleware, which costs every request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            response = _nul_in_url(scope)
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _nul_in_url(scope: Scope) -> JSONResponse | None:
    if "\x00" in scope["path"] or b"%00" in scope.get("raw_path", b""):
        return JSONResponse(error_body(
            "not_found", "no resource has a NUL character in its path"), 404)
    query: bytes = scope.get("query_string", b"")
    if b"%00" not in query and b"\x00" not in query:
        return None
    names = sorted({name.replace("\x00", "\\0") for name, value in
                    parse_qsl(query.decode("latin-1"), keep_blank_values=True)
                    if "\x00" in name or "\x00" in value})
    if not names:  # "%00" was itself escaped ("%2500"): no NUL
        return None
    problems = [{"field": f"query.{name}", "reason": "must not contain the NUL character"}
                for name in names]
    return JSONResponse(error_body(
        "invalid_input", f"invalid field(s): {', '.join(p['field'] for p in problems)}",
        fields=problems), 422)


def install(app: FastAPI) -> None:
    """Register the handlers: one place maps domain errors to HTTP."""
    app.add_exception_handler(e.DomainError, domain_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
