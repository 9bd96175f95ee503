"""The executor: one execution of a contract on this provider's datasite, reported to the
ledger.

The node posts ``POST /computations`` with the SHA-256 of the code it is about to submit;
the ledger checks the policies (approved contract, code hash, processing count, live
authorizations) and records a refusal itself as ``computation.failed``: the node then runs
nothing. Code whose SHA-256 is not the one ``product.registered`` proves never runs (the
ledger records ``code_hash_mismatch``, or the node records it itself if the ledger
accepted). With a query ``{"field", "values"}`` only the result rows whose ``field`` is one
of ``values`` are reported.

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
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.platform import PlatformError
from compute_nodes import datasite
from compute_nodes.outcome import NodeError, Outcome
from compute_nodes.platform import NodePlatform
from compute_nodes.result_rows import ResultError, apply_query, to_json_result

log = logging.getLogger(__name__)

RETRIES = 3  # datasite attempts per execution
BACKOFF_S = 0.5  # first pause between attempts; doubles
#: how long an execution whose input dataset is not on the datasite yet (the provider has not
#: loaded it: e.g. a trial granted first) is handled again before its failure is recorded,
#: from the first time this node met the execution
DATASET_WAIT_S = 600.0


@dataclass(frozen=True)
class Job:
    """One execution for this provider, as the proven events define it."""

    contract_id: str
    execution: int  # 0: the trial on mock rows; 1: the approved contract; n >= 2: a query
    code: Any  # the code the product view serves (not a str: not visible to this provider)
    proven_sha256: str  # the code's SHA-256 in product.registered
    registered_seq: int  # the seq of that product.registered
    inputs: list[str]  # this provider's input datasets, in product order
    query: dict[str, Any] | None


class Executor:
    """Runs jobs on one datasite (its admin and the account that submits code requests)
    and reports each to the ledger."""

    retries = RETRIES

    def __init__(self, platform: NodePlatform, admin: Any, runner: Any, datasite_name: str, *,
                 backoff_s: float = BACKOFF_S, sleep: Callable[[float], Any] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.platform = platform
        self.admin = admin
        self.runner = runner
        self.datasite_name = datasite_name
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.clock = clock
        #: (contract, execution) -> when this node first met it (``clock``), while unsettled
        self._met: dict[tuple[str, int], float] = {}

    def request_key(self, contract_id: str, execution: int) -> str:
        """The datasite request key of one execution: one request per key, ever."""
        return f"{contract_id}#{execution}#{self.platform.participant_id}"

    def load(self, dataset_id: str, private_path: str | Path,
             mock_path: str | Path) -> dict[str, Any]:
        """Put a dataset's private data and mock on the datasite; record it on the ledger."""
        info = datasite.load_dataset(self.admin, dataset_id, private_path, mock_path)
        mock_rows = len(datasite.read_table(Path(mock_path)))
        body = {"rows": info["rows"],
                "schema": [{"name": k, "type": v} for k, v in info["schema"].items()],
                "sha256": info["sha256_of_private_file"], "mock_rows": mock_rows}
        answer = self.platform.data_loaded(dataset_id, body)
        return {**info, "mock_rows": mock_rows, "ledger": answer}

    def run(self, job: Job) -> Outcome:
        """Request the computation, run it unless the ledger refused, report the result."""
        met = (job.contract_id, job.execution)
        self._met.setdefault(met, self.clock())
        outcome = self._run(job)
        if outcome.settled:
            self._met.pop(met, None)
        return outcome

    def _run(self, job: Job) -> Outcome:
        visible = isinstance(job.code, str)
        # the hash of the code it would submit: if it is not the proven one, the ledger
        # records the refusal code_hash_mismatch (and, whatever the platform answers, the
        # node runs nothing)
        code_sha256 = (hashlib.sha256(job.code.encode("utf-8")).hexdigest() if visible
                       else job.proven_sha256)
        made = self._request(job, code_sha256)
        if isinstance(made, Outcome):
            return made
        if code_sha256 != job.proven_sha256:
            return self._fail(job, made, (
                f"code_hash_mismatch: the code the platform served (SHA-256 {code_sha256}) is "
                f"not the code of product.registered (event {job.registered_seq}: "
                f"{job.proven_sha256}); not run"))
        if not visible:
            return self._fail(job, made, "the product's code is not visible to this provider")
        try:
            function_name = _function_name(job.code)
        except NodeError as exc:
            return self._fail(job, made, str(exc))
        ran = self._on_datasite(job, made, function_name)
        if isinstance(ran, Outcome):
            return ran
        return self._report(job, made, *ran)

    def _request(self, job: Job, code_sha256: str) -> str | Outcome:
        """``POST /computations``: the computation id to run, or the outcome if there is
        nothing to run (refused, already done)."""
        contract_id, execution = job.contract_id, job.execution
        try:
            made = self.platform.request_computation({
                "contract_id": contract_id, "execution": execution,
                "datasite": self.datasite_name, "code_sha256": code_sha256})
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
        return comp_id

    def _on_datasite(self, job: Job, comp_id: str,
                     function_name: str) -> tuple[Any, dict[str, str]] | Outcome:
        """The result and input hashes of the run, with up to ``retries`` attempts while
        the datasite does not answer; else the outcome (failed, or waiting for the data)."""
        error = detail = ""
        for attempt in range(self.retries):
            try:
                return self._attempt(job, function_name)
            except Exception as exc:  # noqa: BLE001 - PySyft raises many kinds
                waiting = self._waiting(job, comp_id, exc)
                if waiting is not None:
                    return waiting
                error, detail, again = self._reason(job, exc)
            if not again:  # the same code on the same data fails the same way
                break
            log.warning("contract %s execution %d attempt %d: %s", job.contract_id,
                        job.execution, attempt + 1, detail)
            if attempt + 1 < self.retries:
                self.sleep(self.backoff_s * 2 ** attempt)
        if error.startswith("datasite unavailable"):
            error += f" (after {self.retries} attempts)"
        return self._fail(job, comp_id, error, detail)

    def _attempt(self, job: Job, function_name: str) -> tuple[Any, dict[str, str]]:
        if job.execution == 0:  # the trial: mock rows only, never a code request
            hashes = datasite.mock_hashes(self.admin, job.inputs)
            result = datasite.run_on_mock(self.runner, job.code, function_name, job.inputs)
            return result, hashes
        hashes = datasite.input_hashes(self.admin, job.inputs)
        request_id = datasite.submit(self.runner, job.code, function_name, job.inputs,
                                     self.request_key(job.contract_id, job.execution))
        result = datasite.approve_and_run(self.admin, request_id, runner=self.runner)
        return result, hashes

    def _waiting(self, job: Job, comp_id: str, exc: Exception) -> Outcome | None:
        """An input dataset not on the datasite yet, within ``DATASET_WAIT_S``: the
        provider may be loading it, the event is handled again later."""
        if not isinstance(exc, datasite.DatasetMissingError):
            return None
        waited = self.clock() - self._met.get((job.contract_id, job.execution), self.clock())
        if waited >= DATASET_WAIT_S:
            return None
        log.warning("contract %s execution %d: %s; handled again later (%.0f s of %.0f s)",
                    job.contract_id, job.execution, exc, waited, DATASET_WAIT_S)
        return Outcome(job.contract_id, "error", f"waiting for the data: {exc}",
                       job.execution, comp_id)

    @staticmethod
    def _reason(job: Job, exc: Exception) -> tuple[str, str, bool]:
        """What a failed attempt records (never a private value), what the node logs (it
        may quote them), and whether another attempt may do better."""
        described = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, datasite.DatasiteUnavailableError):
            return f"datasite unavailable: {exc}", f"datasite unavailable: {exc}", True
        if isinstance(exc, datasite.ComputationError):
            return code_failed(exc, job.execution), described, False
        if isinstance(exc, datasite.DatasetMissingError):
            waited = f"{described} (waited {DATASET_WAIT_S:.0f} s for it)"
            return waited, waited, False
        if isinstance(exc, datasite.CodeSourceError | datasite.DatasetError):
            return described, described, False
        detail = f"datasite error {described}"
        return (detail if job.execution == 0 else (
            f"datasite_error: the datasite raised {type(exc).__name__}; details are in the "
            "node's log")), detail, True

    def _report(self, job: Job, comp_id: str, result: Any, hashes: dict[str, str]) -> Outcome:
        try:
            value, rows = to_json_result(apply_query(result, job.query))
        except ValueError as exc:
            public = str(exc) if job.execution == 0 else (
                exc.public if isinstance(exc, ResultError) else "the result is not JSON")
            return self._fail(job, comp_id, f"result_not_reportable: {public}",
                              f"result not reportable: {exc}")
        answer = self.platform.report_result(comp_id, {
            "result": value, "input_hashes": hashes, "result_rows": rows,
            "datasite": self.datasite_name})
        return Outcome(job.contract_id, "delivered", "", job.execution, comp_id,
                       answer.get("result_sha256"), extra={"rows": rows})

    def _fail(self, job: Job, comp_id: str, reason: str, detail: str = "") -> Outcome:
        """Record the execution as failed with ``reason`` (on the log: never private values;
        ``detail``, which may quote them, goes to the node's own log only)."""
        log.error("contract %s execution %d failed: %s%s", job.contract_id, job.execution,
                  reason, f" ({detail})" if detail and detail != reason else "")
        self.platform.report_failure(comp_id, reason[:5000])
        return Outcome(job.contract_id, "failed", reason, job.execution, comp_id)


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
