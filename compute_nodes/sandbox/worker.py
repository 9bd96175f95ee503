"""The worker's side of one job, after its confinement: read the job, define and call the
product's function, answer with plain JSON.

Nothing here is trusted by the node: once the product's code runs it may replace any of
this, so the node checks the answer (size, JSON, shape) and never unpickles it. Only the
worker's pid 1 answers; a process the code forked that returns here exits silently.
"""

from __future__ import annotations
import __future__

import ast
import builtins
import contextlib
import datetime
import errno
import json
import linecache
import math
import os
import pickle
import socket
import sys
import traceback
from typing import Any

from . import frames

FILENAME = "<product>"
MAX_DEPTH = 100


class Refused(Exception):
    """The value has no JSON form; ``args[0]`` is a code from a fixed set (never the value)."""


def check_source(source: str, name: str) -> ast.FunctionDef:
    """The source's one function: exactly one top-level, undecorated ``def name(a, b, ...)``
    with plain parameters. SyntaxError when it is not Python, ValueError (fixed text) when
    it is not that shape. Nothing runs."""
    tree = ast.parse(source, FILENAME)
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef):
        raise ValueError("the code must be exactly one top-level function definition")
    node = tree.body[0]
    if node.name != name:
        raise ValueError("the code does not define the function it is run by")
    args = node.args
    if node.decorator_list or args.vararg or args.kwarg or args.kwonlyargs \
            or args.posonlyargs or args.defaults:
        raise ValueError("the function must be undecorated and take plain arguments only")
    return node


def define(source: str, name: str) -> Any:
    """The function, defined from its checked source (annotations are not evaluated)."""
    module = ast.Module(body=[check_source(source, name)], type_ignores=[])
    linecache.cache[FILENAME] = (len(source), None, source.splitlines(keepends=True), FILENAME)
    flags = __future__.annotations.compiler_flag
    namespace: dict[str, Any] = {"__name__": "__product__", "__builtins__": builtins}
    exec(compile(module, FILENAME, "exec", flags=flags, dont_inherit=True), namespace)  # noqa: S102 - the point
    return namespace[name]


def serve(ctl: socket.socket, limits: dict[str, Any]) -> None:
    """Take one job from ``ctl``, run it, answer on ``ctl``."""
    try:
        job = pickle.loads(frames.receive(ctl, 1 << 40))
    except MemoryError:
        reply = encode({"limit": "memory"})
    else:
        reply = run(job["source"], job["function"], job["inputs"], limits)
    if os.getpid() != 1:
        os._exit(0)  # a process the code forked: only pid 1 answers
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):  # the code may have closed or replaced them
            stream.flush()  # type: ignore[union-attr]
    frames.send(ctl, reply)


def run(source: str, function: str, inputs: list[Any], limits: dict[str, Any]) -> bytes:
    """The answer to one job, as JSON bytes: ``{"ok": value}``, ``{"raised": kind,
    "detail": text, "limit": which | null}``, ``{"refused": code}`` or ``{"limit": which}``."""
    try:
        value = define(source, function)(*inputs)
        answer: dict[str, Any] = {"ok": plain(value)}
    except Refused as exc:
        answer = {"refused": str(exc.args[0])}
    except BaseException as exc:  # noqa: BLE001 - whatever the code raised is reported
        answer = raised(exc, limits)
    try:
        payload = encode(answer)
    except MemoryError:
        payload = encode({"limit": "memory"})
    if len(payload) > int(limits["output_bytes"]):
        return encode({"limit": "output_size"})
    return payload


def encode(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8", "surrogatepass")


def raised(exc: BaseException, limits: dict[str, Any]) -> dict[str, Any]:
    """What the code raised: its type's name, its traceback (capped), the limit it hit."""
    try:
        detail = "".join(traceback.format_exception(exc))
    except BaseException:  # noqa: BLE001 - a hostile __str__
        detail = "(the exception could not be formatted)"
    cap = int(limits["print_bytes"])
    if len(detail) > cap:
        detail = "[...]\n" + detail[-cap:]
    return {"raised": type(exc).__name__, "detail": detail, "limit": _limit(exc)}


def _limit(exc: BaseException) -> str | None:
    """The limit an exception stands for, if any (a hint: the node checks it is one)."""
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return "file_size"
    if isinstance(exc, BlockingIOError) and exc.errno == errno.EAGAIN \
            or isinstance(exc, RuntimeError) and str(exc) == "can't start new thread":
        return "processes"  # fork or a thread past RLIMIT_NPROC (there are no sockets)
    return None


def plain(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON: a DataFrame as a list of row dicts, a Series as rows or a
    dict (:func:`series_value`),
    numpy scalars and arrays as Python values, datetimes as ISO text, NaN/NaT/NA as null,
    floats kept as floats. Refused (a fixed code) for anything else."""
    if depth > MAX_DEPTH:
        raise Refused("depth")
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return [plain(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {_key(k): plain(v, depth + 1) for k, v in value.items()}
    return _plain_library(value, depth)


def _plain_library(value: Any, depth: int) -> Any:
    import numpy as np
    import pandas as pd

    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, pd.DataFrame):
        return plain(value.to_dict(orient="records"), depth)
    if isinstance(value, pd.Series):
        return plain(series_value(value), depth)
    if isinstance(value, np.ndarray):
        return plain(value.tolist(), depth)
    if isinstance(value, np.generic):
        item = value.item()
        if isinstance(item, np.generic):  # e.g. longdouble: no Python twin
            raise Refused("type")
        return plain(item, depth)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    raise Refused("type")


def series_value(series: Any) -> Any:
    """A pandas Series as a result: rows (one per entry: its index under the index's names,
    its values under the Series' name, else ``"value"``) when every level of the index is
    named (``df.groupby("district")["x"].sum()``: a ``district`` column, masked by that
    field's grade like any column); else a dict of index -> value."""
    names = list(series.index.names)
    if not all(isinstance(name, str) for name in names):
        return series.to_dict()
    column = series.name if isinstance(series.name, str) and series.name not in names \
        else "value"
    return series.rename(column).reset_index().to_dict(orient="records")


def _key(key: Any) -> str:
    if isinstance(key, tuple | list | dict):
        raise Refused("key")
    try:
        key = plain(key, MAX_DEPTH)
    except Refused:
        raise Refused("key") from None
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return json.dumps(key)
    if isinstance(key, int | float):
        return str(key)
    raise Refused("key")
