"""Erasing a data subject (密钥销毁): destroy its key, then have the erasure recorded.

The key store is the platform's (``privacy/keystore.py``); the record is the ledger's
(``domain/erasure.py``, ``privacy.subject_erased`` as the server's system actor), which
this room does not import: the command (``cli/privacy.py``) hands :func:`erase` the two
ports it needs, finding the subject's participant in the read models and recording the
erasure through the Ledger. The key goes first: a run stopped between the two leaves the
subject erased and unrecorded, and running it again records it (both steps are
idempotent). See docs/PRIVACY.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from privacy.keystore import KeyStore


class UnknownSubject(LookupError):
    """No member of any participant has this id."""


@dataclass(frozen=True)
class Erasure:
    """What an erasure did: ``key_destroyed`` (False: an earlier run destroyed it, or it
    never had one) and ``recorded`` (False: an earlier run recorded it)."""

    subject_id: str
    participant_id: str
    key_destroyed: bool
    recorded: bool


def erase(keystore: KeyStore, subject_id: str, *,
          participant_of: Callable[[str], str | None],
          record: Callable[[str, str], bool]) -> Erasure:
    """Erase member ``subject_id``: ``participant_of`` names its participant (None: no such
    member, :class:`UnknownSubject`), the key is destroyed, then ``record(subject,
    participant)`` records ``privacy.subject_erased`` (True) or finds it recorded (False);
    it raises the ledger's refusal (a name recorded in clear) unchanged."""
    participant_id = participant_of(subject_id)
    if participant_id is None:
        raise UnknownSubject(f"no member {subject_id}: a subject is a member's id "
                             "(GET /participants/{id} lists them)")
    destroyed = keystore.destroy(subject_id)
    recorded = record(subject_id, participant_id)
    return Erasure(subject_id, participant_id, destroyed, recorded)
