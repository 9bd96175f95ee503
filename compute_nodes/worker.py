"""A provider's compute node: follows approved contracts, runs the product's code on its
PySyft datasite and reports back to the ledger over HTTP (DESIGN.md §5).

Runs in the compute venv only (``compute_nodes/setup-env``). The node trusts the keys its
operator gave it at start (the log's note key, its origin, the witnesses' BLS keys and the
quorum: a JSON file shaped like ``GET /ledger/witnesses``), never the platform's word: a
``contract.approved`` event is acted on only once it is included in a checkpoint signed by
the log key and co-signed by a quorum of the trusted witnesses.

Idempotency: the computation of execution ``n`` of a contract is keyed by
``(contract id, n)`` on the ledger (``POST /computations`` returns an existing one) and the
datasite request by ``f"{contract_id}#{n}"``: a redelivered event or a restarted node never
runs or delivers twice.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import logging
import math
import sys
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
APPROVED_SCAN_LIMIT = 5000  # fallback search for contract.approved when approved_seq is absent


class NodeError(Exception):
    """A check failed: the node refuses to act on what it was shown."""


class PlatformError(Exception):
    """The platform answered with an unexpected status."""


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


# -- outcomes -------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What the node did with one approved contract in one round."""

    contract_id: str
    status: str  # delivered | failed | skipped | not_anchored | refused | error
    detail: str = ""
    execution: int | None = None
    computation_id: str | None = None
    result_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- the node -------------------------------------------------------------------------------


