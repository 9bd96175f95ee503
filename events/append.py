"""What both recorders' appends share: the checks a group must pass, their errors, and the
idempotency rows kept with it.

An append carries, besides its events, the versions its decisions read (``reads``) and the
acting participants' admissions (``admissions``): every one must still hold when the events
are written, in the same transaction, or nothing is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from eventsourcing.persistence import IntegrityError

from core.canonical import canonical_bytes

__all__ = ["AdmissionChanged", "Check", "IdempotencyRecord", "append_checks", "check_read",
           "raise_failed_check", "response_rows"]


class AdmissionChanged(IntegrityError):
    """The acting participant's stream moved past the version its admission was read at."""


@dataclass(frozen=True)
class IdempotencyRecord:
    """The first answer to a request carrying an Idempotency-Key."""

    member_id: str
    key: str
    fingerprint: str
    response: dict[str, Any] = field(default_factory=dict)


#: a stream, the version it must still have, and the error raised when it has not
Check = tuple[str, int, type[IntegrityError]]


def check_read(originator_id: str, read: int, current: int | None,
               error: type[IntegrityError] = IntegrityError) -> None:
    """Refuse the append if an aggregate the decision read has changed since."""
    if (current or 0) != read:
        raise error(f"{originator_id} changed since it was read: version {current}, "
                    f"read at {read}")


def append_checks(kwargs: dict[str, Any]) -> list[Check]:
    """The versions an append must find unchanged: the decisions' reads, then the acting
    participants' admissions (read from the command path's cache, see Ledger._prepare)."""
    return [*((i, v, IntegrityError) for i, v in kwargs.get("reads", {}).items()),
            *((i, v, AdmissionChanged) for i, v in kwargs.get("admissions", ()))]


def raise_failed_check(checks: list[Check], current: Callable[[str], int | None]) -> NoReturn:
    """A one-statement append inserted nothing because a check failed: raise naming the
    first that fails, ``current`` giving a stream's stored version."""
    for originator_id, version, error in checks:
        check_read(originator_id, version, current(originator_id), error)
    raise IntegrityError("the append's checks failed")


def response_rows(batches: Sequence[tuple[int, IdempotencyRecord | None]],
                  ids: Sequence[int]) -> list[tuple[str, str, str, bytes]]:
    """Idempotency rows for the batches (n events each) that carry a key."""
    rows, start = [], 0
    for n, record in batches:
        if record is not None:
            response = dict(record.response, seqs=list(ids[start:start + n]))
            rows.append((record.member_id, record.key, record.fingerprint,
                         canonical_bytes(response)))
        start += n
    return rows
