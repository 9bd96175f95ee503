"""The ledger's HTTP API as one provider's compute node calls it, with the provider's token.

Every call the node makes to the platform goes through :class:`NodePlatform`, over the one
HTTP driver of the platform (``client/``); an answer whose status is not one expected
raises ``client.platform.PlatformError`` (with the status). What the platform answers is
only its word: the node checks what matters against proofs (``compute_nodes/trust.py``).
"""

from __future__ import annotations

from typing import Any

import httpx

from client.platform import Platform, PlatformError, bearer

HTTP_TIMEOUT_S = 30.0


class NodePlatform:
    """The ledger API as one provider's node sees it."""

    def __init__(self, url: str, token: str, http: httpx.Client | None = None) -> None:
        self.http = http or httpx.Client(base_url=url.rstrip("/"), timeout=HTTP_TIMEOUT_S)
        self.http.headers.update(bearer(token))  # every request of this client is the node's
        self.client = Platform(self.http)
        self.token = token
        self._participant_id: str | None = None
        self._owners: dict[str, str] = {}  # dataset id -> owner id (never changes)

    def call(self, method: str, path: str, expect: tuple[int, ...] = (200,),
             **kwargs: Any) -> httpx.Response:
        """One request; PlatformError unless its status is one of ``expect``."""
        return self.client.request(method, path, self.token, expect, **kwargs)

    @property
    def participant_id(self) -> str:
        """The provider this token belongs to (``GET /participants/me``, asked once)."""
        if self._participant_id is None:
            me = self.client.me(self.token)
            self._participant_id = str(me["participant"]["id"])
        return self._participant_id

    def projected(self) -> int:
        """How far the platform's read models are (``GET /health``'s ``projected``): an
        answer 404 about an event above it may only mean "not projected yet"."""
        projected = self.call("GET", "/health").json()["projected"]
        if isinstance(projected, bool) or not isinstance(projected, int):
            raise TypeError(f"GET /health: projected {projected!r}")
        return projected

    # -- the log and its proofs -------------------------------------------------------
    def events(self, after: int, limit: int) -> dict[str, Any]:
        """A page of ``GET /ledger/events``: the events this provider may see."""
        return self.client.events_page(self.token, after, limit)

    def event(self, seq: int) -> Any:
        """``GET /ledger/events/{seq}``."""
        return self.client.event(self.token, seq)

    def anchored_checkpoint(self) -> dict[str, Any] | None:
        """The latest anchored checkpoint's view; None if there is none yet."""
        try:
            view: dict[str, Any] = self.call("GET", "/ledger/checkpoints/latest",
                                             params={"anchored": "true"}).json()
        except PlatformError as exc:
            if exc.status == 404:
                return None
            raise
        return view

    def inclusion_proof(self, index: int, size: int) -> Any:
        """The audit path of leaf ``index`` in the tree of ``size`` leaves (base64 hashes)."""
        return self.client.inclusion_proof(self.token, index, size)["proof"]

    # -- the views an execution is looked up in -----------------------------------------
    def order(self, contract_id: str) -> dict[str, Any] | None:
        """The order view; None when it answers 403 or 404 (not there, or not for us)."""
        r = self.call("GET", f"/orders/{contract_id}", expect=(200, 403, 404))
        if r.status_code != 200:
            return None
        order: dict[str, Any] = r.json()
        return order

    def product(self, product_id: str) -> dict[str, Any]:
        return self.client.product(self.token, product_id)

    def authorization(self, authorization_id: str) -> dict[str, Any] | None:
        """The authorization view; None when it answers 403 or 404 (not this provider's)."""
        r = self.call("GET", f"/authorizations/{authorization_id}", expect=(200, 403, 404))
        if r.status_code != 200:
            return None
        view: dict[str, Any] = r.json()
        return view

    def participant(self, participant_id: str) -> dict[str, Any] | None:
        """A participant's view (its registered ``node_key``); None on 404."""
        r = self.call("GET", f"/participants/{participant_id}", expect=(200, 404))
        if r.status_code != 200:
            return None
        view: dict[str, Any] = r.json()
        return view

    def joint(self, joint_id: str) -> dict[str, Any]:
        """``GET /joint/{id}``: a joint execution's view (providers, layout, state)."""
        view: dict[str, Any] = self.call("GET", f"/joint/{joint_id}").json()
        return view

    def joint_layout(self, joint_id: str) -> dict[str, Any]:
        """``GET /joint/{id}/layout``: the keys and their hash."""
        layout: dict[str, Any] = self.call("GET", f"/joint/{joint_id}/layout").json()
        return layout

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        """``GET /datasets/{id}``: its ``registered_seq`` names the event a joint's node
        proves the owner from."""
        view: dict[str, Any] = self.call("GET", f"/datasets/{dataset_id}").json()
        return view

    def dataset_owner(self, dataset_id: str) -> str:
        owner = self._owners.get(dataset_id)
        if owner is None:
            owner = str(self.call("GET", f"/datasets/{dataset_id}").json()["owner_id"])
            self._owners[dataset_id] = owner
        return owner

    # -- what the node reports ----------------------------------------------------------
    def data_loaded(self, dataset_id: str, body: dict[str, Any]) -> Any:
        return self.call("POST", f"/datasets/{dataset_id}/data-loaded", json=body).json()

    def request_computation(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /computations``: the existing computation, or a new one (the ledger
        checks its policies and may record it failed at once)."""
        made: dict[str, Any] = self.call("POST", "/computations", expect=(200, 201),
                                         json=body).json()
        return made

    def report_result(self, computation_id: str, body: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = self.call("POST", f"/computations/{computation_id}/result",
                                           json=body).json()
        return answer

    def report_failure(self, computation_id: str, reason: str) -> None:
        self.call("POST", f"/computations/{computation_id}/failure", json={"reason": reason})

    def post_layout(self, joint_id: str, keys: list[str]) -> dict[str, Any]:
        """``POST /joint/{id}/layout``: the layout provider's sorted keys."""
        answer: dict[str, Any] = self.call("POST", f"/joint/{joint_id}/layout",
                                           json={"keys": keys}).json()
        return answer

    def post_masked_part(self, computation_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /computations/{id}/masked-part``: this provider's masked part."""
        answer: dict[str, Any] = self.call(
            "POST", f"/computations/{computation_id}/masked-part", json=body).json()
        return answer
