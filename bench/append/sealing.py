"""bench append with personal fields sealed (密钥销毁, docs/PRIVACY.md): what the privacy
bench (``bench/privacy/sealing.py``) measures event encryption's cost with.

- :func:`sealed_ledger`: bench append's in-process command path (``new_ledger`` with group
  commit) over ``log``, its sealer the key store (``privacy.keystore``), as
  ``runtime.build`` wires it: a member's name sealed under a key of its own, taken from a
  batch stored ahead.
- :class:`MemoryKeys`: a sealer whose keys live in a dict and are never stored: the
  cipher's share of the cost alone (not a configuration the platform runs).
- :func:`seal_steps`: the mean microseconds of a seal's two halves with a key store.
"""

from __future__ import annotations

import time
from typing import Any

from core import sealed
from domain.application import EventLog, Ledger
from events.commit import new_ledger
from privacy.keystore import BATCH, KeyStore


def sealed_ledger(log: EventLog, keys: KeyStore) -> Ledger:
    """The command path of ``bench append`` over ``log``, sealing with ``keys``."""
    return new_ledger(log, group_commit=True, sealer=keys)


class MemoryKeys:
    """A sealer whose keys are made in memory and never stored (the cipher alone)."""

    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}

    def seal(self, subject: str, path: str, value: str) -> dict[str, str]:
        key_id, key = sealed.new_key()
        self.keys[key_id] = key
        return sealed.seal(key_id, key, subject, path, value)


def seal_steps(keys: KeyStore, n: int = 4 * BATCH) -> dict[str, float]:
    """Mean microseconds of a seal's two halves: a key issued (``KeyStore.issue``: one
    durable commit per batch of ``BATCH``, amortized over ``n``) and the envelope made under
    it (``core.sealed.seal``)."""
    t0 = time.perf_counter()
    issued = [keys.issue() for _ in range(n)]
    t1 = time.perf_counter()
    for i, (key_id, key) in enumerate(issued):
        sealed.seal(key_id, key, f"bench-subject-{i}", sealed.MEMBER_NAME, f"bench admin {i}")
    t2 = time.perf_counter()
    return {"new_key_us": round(1e6 * (t1 - t0) / n, 1), "seal_us": round(1e6 * (t2 - t1) / n, 1)}


def sealed_names(store: Any, participant_id: str) -> bool:
    """Whether every ``participant.member_added`` of that participant holds an envelope,
    not the name."""
    added = [e for e in store.load(participant_id)
             if e.type_name == "participant.member_added"]
    return bool(added) and all(sealed.is_envelope(e.payload()["name"]) for e in added)
