"""A product's registered code as PySyft's code request takes it: one plain function, its
parameters bound by position to the inputs, defined without running any of it
(``compute_nodes/datasite.py`` submits it; the sandbox runs it)."""

from __future__ import annotations
import __future__

import ast
import builtins
import hashlib
import linecache
from collections.abc import Callable
from typing import Any

from compute_nodes.datasite_assets import CodeSourceError


def request_function_name(function_name: str, request_key: str) -> str:
    """The function's name inside the datasite: one per request key."""
    return f"{function_name}_{hashlib.sha256(request_key.encode()).hexdigest()[:16]}"


def parameters(code_source: str, function_name: str, inputs: int | None = None) -> list[str]:
    """The parameters of the code's one function, read without running anything.

    The source must be exactly one undecorated ``def function_name(a, b, ...):`` with one
    plain parameter per input (``inputs`` of them, if given; imports go inside the body).
    """
    try:
        tree = ast.parse(code_source)
    except SyntaxError as exc:
        raise CodeSourceError(f"not Python: {exc}") from exc
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef):
        raise CodeSourceError("the code must be exactly one top-level function definition")
    node = tree.body[0]
    if node.name != function_name:
        raise CodeSourceError(f"the code defines {node.name!r}, not {function_name!r}")
    args = node.args
    if node.decorator_list or args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs \
            or args.defaults or not args.args:
        raise CodeSourceError("the function takes plain arguments only, one per input table")
    params = [a.arg for a in args.args]
    if inputs is not None and len(params) != inputs:
        raise CodeSourceError(f"the function takes {len(params)} argument(s); the product "
                              f"has {inputs} input(s), bound by position")
    return params


def function_from_source(code_source: str, function_name: str,
                         inputs: int | None = None) -> tuple[Callable[..., Any], list[str]]:
    """Define the function from its source text (checked by :func:`parameters`) for
    PySyft's code request; return it and its parameters' names.

    PySyft keeps only the function's own lines, which it reads back with
    ``inspect.getsource``, so the text is registered in ``linecache``. Annotations are not
    evaluated, defaults and decorators are refused: defining the function runs none of its
    code. The function is never called here: it runs in the sandbox.
    """
    params = parameters(code_source, function_name, inputs)
    filename = f"<dataledger-code-{hashlib.sha256(code_source.encode()).hexdigest()[:16]}>"
    linecache.cache[filename] = (
        len(code_source), None, code_source.splitlines(keepends=True), filename,
    )
    flags = __future__.annotations.compiler_flag
    namespace: dict[str, Any] = {"__name__": "dataledger_code", "__builtins__": builtins}
    exec(compile(code_source, filename, "exec", flags=flags, dont_inherit=True), namespace)  # noqa: S102 - the point
    return namespace[function_name], params
