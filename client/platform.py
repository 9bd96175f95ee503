"""The platform's HTTP API as its parties drive it: one method per call they make.

Each method takes the calling party (a :class:`Party` or a bare bearer token), checks the
status the call answers on success and raises :class:`PlatformError` otherwise; it returns
the new aggregate's id for a creation and the decoded JSON answer for the rest. Every
decision (``client/signing.py`` lists them) of a party holding a key is signed (签名):
``onboard`` and ``add_member`` give each new party a key and register it.
"""

from __future__ import annotations

import base64
import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client import signing
from core import decision
from core.tokens import hash_token, new_token

#: the admission comment the callers record unless they give their own
ADMITTED = "meets the admission criteria"


class PlatformError(Exception):
    """The platform answered with a status the caller did not expect."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: {status} {body[:500]}")
        self.method = method
        self.path = path
        self.status = status
        self.body = body


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of a member's token."""
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Party:
    """An onboarded participant as one of its members acts for it: the member's token and,
    to sign its decisions, the member's Ed25519 key (``key_registered`` once the ledger
    holds its public half)."""

    participant_id: str
    token: str
    role: str = ""
    member_id: str = ""
    name: str = ""
    key: Ed25519PrivateKey | None = field(default=None, repr=False)
    key_registered: bool = False

    @property
    def key_id(self) -> str | None:
        return None if self.key is None else signing.public_key(self.key)[1]

    def wire(self) -> dict[str, Any]:
        """The party as JSON, its key as PEM (for a process of its own: keep it private)."""
        pem = None if self.key is None else decision.private_key_pem(self.key).decode()
        return {"participant_id": self.participant_id, "token": self.token,
                "role": self.role, "member_id": self.member_id, "name": self.name,
                "key_pem": pem, "key_registered": self.key_registered}

    @classmethod
    def of_wire(cls, wire: Mapping[str, Any]) -> Party:
        pem = wire.get("key_pem")
        return cls(wire["participant_id"], wire["token"], wire.get("role", ""),
                   wire.get("member_id", ""), wire.get("name", ""),
                   None if pem is None else decision.load_private_key(pem.encode()),
                   bool(wire.get("key_registered")))

    @property
    def id(self) -> str:
        """The participant's id."""
        return self.participant_id

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


#: who makes a call: a party, or a bare bearer token
Caller = Party | str


def _token(who: Caller) -> str:
    return who.token if isinstance(who, Party) else who


