"""Shapes shared by every router: command answers, not-found and the read-model queries."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import inspect
import json
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi import routing as fastapi_routing
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.utils import get_typed_return_annotation
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError
from starlette.concurrency import run_in_threadpool

from api.deps import Commands, Reader, Services, commands
from domain.application import CommandResult
from domain.errors import ConcurrencyConflict, NotFound, StaleDecision
from domain.usage import Meter
from projections import usage as usage_q
from projections.base import Listing

RouteHandler = Callable[[Request], Coroutine[Any, Any, Response]]


class CommandAnswer(BaseModel):
    """What every command returns: the ids it touched and the seqs it wrote."""

    model_config = {"extra": "allow"}

    seqs: list[int] = Field(description="global sequence numbers of the events written")


class BudgetLine(BaseModel):
    """One dataset's privacy budget (差分隐私预算) under a contract or an authorization: ε as
    exact decimal text (docs/PRIVACY.md)."""

    budget: str | None = Field(description="its privacy_budget; null: none set")
    spent: str = Field(description="ε the executions spent on the dataset (never refunded)")
    remaining: str | None = Field(description="budget − spent; null without a budget")


def answer(result: CommandResult, status: int = 200, **extra: Any) -> JSONResponse:
    """The JSON answer of a command; a replayed Idempotency-Key says so in a header."""
    headers = {"Idempotent-Replayed": "true"} if result.replayed else {}
    return JSONResponse({**result.body, **extra}, status_code=status, headers=headers)


def found(row: dict[str, Any] | None, kind: str, id: str) -> dict[str, Any]:
    """The row, or 404 (also for rows the caller may not see: never the data)."""
    if row is None:
        raise NotFound(f"no {kind} {id}", kind=kind, id=id)
    return row


def visible_rows(reader: Reader, listing: Listing, **filters: str | None) -> list[dict[str, Any]]:
    """The rows of ``listing`` the caller may see, narrowed by ``filters`` (None: any)."""
    with reader.connect() as conn:
        return listing.find_all(conn, reader.actor.participant_id, reader.sees_all, **filters)


def visible_row(reader: Reader, listing: Listing, kind: str, id: str) -> dict[str, Any]:
    """Row ``id`` of ``listing`` if the caller may see it, else 404 (never the data)."""
    with reader.connect() as conn:
        row = listing.find(conn, id, reader.actor.participant_id, reader.sees_all)
    return found(row, kind, id)


def decoded_base64(text: str) -> bytes | None:
    """The bytes of a body field in base64, or None for text that is no base64 (the use
    case says so once it checked who posts)."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def meter(reader: Reader, contract_id: str) -> Meter:
    """The contract's usage counters as the read models hold them (``domain.usage``)."""
    with reader.connect() as conn:
        return usage_q.meter(conn, contract_id)


def catch_up(container: Services) -> None:
    """Let the read models reach the log's head (another process's use moved it)."""
    container.runner.wait_for(container.store.max_seq(), container.settings.read_wait_seconds)


#: how often a command that met a concurrent change of one of its aggregates is decided again
TRIES = 8


async def run_retried(cmd: Commands, handler: Callable[..., dict[str, Any]], *args: Any,
                      metered: str | None = None, **kwargs: Any) -> CommandResult:
    """``cmd.run``, decided again on a fresh read while another command changed one of its
    aggregates first (the providers' nodes of a joint execution post to it at once); a
    signed decision's stale version is its member's to sign again (raised).

    ``metered``: a contract id whose usage counters the handler decides on (``meter=``,
    read each try from the read models, caught up with the log after a conflict: another
    use of the contract moved its usage stream first)."""
    reader = Reader(cmd.container, cmd.actor)
    for attempt in range(TRIES):
        if metered is not None:
            kwargs["meter"] = await run_in_threadpool(meter, reader, metered)
        try:
            return await cmd.run(handler, *args, **kwargs)
        except ConcurrencyConflict as exc:
            if isinstance(exc, StaleDecision) or attempt + 1 == TRIES:
                raise
            if metered is not None:
                await run_in_threadpool(catch_up, cmd.container)
    raise AssertionError("unreachable: the last try raises")


#: a key (a computation id) -> the lock its byte posts take, so that one post's refusal
#: never drops the bytes another post of the same bytes (in this process) is about to record
_POSTS: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


@contextlib.asynccontextmanager
async def posting(key: str) -> AsyncIterator[None]:
    """One post of bytes kept off the log (stored, recorded, dropped if refused) for
    ``key`` at a time, in this process."""
    lock = _POSTS.get(key)
    if lock is None:
        lock = _POSTS[key] = asyncio.Lock()
    async with lock:
        yield