class ComputeNode:
    """One provider's node: its platform credentials, its datasite, the keys it trusts."""

    def __init__(self, platform_url: str, token: str, datasite_admin: Any,
                 datasite_runner: Any, datasite_name: str, trusted: Trust | dict[str, Any],
                 *, http: httpx.Client | None = None, retries: int = RETRIES,
                 backoff_s: float = BACKOFF_S,
                 executions_for: Callable[[dict[str, Any]], int] | None = None) -> None:
        self.platform_url = platform_url.rstrip("/")
        self.admin = datasite_admin
        self.runner = datasite_runner
        self.datasite_name = datasite_name
        self.trust = trusted if isinstance(trusted, Trust) else Trust.from_json(trusted)
        self.http = http or httpx.Client(base_url=self.platform_url, timeout=HTTP_TIMEOUT_S)
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.retries = max(1, retries)
        self.backoff_s = backoff_s
        # how many executions to run per contract: one unless a policy says otherwise
        self.executions_for = executions_for or (lambda order: 1)
        self._participant_id: str | None = None
        self._approved_seq: dict[str, int] = {}
        self._scanned_to: dict[str, int] = {}  # fallback search: checked up to this seq
        self.sleep = time.sleep

    # -- platform HTTP ------------------------------------------------------------------
    def _call(self, method: str, path: str, expect: Sequence[int] = (200,),
              **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if response.status_code not in expect:
            raise PlatformError(f"{method} {path}: {response.status_code} {response.text[:500]}")
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

    # -- one round ----------------------------------------------------------------------
    def run_once(self) -> list[Outcome]:
        """Act on every approved contract this provider is a party to; one outcome each."""
        orders = self._call("GET", "/orders", params={"state": "approved"}).json()
        mine = [o for o in orders if self.participant_id in o.get("required_approvals", [])]
        if not mine:
            return []
        try:
            checkpoint: Checkpoint | None = self._anchored_checkpoint()
            problem = ""
        except (VerificationError, ValueError, KeyError) as exc:
            checkpoint, problem = None, f"checkpoint refused: {exc}"
            log.error("%s", problem)
        except PlatformError as exc:
            checkpoint, problem = None, f"no anchored checkpoint: {exc}"
        outcomes = []
        for order in mine:
            contract_id = str(order["id"])
            if checkpoint is None:
                status = "refused" if problem.startswith("checkpoint refused") else "not_anchored"
                outcomes.append(Outcome(contract_id, status, problem))
                continue
            try:
                outcomes.extend(self._contract(order, checkpoint))
            except (NodeError, VerificationError) as exc:
                log.error("contract %s refused: %s", contract_id, exc)
                outcomes.append(Outcome(contract_id, "refused", str(exc)))
            except (PlatformError, httpx.HTTPError) as exc:
                log.warning("contract %s: platform error, retried next round: %s",
                            contract_id, exc)
                outcomes.append(Outcome(contract_id, "error", str(exc)))
        return outcomes

    def _anchored_checkpoint(self) -> Checkpoint:
        view = self._call("GET", "/ledger/checkpoints/latest",
                          params={"anchored": "true"}).json()
        return self.trust.open(view)

    # -- verification of the contract ---------------------------------------------------
    def _approved_event_seq(self, order: dict[str, Any], size: int) -> int | None:
        seq = order.get("approved_seq")
        if isinstance(seq, int) and seq >= 1:
            return seq
        contract_id = str(order["id"])
        if contract_id in self._approved_seq:
            return self._approved_seq[contract_id]
        # Fallback when the API does not return approved_seq: walk back through the
        # events this provider may see (others answer 404) under the checkpoint.
        floor = max(self._scanned_to.get(contract_id, 0), size - APPROVED_SCAN_LIMIT, 0)
        for candidate in range(size, floor, -1):
            r = self.http.get(f"/ledger/events/{candidate}")
            if r.status_code == 200:
                e = r.json()
                if e["type"] == "contract.approved" and e["originator_id"] == contract_id:
                    self._approved_seq[contract_id] = candidate
                    return candidate
        self._scanned_to[contract_id] = max(size, floor)
        return None  # not under this checkpoint (yet): looked for again next round

    def verify_contract(self, order: dict[str, Any], checkpoint: Checkpoint) -> int | None:
        """Check that ``contract.approved`` of the order is in the anchored log.

        Returns its seq, or None if the checkpoint does not cover it yet. Raises NodeError
        or VerificationError if anything does not check out.
        """
        contract_id = str(order["id"])
        seq = self._approved_event_seq(order, checkpoint.size)
        if seq is None or seq > checkpoint.size:
            return None
        event = self._call("GET", f"/ledger/events/{seq}").json()
        canonical = base64.b64decode(event["canonical"], validate=True)
        record = json.loads(canonical)
        if (record.get("type"), record.get("id"), record.get("seq")) != (
                "contract.approved", contract_id, seq):
            raise NodeError(f"event {seq} is {record.get('type')} of {record.get('id')}, "
                            f"not contract.approved of {contract_id}")
        leaf = leaf_hash(canonical)
        proof = self._call("GET", "/ledger/proofs/inclusion",
                           params={"index": seq - 1, "size": checkpoint.size}).json()
        hashes = [base64.b64decode(h, validate=True) for h in proof["proof"]]
        verify_inclusion(leaf, seq - 1, checkpoint.size, hashes, checkpoint.root)
        return seq

    # -- one contract -------------------------------------------------------------------
    def _contract(self, order: dict[str, Any], checkpoint: Checkpoint) -> list[Outcome]:
        contract_id = str(order["id"])
        seq = self.verify_contract(order, checkpoint)
        if seq is None:
            return [Outcome(contract_id, "not_anchored",
                            f"contract.approved not yet under an anchored checkpoint "
                            f"(size {checkpoint.size})")]
        product = self._call("GET", f"/products/{order['product_id']}").json()
        limit = (order.get("usage_policy") or {}).get("processing_count")
        wanted = self.executions_for(order)
        if limit is not None:
            wanted = min(wanted, int(limit))
        outcomes = []
        for execution in range(1, wanted + 1):
            outcome = self._execution(order, product, execution)
            outcome.extra["approved_seq"] = seq
            outcomes.append(outcome)
            if outcome.status not in ("delivered", "skipped"):
                break
        return outcomes

    def _execution(self, order: dict[str, Any], product: dict[str, Any],
                   execution: int) -> Outcome:
        contract_id = str(order["id"])
        listed = str(product["code_sha256"]).lower()
        inputs = [str(i["dataset_id"]) for i in product.get("inputs", [])]
        if len(inputs) != 1:
            raise NodeError(f"product {product['id']} has {len(inputs)} inputs; this node "
                            "runs single-input products only")
        dataset_id = inputs[0]
        asset = datasite._find_dataset(self.admin, dataset_id)
        if asset is None:
            raise NodeError(f"dataset {dataset_id} is not loaded on datasite "
                            f"{self.datasite_name}")
        made = self._call("POST", "/computations", expect=(200, 201), json={
            "contract_id": contract_id, "execution": execution,
            "datasite": self.datasite_name, "code_sha256": listed}).json()
        comp_id = str(made["computation_id"])
        if made["state"] in ("succeeded", "failed"):
            return Outcome(contract_id, "skipped", f"execution {execution} already "
                           f"{made['state']}", execution, comp_id)
        code = product.get("code")
        if not isinstance(code, str):
            return self._fail(contract_id, execution, comp_id,
                              "the product's code is not visible to this provider")
        if hashlib.sha256(code.encode("utf-8")).hexdigest() != listed:
            return self._fail(contract_id, execution, comp_id,
                              "code differs from the listed hash")
        try:
            function_name = _function_name(code)
        except NodeError as exc:
            return self._fail(contract_id, execution, comp_id, str(exc))
        key = f"{contract_id}#{execution}"
        error = ""
        result: Any = None
        for attempt in range(self.retries):
            try:
                request_id = datasite.submit(self.runner, code, function_name, dataset_id, key)
                result = datasite.approve_and_run(self.admin, request_id, runner=self.runner)
                error = ""
                break
            except datasite.DatasiteUnavailableError as exc:
                error = f"datasite unavailable: {exc}"
            except (datasite.ComputationError, datasite.CodeSourceError,
                    datasite.DatasetError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                break  # the same code on the same data fails the same way
            except Exception as exc:  # noqa: BLE001 - PySyft raises many kinds
                error = f"datasite error {type(exc).__name__}: {exc}"
            log.warning("contract %s execution %d attempt %d: %s", contract_id, execution,
                        attempt + 1, error)
            if attempt + 1 < self.retries:
                self.sleep(self.backoff_s * 2 ** attempt)
        if error:
            return self._fail(contract_id, execution, comp_id, error)
        try:
            value, rows = to_json_result(result)
        except ValueError as exc:
            return self._fail(contract_id, execution, comp_id, f"result not reportable: {exc}")
        digest = str(asset.summary).removeprefix("sha256:")
        answer = self._call("POST", f"/computations/{comp_id}/result", json={
            "result": value, "input_hashes": {dataset_id: digest}, "result_rows": rows,
            "datasite": self.datasite_name}).json()
        return Outcome(contract_id, "delivered", "", execution, comp_id,
                       answer.get("result_sha256"))

    def _fail(self, contract_id: str, execution: int, comp_id: str, reason: str) -> Outcome:
        log.error("contract %s execution %d failed: %s", contract_id, execution, reason)
        self._call("POST", f"/computations/{comp_id}/failure", json={"reason": reason[:5000]})
        return Outcome(contract_id, "failed", reason, execution, comp_id)


# -- helpers --------------------------------------------------------------------------------


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
    import pandas as pd  # type: ignore[import-untyped]  # the compute venv has it (syft's pin)

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
        raise ValueError(f"non-integral number {value!r} (report integers or strings)")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    raise ValueError(f"a {type(value).__name__} is not JSON")
