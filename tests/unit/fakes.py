"""Fakes for unit tests of the domain: an in-memory unit of work and contexts."""

from __future__ import annotations

from typing import Any, TypeVar

from core.event import Event
from domain.base import Actor, Aggregate, Context
from domain.unit_of_work import UnitOfWork

A = TypeVar("A", bound=Aggregate)


class MemoryUnitOfWork(UnitOfWork):
    """Keeps committed events per aggregate id; ``commit`` moves pending events there."""

    def __init__(self, streams: dict[str, list[Event]] | None = None) -> None:
        super().__init__()
        self.streams: dict[str, list[Event]] = streams if streams is not None else {}

    def _load(self, cls: type[A], id: str) -> A | None:
        events = self.streams.get(id)
        if not events or type(events[0]) not in cls._evolvers:
            return None
        return cls.replay(id, events)

    def commit(self) -> list[Event]:
        saved: list[Event] = []
        for agg in self.pending():
            events = agg.collect()
            self.streams.setdefault(agg.id, []).extend(events)
            saved += events
        self.seen.clear()
        return saved


def ctx(role: str, participant_id: str = "p-" , member_id: str = "m-1",
        member_roles: tuple[str, ...] = ("admin",), at: str = "2026-11-26T10:00:00Z",
        allow_unsigned: bool = True) -> Context:
    """A command context for a member of a participant in ``role``; decisions need no
    signature here (the domain's rules are what these tests check; the signature check
    has its own, tests/unit/domain/test_signing.py)."""
    pid = participant_id if participant_id != "p-" else f"p-{role}"
    return Context(Actor(pid, member_id, role, member_roles), at, allow_unsigned)


def run(uow: MemoryUnitOfWork, handler: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a handler then commit, like the application does."""
    result = handler(uow, *args, **kwargs)
    uow.commit()
    return result
