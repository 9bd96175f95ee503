"""Authorization (数据授权): a provider lets an approved scenario's operator use some of its
datasets' fields for a period, under a usage policy."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from core.event import Event
from domain.base import Aggregate, Context, applies, new_id
from domain.dataset import Dataset, require_text, validate_selection
from domain.errors import (
    AuthorizationExpiredError,
    AuthorizationRevokedError,
    DecisionReplayed,
    Forbidden,
    InvalidInput,
    NotFound,
    WrongState,
)
from domain.permissions import permit
from domain.policy import normalize_instant, parse_instant, require_window, validate_policy
from domain.scenario import Scenario
from domain.signing import Sign, Signed, signature_check
from domain.unit_of_work import UnitOfWork


@dataclass(frozen=True, kw_only=True)
class AuthorizationGranted(Event):
    """A provider authorized a scenario's operator to use datasets' fields in a period."""

    type_name = "authorization.granted"
    class_version = 2
    provider_id: str
    scenario_id: str
    operator_id: str
    datasets: list[dict[str, Any]]
    not_before: str
    not_after: str
    usage_policy: dict[str, Any]
    #: the deciding member's signature (core.decision); null: unsigned (development mode)
    signature: dict[str, Any] | None = None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 was not signed."""
        state["signature"] = None


@dataclass(frozen=True, kw_only=True)
class AuthorizationRevoked(Event):
    """The granting provider revoked the authorization; terminal."""

    type_name = "authorization.revoked"
    class_version = 2
    reason: str
    #: the deciding member's signature (core.decision); null: unsigned (development mode)
    signature: dict[str, Any] | None = None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 was not signed."""
        state["signature"] = None


@dataclass(frozen=True, kw_only=True)
class AuthorizationExpired(Event):
    """The authorization's period ended (recorded by the platform); terminal."""

    type_name = "authorization.expired"


class Authorization(Aggregate):
    """granted → revoked | expired; both terminal."""

    kind = "authorization"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.state = "new"
        self.provider_id = ""
        self.scenario_id = ""
        self.operator_id = ""
        self.datasets: list[dict[str, Any]] = []
        self.not_before = ""
        self.not_after = ""
        self.usage_policy: dict[str, Any] = {}

    # -- queries ----------------------------------------------------------------
    def granted_fields(self, dataset_id: str) -> list[str] | None:
        """The fields granted on ``dataset_id``, or None if it is not granted."""
        for item in self.datasets:
            if item["dataset_id"] == dataset_id:
                return list(item["fields"])
        return None

    def covers(self, dataset_id: str, fields: list[str], at: str) -> bool:
        """Live at ``at`` (granted, not_before <= at < not_after) and ``fields`` all granted."""
        if self.state != "granted":
            return False
        start, end = parse_instant(self.not_before, "not_before"), parse_instant(
            self.not_after, "not_after")
        if not start <= parse_instant(at, "at") < end:
            return False
        granted = self.granted_fields(dataset_id)
        return granted is not None and set(fields) <= set(granted)

    def require_granted(self, action: str) -> None:
        """Raise (409 ``authorization_revoked`` or ``authorization_expired``) unless the
        authorization is granted: what rests on it is refused by its state."""
        if self.state != "granted":
            error = (AuthorizationRevokedError if self.state == "revoked"
                     else AuthorizationExpiredError)
            raise error(f"cannot {action}: authorization {self.id} is {self.state}",
                        state=self.state)

    # -- decide -----------------------------------------------------------------
    @classmethod
    def grant(cls, id: str, ctx: Context, *, scenario: Scenario, datasets: list[dict[str, Any]],
              not_before: str, not_after: str, usage_policy: Any,
              sign: Sign = lambda: None) -> Authorization:
        """Grant; ``datasets`` was checked against the scenario and the datasets by the caller."""
        scenario.require_approved()
        start = normalize_instant(not_before, "not_before")
        end = normalize_instant(not_after, "not_after")
        require_window(start, end, "not_after")
        agg = cls(id)
        agg.trigger(AuthorizationGranted, ctx, provider_id=ctx.actor.participant_id,
                    scenario_id=scenario.id, operator_id=scenario.operator_id,
                    datasets=datasets, not_before=start, not_after=end,
                    usage_policy=validate_policy(usage_policy), signature=sign())
        return agg

    def revoke(self, ctx: Context, *, reason: str,
               sign: Sign = lambda: None) -> None:
        if ctx.actor.participant_id != self.provider_id:
            raise Forbidden(f"only the granting provider revokes authorization {self.id}")
        self.require_state(["granted"], "revoke")
        self.trigger(AuthorizationRevoked, ctx, reason=require_text(reason, "reason"),
                     signature=sign())

    def expire(self, ctx: Context) -> None:
        self.require_state(["granted"], "expire")
        if parse_instant(ctx.at, "at") < parse_instant(self.not_after, "not_after"):
            raise WrongState(f"authorization {self.id} runs until {self.not_after}; "
                             "it cannot expire before not_after")
        self.trigger(AuthorizationExpired, ctx)

    # -- evolve -----------------------------------------------------------------
    @applies(AuthorizationGranted)
    def _granted(self, e: AuthorizationGranted) -> None:
        self.state, self.provider_id, self.scenario_id = "granted", e.provider_id, e.scenario_id
        self.operator_id, self.not_before, self.not_after = e.operator_id, e.not_before, e.not_after
        self.datasets = [{"dataset_id": d["dataset_id"], "fields": list(d["fields"])}
                         for d in e.datasets]
        self.usage_policy = dict(e.usage_policy)

    @applies(AuthorizationRevoked)
    def _revoked(self, e: AuthorizationRevoked) -> None:
        self.state = "revoked"

    @applies(AuthorizationExpired)
    def _expired(self, e: AuthorizationExpired) -> None:
        self.state = "expired"