class Platform:
    """A client of one platform server (any ``httpx.Client``, a test app's included)."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    @classmethod
    def at(cls, url: str, timeout: float = 30) -> Platform:
        """A client of the server at ``url``."""
        return cls(httpx.Client(base_url=url, timeout=timeout))

    @property
    def url(self) -> str:
        return str(self.http.base_url).rstrip("/")

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- any call -----------------------------------------------------------------------
    def send(self, method: str, path: str, who: Caller, **kwargs: Any) -> httpx.Response:
        """One request as ``who``, whatever it answers. A decision is signed when ``who``
        holds a key: at the aggregate's version read just before, and again while the
        server answers 409 ``stale_decision`` (``client/signing.py``)."""
        headers = {**kwargs.pop("headers", {}), **bearer(_token(who))}
        body = kwargs.pop("json", None)
        made = signing.decision_of(method, path, body)
        if (made is None or not isinstance(who, Party) or who.key is None
                or not isinstance(body, Mapping | None)):
            return self.http.request(method, path, headers=headers, json=body, **kwargs)
        if not who.key_registered:  # its participant was pending when it got the key
            with contextlib.suppress(PlatformError):  # then the server refuses, and says why
                self.register_key(who)
        member_id = who.member_id or str(self.me(who)["member_id"])
        return signing.send_signed(
            lambda signed: self.http.request(method, path, headers=headers, json=signed,
                                             **kwargs),
            lambda: signing.view_version(self.http.get(made.view, headers=headers)),
            who.key, member_id, made, body or {})

    def request(self, method: str, path: str, who: Caller,
                expect: int | tuple[int, ...] = 200, **kwargs: Any) -> httpx.Response:
        """:meth:`send`; the response when its status is ``expect`` (one of them, for a
        tuple), :class:`PlatformError` otherwise."""
        response = self.send(method, path, who, **kwargs)
        expected = (expect,) if isinstance(expect, int) else expect
        if response.status_code not in expected:
            raise PlatformError(method, path, response.status_code, response.text)
        return response

    def call(self, method: str, path: str, who: Caller, expect: int | tuple[int, ...] = 200,
             **kwargs: Any) -> Any:
        """:meth:`request`, then its JSON answer (its bytes if it is not JSON)."""
        response = self.request(method, path, who, expect, **kwargs)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    def wait_until_up(self, timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
        """Poll ``GET /health`` until it answers 200 (True), ``alive()`` turns false or
        ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive():
            with contextlib.suppress(httpx.HTTPError):  # not listening yet
                if self.http.get("/health", timeout=2).status_code == 200:
                    return True
            time.sleep(0.2)
        return False

    # -- participants (入驻, 准入) ---------------------------------------------------------
    def me(self, who: Caller) -> dict[str, Any]:
        """The caller: its member id, roles and participant."""
        answer: dict[str, Any] = self.call("GET", "/participants/me", who)
        return answer

    def party(self, token: str) -> Party:
        """The party a token acts for."""
        me = self.me(token)
        return Party(str(me["participant"]["id"]), token, str(me["participant"]["role"]),
                     str(me["member_id"]), str(me["participant"]["name"]))

    def register_participant(self, platform: Caller, role: str, name: str,
                             credit_code: str) -> Party:
        """The platform onboards an organization with a first admin member (pending). The
        new participant's side (played here by this client) makes the admin's token and
        the platform is sent only its hash: it never sees the token."""
        token = new_token()
        made = self.call("POST", "/participants", platform, 201, json={
            "name": name, "role": role, "credit_code": credit_code,
            "admin_name": f"{role} admin", "admin_token_hash": hash_token(token)})
        return Party(str(made["participant_id"]), token, role, str(made["member_id"]), name)

    def rotate_token(self, member: Party, target: Party | None = None) -> Party:
        """``member`` replaces ``target``'s token (its own by default; an admin's of its
        participant's members) by a new one it made; ``target`` holds it after."""
        target = target or member
        token = new_token()
        self.call("POST", f"/participants/{target.participant_id}/members/"
                  f"{target.member_id}/token", member, json={"token_hash": hash_token(token)})
        target.token = token
        return target

    def admit(self, judge: Caller, participant: str | Party, comment: str = ADMITTED) -> Any:
        """The regulator or the platform approves a participant's admission; an admitted
        :class:`Party` then registers its key."""
        pid = participant.participant_id if isinstance(participant, Party) else participant
        answer = self.call("POST", f"/participants/{pid}/admission", judge,
                           json={"approve": True, "comment": comment})
        if isinstance(participant, Party) and participant.key is not None:
            self.register_key(participant)
        return answer

    def onboard(self, platform: Caller, role: str, name: str, *, credit_code: str,
                judge: Caller | None, comment: str = ADMITTED) -> Party:
        """Register a participant with a key for its admin and, when a ``judge`` is given,
        have it admitted (the admin's key is registered then: a pending participant's
        members register none)."""
        party = self.register_participant(platform, role, name, credit_code)
        party.key = decision.new_private_key()
        if judge is not None:
            self.admit(judge, party, comment)
        return party

    def add_member(self, admin: Party, name: str, roles: list[str]) -> Party:
        """A participant's own admin adds a member (no other participant may, the platform
        included: separation of duties); the member's party, with
        a key, registered unless the participant is still pending."""
        made = self.call("POST", f"/participants/{admin.participant_id}/members", admin, 201,
                         json={"name": name, "roles": roles})
        member = Party(admin.participant_id, str(made["token"]), admin.role,
                       str(made["member_id"]), admin.name)
        self.give_key(member)
        return member

    def give_key(self, party: Party) -> Party:
        """Give ``party`` a new key and register it (kept unregistered while its participant
        is pending); the party."""
        party.key = decision.new_private_key()
        try:
            self.register_key(party)
        except PlatformError as exc:
            if exc.status != 409:  # 409: not admitted yet (admit() registers it then)
                raise
        return party

    def register_key(self, party: Party, replaces: str | None = None) -> Any:
        """The member registers its key's public half (``replaces``: the key id it rotates
        out, revoked in the same command)."""
        if party.key is None:
            raise ValueError("the party holds no key")
        body: dict[str, Any] = {"public_key": signing.public_key(party.key)[0]}
        if replaces is not None:
            body["replaces"] = replaces
        answer = self.call("POST", f"/participants/{party.participant_id}/keys", party, 201,
                           json=body)
        party.key_registered = True
        return answer

    def rotate_key(self, party: Party) -> Any:
        """Replace the party's key by a new one (the old one is revoked)."""
        old_key, old_id = party.key, party.key_id
        party.key = decision.new_private_key()
        try:
            return self.register_key(party, replaces=old_id)
        except PlatformError:
            party.key = old_key
            raise

    def register_node_key(self, party: Party, public_key: str) -> dict[str, Any]:
        """A provider's member registers its compute node's X25519 key (``public_key``:
        base64 of 32 bytes, as ``enroll`` prints it), a signed decision
        (``participant.node_key``) that replaces the provider's earlier node key; the
        participant's view, with its ``node_key``."""
        answer: dict[str, Any] = self.call(
            "POST", f"/participants/{party.participant_id}/node-key", party,
            json={"public_key": public_key})
        return answer

    def revoke_key(self, who: Caller, participant_id: str, key_id: str, reason: str) -> Any:
        """The key's member or its participant's admin revokes a key."""
        return self.call("POST", f"/participants/{participant_id}/keys/{key_id}/revocation",
                         who, json={"reason": reason})

    # -- the catalog: datasets, scenarios (一场景一审核), authorizations ---------------------
    def register_dataset(self, provider: Caller, *, name: str, description: str,
                         source_system: str, fields: list[dict[str, Any]],
                         classification: str = "L3") -> str:
        """A provider registers a dataset's catalog entry; its id."""
        made = self.call("POST", "/datasets", provider, 201, json={
            "name": name, "description": description, "source_system": source_system,
            "classification": classification, "fields": fields})
        return str(made["dataset_id"])

    def publish_dataset(self, provider: Caller, dataset_id: str) -> Any:
        return self.call("POST", f"/datasets/{dataset_id}/publication", provider)

    def propose_scenario(self, operator: Caller, *, title: str, purpose: str, sector: str,
                         requested: list[dict[str, Any]],
                         circulation_mode: str = "ciphertext") -> str:
        """An operator proposes a scenario over the datasets' fields it requests; its id."""
        made = self.call("POST", "/scenarios", operator, 201, json={
            "title": title, "purpose": purpose, "sector": sector, "requested": requested,
            "circulation_mode": circulation_mode})
        return str(made["scenario_id"])

    def give_opinion(self, expert: Caller, scenario_id: str, verdict: str,
                     comment: str) -> Any:
        return self.call("POST", f"/scenarios/{scenario_id}/opinions", expert, 201,
                         json={"verdict": verdict, "comment": comment})

    def decide_scenario(self, regulator: Caller, scenario_id: str, comment: str,
                        approve: bool = True) -> Any:
        return self.call("POST", f"/scenarios/{scenario_id}/decision", regulator,
                         json={"approve": approve, "comment": comment})

    def authorize(self, provider: Caller, scenario_id: str, datasets: list[dict[str, Any]],
                  window: tuple[datetime, datetime],
                  usage_policy: Mapping[str, Any]) -> str:
        """A provider authorizes its datasets' fields for a scenario between ``window``'s
        two instants; the authorization's id."""
        made = self.call("POST", "/authorizations", provider, 201, json={
            "scenario_id": scenario_id, "datasets": datasets,
            "not_before": window[0].isoformat(), "not_after": window[1].isoformat(),
            "usage_policy": dict(usage_policy), "authorization_id": str(uuid.uuid4())})
        return str(made["authorization_id"])

    def revoke_authorization(self, provider: Caller, authorization_id: str,
                             reason: str) -> Any:
        return self.call("POST", f"/authorizations/{authorization_id}/revocation", provider,
                         json={"reason": reason})

    # -- products (上架) ------------------------------------------------------------------
    def register_product(self, operator: Caller, body: Mapping[str, Any]) -> str:
        """An operator registers a product (the ``POST /products`` body); its id."""
        made = self.call("POST", "/products", operator, 201, json=dict(body))
        return str(made["product_id"])

    def request_listing(self, operator: Caller, product_id: str) -> Any:
        return self.call("POST", f"/products/{product_id}/listing-request", operator)

    def decide_listing(self, platform: Caller, product_id: str, comment: str,
                       approve: bool = True) -> Any:
        return self.call("POST", f"/products/{product_id}/listing-decision", platform,
                         json={"approve": approve, "comment": comment})

    def list_product(self, operator: Caller, platform: Caller, body: Mapping[str, Any],
                     comment: str = "complete and documented") -> str:
        """Register a product, request its listing and have the platform approve it."""
        product_id = self.register_product(operator, body)
        self.request_listing(operator, product_id)
        self.decide_listing(platform, product_id, comment)
        return product_id

    def product(self, who: Caller, product_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.call("GET", f"/products/{product_id}", who)
        return answer

    # -- orders and contracts -----------------------------------------------------------
    def place_order(self, demander: Caller, product_id: str, purpose: str,
                    query: Mapping[str, Any] | None = None) -> str:
        """A demander orders a product (for the rows ``query`` selects); the order's id."""
        body: dict[str, Any] = {"product_id": product_id, "purpose": purpose}
        if query is not None:
            body["query"] = dict(query)
        return str(self.call("POST", "/orders", demander, 201, json=body)["order_id"])

    def grant_trial(self, operator: Caller, order_id: str) -> Any:
        return self.call("POST", f"/orders/{order_id}/trial", operator)

    def propose_contract(self, operator: Caller, order_id: str, *,
                         usage_policy: Mapping[str, Any], price_fen: int,
                         revenue_split: Mapping[str, int]) -> Any:
        return self.call("POST", f"/orders/{order_id}/contract", operator, json={
            "usage_policy": dict(usage_policy), "price_fen": price_fen,
            "revenue_split": dict(revenue_split)})

    def accept_contract(self, demander: Caller, order_id: str) -> Any:
        return self.call("POST", f"/orders/{order_id}/contract/acceptance", demander)

    def approve_contract(self, party: Caller, order_id: str) -> Any:
        return self.call("POST", f"/orders/{order_id}/contract/approvals", party)

    def terminate_contract(self, party: Caller, order_id: str, reason: str) -> Any:
        return self.call("POST", f"/orders/{order_id}/contract/termination", party,
                         json={"reason": reason})

    def submit_query(self, demander: Caller, order_id: str, query: Mapping[str, Any],
                     expect: int | tuple[int, ...] = 201) -> Any:
        """The demander asks for the contract's next execution, on the rows ``query``
        selects."""
        return self.call("POST", f"/orders/{order_id}/queries", demander, expect,
                         json={"query": dict(query)})

    def order(self, who: Caller, order_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.call("GET", f"/orders/{order_id}", who)
        return answer

    # -- computations and deliveries ----------------------------------------------------
    def computations(self, who: Caller, contract_id: str | None = None) -> list[dict[str, Any]]:
        """The computations the caller sees (of one contract, if given)."""
        params = {} if contract_id is None else {"contract_id": contract_id}
        answer: list[dict[str, Any]] = self.call("GET", "/computations", who, params=params)
        return answer

    def delivery(self, who: Caller, computation_id: str) -> bytes:
        """The result bytes delivered for a computation, as stored."""
        return self.request("GET", f"/deliveries/{computation_id}/result", who).content

    # -- joint computations and hidden queries (隐匿查询) -----------------------------------
    def joints(self, who: Caller, contract_id: str) -> list[dict[str, Any]]:
        """The joint computations of a contract (``GET /joint?contract_id=``)."""
        answer = self.call("GET", "/joint", who, params={"contract_id": contract_id})
        joints: list[dict[str, Any]] = (answer.get("joints", []) if isinstance(answer, dict)
                                        else answer)
        return joints

    def joint(self, who: Caller, joint_id: str) -> dict[str, Any]:
        """One joint computation's view: its state, parts' digests, table digest, queries."""
        answer: dict[str, Any] = self.call("GET", f"/joint/{joint_id}", who)
        return answer

    def joint_table(self, who: Caller, joint_id: str) -> bytes:
        """The published joint table's sealed bytes (the demander only)."""
        return self.request("GET", f"/joint/{joint_id}/table", who).content

    def hidden_query(self, who: Caller, order_id: str, joint_id: str,
                     request: bytes) -> dict[str, Any]:
        """Post a blinded request (``core.hidden_query.blind``'s bytes, never a code): the
        recorded commitment, size and answer hash, and the response in base64."""
        answer: dict[str, Any] = self.call(
            "POST", f"/orders/{order_id}/hidden-queries", who,
            json={"joint_id": joint_id, "request": base64.b64encode(request).decode()})
        return answer

    # -- the ledger and its chain -------------------------------------------------------
    def events_page(self, who: Caller, after: int = 0, limit: int = 1000) -> dict[str, Any]:
        """One page of ``GET /ledger/events`` (``events`` and ``next_after``)."""
        answer: dict[str, Any] = self.call("GET", f"/ledger/events?after={after}&limit={limit}",
                                           who)
        return answer

    def events(self, who: Caller, after: int = 0) -> list[dict[str, Any]]:
        """Every event after ``after`` the caller may read, page by page."""
        out: list[dict[str, Any]] = []
        while True:
            page = self.events_page(who, after)
            out += page["events"]
            if not page["events"]:
                return out
            after = page["next_after"]

    def event(self, who: Caller, seq: int) -> dict[str, Any]:
        """The event at ``seq`` (404 unless the caller is one of its parties)."""
        answer: dict[str, Any] = self.call("GET", f"/ledger/events/{seq}", who)
        return answer

    def witnesses(self, who: Caller) -> dict[str, Any]:
        """The log's origin and key, the witnesses' keys and the quorum (a trust file)."""
        answer: dict[str, Any] = self.call("GET", "/ledger/witnesses", who)
        return answer

    def latest_checkpoint(self, who: Caller, anchored: bool = True) -> dict[str, Any]:
        flag = "true" if anchored else "false"
        answer: dict[str, Any] = self.call(
            "GET", f"/ledger/checkpoints/latest?anchored={flag}", who)
        return answer

    def inclusion_proof(self, who: Caller, index: int, size: int) -> dict[str, Any]:
        """The audit path of leaf ``index`` in the tree of ``size`` leaves."""
        answer: dict[str, Any] = self.call(
            "GET", f"/ledger/proofs/inclusion?index={index}&size={size}", who)
        return answer

    def checkpoints_page(self, who: Caller, after_size: int = 0,
                         limit: int = 100) -> dict[str, Any]:
        """One page of ``GET /ledger/checkpoints``: ``checkpoints`` (size order, with their
        co-signatures) above ``after_size``, and ``next_after_size`` to read on."""
        answer: dict[str, Any] = self.call(
            "GET", f"/ledger/checkpoints?after_size={after_size}&limit={limit}", who)
        return answer

    @contextlib.contextmanager
    def export(self, who: Caller, include_all: bool = False) -> Iterator[Iterator[bytes]]:
        """The log as a bundle (``GET /ledger/export``, the admitted regulator only; up to
        the newest anchored checkpoint unless ``include_all``): the chunks of its tar
        archive as they arrive."""
        with self.http.stream("GET", "/ledger/export", headers=bearer(_token(who)),
                              params={"all": "true"} if include_all else None) as r:
            if r.status_code != 200:
                r.read()
                raise PlatformError("GET", "/ledger/export", r.status_code, r.text)
            yield r.iter_bytes()

    def self_proof(self, who: Caller, actor: str, resource: str, start: str | None = None,
                   end: str | None = None) -> dict[str, Any]:
        """The clean self-proof of ``actor`` on ``resource`` (``GET /forensics/self-proof``):
        a participant about itself, the regulator about anyone."""
        params = {"actor": actor, "resource": resource,
                  **({"from": start} if start else {}), **({"to": end} if end else {})}
        answer: dict[str, Any] = self.call("GET", "/forensics/self-proof", who, params=params)
        return answer
