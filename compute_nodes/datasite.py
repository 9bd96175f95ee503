"""A provider's PySyft 0.9.5 datasite, as the compute node drives it.

Runs only inside the compute environment (``compute_nodes/setup-env``): it imports ``syft``,
which the ledger server never does (what PySyft needs around it, quiet stdout, identity,
HTTP timeouts, is in ``syft_support.py``). PySyft keeps its role, the assets with their
mock/private split and the code requests bound to the ledger; the product's code itself
never runs in the datasite's process nor the node's, but in the sandbox
(``compute_nodes/sandbox``). The node calls:

- ``launch(name, port=None, data_dir=...)``: a datasite in this process (``port=None``) or a
  uvicorn child process serving HTTP on ``127.0.0.1:port``; ``Datasite.land()`` stops it.
- ``load_dataset(admin, dataset_id, private_path, mock_path)``: upload a CSV/Parquet table
  as one asset holding the private data and its mock.
- ``submit(client, code_source, function_name, dataset_ids, request_key)``: a code request
  for a product's registered code, its parameters bound by position to the assets of
  ``dataset_ids`` (one input: ``def f(data)``; two: ``def f(a, b)``; input policy
  ``ExactMatch``, output policy ``OutputPolicyExecuteCount``); idempotent per
  ``request_key``.
- ``input_hashes(client, dataset_ids)``: the SHA-256 of each dataset's private file, as
  recorded when it was loaded (the asset's content hash the node reports).
- ``request_exists(client, function_name, request_key)``: whether any code was ever requested
  under that key (an audit: a refused execution never reached the datasite).
- ``prepare_run(admin, request_id, dataset_ids)``: approve the request; its recorded result
  if it ran, else the stored code and its private input tables for the sandbox;
  ``deposit(admin, request_id, value)`` records the sandbox's result as the request's output
  (``approve_and_run`` does the three steps).
- ``mock_inputs``/``run_on_mock(client, code_source, function_name, dataset_ids, sandbox)``:
  the trial, on mock rows, in the sandbox.
- ``Inputs``: what ``input_hashes``, ``submit`` and ``prepare_run`` read of a dataset (its
  asset's id, its private file's SHA-256, its private table), looked up once per dataset and
  kept by the node (``cache=``): each execution then costs the datasite the code request,
  its approval and the deposit, not three listings of every dataset and a transfer of the
  private table.

PySyft 0.9.5 facts this module relies on or works around:

- Code is identified by sha256(source + submitter's key) and one code gets one request, so
  each request gets its own function name, ``<function_name>_<sha256(request_key)[:16]>``
  (``syft_function(name=...)`` rewrites the ``def`` line).
- ``UserCodeService.is_execution_allowed`` ignores the boolean from ``OutputPolicy.is_valid``
  (PySyft issue #9391). Counts are the ledger check's job; the recorded output only keeps
  the same request from running twice.
- ``Request.deposit_result`` prompts on stdin for a datasite that is not a low-side one, so
  ``deposit`` stores the output the way its low-side branch does.
- Launching a server sets the root logger's level; ``launch`` puts it back.
- Every code request and approval makes inbox notifications, and an approval scans all of
  them: ``syft_support`` turns that off (a node's datasite has no inbox reader).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import requests
import syft as sy
from syft.client.api import ServerIdentity
from syft.service.action.action_object import ActionObject
from syft.service.code.user_code import replace_func_name
from syft.service.policy.policy import OutputPolicyExecuteCount
from syft.types.errors import SyftException
from syft.types.uid import UID

from compute_nodes.code_source import (
    function_from_source,
    parameters,
    request_function_name,
)
from compute_nodes.datasite_assets import (
    ASSET_NAME,
    Asset,
    CodeSourceError,
    ComputationError,
    ComputeNodeError,
    DatasetError,
    DatasetMissingError,
    DatasiteUnavailableError,
    Inputs,
)
from compute_nodes.datasite_assets import SUMMARY_PREFIX as _SUMMARY_PREFIX
from compute_nodes.datasite_assets import asset_of as _asset
from compute_nodes.datasite_assets import find_dataset as _find_dataset
from compute_nodes.datasite_assets import table_of as _table
from compute_nodes.sandbox import Sandbox
from compute_nodes.syft_support import (
    bound_http,
    quiet,
    server_identity,
    signing_key,
    temp_root,
)

__all__ = [  # with what compute_nodes.datasite_assets and code_source give it
    "ASSET_NAME", "Asset", "CodeSourceError", "ComputationError", "ComputeNodeError",
    "DatasetError", "DatasetMissingError", "Datasite", "DatasiteUnavailableError", "Inputs",
    "Recorded", "Run", "approve_and_run", "data_scientist", "deposit", "function_from_source",
    "input_hashes", "launch", "load_dataset", "mock_hashes", "mock_inputs", "parameters",
    "prepare_run", "read_table", "request_exists", "request_function_name", "run_on_mock",
    "submit",
]

LOOPBACK = "127.0.0.1"
DEFAULT_ADMIN_EMAIL = "info@openmined.org"  # PySyft 0.9.5's root account
DEFAULT_ADMIN_PASSWORD = "changethis"  # PySyft default until changed
READY_TIMEOUT_S = 30.0
_DEPOSITED = "dataledger-json:"  # a result deposited by :func:`deposit`


Client = Any  # syft.client.datasite_client.DatasiteClient
F = TypeVar("F", bound=Callable[..., Any])

def _unavailable_on_http_errors(function: F) -> F:
    """An HTTP datasite that is down or too slow raises DatasiteUnavailableError."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except requests.RequestException as exc:
            raise DatasiteUnavailableError(f"{type(exc).__name__}: {exc}") from exc

    return wrapper  # type: ignore[return-value]


