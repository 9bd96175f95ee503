"""The stream cache: recently read event streams, shared by the threads of one process."""

from __future__ import annotations

import threading

from core.event import Event
from domain.application import EventLog


class StreamCache:
    """Recently read event streams: a load reads only the events after the cached ones.

    Stored events never change, so a cached prefix stays valid; each load still
    asks the store for newer events, so other processes' writes are seen.
    """

    def __init__(self, log: EventLog, max_streams: int = 10_000) -> None:
        self.log = log
        self.max_streams = max_streams
        self._streams: dict[str, list[Event]] = {}
        self._lock = threading.Lock()

    def cached(self, id: str) -> list[Event] | None:
        """The events of ``id`` read so far (possibly not all), without asking the store."""
        with self._lock:
            return self._streams.get(id)

    def load(self, id: str) -> list[Event]:
        """Every stored event of stream ``id``, in order."""
        with self._lock:
            cached = self._streams.get(id, [])
        newer = self.log.load(id, len(cached))
        if not newer:
            return cached
        events = cached + newer
        with self._lock:
            if len(self._streams) >= self.max_streams:
                self._streams.pop(next(iter(self._streams)))
            self._streams[id] = events
        return events
