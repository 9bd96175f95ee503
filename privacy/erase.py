"""Erasing a data subject (密钥销毁): destroy the keys of its sealed values, then have the
erasure recorded.

The key store is the platform's (``privacy/keystore.py``); the record is the ledger's
(``domain/erasure.py``, ``privacy.subject_erased`` as the server's system actor), which
this room does not import: the command (``cli/privacy.py``) hands :func:`erase` the two
ports it needs, finding the subject's participant and the keys its envelopes on the log
name, and recording the erasure through the Ledger. The keys go first, then the
idempotency records whose answer names the subject (the request they fingerprint carried
its name); a run stopped between the steps leaves the subject erased and unrecorded, and
running it again completes it (every step is idempotent). See docs/PRIVACY.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from privacy.keystore import KeyStore


class UnknownSubject(LookupError):
    """No member of any participant has this id."""


@dataclass(frozen=True)
class Erasure:
    """What an erasure did: ``keys_destroyed`` (0: an earlier run destroyed them, or the
    name was recorded in clear), ``answers_forgotten`` (idempotency records deleted) and
    ``recorded`` (False: an earlier run recorded it)."""

    subject_id: str
    participant_id: str
    keys_destroyed: int
    answers_forgotten: int
    recorded: bool


#: a subject id -> (its participant, the ids of the keys its envelopes name), or None
Find = Callable[[str], tuple[str, list[str]] | None]


def erase(keystore: KeyStore, subject_id: str, *, find: Find,
          forget: Callable[[str], int], record: Callable[[str, str], bool]) -> Erasure:
    """Erase member ``subject_id``: ``find`` names its participant and keys (None: no such
    member, :class:`UnknownSubject`), the keys are destroyed, ``forget(subject)`` deletes
    the idempotency records whose answer names it (``EventStore.forget_answers``), then
    ``record(subject, participant)`` records ``privacy.subject_erased`` (True) or finds it
    recorded (False); it raises the ledger's refusal (a name recorded in clear) unchanged."""
    found = find(subject_id)
    if found is None:
        raise UnknownSubject(f"no member {subject_id}: a subject is a member's id "
                             "(GET /participants/{id} lists them)")
    participant_id, key_ids = found
    destroyed = keystore.destroy(key_ids)
    forgotten = forget(subject_id)
    recorded = record(subject_id, participant_id)
    return Erasure(subject_id, participant_id, destroyed, forgotten, recorded)