@dataclass
class Datasite:
    """A running datasite: in this process (``port is None``) or over HTTP on loopback."""

    name: str
    handle: Any  # syft.orchestra.ServerHandle
    data_dir: Path
    port: int | None = None
    admin_email: str = DEFAULT_ADMIN_EMAIL
    admin_password: str = DEFAULT_ADMIN_PASSWORD

    @property
    def url(self) -> str | None:
        return f"http://{LOOPBACK}:{self.port}" if self.port else None

    @_unavailable_on_http_errors
    def login(self, email: str, password: str) -> Client:
        with quiet():
            if self.port is None:
                return self.handle.login(email=email, password=password, cache=False)
            bound_http(None)
            client = sy.login(
                url=f"http://{LOOPBACK}", port=self.port, email=email, password=password,
                cache=False,
            )
        bound_http(client)
        return client

    def admin(self) -> Client:
        return self.login(self.admin_email, self.admin_password)

    def session(self, email: str) -> Client:
        """The client of account ``email`` of this in-process datasite, as
        ``SyftClient.login`` makes it, from the signing key the datasite keeps for the
        account, without the password check (a bcrypt verification: about 0.25 s of CPU
        per login, paid by every node process after a restart). Only for the process that
        runs the datasite, which holds its state and keys anyway. SyftException if there is
        no such account; DatasiteUnavailableError for a datasite over HTTP."""
        if self.port is not None:
            raise DatasiteUnavailableError(f"{self.name} runs over HTTP: log in")
        server = self.handle.python_server
        with quiet():
            user = server.services.user.stash.get_by_email(
                credentials=server.verify_key, email=email).unwrap()
            guest = server.get_guest_client(verbose=False)
            client = type(guest)(connection=guest.connection, metadata=guest.metadata,
                                 credentials=user.signing_key)
        # what SyftClient.login records of the account (name-mangled there)
        client._SyftClient__logged_in_user = email
        client._SyftClient__user_role = user.role
        client._SyftClient__logged_in_username = user.name
        return client

    def land(self) -> None:
        with quiet():
            self.handle.land()


def launch(
    name: str,
    port: int | None = None,
    data_dir: str | Path = "var/datasites",
    *,
    reset: bool = False,
    admin_password: str | None = None,
) -> Datasite:
    """Start datasite ``name`` keeping its state under ``data_dir/<uid of name>/``.

    ``port=None`` runs it in this process; a port runs it as a uvicorn child process bound
    to 127.0.0.1 only. The same name and data_dir find the same state again (``reset=False``),
    in both modes. ``admin_password`` replaces PySyft's default root password.
    """
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = signing_key(data_dir, name)
    root_level = logging.getLogger().level
    try:
        with quiet(), temp_root(data_dir), server_identity(name, key):
            handle = sy.orchestra.launch(
                name=name, port=port, host=LOOPBACK, reset=reset, dev_mode=False,
                n_consumers=0, create_producer=False, enable_warnings=False,
                log_level="warning",
            )
    finally:
        logging.getLogger().setLevel(root_level)  # Server.set_log_level changes the root's
    site = Datasite(name=name, handle=handle, data_dir=data_dir, port=port)
    if port is not None:
        _wait_ready(site)
    if admin_password is not None:
        _set_admin_password(site, admin_password)
    return site