def coverage_breach(auths: list[Authorization], inputs: list[dict[str, Any]], at: str,
                    of: str) -> tuple[str, str] | None:
    """Why the inputs (``{"dataset_id", "fields"}``) of ``of`` (e.g. "product X") are not
    each covered by a live authorization among ``auths`` at ``at``, as (its code, a sentence):
    ``authorization_revoked``, ``authorization_expired`` (also: not yet valid) or
    ``no_authorization``; None if they are (the first gap wins)."""
    for item in inputs:
        dataset_id, fields = item["dataset_id"], item["fields"]
        if any(a.covers(dataset_id, fields, at) for a in auths):
            continue
        fitting = [a for a in auths if (granted := a.granted_fields(dataset_id)) is not None
                   and set(fields) <= set(granted)]
        what = f"dataset {dataset_id} fields {fields!r} of {of}"
        revoked = [a.id for a in fitting if a.state == "revoked"]
        if revoked:
            why = (f"authorization {', '.join(revoked)} covering {what} was revoked and no "
                   "live authorization covers them")
            return "authorization_revoked", why
        lapsed = [a.id for a in fitting if a.state in ("expired", "granted")]
        if lapsed:
            why = (f"authorization {', '.join(lapsed)} covering {what} is expired or not "
                   f"yet valid at {at}")
            return "authorization_expired", why
        return "no_authorization", f"no authorization of {of} covers {what}"
    return None


def _check_datasets(uow: UnitOfWork, ctx: Context, scenario: Scenario,
                    datasets: Any) -> list[dict[str, Any]]:
    """Each dataset is the provider's own, published, requested by the scenario, fields too."""
    items = validate_selection(datasets, "datasets")
    for i, item in enumerate(items):
        dataset = uow.get(Dataset, item["dataset_id"])
        if dataset.owner_id != ctx.actor.participant_id:
            raise Forbidden(f"dataset {dataset.id} is not owned by the granting provider")
        dataset.require_published()
        requested = scenario.requested_fields(dataset.id)
        if requested is None:
            raise InvalidInput(f"datasets[{i}].dataset_id",
                               f"scenario {scenario.id} did not request dataset {dataset.id}")
        extra = [f for f in item["fields"] if f not in requested]
        if extra:
            raise InvalidInput(f"datasets[{i}].fields",
                               f"fields {extra!r} were not requested by scenario {scenario.id}")
    return items


#: the namespace of the ids derived from a grant's signature
GRANT_IDS = uuid.UUID("5b0c4a5e-4f0b-4d4e-9a57-6f7e0d9c1a21")


def _grant_id(uow: UnitOfWork, signed: Signed | None) -> str:
    """A new authorization's id: the one the provider chose in the body it signed
    (``authorization_id``), else one derived from the signature (a UUID-5 of its value),
    else (unsigned, development mode) a fresh one. A grant signs the scenario, whose
    version a grant does not move: an id that exists means the same signed grant again,
    refused (DecisionReplayed), so a signature records one authorization only."""
    signature = None if signed is None else signed.signature
    chosen = None if signed is None else signed.body.get("authorization_id")
    if chosen is not None:
        try:
            chosen = str(uuid.UUID(str(chosen)))
        except ValueError:
            raise InvalidInput("authorization_id", "must be a UUID") from None
    elif signature is not None:
        chosen = str(uuid.uuid5(GRANT_IDS, signature.value))
    else:
        return new_id()
    try:
        uow.get(Authorization, chosen)
    except NotFound:
        return chosen
    raise DecisionReplayed(f"authorization {chosen} exists: a signed grant counts once; "
                           "name a new authorization_id to grant again", id=chosen)


# -- use cases ------------------------------------------------------------------
def grant_authorization(uow: UnitOfWork, ctx: Context, *, scenario_id: str,
                        datasets: list[dict[str, Any]], not_before: str, not_after: str,
                        usage_policy: dict[str, Any],
                        signed: Signed | None = None) -> dict[str, str]:
    """A provider authorizes an approved scenario to use some of its datasets' fields (a
    decision signed on the scenario); the new authorization's id is the one the signed
    body names (``authorization_id``), see :func:`_grant_id`."""
    permit(ctx.actor, "authorization.grant")
    scenario = uow.get(Scenario, scenario_id)
    sign = signature_check(uow, ctx, "authorization.grant", scenario, signed)
    scenario.require_approved()
    items = _check_datasets(uow, ctx, scenario, datasets)
    agg = Authorization.grant(_grant_id(uow, signed), ctx,
                              scenario=scenario, datasets=items,
                              not_before=not_before, not_after=not_after,
                              usage_policy=usage_policy, sign=sign)
    uow.add(agg)
    return {"authorization_id": agg.id, "state": agg.state}


def revoke_authorization(uow: UnitOfWork, ctx: Context, authorization_id: str, *,
                         reason: str, signed: Signed | None = None) -> dict[str, str]:
    """The granting provider revokes the authorization (terminal; signed)."""
    permit(ctx.actor, "authorization.revocation")
    agg = uow.get(Authorization, authorization_id)
    sign = signature_check(uow, ctx, "authorization.revocation", agg, signed)
    agg.revoke(ctx, reason=reason, sign=sign)
    return {"authorization_id": agg.id, "state": agg.state}


def expire_authorization(uow: UnitOfWork, ctx: Context,
                         authorization_id: str) -> dict[str, str]:
    """The platform records that the authorization's period is over (terminal)."""
    permit(ctx.actor, "authorization.expiry")
    agg = uow.get(Authorization, authorization_id)
    agg.expire(ctx)
    return {"authorization_id": agg.id, "state": agg.state}
