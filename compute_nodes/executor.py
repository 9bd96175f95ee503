"""The executor: one execution of a contract on this provider's datasite, reported to the
ledger.

The node posts ``POST /computations`` with the SHA-256 of the code it is about to submit;
the ledger checks the policies (approved contract, code hash, processing count, live
authorizations) and records a refusal itself as ``computation.failed``: the node then runs
nothing. Code whose SHA-256 is not the one ``product.registered`` proves never runs (the
ledger records ``code_hash_mismatch``, or the node records it itself if the ledger
accepted). The code runs in the sandbox (``compute_nodes/sandbox``), one confined process
per execution, on the inputs the datasite hands over; with a query ``{"field", "values"}``
only the result rows whose ``field`` is one of ``values`` are kept, and the output must meet
the product's and the contract's terms (``compute_nodes/output_contract.py``) before it is
reported. For a joint product's execution >= 1 the rows are not reported: they become this
provider's masked part (``compute_nodes/joint.py``), posted instead of a result.

An execution is done in two steps: :meth:`Executor.prepare` (ask the ledger, run, check:
nothing is reported yet, so it may start before the event is proven) and
:meth:`Executor.release` (report the result or the failure). PySyft calls are made under
one lock (its clients are not made for threads), granted to the execution this node met
first among those waiting (:class:`OldestFirst`: several at once end in the order they came,
not all together after the last one's PySyft work); the sandbox runs outside it. What an
execution reads of its input datasets (asset ids, hashes, private tables) is read once per
dataset (``datasite.Inputs``), so that each costs the datasite its code request, its
approval and the deposit only.

Exactly once: the ledger's computation id is derived from (contract, execution, provider)
(``POST /computations`` answers the existing one), the datasite request key is
``f"{contract}#{execution}#{provider}"`` (``datasite.submit`` answers the existing request,
``datasite.prepare_run`` the result ``datasite.deposit`` recorded): a redelivered event or a
node restarted mid-computation never runs the code twice after a recorded run nor delivers
twice. A datasite that does not answer is retried with backoff, then the execution is
reported failed with the reason. An input dataset not on the datasite yet (the provider has not
loaded it) is waited for, the event handled again, up to ``DATASET_WAIT_S`` from the first
time the node met the execution; then the failure is recorded. The reason recorded for an
execution on the private data never quotes it: the product's code failing is recorded as
``code_failed`` with the exception's type when it is a built-in one; the details and what
the code printed go to the provider's private log (``compute_nodes/logs.py``), never to the
node's output.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import dataclasses
import hashlib
import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.platform import PlatformError
from compute_nodes import datasite
from compute_nodes.clear_values import ClearValues
from compute_nodes.joint import JointFailed, JointNode, JointTerms, joint_rows
from compute_nodes.logs import private_log
from compute_nodes.outcome import NodeError, Outcome
from compute_nodes.output_contract import OutputContract, OutputViolation
from compute_nodes.platform import NodePlatform
from compute_nodes.result_rows import ResultError, apply_query, to_json_result
from compute_nodes.sandbox import (
    CodeRaised,
    LimitExceeded,
    OutputRefused,
    Sandbox,
    SandboxError,
    SandboxUnavailable,
)
from core.canonical import CanonicalEncodingError, canonical_bytes

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
    terms: OutputContract = field(default_factory=OutputContract)
    #: the fields the product names of each input (product.registered), in input order:
    #: the code is handed these columns only
    columns: tuple[tuple[str, ...], ...] = ()
    #: a joint product's proven terms (execution >= 1): a masked part, not a result
    joint: JointTerms | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.contract_id, self.execution


@dataclass(frozen=True)
class Prepared:
    """An execution that ran and was checked, not reported yet: its result, or the
    failure to record (``reason`` public, ``detail`` for the node's own logs)."""

    computation_id: str
    value: Any = None
    rows: int = 0
    hashes: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    detail: str = ""
    #: the joint execution (``POST /computations``' ``joint_id``) of a joint product
    joint_id: str | None = None
    #: column -> the masking rule that changed it (``OutputContract.mask``)
    masking: dict[str, str] = field(default_factory=dict)


class Executor:
    """Runs jobs on one datasite (its admin and the account that submits code requests)
    and the sandbox, and reports each to the ledger."""

    retries = RETRIES

    def __init__(self, platform: NodePlatform, site: tuple[Any, Any, str], sandbox: Sandbox,
                 *, backoff_s: float = BACKOFF_S, sleep: Callable[[float], Any] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.platform = platform
        #: the datasite: its admin client, the client that submits code requests, its name
        self.admin, self.runner, self.datasite_name = site
        self.sandbox = sandbox
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.clock = clock
        #: PySyft's calls, one at a time, the oldest execution's first
        self.pysyft = OldestFirst()
        #: each input dataset's asset id, hash and private table, read once (datasite.Inputs)
        self.inputs = datasite.Inputs()
        #: (contract, execution) -> when this node first met it (``clock``), while unsettled
        self._met: dict[tuple[str, int], float] = {}
        #: makes and posts the masked part of a joint product's execution (set by the node)
        self.joint: JointNode | None = None

    def request_key(self, contract_id: str, execution: int) -> str:
        """The datasite request key of one execution: one request per key, ever."""
        return f"{contract_id}#{execution}#{self.platform.participant_id}"

    def load(self, dataset_id: str, private_path: str | Path,
             mock_path: str | Path) -> dict[str, Any]:
        """Put a dataset's private data and mock on the datasite; record it on the ledger."""
        with self.pysyft.turn(math.inf):
            self.inputs.forget(dataset_id)
            info = datasite.load_dataset(self.admin, dataset_id, private_path, mock_path)
        mock_rows = len(datasite.read_table(Path(mock_path)))
        body = {"rows": info["rows"],
                "schema": [{"name": k, "type": v} for k, v in info["schema"].items()],
                "sha256": info["sha256_of_private_file"], "mock_rows": mock_rows}
        answer = self.platform.data_loaded(dataset_id, body)
        return {**info, "mock_rows": mock_rows, "ledger": answer}

    def run(self, job: Job) -> Outcome:
        """Request the computation, run it unless the ledger refused, report the result."""
        return self.release(job, self.prepare(job))

    def prepare(self, job: Job) -> Prepared | Outcome:
        """Ask the ledger, run and check; report nothing. An outcome if there is nothing
        to report (refused, already done, waiting for the data)."""
        self._met.setdefault(job.key, self.clock())
        visible = isinstance(job.code, str)
        # the hash of the code it would submit: if it is not the proven one, the ledger
        # records the refusal code_hash_mismatch (and, whatever the platform answers, the
        # node runs nothing)
        code_sha256 = (hashlib.sha256(job.code.encode("utf-8")).hexdigest() if visible
                       else job.proven_sha256)
        requested = self._request(job, code_sha256)
        if isinstance(requested, Outcome):
            return requested
        made, joint_id = requested
        if code_sha256 != job.proven_sha256:
            return Prepared(made, reason=(
                f"code_hash_mismatch: the code the platform served (SHA-256 {code_sha256}) is "
                f"not the code of product.registered (event {job.registered_seq}: "
                f"{job.proven_sha256}); not run"))
        if not visible:
            return Prepared(made, reason="the product's code is not visible to this provider")
        try:
            function_name = _function_name(job.code)
            job.terms.check_query(job.query)
        except (NodeError, OutputViolation) as exc:
            return Prepared(made, reason=str(exc))
        ran = self._on_datasite(job, made, function_name)
        if isinstance(ran, Prepared | Outcome):
            return ran
        checked = self._checked(job, made, *ran)
        return checked if joint_id is None else dataclasses.replace(checked, joint_id=joint_id)

    def release(self, job: Job, prepared: Prepared | Outcome) -> Outcome:
        """Report what :meth:`prepare` made ready (once the event is proven)."""
        if isinstance(prepared, Outcome):
            outcome = prepared
        elif prepared.reason is not None:
            outcome = self._fail(job, prepared.computation_id, prepared.reason,
                                 prepared.detail)
        elif job.joint is not None and job.execution > 0:
            outcome = self._joint(job, prepared)
        else:
            outcome = self._report(job, prepared)
        if outcome.settled:
            self._met.pop(job.key, None)
        return outcome

    def _request(self, job: Job, code_sha256: str) -> tuple[str, str | None] | Outcome:
        """``POST /computations``: the computation id to run and its joint execution (if
        any), or the outcome if there is nothing to run (refused, already done)."""
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
        joint_id = made.get("joint_id")
        return comp_id, None if joint_id is None else str(joint_id)

    def _on_datasite(self, job: Job, comp_id: str,
                     function_name: str,
                     ) -> tuple[Any, dict[str, str], ClearValues] | Prepared | Outcome:
        """The result and input hashes of the run, with up to ``retries`` attempts while
        the datasite does not answer; else the failure, or the outcome waiting for data."""
        error = detail = ""
        for attempt in range(self.retries):
            try:
                return self._attempt(job, function_name)
            except Exception as exc:  # noqa: BLE001 - PySyft raises many kinds
                if isinstance(exc, SandboxError):
                    _printed(self.request_key(*job.key), exc.stdout, exc.stderr)
                waiting = self._waiting(job, comp_id, exc)
                if waiting is not None:
                    return waiting
                error, detail, again = self._reason(job, exc)
            if not again:  # the same code on the same data fails the same way
                break
            log.warning("contract %s execution %d attempt %d: %s", job.contract_id,
                        job.execution, attempt + 1, error)
            if attempt + 1 < self.retries:
                self.sleep(self.backoff_s * 2 ** attempt)
        if error.startswith(("datasite unavailable", "sandbox unavailable")):
            error += f" (after {self.retries} attempts)"
        return Prepared(comp_id, reason=error, detail=detail)

    def _attempt(self, job: Job, function_name: str,
                 ) -> tuple[Any, dict[str, str], ClearValues]:
        key = self.request_key(job.contract_id, job.execution)
        request_id = None
        age = self._met.get(job.key, self.clock())
        with self.pysyft.turn(age):
            if job.execution == 0:  # the trial: mock rows only, never a code request
                hashes = datasite.mock_hashes(self.admin, job.inputs)
                run: Any = datasite.Run(job.code, function_name, datasite.mock_inputs(
                    self.runner, job.code, function_name, job.inputs))
            else:
                hashes = datasite.input_hashes(self.admin, job.inputs, cache=self.inputs)
                request_id = datasite.submit(self.runner, job.code, function_name,
                                             job.inputs, key, cache=self.inputs)
                run = datasite.prepare_run(self.admin, request_id, job.inputs,
                                           cache=self.inputs)
        if isinstance(run, datasite.Recorded):  # ran before: its tables, for the check
            with self.pysyft.turn(age):
                tables = [self.inputs.table(self.admin, d) for d in job.inputs]
            handed = _declared(tables, job.columns, job.inputs)
            return run.value, hashes, ClearValues.of(handed, job.terms.grades)
        handed = _declared(run.inputs, job.columns, job.inputs)
        ran = self.sandbox.run(run.code_source, run.function_name, handed)
        _printed(key, ran.stdout, ran.stderr)
        if request_id is not None:
            with self.pysyft.turn(age):
                datasite.deposit(self.admin, request_id, ran.value, run=run)
        return ran.value, hashes, ClearValues.of(handed, job.terms.grades)

    def _waiting(self, job: Job, comp_id: str, exc: Exception) -> Outcome | None:
        """An input dataset not on the datasite yet, within ``DATASET_WAIT_S``: the
        provider may be loading it, the event is handled again later."""
        if not isinstance(exc, datasite.DatasetMissingError):
            return None
        waited = self.clock() - self._met.get(job.key, self.clock())
        if waited >= DATASET_WAIT_S:
            return None
        log.warning("contract %s execution %d: %s; handled again later (%.0f s of %.0f s)",
                    job.contract_id, job.execution, exc, waited, DATASET_WAIT_S)
        return Outcome(job.contract_id, "error", f"waiting for the data: {exc}",
                       job.execution, comp_id)

    @staticmethod
    def _reason(job: Job, exc: Exception) -> tuple[str, str, bool]:
        """What a failed attempt records (never a private value), what the provider's
        private log keeps (it may quote them), and whether another attempt may do better."""
        described = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, datasite.DatasiteUnavailableError | SandboxUnavailable):
            which = "sandbox" if isinstance(exc, SandboxUnavailable) else "datasite"
            return f"{which} unavailable: {exc}", described, True
        if isinstance(exc, CodeRaised):
            return code_failed(exc, job.execution), exc.detail, False
        if isinstance(exc, LimitExceeded):  # a worker killed (e.g. at shutdown): again
            return (f"sandbox_limit: the product's code went past the sandbox's {exc.which} "
                    "limit"), exc.detail or described, exc.which == "killed"
        if isinstance(exc, OutputRefused):
            return f"result_not_reportable: {exc}", described, False
        if isinstance(exc, datasite.DatasetMissingError):
            waited = f"{described} (waited {DATASET_WAIT_S:.0f} s for it)"
            return waited, waited, False
        if isinstance(exc, datasite.CodeSourceError | datasite.DatasetError):
            return described, described, False
        detail = f"datasite error {described}"
        return (detail if job.execution == 0 else (
            f"datasite_error: the datasite raised {type(exc).__name__}; details are in the "
            "node's log")), detail, True

    def _checked(self, job: Job, comp_id: str, result: Any, hashes: dict[str, str],
                 clear: ClearValues) -> Prepared:
        """The result as reported, once it meets the query and the terms, masked, and
        holding no clear value of an L3/L4 field the code was handed (``clear``)."""
        try:
            if job.joint is not None and job.execution > 0:  # masked, never on the ledger
                value = joint_rows(result)
                rows = len(value)
            else:
                value, rows = to_json_result(apply_query(result, job.query))
            job.terms.check(value, job.query)
            masking: dict[str, str] = {}
            if job.joint is None or job.execution == 0:
                value = job.terms.noise(value)  # a dp product's noise (dp_noise.py), then
                value, masking = job.terms.mask(value)  # masking: before it leaves the datasite
                clear.check(value, job.terms.quote)  # under whatever name the code gave it
                canonical_bytes(value)  # what the ledger hashes: else it refuses the post
        except JointFailed as exc:
            return Prepared(comp_id, reason=exc.reason)
        except OutputViolation as exc:
            return Prepared(comp_id, reason=str(exc))
        except CanonicalEncodingError as exc:  # its path may quote the product's keys
            return Prepared(comp_id, reason=f"result_not_reportable: {NOT_CANONICAL}",
                            detail=f"result not reportable: {exc}")
        except ValueError as exc:
            public = str(exc) if job.execution == 0 else (
                exc.public if isinstance(exc, ResultError) else "the result is not JSON")
            return Prepared(comp_id, reason=f"result_not_reportable: {public}",
                            detail=f"result not reportable: {exc}")
        except Exception as exc:  # noqa: BLE001 - the product's output, whatever it is
            return Prepared(comp_id, reason="result_not_reportable: the output could not be "
                            f"checked ({type(exc).__name__})", detail=repr(exc))
        return Prepared(comp_id, value, rows, hashes, masking=masking)

    def _report(self, job: Job, prepared: Prepared) -> Outcome:
        try:
            answer = self.platform.report_result(prepared.computation_id, {
                "result": prepared.value, "input_hashes": prepared.hashes,
                "result_rows": prepared.rows, "datasite": self.datasite_name,
                "masking": prepared.masking})
        except PlatformError as exc:
            if exc.status in (413, 422):  # the ledger will never take it: say so
                return self._fail(job, prepared.computation_id, (
                    f"result_not_reportable: the ledger refused the result (HTTP "
                    f"{exc.status})"), str(exc))
            if exc.status != 409 or "policy_lapsed" not in str(exc):
                raise
            # the contract or a grant ended while it ran: the ledger recorded the failure
            log.error("contract %s execution %d: the result is not delivered: %s",
                      job.contract_id, job.execution, exc)
            return Outcome(job.contract_id, "failed", str(exc), job.execution,
                           prepared.computation_id)
        return Outcome(job.contract_id, "delivered", "", job.execution,
                       prepared.computation_id, answer.get("result_sha256"),
                       extra={"rows": prepared.rows})

    def _joint(self, job: Job, prepared: Prepared) -> Outcome:
        """A joint product's execution: this provider's masked part, not its rows
        (``compute_nodes/joint.py``); its failure recorded like any other."""
        comp_id = prepared.computation_id
        try:
            if self.joint is None or prepared.joint_id is None:
                raise JointFailed(
                    "node_key_not_registered: this node is not set up for joint products"
                    if self.joint is None else "joint_missing: the ledger opened no joint "
                    "execution for this joint product's computation")
            return self.joint.deliver(job, comp_id, prepared.joint_id, prepared.value,
                                      prepared.hashes, self.datasite_name)
        except JointFailed as exc:
            try:
                return self._fail(job, comp_id, exc.reason, exc.detail)
            except PlatformError as refused:
                if refused.status != 409:
                    raise
                # the computation is over already (the joint failed and closed it)
                return Outcome(job.contract_id, "failed", exc.reason, job.execution, comp_id)

    def _fail(self, job: Job, comp_id: str, reason: str, detail: str = "") -> Outcome:
        """Record the execution as failed with ``reason`` (on the log: never private values;
        ``detail``, which may quote them, goes to the provider's private log only)."""
        log.error("contract %s execution %d failed: %s", job.contract_id, job.execution,
                  reason)
        if detail and detail != reason:
            private_log.error("contract %s execution %d failed: %s", job.contract_id,
                              job.execution, detail)
        # the trial's reason may quote the product's text: none the ledger refuses
        text = reason[:5000].replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
        self.platform.report_failure(comp_id, text)
        return Outcome(job.contract_id, "failed", reason, job.execution, comp_id)


class OldestFirst:
    """A lock granted, among the threads waiting for it, to the one that gives the
    smallest ``age`` (when its execution began).

    Executions at once each take it twice (the request, approval and input hand-over; the
    deposit) around their sandbox run: with a plain lock they take turns, and all end
    together, after everyone's PySyft work; oldest first, each ends once its own and its
    elders' work is done, for the same work in all."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held = False
        self._waiting: list[tuple[float, int]] = []
        self._tickets = itertools.count()

    @contextlib.contextmanager
    def turn(self, age: float) -> Iterator[None]:
        ticket = (age, next(self._tickets))
        with self._cond:
            heapq.heappush(self._waiting, ticket)
            try:
                while self._held or self._waiting[0] != ticket:
                    self._cond.wait()
            except BaseException:
                self._waiting.remove(ticket)
                heapq.heapify(self._waiting)
                self._cond.notify_all()
                raise
            heapq.heappop(self._waiting)
            self._held = True
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()


NOT_CANONICAL = ("the result has no canonical JSON form (an integer beyond ±(2**53 - 1), "
                 "a NUL character or a lone surrogate)")


def code_failed(exc: CodeRaised, execution: int) -> str:
    """The reason recorded when the product's code raised. The trial ran on mock rows: the
    last line of its traceback is kept. On the private data only the exception's type and
    a fixed message: its text may quote a private value (``invalid literal for int():
    '张三'``)."""
    if execution == 0:
        lines = [line for line in exc.detail.strip().splitlines() if line.strip()]
        return f"code_failed: {lines[-1] if lines else exc.kind}"[:2000]
    # only a built-in exception's name: the code names its own classes (a name may spell
    # a private value)
    kind = exc.kind if isinstance(getattr(builtins, exc.kind, None), type) and \
        issubclass(getattr(builtins, exc.kind), BaseException) else "an exception"
    return (f"code_failed: the product's code raised {kind} on the private data; details "
            "are in the provider's private log")


def _printed(key: str, stdout: str, stderr: str) -> None:
    """What the product's code printed: to the provider's private log only."""
    if stdout or stderr:
        private_log.info("%s: what the product's code printed:\n%s%s", key, stdout, stderr)


def _declared(frames: list[Any], columns: tuple[tuple[str, ...], ...],
              dataset_ids: list[str]) -> list[Any]:
    """Each input table cut down to the fields the product names of it: the code sees no
    other column. A named field the table lacks is a DatasetError."""
    if len(columns) != len(frames):
        raise datasite.DatasetError(f"the product names fields of {len(columns)} input(s); "
                                    f"{len(frames)} table(s) were handed over")
    out = []
    for frame, names, dataset_id in zip(frames, columns, dataset_ids, strict=True):
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise datasite.DatasetError(f"dataset {dataset_id} has no column(s) {missing}")
        out.append(frame[list(names)])
    return out


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
