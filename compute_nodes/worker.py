"""A provider's compute node: acts on contract events of the log, runs the product's code on
its PySyft datasite and reports back to the ledger over HTTP (DESIGN.md §5).

Runs in the compute venv only (``compute_nodes/setup-env``). The node trusts the keys its
operator gave it at start (the log's note key, its origin, the witnesses' BLS keys and the
quorum: a JSON file shaped like ``GET /ledger/witnesses``), never the platform's word: an
event is acted on only once it is included in a checkpoint signed by the log key and
co-signed by a quorum of the trusted witnesses (an inclusion proof of the event's own
canonical bytes). An event not yet under an anchored checkpoint is answered
``not_anchored``, to be handled again later, never dropped. What runs comes from proven
events too, under the same checkpoint: the order's product, demander and execution 1's
query from its ``order.placed`` (the order view's ``placed_seq``), the code's SHA-256 and the
inputs from ``product.registered`` (the product view's ``registered_seq``); a view that names
no such event or differs from it is ``refused`` (handled again later, logged), and code
whose SHA-256 is not the proven one never runs (the node asks with that hash: the ledger
records ``code_hash_mismatch``, or the node records it itself if the ledger accepted).

Events acted on (:meth:`ComputeNode.handle`):

- ``order.trial_granted``: execution 0, the trial (试用): the code on this provider's mock
  rows only (``datasite.run_on_mock``), for the owners of the product's inputs, before the
  contract is approved (the ledger refuses it after); the input hashes reported are those
  of the mock tables;
- ``contract.approved``: execution 1 of the contract, with the order's ``query``;
- ``contract.query_submitted {execution, query}``: execution ``n >= 2``;

for contracts this provider is a party to and owns inputs of. Each party provider runs its
own computation per execution over its own inputs (in product order, bound by position to
the function's parameters). The node posts ``POST /computations`` with the SHA-256 of the
code it is about to submit; the ledger checks the policies (approved contract, code hash,
processing count, live authorizations) and records a refusal itself as
``computation.failed``: the node then runs nothing. With a query ``{"field", "values"}``
only the result rows whose ``field`` is one of ``values`` are reported.

Feeding it: :meth:`ComputeNode.follow_http` (polls ``GET /ledger/events`` from a position
kept in a JSON file, written once an event's outcome is on the ledger) or
:meth:`ComputeNode.follow_nats` (a durable JetStream pull consumer filtered to the event
types, acknowledging a message only once its outcome is on the ledger). The stream carries
every tenant's events: a message is only a notification of its seq, the node acts on the
event as ``GET /ledger/events/{seq}`` shows it to this provider. A 404 (of that, or of the
order) is "not for this provider" only once ``GET /health``'s ``projected`` is past the
event; before, the event is ``lagging`` and handled again shortly, never dropped.

Exactly once: the ledger's computation id is derived from (contract, execution, provider)
(``POST /computations`` answers the existing one), the datasite request key is
``f"{contract}#{execution}#{provider}"`` (``datasite.submit`` answers the existing request,
``datasite.approve_and_run`` the recorded result): a redelivered event or a node restarted
mid-computation never runs the code twice after a recorded run nor delivers twice. A
datasite that does not answer is retried with backoff, then the execution is reported
failed with the reason. An input dataset not on the datasite yet (the provider has not
loaded it) is waited for, the event handled again, up to ``DATASET_WAIT_S`` from the first
time the node met the execution; then the failure is recorded. The reason recorded for an
execution on the private data never quotes it: the product's code failing is recorded as
``code_failed`` with the exception's type, the details go to the node's own log.
"""

from __future__ import annotations

import ast
import base64
import binascii
import hashlib
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the database-free verifiers live in the repo's chain/
    sys.path.insert(0, str(ROOT))

from chain.bls import TrustedWitness, WitnessPublicKey, cosignatures, trust_witness
from chain.checkpoint import Checkpoint, open_checkpoint
from chain.note import Verifier
from chain.verify import VerificationError, verify_inclusion
from compute_nodes import datasite

log = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 30.0
RETRIES = 3  # datasite attempts per execution
BACKOFF_S = 0.5  # first pause between attempts; doubles
PAGE = 500  # events per GET /ledger/events
RETRY_S = 1.0  # first pause before handling an unsettled event again; doubles up to MAX
MAX_RETRY_S = 30.0
#: how long an execution whose input dataset is not on the datasite yet (the provider has not
#: loaded it: e.g. a trial granted first) is handled again before its failure is recorded,
#: from the first time this node met the execution
DATASET_WAIT_S = 600.0
#: pause before looking again for an anchored checkpoint covering an event: checkpoints are
#: cut every few seconds, so a short fixed pause (not a doubling one) starts the run soon
#: after the event is anchored; each look is one small GET
ANCHOR_RETRY_S = 0.25

APPROVED = "contract.approved"
QUERY_SUBMITTED = "contract.query_submitted"
TRIAL = "order.trial_granted"
WATCHED = (APPROVED, QUERY_SUBMITTED, TRIAL)
#: outcome statuses that leave the event to be handled again later
RETRY_LATER = frozenset({"not_anchored", "lagging", "refused", "error"})
#: the ones looked at again after a short fixed pause (ANCHOR_RETRY_S): they end by themselves
#: within seconds (the next anchored checkpoint; the read models catching up)
SOON = frozenset({"not_anchored", "lagging"})