@_unavailable_on_http_errors
def data_scientist(
    site: Datasite, admin: Client, email: str, password: str, name: str = "compute node"
) -> Client:
    """Log in as the account that submits code requests, creating it first if needed."""
    with quiet():
        try:
            admin.users.create(
                name=name, email=email, password=password, password_verify=password,
            )
        except SyftException as exc:
            if "already exists" not in str(exc):
                raise
    return site.login(email, password)


@_unavailable_on_http_errors
def load_dataset(
    client: Client, dataset_id: str, private_path: str | Path, mock_path: str | Path
) -> dict[str, Any]:
    """Upload a table as dataset ``dataset_id`` with one asset (private data + mock).

    Returns ``{"rows", "schema", "sha256_of_private_file"}``. Loading the same private file
    again is a no-op; another file under the same dataset id is refused.
    """
    private_path, mock_path = Path(private_path), Path(mock_path)
    digest = _sha256_file(private_path)
    private, mock = read_table(private_path), read_table(mock_path)
    if list(private.columns) != list(mock.columns):
        raise DatasetError(
            f"mock columns {list(mock.columns)} differ from private {list(private.columns)}"
        )
    try:  # CSV types are guessed per file: the trial must see the private table's types
        mock = mock.astype(private.dtypes.to_dict())
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"mock values do not fit the private column types: {exc}") from exc
    info = {
        "rows": len(private),
        "schema": {str(col): str(dtype) for col, dtype in private.dtypes.items()},
        "sha256_of_private_file": digest,
    }
    existing = _find_dataset(client, dataset_id)
    if existing is not None:
        if existing.summary == _SUMMARY_PREFIX + digest:
            return info
        raise DatasetError(f"dataset {dataset_id} already holds another file ({existing.summary})")
    dataset = sy.Dataset(
        name=dataset_id, summary=_SUMMARY_PREFIX + digest,
        description=f"{private_path.name}: {len(private)} rows",
    )
    dataset.add_asset(sy.Asset(name=ASSET_NAME, data=private, mock=mock))
    with quiet():
        client.upload_dataset(dataset)
    return info


@_unavailable_on_http_errors
def submit(
    client: Client,
    code_source: str,
    function_name: str,
    dataset_ids: str | Sequence[str],
    request_key: str,
    *,
    executions: int = 1,
    cache: Inputs | None = None,
) -> str:
    """Request to run ``function_name`` from ``code_source`` on the datasets ``dataset_ids``.

    The function's parameters are bound by position to the datasets' assets (a single id
    may be given as a string). Returns the request id. Submitting the same
    ``request_key`` again returns the same id.
    """
    ids = _ids(dataset_ids)
    service_name = request_function_name(function_name, request_key)
    function, params = function_from_source(code_source, function_name, inputs=len(ids))
    stored_code = replace_func_name(textwrap.dedent(inspect.getsource(function)), service_name)
    existing = _find_request(client, service_name, stored_code)
    if existing is not None:
        return existing
    assets = cache or Inputs()
    bound = {param: assets.asset(client, dataset_id).action_id
             for param, dataset_id in zip(params, ids, strict=True)}
    input_policy = sy.ExactMatch(init_kwargs={ServerIdentity.from_api(client.api): bound})
    with quiet():
        syft_function = sy.syft_function(
            input_policy=input_policy,
            output_policy=OutputPolicyExecuteCount(limit=executions),
            name=service_name,
        )(function)
        request = client.code.request_code_execution(
            syft_function, reason=f"dataledger request_key={request_key}"
        )
    return str(request.id)


def request_exists(client: Client, function_name: str, request_key: str) -> bool:
    """Whether any code was ever requested under ``request_key`` (for audits and tests)."""
    with quiet():
        codes = client.api.services.code.get_by_service_func_name(
            request_function_name(function_name, request_key))
    return bool(codes)


@_unavailable_on_http_errors
def input_hashes(client: Client, dataset_ids: str | Sequence[str], *,
                 cache: Inputs | None = None) -> dict[str, str]:
    """Each dataset's private-file SHA-256, as recorded at load (the asset's content hash).

    Raises DatasetError if a dataset is not on this datasite.
    """
    assets = cache or Inputs()
    return {dataset_id: assets.asset(client, dataset_id).sha256
            for dataset_id in _ids(dataset_ids)}


