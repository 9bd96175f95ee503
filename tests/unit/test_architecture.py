"""The house rules of docs/ARCHITECTURE.md: what each room may import, and the size limits.

Every import counts, also one inside a function; only those under ``if TYPE_CHECKING:``
do not (they never run).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: room -> the rooms it may import (itself always)
ALLOWED: dict[str, set[str]] = {
    "chain": set(),
    "core": {"chain"},
    "client": {"core", "chain"},
    "domain": {"core", "chain"},
    "events": {"core", "chain", "domain"},
    "projections": {"core", "chain", "domain", "events"},
    "anchoring": {"core", "chain", "events"},
    "delivery": {"core", "chain", "events"},
    "aggregation": {"core", "chain", "events", "domain"},
    "privacy": {"core", "chain", "events"},
    "api": {"core", "chain", "domain", "events", "projections", "anchoring", "delivery",
            "aggregation", "privacy", "audit"},
    "runtime": {"core", "chain", "domain", "events", "projections", "anchoring", "delivery",
                "aggregation", "privacy", "api"},
    "compute_nodes": {"core", "chain", "client"},
    "audit": {"core", "chain", "client"},
    "bench": {"core", "chain", "client", "domain", "events", "projections", "anchoring",
              "delivery", "aggregation", "privacy", "api", "runtime", "compute_nodes", "audit",
              "demo"},
    "demo": {"core", "chain", "client", "domain", "events", "projections", "anchoring",
             "delivery", "aggregation", "privacy", "api", "runtime"},
    "cli": {"core", "chain", "client", "domain", "events", "projections", "anchoring",
            "delivery", "aggregation", "privacy", "api", "runtime", "bench", "demo", "audit"},
}
ROOMS = set(ALLOWED)
#: the one module of a room that may import more, inside its functions only: audit's
#: ``--database`` source and read-model comparison (verifying a bundle never loads it)
LAZY_EXTRA: dict[str, set[str]] = {"audit/live_db.py": {"events", "anchoring", "projections"}}
#: the rooms that make up the server process
SERVER = {"core", "chain", "domain", "events", "projections", "anchoring", "delivery",
          "aggregation", "privacy", "api", "runtime", "cli"}

DATABASE = {"sqlite3", "psycopg", "psycopg_pool", "sqlalchemy", "asyncpg", "eventsourcing"}
WEB = {"fastapi", "starlette", "uvicorn", "httpx", "requests", "pydantic", "pydantic_settings"}
BUS = {"nats"}
THREADS = {"threading", "concurrent", "multiprocessing", "subprocess", "_thread"}
#: room -> top-level modules (of any package) it must not import
FORBIDDEN: dict[str, set[str]] = {
    "chain": DATABASE | WEB | BUS | THREADS,
    "core": DATABASE | WEB | BUS,
    "domain": DATABASE | WEB - {"pydantic"} | BUS | THREADS,
    "client": DATABASE | BUS,
    "compute_nodes": DATABASE - {"sqlite3", "psycopg"},
}

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
MAX_PARAMETERS = 8


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str

    @property
    def top(self) -> str:
        return self.module.split(".")[0]

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} imports {self.module}"


def modules() -> Iterator[Path]:
    for room in sorted(ROOMS):
        yield from sorted((ROOT / room).rglob("*.py"))


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skip.update(id(n) for n in ast.walk(inner))
    return skip


def imports(path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_only(tree)
    try:
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    except ValueError:  # a file outside the repository (the checker's own test)
        package = ""
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield Import(path, node.lineno, ".".join([*base, node.module or ""]))
            elif node.module:
                yield Import(path, node.lineno, node.module)


def room_of(path: Path) -> str:
    return path.relative_to(ROOT).parts[0]


def all_imports() -> list[Import]:
    return [imp for path in modules() for imp in imports(path)]


def test_each_room_imports_only_the_rooms_it_may() -> None:
    wrong = [str(imp) for imp in all_imports()
             if imp.top in ROOMS and imp.top != room_of(imp.path)
             and imp.top not in ALLOWED[room_of(imp.path)]
             | LAZY_EXTRA.get(imp.path.relative_to(ROOT).as_posix(), set())]
    assert wrong == []


def test_the_extra_rooms_of_a_module_are_imported_inside_functions_only() -> None:
    wrong = []
    for name, extra in LAZY_EXTRA.items():
        tree = ast.parse((ROOT / name).read_text(encoding="utf-8"))
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        wrong += [f"{name}:{imp.line} imports {imp.module} at module level"
                  for imp in imports(ROOT / name) if imp.top in extra
                  and any(n.lineno == imp.line for n in top)]
    assert wrong == []


def test_no_room_imports_what_its_layer_must_not_hold() -> None:
    wrong = [str(imp) for imp in all_imports()
             if imp.top in FORBIDDEN.get(room_of(imp.path), set())]
    assert wrong == []


def test_no_cycle_between_top_level_packages() -> None:
    edges: dict[str, set[str]] = {room: set() for room in ROOMS}
    for imp in all_imports():
        if imp.top in ROOMS and imp.top != room_of(imp.path):
            edges[room_of(imp.path)].add(imp.top)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges[start] - seen:
            seen.add(nxt)
            if nxt == goal or reaches(nxt, goal, seen):
                return True
        return False

    assert sorted(room for room in ROOMS if reaches(room, room, set())) == []


def test_nothing_in_the_server_imports_the_compute_node() -> None:
    wrong = [str(imp) for imp in all_imports()
             if room_of(imp.path) in SERVER and imp.top == "compute_nodes"]
    assert wrong == []


def test_only_the_compute_node_imports_the_differential_privacy_library() -> None:
    """diffprivlib (and the scipy and scikit-learn under it) is installed in the compute
    environment only: the noise is added on the datasite, never by the server."""
    wrong = [str(imp) for imp in all_imports()
             if room_of(imp.path) != "compute_nodes" and imp.top == "diffprivlib"]
    assert wrong == []


def test_the_rules_see_lazy_imports_and_skip_type_checking_ones(tmp_path: Path) -> None:
    """The checker itself: an import inside a function counts, one under TYPE_CHECKING not."""
    path = tmp_path / "probe.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import api\n"
                    "def f():\n    import events.store\n", encoding="utf-8")
    found = {imp.module for imp in imports(path)}
    assert "events.store" in found and "api" not in found


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = fn.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    return len(names)


@pytest.mark.parametrize("limit", ["module", "function", "parameters"])
def test_modules_and_functions_stay_small(limit: str) -> None:
    too_big = []
    for path in modules():
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT)
        if limit == "module" and text.count("\n") > MAX_MODULE_LINES:
            too_big.append(f"{name}: {text.count(chr(10))} lines")
        for fn in _functions(ast.parse(text)) if limit != "module" else ():
            lines = (fn.end_lineno or fn.lineno) - fn.lineno + 1
            if limit == "function" and lines > MAX_FUNCTION_LINES:
                too_big.append(f"{name}:{fn.lineno} {fn.name}: {lines} lines")
            if limit == "parameters" and _parameters(fn) > MAX_PARAMETERS:
                too_big.append(f"{name}:{fn.lineno} {fn.name}: {_parameters(fn)} parameters")
    assert too_big == []
