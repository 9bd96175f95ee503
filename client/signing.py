"""Signed decisions (签名验签) as a client makes them: which of the platform's requests are
decisions, the aggregate each one decides on, where that aggregate's version is read, and
the send–re-sign loop a stale version needs.

The statement, the signature and the wire form are ``core/decision.py``'s; the one function
an integrator calls is :func:`core.decision.signed_body` (docs/SIGNING.md).
:class:`client.platform.Platform` signs every decision of a party holding a key through
:func:`send_signed`, so the demo, the benchmarks and the tests sign without saying so.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core import decision
from core.files import write_private

#: how many times a decision is signed and sent while its aggregate keeps moving (409
#: ``stale_decision``) before the last answer is handed back
TRIES = 4


@dataclass(frozen=True)
class Route:
    """A signed command's route: ``pattern`` matches its path (``id`` names the aggregate
    unless ``id_field`` names the body field that does); ``view`` is the aggregate's GET."""

    command: str
    pattern: re.Pattern[str]
    view: str
    id_field: str = ""


def _route(command: str, path: str, view: str, id_field: str = "") -> Route:
    return Route(command, re.compile(f"^{path}$"), view, id_field)


_ID = "(?P<id>[^/?]+)"

#: every signed request by its path (POST); a new signed route adds its row here
ROUTES: tuple[Route, ...] = (
    _route("participant.admission", f"/participants/{_ID}/admission", "/participants/{}"),
    _route("participant.node_key", f"/participants/{_ID}/node-key", "/participants/{}"),
    _route("scenario.opinion", f"/scenarios/{_ID}/opinions", "/scenarios/{}"),
    _route("scenario.decision", f"/scenarios/{_ID}/decision", "/scenarios/{}"),
    _route("authorization.grant", "/authorizations", "/scenarios/{}", id_field="scenario_id"),
    _route("authorization.revocation", f"/authorizations/{_ID}/revocation",
           "/authorizations/{}"),
    _route("product.listing_decision", f"/products/{_ID}/listing-decision", "/products/{}"),
    _route("contract.proposal", f"/orders/{_ID}/contract", "/orders/{}"),
    _route("contract.acceptance", f"/orders/{_ID}/contract/acceptance", "/orders/{}"),
    _route("contract.approval", f"/orders/{_ID}/contract/approvals", "/orders/{}"),
    _route("contract.termination", f"/orders/{_ID}/contract/termination", "/orders/{}"),
    _route("delivery.release_approval", f"/deliveries/{_ID}/release-approvals",
           "/computations/{}"),
)


@dataclass(frozen=True)
class Decision:
    """One request that is a decision: its command, the aggregate it decides on, and the
    path of that aggregate's view (whose ``version`` is signed)."""

    command: str
    aggregate_id: str
    view: str


def decision_of(method: str, path: str, body: Any) -> Decision | None:
    """The decision ``method path`` with ``body`` makes, or None if it makes none (or names
    no aggregate a client could sign for: the server refuses it as it is)."""
    if method.upper() != "POST":
        return None
    path = path.split("?", 1)[0]
    for route in ROUTES:
        found = route.pattern.match(path)
        if found is None:
            continue
        if not route.id_field:
            aggregate = found["id"]
        elif isinstance(body, Mapping) and isinstance(body.get(route.id_field), str):
            aggregate = body[route.id_field]
        else:
            return None
        return Decision(route.command, aggregate, route.view.format(quote(aggregate, safe="")))
    return None


def signed(key: Ed25519PrivateKey, member_id: str, made: Decision, version: int,
           body: Mapping[str, Any]) -> dict[str, Any] | None:
    """``body`` with the member's signature at ``version``; None when the body has no
    canonical form (a float, say: the server refuses the body before any signature)."""
    try:
        return decision.signed_body(key, made.command, made.aggregate_id, version,
                                    member_id, body)
    except ValueError:
        return None


def stale(response: httpx.Response) -> bool:
    """True if the server refused a signature made on an aggregate version that moved."""
    if response.status_code != 409:
        return False
    try:
        return bool(response.json().get("error") == "stale_decision")
    except ValueError:
        return False


def send_signed(send: Callable[[Any], httpx.Response], version: Callable[[], int],
                key: Ed25519PrivateKey, member_id: str, made: Decision,
                body: Mapping[str, Any]) -> httpx.Response:
    """Read the aggregate's ``version()``, sign ``body`` at it and ``send`` it; again, up
    to :data:`TRIES` times, while the answer is 409 ``stale_decision``. The last answer."""
    response: httpx.Response | None = None
    for _ in range(TRIES):
        payload = signed(key, member_id, made, version(), body)
        response = send(dict(body) if payload is None else payload)
        if payload is None or not stale(response):
            return response
    assert response is not None
    return response


def view_version(response: httpx.Response) -> int:
    """The ``version`` of an aggregate's view; 0 when the caller may not read it or it does
    not exist (the server then refuses the decision with its own reason)."""
    if response.status_code != 200:
        return 0
    try:
        return int(response.json()["version"])
    except (ValueError, KeyError, TypeError):
        return 0


# -- a member's key, as a file -------------------------------------------------------------
def write_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Keep ``key`` at ``path`` as PKCS#8 PEM, readable by this user only (0600)."""
    write_private(path, decision.private_key_pem(key).decode())


def read_key(path: Path) -> Ed25519PrivateKey:
    """The private key kept at ``path`` (OSError if unreadable, DecisionFormatError if it is
    not an unencrypted Ed25519 PEM key)."""
    return decision.load_private_key(path.read_bytes())


def public_key(key: Ed25519PrivateKey) -> tuple[str, str]:
    """The registered text of ``key``'s public half and its key id."""
    text = decision.public_key_text(key.public_key())
    return text, decision.key_id(text)