def mock_hashes(client: Client, dataset_ids: str | Sequence[str]) -> dict[str, str]:
    """Each dataset's mock rows, as a trial reads them: SHA-256 of the table as CSV (UTF-8,
    header, no index, ``\n`` line ends).

    Raises DatasetError if a dataset is not on this datasite or its mock is not a table.
    """
    out = {}
    for dataset_id in _ids(dataset_ids):
        mock = _asset(client, dataset_id).mock
        if not isinstance(mock, pd.DataFrame):
            raise DatasetError(f"mock of {dataset_id} is a {type(mock).__name__}, not a table")
        text = mock.to_csv(index=False, lineterminator="\n")
        out[dataset_id] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return out


@dataclass(frozen=True)
class Run:
    """What an approved request runs: the code the datasite stored and its private inputs
    (one table per parameter, in order); and, for :func:`deposit`, the request and its code
    as :func:`prepare_run` read them."""

    code_source: str
    function_name: str
    inputs: list[pd.DataFrame]
    request: Any = None
    code: Any = None
    input_ids: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recorded:
    """The request already ran: the result it recorded."""

    value: Any


@_unavailable_on_http_errors
def prepare_run(admin: Client, request_id: str, dataset_ids: Sequence[str], *,
                cache: Inputs | None = None) -> Run | Recorded:
    """Approve the request; its recorded result if it ran, else what to run (the stored
    code and the private tables its input policy binds, in parameter order).

    The code runs in the sandbox (``compute_nodes/sandbox``), never in the datasite's
    process; :func:`deposit` then records its result as the request's output.

    The datasite is asked for the request and its code once: the approval is PySyft's
    ``request.apply`` (what ``Request.approve`` ends with, after checks and notices meant
    for a notebook: a low-side request is refused here too), and the recorded result is
    looked for only if the request was approved before (a result is deposited only after
    the approval)."""
    ids = _ids(dataset_ids)
    assets = cache or Inputs()
    with quiet():
        request = admin.api.services.request.get_by_uid(UID(request_id))
        code = request.code
        if not hasattr(code, "raw_code"):  # a SyftError: not a code request
            raise ComputationError(f"request {request_id} holds no code")
        if _approved(request):
            previous = _recorded_result(admin, code)
            if previous is not None:
                return Recorded(_deposited(previous[0]))
        else:
            if code.is_l0_deployment:
                raise ComputationError(f"request {request_id} is a low-side request")
            admin.api.services.request.apply(request.id)
        source = str(code.raw_code)
        name = str(code.service_func_name)
        params = parameters(source, name, inputs=len(ids))
        bound = {p: uid for i in code.input_policy_init_kwargs.values() for p, uid in i.items()}
        frames = []
        for param, dataset_id in zip(params, ids, strict=True):
            if bound.get(param) != assets.asset(admin, dataset_id).action_id:
                raise DatasetError(f"{name}: parameter {param} is not bound to {dataset_id}")
            frames.append(assets.table(admin, dataset_id))
    return Run(source, name, frames, request, code, bound)


@_unavailable_on_http_errors
def deposit(admin: Client, request_id: str, value: Any, *, run: Run | None = None) -> None:
    """Record ``value`` as the output of the request (PySyft's output history), so the
    request is never run again: :func:`prepare_run` answers it as :class:`Recorded`.
    ``run``: what :func:`prepare_run` read of the request (not asked for again)."""
    with quiet():
        if run is not None and run.request is not None and run.code is not None:
            request, code, inputs = run.request, run.code, run.input_ids
        else:
            request = admin.api.services.request.get_by_uid(UID(request_id))
            code = request.code
            inputs = {p: uid for i in code.input_policy_init_kwargs.values()
                      for p, uid in i.items()}
        # as one JSON text (PySyft stores a str about 7x faster than rows of dicts), in UTF-8
        # bytes held by a numpy array: the client walks every item of a sequence it gets
        # back (a str: each of its characters), an array is one object to it
        text = _DEPOSITED + json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        # what Request._create_action_object_for_deposited_result does for a new value,
        # without asking whether the new object's id exists already
        output = ActionObject.from_obj(data, syft_client_verify_key=request.syft_client_verify_key,
                                       syft_server_location=request.syft_server_location)
        output.reload_cache()
        output._send(request.server_uid, request.syft_client_verify_key)
        admin.api.services.code.store_execution_output(
            user_code_id=code.id, outputs=output, input_ids=inputs)


