"""The edge of the HTTP API: how much of a request body the app reads and how long it waits
for it, the methods a path answers (``OPTIONS``, 405), a client that left, and the limits
the OpenAPI document states. The server's own limits (the request head: its size and how
long it may take) are ``runtime.http_server``'s."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import ReadSettings
from api.errors import error_body
from api.fields import MAX_JSON_BYTES, MAX_JSON_DEPTH
from core.hidden_query import ELEMENT_BYTES, MAX_CODES, REQUEST_TAG
from domain.joint import MAX_KEYS, MAX_PART_WORDS

log = logging.getLogger("dataledger.api")

#: answers that end the connection: the rest of the request body is never read
CLOSE = {"Connection": "close"}
#: the ``scope["extensions"]`` entry the server (``runtime.http_server``) sets,
#: ``{"seconds": timeout}``, when no part of a request's body came for that long (it then
#: wakes the app's wait for the body, and LimitBody answers 408)
BODY_TIMED_OUT = "dataledger.body_timed_out"
#: the body of a joint computation's masked part (``api/routes/joint.py``): the most words
#: a layout allows (``domain.joint.MAX_PART_WORDS``, 8 bytes each) in base64, and room for
#: the header, the input hashes and the datasite
JOINT_PART_BODY_BYTES = 4 * -(-8 * MAX_PART_WORDS // 3) + 64 * 1024
#: the JSON bytes a layout key may take on average in a layout of MAX_KEYS keys: a credit
#: code of 18 characters, its quotes, a separator, and room (longer keys: fewer of them)
LAYOUT_KEY_BYTES = 24
#: the body of a joint's layout (``POST /joint/{id}/layout``): MAX_KEYS keys of
#: LAYOUT_KEY_BYTES each, and the JSON around them
JOINT_LAYOUT_BODY_BYTES = MAX_KEYS * LAYOUT_KEY_BYTES + 4096
#: the body of a hidden query (``api/routes/hidden_queries.py``): a request of MAX_CODES
#: blinded elements in base64, and room for the JSON around it (the joint id)
HIDDEN_QUERY_BODY_BYTES = 4 * -(-(len(REQUEST_TAG) + 4 + ELEMENT_BYTES * MAX_CODES) // 3) + 4096
#: the routes whose body has a limit of its own, by path: (pattern, limit); a result
#: post's is the setting DATALEDGER_MAX_RESULT_BYTES (``LimitBody``)
FIXED_LIMITS: list[tuple[re.Pattern[str], int, str]] = [
    (re.compile(r"/computations/[^/]+/masked-part"), JOINT_PART_BODY_BYTES,
     "a masked part's body (POST /computations/{id}/masked-part)"),
    (re.compile(r"/joint/[^/]+/layout"), JOINT_LAYOUT_BODY_BYTES,
     "a layout's body (POST /joint/{id}/layout)"),
    (re.compile(r"/orders/[^/]+/hidden-queries"), HIDDEN_QUERY_BODY_BYTES,
     "a hidden query's body (POST /orders/{id}/hidden-queries)")]


@dataclass(frozen=True)
class BodyLimit:
    """The most bytes of a body, and the setting that says so (named in the 413)."""

    limit: int
    setting: str

    def detail(self) -> str:
        return f"the body is larger than {self.limit} bytes ({self.setting}); nothing was stored"


class LimitBody:
    """ASGI middleware: every request body is bounded in size, and answered 408 when the
    server says it stalled.

    A body larger than its limit (``DATALEDGER_MAX_BODY_BYTES``; a result post,
    ``POST /computations/{id}/result``, ``DATALEDGER_MAX_RESULT_BYTES``) is answered 413
    ``too_large``: a declared ``Content-Length`` over it at once, unread; otherwise (a
    chunked body) the bytes are counted as the app reads them, and reading past the limit
    raises the 413 where the route reads. A body the server marks stalled (no part of it
    for ``DATALEDGER_BODY_READ_TIMEOUT`` seconds: ``BODY_TIMED_OUT``; the timer is the
    server's, so a body that came whole costs nothing here) is answered 408
    ``request_timeout``. Either way the route never runs, nothing is stored, and the
    connection is closed (the rest is never read).
    """

    RESULT = re.compile(r"/computations/[^/]+/result")

    def __init__(self, app: ASGIApp, limit: int, result_limit: int) -> None:
        self.app = app
        self.body = BodyLimit(limit, "DATALEDGER_MAX_BODY_BYTES")
        self.result = BodyLimit(result_limit, "DATALEDGER_MAX_RESULT_BYTES")
        self.fixed = [(pattern, BodyLimit(size, what)) for pattern, size, what in FIXED_LIMITS]

    def bound(self, method: str, path: str) -> BodyLimit:
        """The limit of a request's body: a result post's, a route's own, or the rest's."""
        if method == "POST" and self.RESULT.fullmatch(path):
            return self.result
        if method == "POST":
            for pattern, limit in self.fixed:
                if pattern.fullmatch(path):
                    return limit
        return self.body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        bound = self.bound(scope["method"], scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > bound.limit:
                    await JSONResponse(error_body("too_large", bound.detail()), 413,
                                       headers=CLOSE)(scope, receive, send)
                    return
                break
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            body = message.get("body", b"")
            if not body and message.get("more_body"):  # woken without a part: stalled?
                stalled = (scope.get("extensions") or {}).get(BODY_TIMED_OUT)
                if stalled is not None:
                    raise StarletteHTTPException(408, (
                        f"no part of the request body came for {stalled['seconds']:g} s "
                        "(DATALEDGER_BODY_READ_TIMEOUT); nothing was stored"), CLOSE)
            seen += len(body)
            if seen > bound.limit:
                raise StarletteHTTPException(413, bound.detail(), CLOSE)
            return message

        await self.app(scope, bounded, send)


def allowed_methods(app: Any, path: str) -> list[str]:
    """Every method of ``path`` in ``app`` (and OPTIONS), sorted; [] if it has no such path.

    FastAPI's router answers a method a path lacks from the first route matching the path
    alone, so its ``Allow`` named only that route's methods; this names them all.
    """
    table: list[tuple[re.Pattern[str], frozenset[str]]] | None = getattr(
        app.state, "path_methods", None)
    if table is None:
        table = [(compile_path(c.path)[0], frozenset(c.methods))
                 for c in iter_route_contexts(app.routes) if c.path is not None and c.methods]
        app.state.path_methods = table
    methods = {m for regex, ms in table if regex.match(path) for m in ms}
    return sorted(methods | {"OPTIONS"}) if methods else []


class AnswerOptions:
    """ASGI middleware: ``OPTIONS`` on a path the app has is 204 with ``Allow`` naming every
    method of the path; on any other path the app answers (404)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            allowed = allowed_methods(scope["app"], scope["path"])
            if allowed:
                await Response(status_code=204, headers={"Allow": ", ".join(allowed)})(
                    scope, receive, send)
                return
        await self.app(scope, receive, send)


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    """405 ``method_not_allowed`` with ``Allow`` naming every method of the path."""
    allowed = ", ".join(allowed_methods(request.app, request.url.path))
    return JSONResponse(error_body("method_not_allowed", (
        f"{request.method} is not a method of {request.url.path}; it has {allowed}")),
        405, headers={"Allow": allowed})


async def request_timeout(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(error_body("request_timeout", exc.detail), 408, headers=exc.headers)


async def client_disconnected(request: Request, exc: Exception) -> Response:
    """A client that left before its request was read: one line in the log, no traceback
    (nobody is there to read an answer)."""
    client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
    log.warning("client %s disconnected before its request was read: %s %s", client,
                request.method, request.url.path)
    return Response(status_code=400)


def install(app: FastAPI, settings: ReadSettings) -> None:
    """The edge's middlewares, handlers and OpenAPI statements on ``app``."""
    app.add_middleware(LimitBody, limit=settings.max_body_bytes,
                       result_limit=settings.max_result_bytes)
    app.add_middleware(AnswerOptions)
    app.add_exception_handler(405, method_not_allowed)
    app.add_exception_handler(408, request_timeout)
    app.add_exception_handler(ClientDisconnect, client_disconnected)
    _document_limits(app, settings)


def limits_text(settings: ReadSettings) -> str:
    """The limits the server enforces, as the OpenAPI document's description lists them."""
    body = (f"- a request body: at most {settings.max_body_bytes} bytes "
            f"(DATALEDGER_MAX_BODY_BYTES); a result post's (POST /computations/{{id}}/result) "
            f"at most {settings.max_result_bytes} (DATALEDGER_MAX_RESULT_BYTES)"
            + "".join(f"; {what} at most {size}" for _, size, what in FIXED_LIMITS)
            + ": 413 too_large")
    body_time = (f"- each part of a body arrives within {settings.body_read_timeout:g} s of "
                 "the last (DATALEDGER_BODY_READ_TIMEOUT): 408 request_timeout, the "
                 "connection closed")
    head = (f"- a request's head (request line and headers): at most "
            f"{settings.max_header_bytes} bytes (DATALEDGER_MAX_HEADER_BYTES; 431), within "
            f"{settings.header_read_timeout:g} s of the connection or of the previous answer "
            "(DATALEDGER_HEADER_READ_TIMEOUT; the connection closed)")
    json_fields = (f"- a free-form JSON field (output_schema, usage_policy, a query's values, "
                   f"a result): at most {MAX_JSON_DEPTH} levels of nested objects and lists "
                   f"(x-max-depth); one stored in an event at most {MAX_JSON_BYTES} bytes of "
                   "JSON (x-max-bytes): 422 naming the field")
    fields = ("- strings, lists and integers: minLength/maxLength, minItems/maxItems, "
              "minimum/maximum in each schema: 422 naming the field")
    integers = ("- an integer is a JSON integer literal: a number with a fraction part, even "
                "a zero one (26772.0), is 422 naming the field")
    nul = ("- no text holds the NUL character (U+0000): in a body (a string or a key) or "
           "a query value 422 naming the field, in a path 404")
    lines = ["Limits the server enforces:", body, body_time, head, json_fields, fields,
             integers, nul]
    return "\n".join(lines)


#: the schema of an error answer (api.errors.ErrorBody, a component of the document)
ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


def _document_limits(app: FastAPI, settings: ReadSettings) -> None:
    """State the limits in the OpenAPI document: in its description, and on each operation
    with a body its 413 (the limit in bytes) and 408."""
    build_openapi = app.openapi
    app.description = f"{app.description}\n\n{limits_text(settings)}"
    limits = LimitBody(app, settings.max_body_bytes, settings.max_result_bytes)

    def openapi() -> dict[str, Any]:
        schema = build_openapi()
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                if "requestBody" not in operation:
                    continue
                bound = limits.bound(method.upper(), path.replace("{", "").replace("}", ""))
                responses = operation.setdefault("responses", {})
                responses["413"] = {"description": bound.detail(), "content": {
                    "application/json": {"schema": ERROR_BODY, "example": {
                        "error": "too_large", "detail": bound.detail()}}}}
                responses["408"] = {"description": (
                    f"no part of the body came for {settings.body_read_timeout:g} s "
                    "(DATALEDGER_BODY_READ_TIMEOUT); nothing was stored"), "content": {
                    "application/json": {"schema": ERROR_BODY, "example": {
                        "error": "request_timeout", "detail": "…"}}}}
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
