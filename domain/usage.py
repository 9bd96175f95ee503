"""Usage of a contract's delivered results (使用控制, white paper 6.2): each access and each
refusal is an event, and the evaluator that decides them, fail closed.

A contract's *usage stream* (aggregate ``usage``, id ``usage_id(contract_id)``) holds every
access to its delivered results (``delivery.accessed``: a view shows the rows, a download
hands over the bytes) and every access refused (``usage.refused``, with the rule and its
limit). Its counters (the demander's views and downloads) are a projection of that stream
(``projections.usage``): an access is decided on the counters the read model holds, at the
stream's version they were counted at (``Meter``), never on a replay of the stream; the
append then refuses the event if the stream moved meanwhile (another access won), and the
access is decided again on fresh counters. So no limit is ever passed, and deciding costs
the same after 10,000 accesses as after one.

A refused processing (a node asking to run an execution the policy refuses) is a
``usage.refused`` on the computation's own stream, with its ``computation.failed``
(``RuleReason``). The providers' release of a held derivative result
(``delivery.release_approved``, one per input provider) is on the computation's stream too.

The evaluation (``access_refusal``) applies the stricter of the contract's policy and the
usage policies of the authorizations its product uses (``domain.policy.strictest``); a key
it does not know, in either, refuses the use.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from core.event import Event
from domain.base import Aggregate, Context, applies
from domain.errors import Forbidden, WrongState
from domain.policy import parse_instant

#: the namespace of usage stream ids: uuid5(USAGE_NAMESPACE, contract_id)
USAGE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "dataledger:usage")
KINDS = ("view", "download")
#: the rules a refusal names: a policy key, or the contract's state, or an unknown key
RULES = ("view_count", "download_count", "processing_count", "query_count", "usage_window",
         "designated_users", "derivatives_need_approval", "circulation_modes",
         "allowed_fields", "contract_state", "unknown_constraint", "privacy_budget")
#: the form results take today: rows of plain values
RESULT_FORM = "plaintext"


def usage_id(contract_id: str) -> str:
    """The id of contract ``contract_id``'s usage stream."""
    return str(uuid.uuid5(USAGE_NAMESPACE, contract_id))