def approve_and_run(admin: Client, request_id: str, dataset_ids: Sequence[str],
                    sandbox: Sandbox) -> Any:
    """Approve the request, run it in ``sandbox`` unless it ran, record and return the
    result (the executor does the same in steps, the sandbox outside its datasite lock)."""
    prepared = prepare_run(admin, request_id, dataset_ids)
    if isinstance(prepared, Recorded):
        return prepared.value
    value = sandbox.run(prepared.code_source, prepared.function_name, prepared.inputs).value
    deposit(admin, request_id, value, run=prepared)
    return value


@_unavailable_on_http_errors
def mock_inputs(client: Client, code_source: str, function_name: str,
                dataset_ids: str | Sequence[str]) -> list[pd.DataFrame]:
    """The trial's inputs: the datasets' mock rows, one table per parameter."""
    ids = _ids(dataset_ids)
    parameters(code_source, function_name, inputs=len(ids))
    return [_table(_asset(client, dataset_id).mock, dataset_id) for dataset_id in ids]


def run_on_mock(client: Client, code_source: str, function_name: str,
                dataset_ids: str | Sequence[str], sandbox: Sandbox) -> Any:
    """The trial: run the code in ``sandbox`` on the datasets' mock rows only."""
    inputs = mock_inputs(client, code_source, function_name, dataset_ids)
    return sandbox.run(code_source, function_name, inputs).value


# -- helpers ---------------------------------------------------------------------------------


def _wait_ready(site: Datasite) -> None:
    """orchestra waits 20 tries and then goes on silently: check, and fail loudly."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    url = f"{site.url}/api/v2/metadata"
    while True:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            site.land()
            raise DatasiteUnavailableError(f"{site.name} not answering at {url}")
        time.sleep(0.2)


def _set_admin_password(site: Datasite, password: str) -> None:
    site.admin_password = password
    try:
        site.admin()
        return
    except SyftException:
        pass
    admin = site.login(site.admin_email, DEFAULT_ADMIN_PASSWORD)
    with quiet():
        admin.account.set_password(password, confirm=False)


def _ids(dataset_ids: str | Sequence[str]) -> list[str]:
    ids = [dataset_ids] if isinstance(dataset_ids, str) else [str(i) for i in dataset_ids]
    if not ids:
        raise DatasetError("no input dataset")
    return ids


def read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".csv":
        return pd.read_csv(path)
    raise DatasetError(f"{path}: only .csv and .parquet files are read")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _find_request(client: Client, service_name: str, stored_code: str) -> str | None:
    """The request already made under this name; refused if it was for other code."""
    with quiet():
        codes = client.api.services.code.get_by_service_func_name(service_name)
        if any(code.raw_code != stored_code for code in codes):
            raise CodeSourceError(f"{service_name} was requested before with other code")
        code_ids = {code.id for code in codes}
        if not code_ids:
            return None
        for request in client.api.services.request.get_all():
            try:
                if request.code_id in code_ids:
                    return str(request.id)
            except SyftException:  # a request without code
                continue
    return None


def _approved(request: Any) -> bool:
    """Whether every change of the request was applied, from its history as fetched
    (``Request.get_status`` without asking the datasite again)."""
    if not request.history:
        return False
    applied = {status.change_id: status.applied for status in request.history}
    return all(applied.values()) and len(applied) == len(request.changes)


def _deposited(value: Any) -> Any:
    """A recorded result as :func:`deposit` stored it (UTF-8 bytes in a numpy array; before,
    a str), decoded; any other value as it is."""
    if isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 1:
        value = value.tobytes().decode("utf-8")
    if isinstance(value, str) and value.startswith(_DEPOSITED):
        return json.loads(value.removeprefix(_DEPOSITED))
    return value


def _recorded_result(admin: Client, code: Any) -> tuple[Any] | None:
    """The last recorded result once the execution count is used up, else None."""
    history = admin.api.services.output.get_by_user_code_id(code.id)
    limit = code.output_policy_init_kwargs.get("limit", 1)
    if len(history) < limit:
        return None
    output_ids = history[-1].output_id_list
    if len(output_ids) != 1:
        raise ComputationError(f"recorded run of {code.service_func_name} has {output_ids}")
    return (_value(admin.api.services.action.get(output_ids[0])),)


def _value(pointer: Any) -> Any:
    value = pointer.get() if hasattr(pointer, "get") else pointer
    if isinstance(value, SyftException):
        raise ComputationError(str(value))
    return value
