"""The event catalogue: every domain event type by its stable name, and its JSON schema."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

import domain  # noqa: F401  (registers the aggregates' events)
from core.event import Event, registered


def catalogue() -> dict[str, type[Event]]:
    """Every registered event type by its stable name (domain modules imported)."""
    return registered()


def json_schemas() -> dict[str, Any]:
    """JSON schema of every event type's stored payload, for integrators."""
    out: dict[str, Any] = {}
    for name, cls in catalogue().items():
        schema = TypeAdapter(cls).json_schema()
        props = schema.get("properties", {})
        for key in ("originator_id", "originator_version"):
            props.pop(key, None)
        schema["required"] = [r for r in schema.get("required", []) if r in props]
        schema["title"] = name
        schema["x-class-version"] = cls.class_version
        schema["description"] = (cls.__doc__ or "").strip()
        out[name] = schema
    return out
