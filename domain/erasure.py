"""Erasure of a data subject (密钥销毁, white paper 5.2.4 销毁环节 加密删除).

Fields of events that name a natural person (a member's name) are sealed under the
subject's own key before the event is encoded (``core.sealed``, the ``Sealer`` port of
``domain.base``). Erasing the subject is destroying that key (``privacy/erase.py``, the key
store is no room of the domain's) and recording it here, as the server's system actor:
``privacy.subject_erased`` in a stream of the subject's own (its id the subject id), so a
subject is erased once. The log, its leaves and proofs are unchanged; readers show
``[erased]`` from then on. See docs/PRIVACY.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.event import Event
from core.sealed import is_envelope
from domain.base import Aggregate, Context, applies
from domain.errors import InvalidInput, NotFound
from domain.participant import Participant
from domain.permissions import permit
from domain.unit_of_work import UnitOfWork


@dataclass(frozen=True, kw_only=True)
class SubjectErased(Event):
    """The key of data subject ``subject_id`` (a member of ``participant_id``) was
    destroyed: every value of the log sealed for it can no longer be opened by anyone."""

    type_name = "privacy.subject_erased"
    subject_id: str
    participant_id: str


class ErasedSubject(Aggregate):
    """A data subject's erasure: new → erased (terminal)."""

    kind = "subject"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.state = "new"

    def erase(self, ctx: Context, *, participant_id: str) -> None:
        self.trigger(SubjectErased, ctx, subject_id=self.id, participant_id=participant_id)

    @applies(SubjectErased)
    def _erased(self, e: SubjectErased) -> None:
        self.state = "erased"


def erase_subject(uow: UnitOfWork, ctx: Context, subject_id: str, *,
                  participant_id: str) -> dict[str, str | bool]:
    """Record that member ``subject_id`` of ``participant_id`` was erased (its key is
    destroyed by the caller first). Idempotent: an erased subject answers
    ``recorded: false``. 404 for a member the participant does not have; 422 (``subject_id``)
    for a member whose name was recorded in clear (before names were sealed), which the
    log cannot forget."""
    permit(ctx.actor, "privacy.erasure")
    try:
        done = uow.get(ErasedSubject, subject_id)
    except NotFound:
        done = None
    if done is not None:
        return {"subject_id": subject_id, "participant_id": participant_id, "recorded": False}
    member = uow.get(Participant, participant_id).members.get(subject_id)
    if member is None:
        raise NotFound(f"no member {subject_id} in participant {participant_id}",
                       kind="member", id=subject_id)
    if not is_envelope(member.name):
        raise InvalidInput("subject_id", f"member {subject_id}'s name was recorded in clear "
                           "(before names were sealed): the log cannot forget it")
    agg = ErasedSubject(subject_id)
    agg.erase(ctx, participant_id=participant_id)
    uow.add(agg)
    return {"subject_id": subject_id, "participant_id": participant_id, "recorded": True}