@dataclass(frozen=True, kw_only=True)
class DeliveryAccessed(Event):
    """A member read a delivered result: ``view`` (its rows shown) or ``download`` (its
    bytes). ``counted``: the access counts against the contract's view or download count
    (the demander's accesses to an execution's result; not the trial's, not supervision).
    ``served_sha256``: the SHA-256 of the copy served, watermarked for its reader (the
    demander's copy, or the operator's or regulator's own; null before version 2)."""

    type_name = "delivery.accessed"
    class_version = 2
    contract_id: str
    computation_id: str
    member_id: str
    kind: str
    counted: bool
    served_sha256: str | None = None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 did not record which copy was served."""
        state["served_sha256"] = None


@dataclass(frozen=True, kw_only=True)
class UsageRefused(Event):
    """A use was refused: ``action`` (view, download or processing) of ``computation_id``
    under contract ``contract_id``, by the rule ``rule`` (one of ``RULES``) whose limit is
    ``limit``, ``used`` times used before; ``reason`` is ``code: sentence``."""

    type_name = "usage.refused"
    contract_id: str
    computation_id: str
    member_id: str
    action: str
    rule: str
    limit: Any
    used: int | None
    reason: str


@dataclass(frozen=True, kw_only=True)
class DeliveryReleaseApproved(Event):
    """An input provider approved the release of a held derivative result (数据审批控制:
    the contract's ``derivatives_need_approval``); the result is released once every input
    provider did. A signed decision (``delivery.release_approval``)."""

    type_name = "delivery.release_approved"
    provider_id: str
    #: the deciding member's signature (core.decision); null: unsigned (development mode)
    signature: dict[str, Any] | None = None


@dataclass(frozen=True)
class Meter:
    """A usage stream's counters as the read model holds them: the stream's version and the
    demander's views and downloads counted up to it."""

    version: int = 0
    views: int = 0
    downloads: int = 0

    def used(self, kind: str) -> int:
        return self.views if kind == "view" else self.downloads


class RuleReason(str):
    """A refusal's reason (``code: sentence``) that names the usage rule refusing and its
    limit: a computation failed with one records a ``usage.refused`` too."""

    rule: str
    limit: Any

    def __new__(cls, text: str, rule: str, limit: Any) -> Self:
        made = super().__new__(cls, text)
        made.rule, made.limit = rule, limit
        return made


@dataclass(frozen=True)
class Refusal:
    """Why an access is refused: its stable ``code`` (the error the caller gets), the
    ``rule`` with its ``limit`` and the count ``used``, a sentence; ``forbidden``: 403 (the
    member is not one the contract names), else 409."""

    code: str
    rule: str
    limit: Any
    detail: str
    used: int | None = None
    forbidden: bool = False

    def error(self) -> WrongState | Forbidden:
        """The domain error the access is answered with (after the refusal is recorded)."""
        cls = UsageForbidden if self.forbidden else UsageDenied
        return cls(self.code, f"{self.code}: {self.detail}", rule=self.rule, limit=self.limit)


class UsageDenied(WrongState):
    """A usage control refused the use (409); ``code`` names the control."""

    def __init__(self, code: str, detail: str, **context: Any) -> None:
        super().__init__(detail, **context)
        self.code = code


class UsageForbidden(Forbidden):
    """A usage control refused the use to this member (403): not a designated user."""

    def __init__(self, code: str, detail: str, **context: Any) -> None:
        super().__init__(detail, **context)
        self.code = code


class Usage(Aggregate):
    """A contract's usage stream: accesses and refused accesses, counted; never ends."""

    kind = "usage"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.contract_id = ""
        self.views = 0
        self.downloads = 0

    @classmethod
    def at(cls, contract_id: str, meter: Meter) -> Usage:
        """The stream as the read model counted it (no replay): the append refuses its next
        event unless the stream is still at ``meter.version``."""
        agg = cls(usage_id(contract_id))
        agg.contract_id, agg.version = contract_id, meter.version
        agg.views, agg.downloads = meter.views, meter.downloads
        return agg

    def meter(self) -> Meter:
        return Meter(self.version, self.views, self.downloads)

    def access(self, ctx: Context, *, computation_id: str, kind: str, counted: bool,
               served_sha256: str | None = None) -> None:
        self.trigger(DeliveryAccessed, ctx, contract_id=self.contract_id,
                     computation_id=computation_id, member_id=ctx.actor.member_id, kind=kind,
                     counted=counted, served_sha256=served_sha256)

    def refuse(self, ctx: Context, *, computation_id: str, kind: str, refusal: Refusal) -> None:
        self.trigger(UsageRefused, ctx, contract_id=self.contract_id,
                     computation_id=computation_id, member_id=ctx.actor.member_id,
                     action=kind, rule=refusal.rule, limit=refusal.limit, used=refusal.used,
                     reason=f"{refusal.code}: {refusal.detail}")

    @applies(DeliveryAccessed)
    def _accessed(self, e: DeliveryAccessed) -> None:
        self.contract_id = e.contract_id
        if e.counted:
            self.views += e.kind == "view"
            self.downloads += e.kind == "download"

    @applies(UsageRefused)
    def _refused(self, e: UsageRefused) -> None:
        self.contract_id = e.contract_id


# -- the evaluator ------------------------------------------------------------------
@dataclass(frozen=True)
class Access:
    """One attempted access: its kind, the member, whether it is the demander's (counted,
    and subject to the designated users), the time, and the input providers whose release
    of a held result is still missing."""

    kind: str
    member_id: str
    demander: bool
    at: str
    pending_releases: tuple[str, ...] = ()


def window_refusal(policy: Mapping[str, Any], at: str) -> Refusal | None:
    """The usage window (指定时间控制): ``not_before`` <= now < ``not_after``."""
    now = parse_instant(at, "at")
    start, end = policy.get("not_before"), policy.get("not_after")
    limit = {"not_before": start, "not_after": end}
    if start is not None and now < parse_instant(start, "not_before"):
        return Refusal("outside_contract_window", "usage_window", limit,
                       f"the usage window opens at {start} (now {at})")
    if end is not None and now >= parse_instant(end, "not_after"):
        return Refusal("outside_contract_window", "usage_window", limit,
                       f"the usage window closed at {end} (now {at})")
    return None


def circulation_refusal(policy: Mapping[str, Any]) -> Refusal | None:
    """Results are delivered as plaintext rows: a policy whose circulation modes leave out
    plaintext gets no delivery (no other form exists yet)."""
    modes = policy.get("circulation_modes")
    if modes is None or RESULT_FORM in modes:
        return None
    return Refusal("circulation_mode_not_allowed", "circulation_modes", list(modes),
                   f"the policy allows only {', '.join(modes)} circulation; results are "
                   f"delivered as {RESULT_FORM} rows")


def designated_refusal(policy: Mapping[str, Any], member_id: str) -> Refusal | None:
    """The designated users (指定用户控制): a demander's member the policy does not name
    is refused (403)."""
    users = policy.get("designated_users")
    if users is None or member_id in users:
        return None
    return Refusal("not_designated_user", "designated_users", list(users),
                   f"member {member_id} is not one of the contract's designated users",
                   forbidden=True)


def unknown_refusal(unknown: list[str]) -> Refusal | None:
    """A policy key the evaluator does not know refuses every use (fail closed)."""
    if not unknown:
        return None
    return Refusal("unknown_constraint", "unknown_constraint", list(unknown),
                   f"the policy holds constraint(s) {', '.join(unknown)} this server does not "
                   "know; no use is allowed until it does")


def access_refusal(policy: Mapping[str, Any], meter: Meter, access: Access) -> Refusal | None:
    """Why ``access`` is refused under the effective ``policy`` (known keys only) with the
    counters ``meter``; None when every control allows it. In order: the window, the
    designated users (the demander's members), the circulation modes, the providers'
    release of a held result, then the view or download count (the demander's)."""
    refusal = window_refusal(policy, access.at)
    if refusal is not None:
        return refusal
    refusal = (designated_refusal(policy, access.member_id) if access.demander else None
               ) or circulation_refusal(policy)
    if refusal is not None:
        return refusal
    if policy.get("derivatives_need_approval") and access.pending_releases:
        pending = list(access.pending_releases)
        return Refusal("release_pending", "derivatives_need_approval", pending,
                       "the result is a derivative held until each input provider approves "
                       f"its release; waiting for {', '.join(pending)}")
    key = f"{access.kind}_count"
    limit, used = policy.get(key), meter.used(access.kind)
    if access.demander and limit is not None and used >= limit:
        return Refusal(f"{key}_exhausted", key, limit,
                       f"the contract allows {limit} {access.kind}(s) of its results and "
                       f"{used} were made", used=used)
    return None
