"""Read models built from the log; queries read these only, never aggregates."""

from __future__ import annotations

import importlib

from projections.base import Projection

# TEMPORARY while the modules are being written: skip the ones not there yet.
_ORDER = [("participants", "ParticipantsProjection"), ("datasets", "DatasetsProjection"),
          ("scenarios", "ScenariosProjection"), ("authorizations", "AuthorizationsProjection"),
          ("products", "ProductsProjection"), ("orders", "OrdersProjection")]


def all_projections() -> list[Projection]:
    """Every read model, in the order they are applied."""
    out: list[Projection] = []
    for module, cls in _ORDER:
        try:
            mod = importlib.import_module(f"projections.{module}")
        except ModuleNotFoundError:
            continue
        if hasattr(mod, cls):
            out.append(getattr(mod, cls)())
    return out