class ReadRoute(APIRoute):
    """An APIRoute whose GET answers always encode what the store holds.

    FastAPI encodes an answer with pydantic, which gives up on a value nested more than 255
    levels deep ("Maximum serialization depth exceeded"): one such free-form value stored
    before the edge bounded them (``api.fields.JsonBounds``) would answer 500 on every read
    showing it, for good. Here the answer is validated by the response model as FastAPI
    would (a column the model does not name is dropped), encoded by pydantic when it can
    and otherwise by the standard library's JSON encoder.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        model = kwargs.get("response_model", DefaultPlaceholder(None))
        if isinstance(model, DefaultPlaceholder):  # FastAPI's rule: the return annotation
            model = get_typed_return_annotation(endpoint)
            if inspect.isclass(model) and issubclass(model, Response):
                model = None
        if set(kwargs.get("methods") or ()) == {"GET"} and model is not None:
            kwargs["response_model"] = model
            dump = {name: kwargs[f"response_model_{name}"] for name in _DUMP_OPTIONS
                    if f"response_model_{name}" in kwargs}
            endpoint = _always_encoded(endpoint, TypeAdapter(model), dump)
        super().__init__(path, endpoint, **kwargs)


#: the response_model_* options of a route, as pydantic's dump takes them
_DUMP_OPTIONS = ("include", "exclude", "by_alias", "exclude_unset", "exclude_defaults",
                 "exclude_none")


def _always_encoded(endpoint: Callable[..., Any], adapter: TypeAdapter[Any],
                    dump: dict[str, Any]) -> Callable[..., Any]:
    """``endpoint`` answering a Response (see ReadRoute), dumped with the route's
    ``response_model_*`` options (``dump``); sync or async as it was, since FastAPI runs a
    sync endpoint in a worker thread."""
    dump = {"by_alias": True, **dump}

    def encoded(content: Any) -> Any:
        if isinstance(content, Response):
            return content
        value = adapter.validate_python(content, from_attributes=True)
        try:
            body = adapter.dump_json(value, **dump)
        except PydanticSerializationError:  # deeper than pydantic encodes
            body = json.dumps(adapter.dump_python(value, **dump), ensure_ascii=False,
                              allow_nan=False, separators=(",", ":")).encode()
        return Response(body, media_type="application/json")

    if inspect.iscoroutinefunction(endpoint):
        @functools.wraps(endpoint)
        async def answer_async(*args: Any, **kwargs: Any) -> Any:
            return encoded(await endpoint(*args, **kwargs))
        return answer_async

    @functools.wraps(endpoint)
    def answer_sync(*args: Any, **kwargs: Any) -> Any:
        return encoded(endpoint(*args, **kwargs))
    return answer_sync


class CommandRoute(ReadRoute):
    """An APIRoute with a short path for the usual command request.

    A command route (an async endpoint taking ``CommandsDep``, at most one JSON body
    model, plain ``str`` path parameters, nothing else, and returning a Response) spends
    most of its FastAPI overhead on solving dependencies and validating parameters one by
    one. For a request whose body (if the route takes one) is ``application/json`` and
    validates, this route
    validates the body with the model itself, runs the ``commands`` dependency and calls
    the endpoint directly. Anything else (another content type, a body that does not
    parse or validate, dependency overrides) goes through FastAPI's own handler, which
    then answers exactly as it always does.
    """

    def get_route_handler(self) -> RouteHandler:
        standard = super().get_route_handler()
        # FastAPI builds the handler of an included route for its inclusion context (with
        # the including router's dependencies and the app's overrides): look at that one.
        context_var = getattr(fastapi_routing, "_effective_route_context_var", None)
        context = context_var.get() if context_var is not None else None
        route: Any = context if getattr(context, "original_route", None) is self else self
        shape = _command_shape(route)
        if shape is None:
            return standard
        call, commands_name, body_name, model, path_names = shape
        overrides = route.dependency_overrides_provider

        async def handler(request: Request) -> Response:
            if getattr(overrides, "dependency_overrides", None):
                return await standard(request)
            values: dict[str, Any] = {name: request.path_params[name] for name in path_names}
            if model is not None:
                if request.headers.get("content-type") != "application/json":
                    return await standard(request)
                try:
                    values[body_name] = model.model_validate(json.loads(await request.body()))
                except (ValueError, ValidationError, RecursionError):  # FastAPI answers these
                    return await standard(request)
            values[commands_name] = await commands(request)
            response = await call(**values)
            if not isinstance(response, Response):  # not a command endpoint after all
                raise TypeError(f"{self.path}: a CommandRoute endpoint must return a Response")
            return response

        return handler


def _command_shape(route: Any) -> tuple[Any, str, str, type[BaseModel] | None,
                                             list[str]] | None:
    """(endpoint, its commands parameter, its body parameter, the body model, path
    parameter names) if the route has the shape CommandRoute shortens, else None."""
    dependant = route.dependant
    call = dependant.call
    if (call is None or not inspect.iscoroutinefunction(call) or dependant.query_params
            or dependant.header_params or dependant.cookie_params
            or dependant.request_param_name or dependant.websocket_param_name
            or dependant.http_connection_param_name or dependant.response_param_name
            or dependant.background_tasks_param_name or dependant.security_scopes_param_name
            or len(dependant.dependencies) != 1 or dependant.dependencies[0].call is not commands
            or not dependant.dependencies[0].name or len(dependant.body_params) > 1
            or route._embed_body_fields
            or inspect.signature(call).return_annotation not in (JSONResponse, "JSONResponse")):
        return None
    for field in dependant.path_params:
        if field.field_info.annotation is not str or field.field_info.metadata:
            return None
    model: type[BaseModel] | None = None
    body_name = ""
    if dependant.body_params:
        field = dependant.body_params[0]
        annotation = field.field_info.annotation
        if (not isinstance(annotation, type) or not issubclass(annotation, BaseModel)
                or field.field_info.alias not in (None, field.name) or field.field_info.metadata
                or not field.field_info.is_required()):
            return None
        model, body_name = annotation, field.name
    return (call, dependant.dependencies[0].name, body_name, model,
            [f.name for f in dependant.path_params])