class NodeError(Exception):
    """A check failed: the node refuses to act on what it was shown."""


class PlatformError(Exception):
    """The platform answered with an unexpected status."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


# -- trust ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trust:
    """What the node's operator trusts: the log's key and origin, the witnesses and quorum."""

    origin: str
    log_verifier: Verifier
    witnesses: tuple[TrustedWitness, ...]
    quorum: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trust:
        """From a document shaped like ``GET /ledger/witnesses``; each witness's proof of
        possession is checked. Raises VerificationError or ValueError if malformed."""
        witnesses = []
        for w in data["witnesses"]:
            published = WitnessPublicKey.parse(w["vkey"])
            if "public_key" in w and base64.b64decode(w["public_key"]) != published.public_key:
                raise VerificationError(f"witness {w.get('name')}: public_key differs from vkey")
            witnesses.append(trust_witness(published))
        quorum = int(data["quorum"])
        if quorum < 0 or quorum > len(witnesses):
            raise ValueError(f"quorum {quorum} with {len(witnesses)} trusted witnesses")
        return cls(origin=str(data["origin"]), log_verifier=Verifier.from_vkey(data["log_vkey"]),
                   witnesses=tuple(witnesses), quorum=quorum)

    @classmethod
    def from_file(cls, path: str | Path) -> Trust:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))

    def open(self, view: dict[str, Any]) -> Checkpoint:
        """Verify a checkpoint view (``GET /ledger/checkpoints/...``): the log's signature
        and at least ``quorum`` co-signatures of trusted witnesses. Returns the checkpoint."""
        note = view["cosigned"]
        checkpoint, _ = open_checkpoint(note, [self.log_verifier], self.origin)
        signed = cosignatures(note, list(self.witnesses))
        if len(signed) < self.quorum:
            raise VerificationError(
                f"checkpoint {checkpoint.size}: {len(signed)} trusted co-signature(s), "
                f"quorum is {self.quorum}")
        if checkpoint.size != view.get("size", checkpoint.size):
            raise VerificationError(f"checkpoint size {checkpoint.size} != view {view['size']}")
        return checkpoint


def leaf_hash(canonical: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 ‖ canonical event bytes)."""
    return hashlib.sha256(b"\x00" + canonical).digest()


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerEvent:
    """One stored event, read from its canonical bytes (what an inclusion proof covers)."""

    seq: int
    type: str
    originator_id: str
    version: int
    payload: dict[str, Any]
    canonical: bytes

    @classmethod
    def from_canonical(cls, canonical: bytes) -> LedgerEvent:
        """Raises ValueError unless the bytes are a stored event's canonical record."""
        try:
            record = json.loads(canonical.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not canonical JSON: {exc}") from exc
        if not isinstance(record, dict) or set(record) != {"id", "payload", "seq", "type",
                                                            "version"}:
            raise ValueError("not a stored event (keys id, payload, seq, type, version)")
        seq, version = record["seq"], record["version"]
        if not (isinstance(seq, int) and seq >= 1 and isinstance(version, int)
                and isinstance(record["type"], str) and isinstance(record["id"], str)
                and isinstance(record["payload"], dict)):
            raise ValueError("malformed stored event")
        return cls(seq=seq, type=record["type"], originator_id=record["id"], version=version,
                   payload=record["payload"], canonical=canonical)

    @classmethod
    def parse(cls, event: Any) -> LedgerEvent:
        """From a ``GET /ledger/events`` view (its ``canonical`` is what counts: the other
        fields must agree with it), from canonical bytes, or a LedgerEvent as is."""
        if isinstance(event, LedgerEvent):
            return event
        if isinstance(event, bytes | bytearray):
            return cls.from_canonical(bytes(event))
        if not isinstance(event, dict) or "canonical" not in event:
            raise ValueError("an event view needs its canonical bytes")
        try:
            canonical = base64.b64decode(event["canonical"], validate=True)
        except (binascii.Error, TypeError) as exc:
            raise ValueError(f"canonical is not base64: {exc}") from exc
        parsed = cls.from_canonical(canonical)
        shown = (event.get("seq", parsed.seq), event.get("type", parsed.type),
                 event.get("originator_id", parsed.originator_id))
        if shown != (parsed.seq, parsed.type, parsed.originator_id):
            raise ValueError(f"the view says {shown}, its canonical bytes say "
                             f"{(parsed.seq, parsed.type, parsed.originator_id)}")
        return parsed


# -- outcomes -------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What the node did with one event (one execution of one contract).

    ``status``: ``delivered`` (result on the ledger), ``failed`` (the execution is recorded
    as failed: a policy refusal by the ledger, or the code or the datasite failed),
    ``skipped`` (the execution was already succeeded or failed), ``ignored`` (nothing for
    this provider to do), ``rejected`` (``POST /computations`` answered 403, 404, 409
    wrong_state or 422: nothing is recorded and asking again would get the same answer),
    and the ones to retry later (:data:`RETRY_LATER`):
    ``not_anchored`` (no anchored checkpoint covers the event yet), ``lagging`` (the
    platform's read models, by ``GET /health``'s ``projected``, are not yet at the event: a
    404 means nothing yet), ``refused`` (a check of what the platform showed failed),
    ``error`` (the platform did not answer as expected).
    """

    contract_id: str
    status: str
    detail: str = ""
    execution: int | None = None
    computation_id: str | None = None
    result_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None
    event_type: str | None = None

    @property
    def settled(self) -> bool:
        """True once nothing is left to do for the event (its position may move on)."""
        return self.status not in RETRY_LATER


def settled(outcomes: Sequence[Outcome]) -> bool:
    return all(o.settled for o in outcomes)


# -- the position of an HTTP follower --------------------------------------------------------


class Position:
    """The last seq handled, in a small JSON file ``{"seq": n}`` (written atomically)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.seq = 0
        if self.path is not None and self.path.exists():
            self.seq = int(json.loads(self.path.read_text(encoding="utf-8")).get("seq", 0))

    def save(self, seq: int) -> None:
        self.seq = max(self.seq, seq)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump({"seq": self.seq}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)


# -- the node -------------------------------------------------------------------------------


class ComputeNode:
    """One provider's node: its platform credentials, its datasite, the keys it trusts."""

    def __init__(self, platform_url: str, token: str, datasite_admin: Any,
                 datasite_runner: Any, datasite_name: str, trusted: Trust | dict[str, Any],
                 *, http: httpx.Client | None = None, retries: int = RETRIES,
                 backoff_s: float = BACKOFF_S) -> None:
        self.platform_url = platform_url.rstrip("/")
        self.admin = datasite_admin
        self.runner = datasite_runner
        self.datasite_name = datasite_name
        self.trust = trusted if isinstance(trusted, Trust) else Trust.from_json(trusted)
        self.http = http or httpx.Client(base_url=self.platform_url, timeout=HTTP_TIMEOUT_S)
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.retries = max(1, retries)
        self.backoff_s = backoff_s
        self._participant_id: str | None = None
        self._checkpoint: Checkpoint | None = None
        self._owners: dict[str, str] = {}  # dataset id -> owner id (never changes)
        #: (contract, execution) -> when this node first met it (``clock``), while unsettled
        self._met: dict[tuple[str, int], float] = {}
        self.sleep = time.sleep
        self.clock = time.monotonic

    # -- platform HTTP ------------------------------------------------------------------
    def _call(self, method: str, path: str, expect: Sequence[int] = (200,),
              **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if response.status_code not in expect:
            raise PlatformError(f"{method} {path}: {response.status_code} "
                                f"{response.text[:500]}", response.status_code)
        return response

    @property
    def participant_id(self) -> str:
        if self._participant_id is None:
            me = self._call("GET", "/participants/me").json()
            self._participant_id = str(me["participant"]["id"])
        return self._participant_id

    # -- loading data -------------------------------------------------------------------
    def load(self, dataset_id: str, private_path: str | Path,
             mock_path: str | Path) -> dict[str, Any]:
        """Put a dataset's private data and mock on the datasite; record it on the ledger."""
        info = datasite.load_dataset(self.admin, dataset_id, private_path, mock_path)
        mock_rows = len(datasite._read_table(Path(mock_path)))
        body = {"rows": info["rows"],
                "schema": [{"name": k, "type": v} for k, v in info["schema"].items()],
                "sha256": info["sha256_of_private_file"], "mock_rows": mock_rows}
        answer = self._call("POST", f"/datasets/{dataset_id}/data-loaded", json=body).json()
        return {**info, "mock_rows": mock_rows, "ledger": answer}

    # -- one event ----------------------------------------------------------------------
    def handle(self, event: Any) -> list[Outcome]:
        """Act on one ledger event (a ``GET /ledger/events`` item, canonical bytes or a
        :class:`LedgerEvent`); one outcome per execution it concerns, none for an event
        type the node does not act on. Never raises for what the platform answers: an
        outcome whose status is in :data:`RETRY_LATER` asks to be handled again later."""
        try:
            ev = LedgerEvent.parse(event)
        except ValueError as exc:
            seq = event.get("seq") if isinstance(event, dict) else None
            return [Outcome("", "refused", f"not a ledger event: {exc}", seq=seq)]
        if ev.type not in WATCHED:
            return []
        contract_id = ev.originator_id
        try:
            outcome = self._event(ev)
        except (NodeError, VerificationError) as exc:
            log.error("event %d (%s of %s) refused: %s", ev.seq, ev.type, contract_id, exc)
            outcome = Outcome(contract_id, "refused", str(exc))
        except (PlatformError, httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            log.warning("event %d (%s of %s): platform error, to be retried: %s", ev.seq,
                        ev.type, contract_id, exc)
            outcome = Outcome(contract_id, "error", f"{type(exc).__name__}: {exc}")
        outcome.seq, outcome.event_type = ev.seq, ev.type
        return [outcome]

    def _event(self, ev: LedgerEvent) -> Outcome:
        contract_id = ev.originator_id
        if ev.type == TRIAL:
            execution = 0  # the trial (试用): the code on this provider's mock rows
        elif ev.type == APPROVED:
            execution = 1
        else:
            execution = ev.payload.get("execution")
            if isinstance(execution, bool) or not isinstance(execution, int) or execution < 2:
                raise NodeError(f"event {ev.seq}: execution {execution!r} is not >= 2")
        r = self._call("GET", f"/orders/{contract_id}", expect=(200, 403, 404))
        if r.status_code != 200:
            projected = self._projected()
            if projected < ev.seq:  # the order (or this provider's grant) is not there yet
                return Outcome(contract_id, "lagging", f"the read models are at {projected}, "
                               f"before event {ev.seq}", execution)
            return Outcome(contract_id, "ignored", "not a party to this contract", execution)
        order = r.json()
        # a trial may come before the contract is proposed: input owners run it
        if execution > 0 and self.participant_id not in order.get("required_approvals", []):
            return Outcome(contract_id, "ignored", "not a party to this contract", execution)
        product = self._call("GET", f"/products/{order['product_id']}").json()
        inputs = self._my_inputs(product.get("inputs") or [])
        if not inputs:
            return Outcome(contract_id, "ignored", "no input of the product is this "
                           "provider's", execution)
        checkpoint = self._checkpoint_covering(ev.seq)
        if checkpoint is None:
            return Outcome(contract_id, "not_anchored", f"event {ev.seq} is not yet under "
                           "an anchored checkpoint", execution)
        self._verify(ev, checkpoint)
        # What runs comes from proven events, not from the views: the order (its product,
        # demander and execution 1's query) from order.placed, the code's SHA-256 and the
        # inputs from product.registered, both under the same anchored checkpoint.
        placed = self._proven(order, "placed_seq", "order.placed", contract_id, checkpoint)
        for key in ("product_id", "demander_id"):
            if placed.payload.get(key) != order.get(key):
                raise NodeError(f"the order view's {key} {order.get(key)!r} is not the "
                                f"{placed.payload.get(key)!r} of order.placed (event "
                                f"{placed.seq})")
        registered = self._proven(product, "registered_seq", "product.registered",
                                  str(order["product_id"]), checkpoint)
        if str(product.get("id", order["product_id"])) != registered.originator_id:
            raise NodeError(f"the product view is not product {registered.originator_id}")
        proven_inputs = registered.payload.get("inputs")
        if not isinstance(proven_inputs, list) or self._my_inputs(proven_inputs) != inputs:
            raise NodeError(f"the product view's inputs are not those of product.registered "
                            f"(event {registered.seq})")
        # the trial runs on mock rows, which hold none of the real keys a query names
        query = None if execution == 0 else self._query(ev, order, placed)
        return self._execution(contract_id, execution, product, inputs, query, registered)

    def _my_inputs(self, items: list[Any]) -> list[str]:
        """This provider's input datasets among a product's ``inputs``, in product order."""
        mine = []
        for item in items:
            dataset_id = str(item["dataset_id"])
            owner = item.get("owner_id") or item.get("provider_id") or self._owners.get(
                dataset_id)
            if owner is None:
                owner = str(self._call("GET", f"/datasets/{dataset_id}").json()["owner_id"])
                self._owners[dataset_id] = owner
            if owner == self.participant_id:
                mine.append(dataset_id)
        return mine

    def _projected(self) -> int:
        """How far the platform's read models are (``GET /health``'s ``projected``): an
        answer 404 about an event above it may only mean "not projected yet"."""
        projected = self._call("GET", "/health").json()["projected"]
        if isinstance(projected, bool) or not isinstance(projected, int):
            raise TypeError(f"GET /health: projected {projected!r}")
        return projected

    # -- verification -------------------------------------------------------------------
    def _checkpoint_covering(self, seq: int) -> Checkpoint | None:
        """A verified anchored checkpoint of size >= seq, or None if there is none yet.

        Raises VerificationError if the platform's checkpoint does not verify."""
        if self._checkpoint is not None and self._checkpoint.size >= seq:
            return self._checkpoint
        try:
            view = self._call("GET", "/ledger/checkpoints/latest",
                              params={"anchored": "true"}).json()
        except PlatformError as exc:
            if exc.status == 404:
                return None
            raise
        try:
            checkpoint = self.trust.open(view)
        except (ValueError, KeyError) as exc:
            raise VerificationError(f"checkpoint refused: {exc}") from exc
        except VerificationError as exc:
            raise VerificationError(f"checkpoint refused: {exc}") from exc
        if self._checkpoint is None or checkpoint.size > self._checkpoint.size:
            self._checkpoint = checkpoint
        return checkpoint if checkpoint.size >= seq else None

    def _verify(self, ev: LedgerEvent, checkpoint: Checkpoint) -> None:
        """The event's canonical bytes are leaf ``seq - 1`` of the anchored tree."""
        proof = self._call("GET", "/ledger/proofs/inclusion",
                           params={"index": ev.seq - 1, "size": checkpoint.size}).json()
        try:
            hashes = [base64.b64decode(h, validate=True) for h in proof["proof"]]
        except (binascii.Error, TypeError) as exc:
            raise NodeError(f"inclusion proof of event {ev.seq} is not base64") from exc
        verify_inclusion(leaf_hash(ev.canonical), ev.seq - 1, checkpoint.size, hashes,
                         checkpoint.root)

    def _proven(self, view: dict[str, Any], key: str, type_name: str, originator_id: str,
                checkpoint: Checkpoint) -> LedgerEvent:
        """The event a view names by ``view[key]`` (its seq), checked to be ``type_name`` of
        ``originator_id`` and proven included in ``checkpoint``. NodeError (refused: handled
        again later) if the view names none under the checkpoint, or another event."""
        seq = view.get(key)
        if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= checkpoint.size:
            raise NodeError(f"{type_name} of {originator_id}: the view's {key} {seq!r} is "
                            f"not an event under the anchored checkpoint {checkpoint.size}")
        event = LedgerEvent.parse(self._call("GET", f"/ledger/events/{seq}").json())
        if (event.seq, event.type, event.originator_id) != (seq, type_name, originator_id):
            raise NodeError(f"event {seq} is not {type_name} of {originator_id}")
        self._verify(event, checkpoint)
        return event

    def _query(self, ev: LedgerEvent, order: dict[str, Any],
               placed: LedgerEvent) -> dict[str, Any] | None:
        """The execution's query, from a proven event: the query_submitted event itself, or
        for execution 1 the order's ``order.placed`` (the view's must agree with it)."""
        if ev.type == QUERY_SUBMITTED:
            return check_query(ev.payload.get("query"))
        proven = check_query(placed.payload.get("query"))
        if check_query(order.get("query")) != proven:
            raise NodeError(f"the order's query differs from its order.placed (event "
                            f"{placed.seq})")
        return proven

    # -- one execution ------------------------------------------------------------------
    def request_key(self, contract_id: str, execution: int) -> str:
        """The datasite request key of one execution: one request per key, ever."""
        return f"{contract_id}#{execution}#{self.participant_id}"

    def _execution(self, contract_id: str, execution: int, product: dict[str, Any],
                   inputs: list[str], query: dict[str, Any] | None,
                   registered: LedgerEvent) -> Outcome:
        met = (contract_id, execution)
        self._met.setdefault(met, self.clock())
        outcome = self._run(contract_id, execution, product, inputs, query, registered)
        if outcome.settled:
            self._met.pop(met, None)
        return outcome

    def _run(self, contract_id: str, execution: int, product: dict[str, Any],
             inputs: list[str], query: dict[str, Any] | None,
             registered: LedgerEvent) -> Outcome:
        code = product.get("code")
        visible = isinstance(code, str)
        proven_sha256 = str(registered.payload.get("code_sha256") or "").lower()
        # the hash of the code it would submit: if it is not the proven one, the ledger
        # records the refusal code_hash_mismatch (and, whatever the platform answers, the
        # node runs nothing)
        code_sha256 = (hashlib.sha256(code.encode("utf-8")).hexdigest() if visible
                       else proven_sha256)
        try:
            made = self._call("POST", "/computations", expect=(200, 201), json={
                "contract_id": contract_id, "execution": execution,
                "datasite": self.datasite_name, "code_sha256": code_sha256}).json()
        except PlatformError as exc:
            if not _final(exc):
                raise
            # The ledger decided on its event store (not a lagging read model) and will
            # answer the same way again: waiting would stall the follower on this event.
            log.error("contract %s execution %d rejected by the ledger: %s", contract_id,
                      execution, exc)
            return Outcome(contract_id, "rejected", str(exc), execution)
        comp_id = str(made["computation_id"])
        state = made.get("state")
        if made.get("existing") and state in ("succeeded", "failed"):
            return Outcome(contract_id, "skipped", f"execution {execution} already {state}",
                           execution, comp_id)
        if state == "failed":  # refused by the ledger's policy check, recorded there
            return Outcome(contract_id, "failed", str(made.get("reason") or "refused"),
                           execution, comp_id)
        if state == "succeeded":
            return Outcome(contract_id, "skipped", f"execution {execution} already succeeded",
                           execution, comp_id)
        if code_sha256 != proven_sha256:
            return self._fail(contract_id, execution, comp_id, (
                f"code_hash_mismatch: the code the platform served (SHA-256 {code_sha256}) is "
                f"not the code of product.registered (event {registered.seq}: "
                f"{proven_sha256}); not run"))
        if not visible:
            return self._fail(contract_id, execution, comp_id,
                              "the product's code is not visible to this provider")
        try:
            function_name = _function_name(code)
        except NodeError as exc:
            return self._fail(contract_id, execution, comp_id, str(exc))
        key = self.request_key(contract_id, execution)
        error = ""  # the reason recorded on the ledger (the demander reads it)
        detail = ""  # what the node logs: it may quote the private data
        result: Any = None
        hashes: dict[str, str] = {}
        for attempt in range(self.retries):
            try:
                if execution == 0:  # the trial: mock rows only, never a code request
                    hashes = datasite.mock_hashes(self.admin, inputs)
                    result = datasite.run_on_mock(self.runner, code, function_name, inputs)
                else:
                    hashes = datasite.input_hashes(self.admin, inputs)
                    request_id = datasite.submit(self.runner, code, function_name, inputs,
                                                 key)
                    result = datasite.approve_and_run(self.admin, request_id,
                                                      runner=self.runner)
                error = ""
                break
            except datasite.DatasiteUnavailableError as exc:
                error = detail = f"datasite unavailable: {exc}"
            except datasite.ComputationError as exc:
                detail = f"{type(exc).__name__}: {exc}"
                error = code_failed(exc, execution)
                break  # the same code on the same data fails the same way
            except datasite.DatasetMissingError as exc:
                waited = self.clock() - self._met.get((contract_id, execution), self.clock())
                if waited < DATASET_WAIT_S:  # not loaded yet: the provider may be loading it
                    log.warning("contract %s execution %d: %s; handled again later (%.0f s "
                                "of %.0f s)", contract_id, execution, exc, waited,
                                DATASET_WAIT_S)
                    return Outcome(contract_id, "error", f"waiting for the data: {exc}",
                                   execution, comp_id)
                error = detail = (f"{type(exc).__name__}: {exc} (waited "
                                  f"{DATASET_WAIT_S:.0f} s for it)")
                break
            except (datasite.CodeSourceError, datasite.DatasetError) as exc:
                error = detail = f"{type(exc).__name__}: {exc}"
                break
            except Exception as exc:  # noqa: BLE001 - PySyft raises many kinds
                detail = f"datasite error {type(exc).__name__}: {exc}"
                error = detail if execution == 0 else (
                    f"datasite_error: the datasite raised {type(exc).__name__}; details are "
                    "in the node's log")
            log.warning("contract %s execution %d attempt %d: %s", contract_id, execution,
                        attempt + 1, detail)
            if attempt + 1 < self.retries:
                self.sleep(self.backoff_s * 2 ** attempt)
        if error:
            if error.startswith("datasite unavailable"):
                error += f" (after {self.retries} attempts)"
            return self._fail(contract_id, execution, comp_id, error, detail)
        try:
            value, rows = to_json_result(apply_query(result, query))
        except ValueError as exc:
            public = str(exc) if execution == 0 else (
                exc.public if isinstance(exc, ResultError) else "the result is not JSON")
            return self._fail(contract_id, execution, comp_id,
                              f"result_not_reportable: {public}", f"result not reportable: {exc}")
        answer = self._call("POST", f"/computations/{comp_id}/result", json={
            "result": value, "input_hashes": hashes, "result_rows": rows,
            "datasite": self.datasite_name}).json()
        return Outcome(contract_id, "delivered", "", execution, comp_id,
                       answer.get("result_sha256"), extra={"rows": rows})

    def _fail(self, contract_id: str, execution: int, comp_id: str, reason: str,
              detail: str = "") -> Outcome:
        """Record the execution as failed with ``reason`` (on the log: never private values;
        ``detail``, which may quote them, goes to the node's own log only)."""
        log.error("contract %s execution %d failed: %s%s", contract_id, execution, reason,
                  f" ({detail})" if detail and detail != reason else "")
        self._call("POST", f"/computations/{comp_id}/failure", json={"reason": reason[:5000]})
        return Outcome(contract_id, "failed", reason, execution, comp_id)

    # -- feeding it ---------------------------------------------------------------------
    def settle(self, event: Any, stop: threading.Event | None = None,
               retry_s: float = RETRY_S) -> list[Outcome] | None:
        """Handle an event until its outcome is settled; None if ``stop`` was set first.

        Waiting for an anchored checkpoint is retried every ``ANCHOR_RETRY_S`` (at most
        ``retry_s``); anything else (a refused check, a platform error) with pauses
        doubling from ``retry_s`` up to MAX_RETRY_S."""
        pause = retry_s
        stop = stop or threading.Event()
        while True:
            outcomes = self.handle(event)
            if settled(outcomes):
                return outcomes
            anchoring = all(o.status in SOON or o.settled for o in outcomes)
            wait = min(ANCHOR_RETRY_S, retry_s) if anchoring else pause
            for o in outcomes:
                log.log(logging.DEBUG if anchoring else logging.INFO,
                        "event %s of %s: %s (%s), again in %.2f s", o.seq, o.contract_id,
                        o.status, o.detail, wait)
            if stop.wait(wait):
                return None
            if not anchoring:
                pause = min(pause * 2, MAX_RETRY_S)

    def follow_http(self, position: str | Path | Position | None = None, *,
                    stop: threading.Event | None = None, poll_s: float = 2.0,
                    once: bool = False, page: int = PAGE, retry_s: float = RETRY_S,
                    on_outcome: Callable[[Outcome], Any] | None = None) -> int:
        """Follow ``GET /ledger/events`` from ``position`` (a JSON file; None: from the
        start, kept in memory) and handle each event in order. The position moves past an
        event only once its outcome is settled on the ledger. A page that leaves the position
        behind the log's ``head`` is followed by the next at once (a page may hold nothing
        this provider sees); ``poll_s`` is the pause once caught up. Runs until ``stop`` is
        set (or, with ``once``, until it has caught up with the head); returns the
        position."""
        pos = position if isinstance(position, Position) else Position(position)
        stop = stop or threading.Event()
        pause = retry_s
        while not stop.is_set():
            try:
                answer = self._call("GET", "/ledger/events",
                                    params={"after": pos.seq, "limit": page}).json()
            except (PlatformError, httpx.HTTPError, ValueError) as exc:
                log.warning("GET /ledger/events after %d: %s; again in %.1f s", pos.seq, exc,
                            pause)
                stop.wait(pause)
                pause = min(pause * 2, MAX_RETRY_S)
                continue
            pause = retry_s
            before = pos.seq
            events = answer.get("events") or []
            for event in events:
                if event.get("type") in WATCHED:
                    outcomes = self.settle(event, stop, retry_s)
                    if outcomes is None:
                        return pos.seq
                    for o in outcomes:
                        if on_outcome is not None:
                            on_outcome(o)
                    pos.save(int(event["seq"]))
                else:
                    pos.seq = max(pos.seq, int(event["seq"]))
            pos.save(max(pos.seq, int(answer.get("next_after") or pos.seq)))
            head = answer.get("head")
            if pos.seq >= head if isinstance(head, int) else not events:  # caught up
                if once:
                    return pos.seq
                stop.wait(poll_s)
            elif pos.seq == before:
                # behind the head but nothing scanned: the platform lists a participant only
                # the events its read models have reached; they catch up within moments
                stop.wait(min(poll_s, ANCHOR_RETRY_S))
            # else: more of the log is there (a page may show nothing to this provider and
            # still move on): the next page at once
        return pos.seq

    def follow_nats(self, url: str, stream: str = "LEDGER", durable: str | None = None, *,
                    subject_prefix: str = "ledger", stop: threading.Event | None = None,
                    idle_timeout: float | None = None, batch: int = 1,
                    fetch_timeout: float = 1.0, ack_wait: float = 300.0,
                    retry_s: float = RETRY_S,
                    on_outcome: Callable[[Outcome], Any] | None = None) -> int:
        """Follow a durable JetStream pull consumer (``durable``, default
        ``compute-<participant id>``) on ``stream``, filtered to the contract events the
        node acts on, and handle each in order, as ``GET /ledger/events/{seq}`` shows it (the
        message is only a notification); a message is acknowledged only once its
        outcome is settled on the ledger (an unsettled one is handled again, see
        :meth:`settle`). NATS or the stream being unavailable is logged and retried with
        backoff. Runs until ``stop`` is set or ``idle_timeout`` seconds pass with no
        message (then a NATS error is raised, not retried); returns the last seq handled
        (0 if none)."""
        import nats.errors

        from compute_nodes.jetstream import Follower, JetStreamError

        stop = stop or threading.Event()
        subjects = [f"{subject_prefix}.{t}" for t in WATCHED]
        name = durable or f"compute-{self.participant_id}"
        last = 0
        idle_since = time.monotonic()
        pause = retry_s
        while not stop.is_set():
            try:
                with Follower(url, stream, name, subjects, batch=batch,
                              ack_wait=ack_wait) as follower:
                    pause = retry_s
                    while not stop.is_set():
                        if idle_timeout is not None and \
                                time.monotonic() - idle_since > idle_timeout:
                            return last
                        messages = follower.fetch(fetch_timeout)
                        if messages:
                            idle_since = time.monotonic()
                        for msg in messages:
                            seq = self._consume(msg, follower, stop, retry_s, on_outcome)
                            if seq is None:
                                return last  # not acknowledged: it comes again next time
                            last = max(last, seq)
            except (JetStreamError, nats.errors.Error, OSError, TimeoutError) as exc:
                log.warning("JetStream %s on %s: %s: %s; again in %.1f s", stream, url,
                            type(exc).__name__, exc, pause)
                if idle_timeout is not None and time.monotonic() - idle_since > idle_timeout:
                    raise
                stop.wait(pause)
                pause = min(pause * 2, MAX_RETRY_S)
        return last

    def _consume(self, msg: Any, follower: Any, stop: threading.Event, retry_s: float,
                 on_outcome: Callable[[Outcome], Any] | None) -> int | None:
        """Handle one message until settled, then acknowledge it; its seq (None: stopped).

        A message is only a notification: the stream carries every tenant's events, so the
        node takes the message's seq and acts on ``GET /ledger/events/{seq}`` as the
        platform shows it to this provider (an event it may not see is acknowledged and
        skipped), never on the message's own bytes."""
        seq = message_seq(msg)
        if seq is None:
            log.error("message on %s names no ledger seq: acknowledged and skipped",
                      msg.subject)
            follower.ack(msg)
            return 0
        event = self._event_view(seq, stop, retry_s)
        if event is None:
            return None
        outcomes = (self.settle(event, stop, retry_s)
                    if event and event.get("type") in WATCHED else [])
        if outcomes is None:
            return None
        for o in outcomes:
            if on_outcome is not None:
                on_outcome(o)
        follower.ack(msg)
        return seq

    def _event_view(self, seq: int, stop: threading.Event,
                    retry_s: float) -> dict[str, Any] | None:
        """``GET /ledger/events/{seq}`` with this node's token, asked again until it answers;
        ``{}`` if this provider may not see the event (404 once the read models are past
        ``seq``), None if ``stop`` was set first."""
        pause = retry_s
        while True:
            try:
                r = self._call("GET", f"/ledger/events/{seq}", expect=(200, 404))
                if r.status_code == 200:
                    view = r.json()
                    if not isinstance(view, dict) or view.get("seq") != seq:
                        raise ValueError(f"GET /ledger/events/{seq} answered another event")
                    return view
                projected = self._projected()
                if projected >= seq:
                    log.debug("event %d is not visible to this provider: skipped", seq)
                    return {}
                wait = min(ANCHOR_RETRY_S, retry_s)
                log.debug("event %d: the read models are at %d; again in %.2f s", seq,
                          projected, wait)
            except (PlatformError, httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                wait = pause
                pause = min(pause * 2, MAX_RETRY_S)
                log.warning("GET /ledger/events/%d: %s; again in %.1f s", seq, exc, wait)
            if stop.wait(wait):
                return None

    # -- the approved orders, for a one-off catch-up -------------------------------------
    def run_once(self) -> list[Outcome]:
        """Handle the contract events of every approved order this provider is a party to
        (execution 1 and each submitted query), looked up from the order views."""
        orders = self._call("GET", "/orders", params={"state": "approved"}).json()
        outcomes: list[Outcome] = []
        for order in orders:
            if self.participant_id not in order.get("required_approvals", []):
                continue
            seqs = [order.get("approved_seq")] + [
                q.get("seq") for q in order.get("queries") or []
                if isinstance(q.get("execution"), int) and q["execution"] >= 2]
            for seq in seqs:
                if not isinstance(seq, int):
                    outcomes.append(Outcome(str(order["id"]), "error",
                                            "the order view names no event seq"))
                    continue
                try:
                    event = self._call("GET", f"/ledger/events/{seq}").json()
                except (PlatformError, httpx.HTTPError) as exc:
                    outcomes.append(Outcome(str(order["id"]), "error", str(exc), seq=seq))
                    continue
                outcomes.extend(self.handle(event))
        return outcomes


# -- helpers --------------------------------------------------------------------------------


class ResultError(ValueError):
    """A result the ledger cannot take; ``public`` says why without quoting the result."""

    def __init__(self, message: str, public: str | None = None) -> None:
        super().__init__(message)
        self.public = message if public is None else public


def code_failed(exc: Exception, execution: int) -> str:
    """The reason recorded when the product's code raised. The trial ran on mock rows: its
    message is kept. On the private data only the exception's type: its message may quote
    a private value (``invalid literal for int(): '张三'``)."""
    if execution == 0:
        return f"code_failed: {exc}"
    kind = getattr(exc, "kind", None)
    if not (isinstance(kind, str) and kind.isidentifier() and len(kind) <= 100):
        kind = "an exception"
    return (f"code_failed: the product's code raised {kind} on the private data; details "
            "are in the node's log")


def message_seq(msg: Any) -> int | None:
    """The ledger seq a JetStream message notifies of: the ``seq`` of its canonical bytes,
    else its ``Dataledger-Seq`` header; None if it names none."""
    try:
        seq = json.loads(bytes(msg.data).decode("utf-8")).get("seq")
    except (ValueError, AttributeError, TypeError):
        seq = None
    if seq is None:
        headers = getattr(msg, "headers", None) or {}
        seq = headers.get("Dataledger-Seq")
        try:
            seq = int(seq) if seq is not None else None
        except ValueError:
            seq = None
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        return None
    return seq


def check_query(query: Any) -> dict[str, Any] | None:
    """None, or ``{"field": column, "values": [str, ...]}``; NodeError otherwise."""
    if query is None:
        return None
    if not isinstance(query, dict) or set(query) != {"field", "values"} \
            or not isinstance(query["field"], str) or not query["field"] \
            or not isinstance(query["values"], list) \
            or not all(isinstance(v, str) for v in query["values"]):
        raise NodeError(f"query {query!r} is not {{field: column, values: [str, ...]}}")
    return {"field": query["field"], "values": list(query["values"])}


def apply_query(value: Any, query: dict[str, Any] | None) -> Any:
    """Keep only the rows whose ``query["field"]`` is one of ``query["values"]`` (as text).

    Raises ValueError when the result is not rows, or no row has that column."""
    if query is None:
        return value
    import pandas as pd  # type: ignore[import-untyped]  # the compute venv has it

    if isinstance(value, pd.DataFrame):
        value = value.to_dict(orient="records")
    column, wanted = query["field"], set(query["values"])
    if not isinstance(value, list) or not all(isinstance(row, dict) for row in value):
        raise ResultError(f"a query on {column!r} needs a table of rows; the result is a "
                          f"{type(value).__name__}")
    if value and not any(column in row for row in value):
        raise ResultError(f"the result has no column {column!r}")
    return [row for row in value if column in row and _text(row[column]) in wanted]


def _text(value: Any) -> str:
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    return value if isinstance(value, str) else str(value)


def _final(exc: PlatformError) -> bool:
    """A refusal of ``POST /computations`` that asking again cannot change: forbidden,
    unknown contract, invalid field, or a state rule (not an optimistic-concurrency clash)."""
    if exc.status in (403, 404, 422):
        return True
    return exc.status == 409 and '"wrong_state"' in str(exc)


def _function_name(code: str) -> str:
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise NodeError(f"the product's code is not Python: {exc}") from exc
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    if len(tree.body) != 1 or len(defs) != 1:
        raise NodeError("the product's code must be exactly one top-level function")
    return defs[0].name


def to_json_result(value: Any) -> tuple[Any, int]:
    """The result as the ledger takes it (JSON: no floats unless integral) and its rows."""
    import pandas as pd  # the compute venv has it (syft's pin)

    if isinstance(value, pd.DataFrame):
        value = value.to_dict(orient="records")
    elif isinstance(value, pd.Series):
        value = value.to_dict()
    plain = _plain(value)
    rows = len(plain) if isinstance(plain, list) else 1
    return plain, rows


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        return _plain(value.item())  # numpy scalars
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        raise ResultError(f"non-integral number {value!r} (report integers or strings)",
                          "a non-integral number in the result (report integers or strings)")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    raise ResultError(f"a {type(value).__name__} is not JSON",
                      f"a {type(value).__name__} in the result is not JSON")


__all__ = ["APPROVED", "QUERY_SUBMITTED", "RETRY_LATER", "SOON", "TRIAL", "WATCHED",
           "ComputeNode", "LedgerEvent", "NodeError", "Outcome", "PlatformError", "Position",
           "ResultError", "Trust", "apply_query", "check_query", "code_failed", "message_seq",
           "settled", "to_json_result"]
