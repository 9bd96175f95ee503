"""PySyft 0.9.5 imported without what only a notebook uses of it.

``import syft`` costs about 4 s of CPU, and the host's fork server pays it after every
restart before any provider's datasite can start (``compute_nodes/forkserver.py``). About a
sixth of it is for notebooks only: ``syft.util.table`` imports ``itables`` (which brings
pandas' ``Styler`` and matplotlib) to render tables as HTML, and ``IPython``'s package
``__init__`` imports its terminal shell and embedding machinery, of which PySyft uses
``get_ipython`` (None outside a notebook) and the ``IPython.display`` classes.

:func:`install` (the fork server calls it before importing PySyft, compute venv only) makes:

- ``itables`` a lazy module: imported for real on its first attribute access (a table
  rendered as HTML), never before;
- ``IPython`` a package whose ``__init__`` is not run: its submodules (``IPython.display``,
  ``IPython.core.*``) are the real ones, found on the real package's path, and
  ``IPython.get_ipython`` is ``IPython.core.getipython.get_ipython``, as the real package
  exports it. Nothing else of the top-level package (``embed``, ``start_ipython``, ...) is
  there: a node process never runs a shell.

Either is left alone if it is imported already or cannot be found. Nothing is stubbed
that a datasite calls: every module PySyft imports by name is the real one
(``tests/compute/test_start_and_pace.py`` checks that the datasite works with it
installed).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any

#: imported lazily (on first attribute access)
LAZY = ("itables",)
#: packages whose ``__init__`` is not run (their submodules are the real ones)
HOLLOW = ("IPython",)

_lock = threading.Lock()


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if name in LAZY:
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None:
                return None
            spec.loader = importlib.util.LazyLoader(spec.loader)
            return spec
        if name in HOLLOW:
            real = importlib.machinery.PathFinder.find_spec(name, path)
            if real is None or not real.submodule_search_locations:
                return None
            spec = importlib.machinery.ModuleSpec(name, _Hollow(), is_package=True,
                                                  origin=real.origin)
            spec.submodule_search_locations = list(real.submodule_search_locations)
            return spec
        return None


class _Hollow(importlib.abc.Loader):
    """A package module with the real package's path and none of its ``__init__``."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        if module.__name__ == "IPython":
            def get_ipython() -> Any:
                from IPython.core.getipython import get_ipython as real

                return real()

            module.get_ipython = get_ipython  # type: ignore[attr-defined]


def install() -> bool:
    """Install the finder (once); False if PySyft or one of those packages is imported
    already (then nothing changes)."""
    with _lock:
        if any(isinstance(f, _Finder) for f in sys.meta_path):
            return True
        if any(name in sys.modules for name in ("syft", *LAZY, *HOLLOW)):
            return False
        sys.meta_path.insert(0, _Finder())
        return True
