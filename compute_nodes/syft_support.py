"""What running PySyft 0.9.5 in a compute node needs around it: its stdout kept quiet, a
datasite's state and identity kept under the node's directory, and a timeout on every HTTP
call its client makes.

Used by ``compute_nodes/datasite.py`` only; imports ``syft``, so compute venv only.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from syft.client import client as syft_client
from syft.server import server as syft_server
from syft.server.credentials import SyftSigningKey
from syft.server.utils import get_named_server_uid
from syft.service.notification.notification_service import NotificationService
from syft.service.request.request_service import RequestService
from syft.store.document_store_errors import NotFoundException
from syft.types.errors import SyftException
from syft.types.result import as_result

from compute_nodes.logs import RedactingStream

log = logging.getLogger("compute_nodes.datasite")

# PySyft logs every API call with its arguments at INFO, passwords among them (user.update,
# user.create): such records are never made (a node process also keeps PySyft's warnings
# and errors in its private log, compute_nodes/logs.py)
logging.getLogger("syft").setLevel(logging.WARNING)

HTTP_TIMEOUT_S = (5.0, 120.0)  # connect, read: PySyft's own HTTP calls set none


def _no_request_notices() -> None:
    """No inbox notices for code requests and their approvals.

    PySyft 0.9.5 makes a notification (an "email" to the admin's inbox) for each code
    request, and on each approval scans every notification the datasite ever made for the
    request's one (``NotificationService.filter_by_obj``: all of them deserialized, so an
    approval costs more with every execution), marks it read and makes another for the
    requester. A node's datasite has no inbox reader and no mail server: these cost a third
    of an execution's PySyft CPU and grow without bound. So requests make none, and the
    lookup is a query on the notification's linked object that answers None when there is
    none (the approval then skips the notices; PySyft raised instead).
    """
    def no_notice(self: Any, **_: Any) -> None:
        return None

    @as_result(SyftException)
    def filter_by_obj(self: Any, context: Any, obj_uid: Any) -> Any:
        try:
            return self.stash.get_one(context.credentials,
                                      filters={"linked_obj.object_uid": obj_uid}).unwrap()
        except NotFoundException:
            return None

    RequestService._send_email_notification = no_notice  # type: ignore[method-assign]
    NotificationService.filter_by_obj = filter_by_obj  # type: ignore[method-assign]


_no_request_notices()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """PySyft prints banners and notices on stdout: keep them out of the worker's stdout.

    Nothing to do once stdout is a node process's private log (``compute_nodes/logs.py``):
    swapping ``sys.stdout`` is not safe with executions in several threads."""
    if isinstance(sys.stdout, RedactingStream):
        yield
        return
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        if buffer.getvalue().strip():
            log.debug("syft: %s", buffer.getvalue().strip())


@contextlib.contextmanager
def temp_root(data_dir: Path) -> Iterator[None]:
    """PySyft keeps a server's db and blobs under $TMPDIR/$SYFT_TEMP_ROOT/<uid>; an absolute
    SYFT_TEMP_ROOT replaces the whole prefix (pathlib drops what precedes it)."""
    saved = os.environ.get("SYFT_TEMP_ROOT")
    os.environ["SYFT_TEMP_ROOT"] = str(data_dir)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("SYFT_TEMP_ROOT", None)
        else:
            os.environ["SYFT_TEMP_ROOT"] = saved


@contextlib.contextmanager
def server_identity(name: str, key: SyftSigningKey) -> Iterator[None]:
    """Give the server a uid derived from its name and a key kept in data_dir.

    Server.__init__ prefers the module globals read from SERVER_UID / SERVER_PRIVATE_KEY at
    import. Without them an HTTP datasite (orchestra + non-dev uvicorn) gets a random uid,
    hence a fresh empty db, on every launch, and an in-process one (Server.named) a signing
    key derived from the public name. The uvicorn child is forked during launch, so it
    inherits the values set here.
    """
    saved = (syft_server.server_uid_env, syft_server.signing_key_env)
    syft_server.server_uid_env = str(get_named_server_uid(name))
    syft_server.signing_key_env = str(key)
    try:
        yield
    finally:
        syft_server.server_uid_env, syft_server.signing_key_env = saved


def signing_key(data_dir: Path, name: str) -> SyftSigningKey:
    path = data_dir / f"{hashlib.sha256(name.encode()).hexdigest()[:16]}.signing-key"
    if path.exists():
        return SyftSigningKey.from_string(path.read_text().strip())
    key = SyftSigningKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(str(key))
    return key


class _TimeoutAdapter(HTTPAdapter):
    def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = HTTP_TIMEOUT_S
        return super().send(request, **kwargs)


class _RequestsWithTimeout:
    """``requests`` as seen by syft.client.client, with a default timeout.

    HTTPConnection.make_call (every API call) and get_server_metadata use module-level
    ``requests.post`` with no timeout: a stopped datasite would block the worker forever.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(requests, name)

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", HTTP_TIMEOUT_S)
        return requests.post(*args, **kwargs)

    def get(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", HTTP_TIMEOUT_S)
        return requests.get(*args, **kwargs)


def bound_http(client: Any) -> None:
    """Put a timeout on every HTTP call PySyft's client makes (it sets none itself)."""
    if not isinstance(syft_client.requests, _RequestsWithTimeout):
        syft_client.requests = _RequestsWithTimeout()
    connection = getattr(client, "connection", None)
    if connection is None or not hasattr(connection, "session"):
        return
    session = connection.session  # blob and metadata GETs go through this one
    adapter = _TimeoutAdapter(max_retries=session.get_adapter("http://").max_retries)
    session.mount("http://", adapter)

