"""One root error and its family: every guard names the rule it enforces.

The API maps each class to an HTTP status in one exception handler; nothing
below knows about HTTP.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Root of every error a command can meet. ``code`` is stable, for clients."""

    code = "domain_error"
    #: the keys of ``context`` the answer's body carries besides ``error`` and ``detail``
    shown: tuple[str, ...] = ()
    #: seconds a client waits before retrying (the ``Retry-After`` header); None: no header
    retry_after: int | None = None

    def __init__(self, detail: str, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context


class InvalidInput(DomainError):
    """A field has a value the rules refuse (422). ``field`` names it."""

    code = "invalid_input"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}", field=field)
        self.field = field
        self.reason = reason


class NotFound(DomainError):
    """No such thing, or not visible to the caller (404)."""

    code = "not_found"


class Unauthenticated(DomainError):
    """No or unknown bearer token (401)."""

    code = "unauthenticated"


class Forbidden(DomainError):
    """The caller's participant or role may not do this (403)."""

    code = "forbidden"


class SeparationOfDuties(Forbidden):
    """A duty that must be another's (403): the platform making another participant's
    members, an admin deciding a scenario it gave an opinion on."""

    code = "separation_of_duties"


class WrongState(DomainError):
    """The command does not fit the aggregate's current state (409)."""

    code = "wrong_state"


# -- 409 because of another aggregate's state: the code names it (``…Error`` where the plain
# name is an event's) ----------------------------------------------------------------------
class ParticipantNotAdmitted(WrongState):
    """The acting (or named) participant is pending or rejected, not admitted (409)."""

    code = "participant_not_admitted"


class ParticipantSuspendedError(ParticipantNotAdmitted):
    """The acting (or named) participant is suspended (409)."""

    code = "participant_suspended"


class RegulatorExists(WrongState):
    """The platform has its regulator (one per platform): a second one is refused (409)."""

    code = "regulator_exists"


class RegulatorNotSuspendable(Forbidden):
    """Nobody suspends the regulator through the API (403): it supervises the platform,
    and it is the only one the platform has."""

    code = "regulator_not_suspendable"


class DatasetNotPublished(WrongState):
    """A dataset the command names is not in the catalog (409)."""

    code = "dataset_not_published"


class ScenarioNotApproved(WrongState):
    """The scenario the command rests on is submitted or rejected, not approved (409)."""

    code = "scenario_not_approved"


class ScenarioSuspendedError(ScenarioNotApproved):
    """The scenario the command rests on was suspended (409)."""

    code = "scenario_suspended"


class NoAuthorization(WrongState):
    """No live authorization covers what the command uses (409)."""

    code = "no_authorization"


class AuthorizationRevokedError(NoAuthorization):
    """The authorization the command rests on was revoked (409)."""

    code = "authorization_revoked"


class AuthorizationExpiredError(NoAuthorization):
    """The authorization the command rests on is expired or not yet valid (409)."""

    code = "authorization_expired"


class ProductNotListed(WrongState):
    """The product the command rests on is not on the market (409)."""

    code = "product_not_listed"


class ProductDelistedError(ProductNotListed):
    """The product the command rests on was delisted (409)."""

    code = "product_delisted"


class ConcurrencyConflict(DomainError):
    """Someone else changed the aggregate first (409); reload and retry."""

    code = "concurrency_conflict"
    retry_after = 0


class SignatureRequired(Forbidden):
    """A signed decision came without a signature, or signed with a key the member never
    registered (403)."""

    code = "signature_required"


class SignatureInvalid(Forbidden):
    """A decision's signature does not verify over its statement (403)."""

    code = "signature_invalid"


class KeyRevokedError(Forbidden):
    """A decision was signed with a key its member revoked (403)."""

    code = "key_revoked"


class StaleDecision(ConcurrencyConflict):
    """A decision was signed on another version of its aggregate than the current one
    (409): read the aggregate again and sign at its current version."""

    code = "stale_decision"
    retry_after = 0


class PartRefused(WrongState):
    """A joint computation's masked part that the ledger will not take (409): ``reason`` is
    one word (``execution``, ``providers``, ``unknown``, ``length``, ``body``, ``format``,
    ``duplicate``, as ``core.secagg`` names them) and ``field`` the header field at fault."""

    code = "part_refused"
    shown = ("reason", "field")


class DecisionReplayed(WrongState):
    """A decision that creates an aggregate names (or its signature derives) the id of one
    that exists (409): a signed grant counts once; a new grant names a new id."""

    code = "decision_replayed"


class IdempotencyKeyReused(DomainError):
    """An Idempotency-Key came back with a different request (422)."""

    code = "idempotency_key_reused"
