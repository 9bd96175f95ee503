"""The unit of work a command handler sees: load aggregates, add new ones.

A handler decides using aggregates it loads (never projections), adds or changes
aggregates, and returns a result; the application saves every pending event of
the unit in one atomic append, or nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TypeVar

from domain.base import Aggregate
from domain.errors import ConcurrencyConflict, NotFound

A = TypeVar("A", bound=Aggregate)


class UnitOfWork(ABC):
    """Loads aggregates and remembers them so their pending events get saved together."""

    def __init__(self) -> None:
        self.seen: dict[str, Aggregate] = {}
        #: the version of every aggregate as loaded: a decision rests on these staying put
        self.read_versions: dict[str, int] = {}

    @abstractmethod
    def _load(self, cls: type[A], id: str) -> A | None:
        """Rebuild ``id`` from the store, or None if it has no events."""

    def get(self, cls: type[A], id: str, *, expected_version: int | None = None) -> A:
        """The aggregate ``id`` of type ``cls``; NotFound if absent or of another kind."""
        agg = self.seen.get(id)
        if agg is None:
            agg = self._load(cls, id)
            if agg is None:
                raise NotFound(f"no {cls.kind} {id}", kind=cls.kind, id=id)
            self.seen[id] = agg
            self.read_versions[id] = agg.version
        if not isinstance(agg, cls):
            raise NotFound(f"no {cls.kind} {id}", kind=cls.kind, id=id)
        if expected_version is not None and agg.version != expected_version:
            raise ConcurrencyConflict(
                f"{cls.kind} {id} is at version {agg.version}, not {expected_version}",
                current_version=agg.version)
        return agg

    def add(self, agg: Aggregate) -> None:
        """Track a new aggregate so its events are saved."""
        self.seen[agg.id] = agg

    def pending(self) -> list[Aggregate]:
        """Aggregates with events to save."""
        return [a for a in self.seen.values() if a.pending]

    def unchanged_reads(self) -> dict[str, int]:
        """Aggregates read but not changed, with their versions: the append checks that no
        other command changed them meanwhile (a terminated contract, a revoked grant)."""
        return {id: v for id, v in self.read_versions.items() if not self.seen[id].pending}
