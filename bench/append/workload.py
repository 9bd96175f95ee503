"""The workload: a real use case, as which actor, with which arguments; its domain events
decided in memory; and the application's log, counting the transactions it makes."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any


class Workload:
    """The use case the command path runs, as which actor, with which arguments."""

    def __init__(self) -> None:
        from api.auth import hash_token
        from domain.base import Actor
        from runtime.build import PLATFORM_ADMIN_ID, PLATFORM_ID

        self._hash_token = hash_token
        self.platform = Actor(PLATFORM_ID, PLATFORM_ADMIN_ID, "platform", ("admin",))
        try:
            from domain import dataset
        except Exception as exc:  # noqa: BLE001 - being written by someone else
            self.name = "platform registers participants (register_participant)"
            self.handler: Callable[..., dict[str, Any]] = _participant_handler()
            self.kwargs = self.participant_kwargs
            self.actor = self.platform
            self.fallback_reason: str | None = f"domain.dataset unusable: {exc!r}"
        else:
            self.name = "provider registers datasets (register_dataset)"
            self.handler = dataset.register_dataset
            self.kwargs = self.dataset_kwargs
            self.actor = self.platform  # replaced by the provider in setup()
            self.fallback_reason = None

    @property
    def uses_datasets(self) -> bool:
        return self.fallback_reason is None

    def dataset_kwargs(self, i: int) -> dict[str, Any]:
        """The arguments of the ``i``-th register_dataset."""
        return {"name": f"bench dataset {i}", "description": "benchmark dataset",
                "source_system": "bench", "classification": "L2",
                "fields": [{"name": "id", "type": "string", "sensitivity": "internal"},
                           {"name": "amount", "type": "decimal", "sensitivity": "sensitive"}]}

    def participant_kwargs(self, i: int) -> dict[str, Any]:
        """The arguments of the ``i``-th register_participant."""
        return {"name": f"bench org {i}", "role": "provider", "credit_code": f"91{i:016d}",
                "admin_name": f"admin {i}", "admin_token_hash": self._hash_token(f"bench-{i}")}

    def setup(self, ledger: Any) -> None:
        """Found the platform; for datasets also an admitted provider to act as."""
        from domain import participant as uc
        from domain.base import Actor, Context
        from domain.participant import found_platform

        ctx = Context(self.platform, ledger.clock())
        platform = found_platform(self.platform.participant_id, ctx, name="bench platform")
        platform.add_member(ctx, member_id=self.platform.member_id, name="platform admin",
                            member_roles=["admin"], token_hash=self._hash_token(uuid.uuid4().hex))
        ledger.log.append_batches(platform.collect(), [])
        if self.uses_datasets:
            made = ledger.execute(uc.register_participant, self.platform, **self.participant_kwargs(0))
            pid = made.body["participant_id"]
            self._admit(ledger, pid)
            self.actor = Actor(pid, made.body["member_id"], "provider", ("admin",))

    def _admit(self, ledger: Any, pid: str) -> None:
        """The platform admits ``pid``: a decision its admin signs with a key it registers."""
        from core.decision import SignedDecision, new_private_key, public_key_text, signed_body
        from domain import participant as uc
        from domain.signing import Signed

        key = new_private_key()
        ledger.execute(uc.register_key, self.platform, self.platform.participant_id,
                       public_key=public_key_text(key.public_key()))
        version = uc.Participant.replay(pid, ledger.log.load(pid)).version
        body = {"approve": True, "comment": "bench"}
        wire = signed_body(key, "participant.admission", pid, version, self.platform.member_id,
                           body)["signature"]
        ledger.execute(uc.decide_admission, self.platform, pid, **body,
                       signed=Signed(SignedDecision.of(wire), body))

    def events(self, n: int, start: int) -> list[Any]:
        """The domain events of ``n`` commands, decided in memory (nothing saved)."""
        from domain.application import utc_now
        from domain.base import Context
        from domain.unit_of_work import UnitOfWork

        class _Fresh(UnitOfWork):
            def _load(self, cls: Any, id: str) -> Any:
                return None

        out: list[Any] = []
        for i in range(start, start + n):
            uow = _Fresh()
            self.handler(uow, Context(self.actor, utc_now()), **self.kwargs(i))
            out += [e for agg in uow.pending() for e in agg.collect()]
        return out


def _participant_handler() -> Callable[..., dict[str, Any]]:
    from domain.participant import register_participant

    return register_participant


class CountingLog:
    """The application's LedgerLog, counting the transactions the committer makes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.transactions = 0
        self.events = 0

    def load(self, originator_id: str, after_version: int = 0) -> list[Any]:
        return self.inner.load(originator_id, after_version)  # type: ignore[no-any-return]

    def append_batches(self, events: list[Any], batches: list[Any]) -> list[int]:
        seqs: list[int] = self.inner.append_batches(events, batches)
        self.transactions += 1
        self.events += len(events)
        return seqs

    def idempotent_answer(self, member_id: str, key: str) -> Any:
        return self.inner.idempotent_answer(member_id, key)
