"""The event base: every domain event's fields, its stable type name and version.

An event class declares ``type_name`` (stable, stored in the log, e.g.
``"contract.approved"``) and ``class_version``. When a class changes shape its
version goes up and it gains ``upcast_v1_v2(state)`` (and so on), which rewrites a
stored payload of the old version in place, as the eventsourcing library's Mapper
does. Nothing in the log ever names a Python module.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Self

from core.canonical import canonical_bytes

_CATALOGUE: dict[str, type[Event]] = {}

#: keys of the stored payload that are not fields of the event class
CLASS_VERSION_KEY = "class_version"

#: event class -> the names of its payload's fields (dataclasses.fields is slow per call)
_PAYLOAD_FIELDS: dict[type, tuple[str, ...]] = {}


class UnknownEventTypeError(LookupError):
    """A stored event names a type that is not in the catalogue."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every domain event.

    ``originator_id``/``originator_version`` place it in its aggregate's stream;
    ``at`` (UTC ISO-8601, set by the application service, never inside ``apply``)
    and ``actor`` (participant, member and role that made the command) are recorded
    with every event.
    """

    type_name: ClassVar[str] = ""
    class_version: ClassVar[int] = 1

    originator_id: str
    originator_version: int
    at: str
    actor: dict[str, str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("type_name")
        if name:
            if name in _CATALOGUE and _CATALOGUE[name] is not cls:
                raise TypeError(f"event type name {name!r} registered twice")
            _CATALOGUE[name] = cls

    def payload(self) -> dict[str, Any]:
        """The stored payload: every field but the stream position."""
        names = _PAYLOAD_FIELDS.get(type(self))
        if names is None:
            names = tuple(f.name for f in dataclasses.fields(self)
                          if f.name not in ("originator_id", "originator_version"))
            _PAYLOAD_FIELDS[type(self)] = names
        state = {name: getattr(self, name) for name in names}
        if self.class_version > 1:
            state[CLASS_VERSION_KEY] = self.class_version
        return state

    def canonical_payload(self) -> bytes:
        """The canonical bytes of ``payload()`` (the stored state), encoded once per event.

        Raises CanonicalEncodingError naming the place of a value the log cannot hold.
        Events are immutable: the first encoding (made when the event is triggered, which
        is where a bad value is refused) is the one stored.
        """
        encoded: bytes | None = self.__dict__.get("_canonical")
        if encoded is None:
            encoded = canonical_bytes(self.payload())
            object.__setattr__(self, "_canonical", encoded)
        return encoded

    @classmethod
    def from_payload(cls, originator_id: str, version: int,
                     payload: dict[str, Any]) -> Self:
        """Rebuild an event from a stored payload, upcasting older versions."""
        state = dict(payload)
        stored_version = state.pop(CLASS_VERSION_KEY, 1)
        while stored_version < cls.class_version:
            getattr(cls, f"upcast_v{stored_version}_v{stored_version + 1}")(state)
            stored_version += 1
        return cls(originator_id=originator_id, originator_version=version, **state)


def event_class(type_name: str) -> type[Event]:
    """The class registered under ``type_name``."""
    try:
        return _CATALOGUE[type_name]
    except KeyError:
        raise UnknownEventTypeError(f"unknown event type {type_name!r}") from None


def registered() -> dict[str, type[Event]]:
    """Every event type registered so far (those of the modules imported), by stable name."""
    return dict(sorted(_CATALOGUE.items()))
