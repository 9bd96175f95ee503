"""One root error and its family: every guard names the rule it enforces.

The API maps each class to an HTTP status in one exception handler; nothing
below knows about HTTP.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Root of every error a command can meet. ``code`` is stable, for clients."""

    code = "domain_error"

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


class NotFound(DomainError):
    """No such thing, or not visible to the caller (404)."""

    code = "not_found"


class Unauthenticated(DomainError):
    """No or unknown bearer token (401)."""

    code = "unauthenticated"


class Forbidden(DomainError):
    """The caller's participant or role may not do this (403)."""

    code = "forbidden"


class WrongState(DomainError):
    """The command does not fit the aggregate's current state (409)."""

    code = "wrong_state"


class ConcurrencyConflict(DomainError):
    """Someone else changed the aggregate first (409); reload and retry."""

    code = "concurrency_conflict"


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


class IdempotencyKeyReused(DomainError):
    """An Idempotency-Key came back with a different request (422)."""

    code = "idempotency_key_reused"
