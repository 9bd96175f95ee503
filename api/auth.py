"""Bearer tokens: stored as hashes, and an in-memory cache of whose they are.

Apart from the dependencies so that the composition root (and serve's background process,
which imports it) need not import the web framework.
"""

from __future__ import annotations

import time

from core.tokens import hash_token, new_token
from domain.base import Actor

__all__ = ["AuthCache", "hash_token", "new_token"]


class AuthCache:
    """Token hash → actor, so a request need not query the members table.

    Cleared whenever this process projects a participant event (token rotated,
    member added, participant suspended); entries also expire after ``ttl``
    seconds, for changes projected by another process. Commands re-check the
    participant's admission on the event store anyway (Ledger._require_active).
    """

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Actor]] = {}
        #: bumped by every invalidation: a lookup that began before one is not cached
        self.generation = 0

    def get(self, token_hash: str) -> Actor | None:
        entry = self._entries.get(token_hash)
        if entry is None or time.monotonic() - entry[0] > self.ttl:
            return None
        return entry[1]

    def put(self, token_hash: str, actor: Actor, generation: int) -> None:
        """Cache a lookup that began at ``generation`` (dropped if invalidated since)."""
        if generation != self.generation:
            return
        if len(self._entries) > 100_000:
            self._entries.clear()
        self._entries[token_hash] = (time.monotonic(), actor)

    def invalidate(self, types: set[str]) -> None:
        """Forget everything after participant events were projected."""
        if any(t.startswith("participant.") for t in types):
            self.generation += 1
            self._entries.clear()
