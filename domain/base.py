"""Aggregate base: decide (commands raise or trigger events), evolve (``apply``).

``apply`` is deterministic: no clock, randomness or I/O; the time and the actor
come in the command context and are recorded in the event.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self, TypeVar

from core.canonical import CanonicalEncodingError
from core.event import Event
from domain.errors import InvalidInput, WrongState

ROLES = ("provider", "operator", "developer", "demander", "platform", "regulator")
#: a member's roles within its participant: an expert (专家组) only in the regulator
MEMBER_ROLES = ("admin", "expert", "member")

A = TypeVar("A", bound="Aggregate")
Handler = Callable[[Any, Any], None]


@dataclass(frozen=True)
class Actor:
    """Who makes a command: a member of a participant acting in the participant's role."""

    participant_id: str
    member_id: str
    role: str
    member_roles: tuple[str, ...] = ()

    def record(self) -> dict[str, str]:
        """The actor as recorded in every event."""
        return {"participant": self.participant_id, "member": self.member_id, "role": self.role}


class Sealer(Protocol):
    """The port through which the domain seals a field naming a natural person before its
    event is encoded (密钥销毁, docs/PRIVACY.md): the envelope of ``value`` under the key
    of ``subject`` (made on first use), bound to ``path`` (``core.sealed``). The domain is
    handed one (``privacy.keystore``'s, by the composition root), never the key store."""

    def seal(self, subject: str, path: str, value: str) -> dict[str, str]: ...


@dataclass(frozen=True)
class Context:
    """Everything a command needs besides its arguments: the actor, the time, whether
    a decision without a signature is let through (the development mode the application
    service is told of; never the default), and the sealer of personal fields (None: they
    are recorded in clear, as by a Ledger built by hand without a key store)."""

    actor: Actor
    at: str
    allow_unsigned: bool = False
    sealer: Sealer | None = None

    def personal(self, subject: str, path: str, value: str) -> str | dict[str, str]:
        """A personal field's stored value: sealed for ``subject`` when there is a sealer."""
        return value if self.sealer is None else self.sealer.seal(subject, path, value)


#: version-4 UUIDs from a generator seeded once from the OS: ``uuid4()`` makes a system
#: call per id, and the event loop thread that releases the GIL for it waits to get it
#: back behind the background threads. Ids are not secrets (access is checked on each read);
#: a forked child reseeds, so workers never repeat each other's ids.
_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))


def new_id() -> str:
    """A fresh aggregate id (a random version-4 UUID)."""
    return str(uuid.UUID(int=_ids.getrandbits(128), version=4))


def applies(event_cls: type[Event]) -> Callable[[Handler], Handler]:
    """Mark an aggregate method as the evolver for ``event_cls``."""

    def mark(fn: Handler) -> Handler:
        fn.__applies__ = event_cls  # type: ignore[attr-defined]
        return fn

    return mark


class Aggregate:
    """An event-sourced entity; subclasses set ``kind`` and mark evolvers with @applies."""

    kind: ClassVar[str] = "aggregate"
    _evolvers: ClassVar[dict[type[Event], Handler]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._evolvers = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                target = getattr(value, "__applies__", None)
                if target is not None:
                    cls._evolvers[target] = value

    def __init__(self, id: str) -> None:
        self.id = id
        self.version = 0
        self.pending: list[Event] = []

    @classmethod
    def replay(cls, id: str, events: Iterable[Event]) -> Self:
        """Rebuild an aggregate from its stored events."""
        agg = cls(id)
        for event in events:
            agg.apply(event)
        return agg

    def apply(self, event: Event) -> None:
        """Evolve the state by one event (deterministic)."""
        try:
            evolve = self._evolvers[type(event)]
        except KeyError:
            raise TypeError(f"{type(self).__name__} cannot apply {event.type_name}") from None
        evolve(self, event)
        self.version = event.originator_version

    def trigger(self, event_cls: type[Event], ctx: Context, **fields: Any) -> Event:
        """Create the next event from a decided command, apply it and keep it pending."""
        event = event_cls(originator_id=self.id, originator_version=self.version + 1,
                          at=ctx.at, actor=ctx.actor.record(), **fields)
        try:  # a value the log cannot hold is the caller's error, found before anything is saved
            event.canonical_payload()
        except CanonicalEncodingError as exc:
            raise InvalidInput(exc.path.removeprefix("$."), exc.reason) from None
        self.apply(event)
        self.pending.append(event)
        return event

    def collect(self) -> list[Event]:
        """Take the pending events (to be saved)."""
        out, self.pending = self.pending, []
        return out

    def require_state(self, allowed: Iterable[str], action: str) -> None:
        """Raise WrongState unless ``self.state`` is one of ``allowed``."""
        allowed = tuple(allowed)
        state: str = self.state  # type: ignore[attr-defined]
        if state not in allowed:
            raise WrongState(
                f"cannot {action}: {self.kind} {self.id} is {state}, "
                f"needs {' or '.join(allowed)}",
                state=state, allowed=list(allowed))
