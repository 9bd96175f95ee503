"""The domain: one module per aggregate, each with its events, guards and use cases.

Importing this package imports every aggregate module, so the whole event catalogue
(``events.catalogue.catalogue()``) is registered. Modules import only ``domain.base``,
``domain.errors``, ``domain.policy``, ``domain.unit_of_work`` and aggregates earlier in
this list, never this package, so there is no import cycle.
"""

from domain import (  # noqa: F401  (registers the event types)
    authorization,
    computation,
    dataset,
    delivery,
    erasure,
    forensics,
    joint,
    order,
    participant,
    privacy_budget,
    product,
    scenario,
    usage,
)
