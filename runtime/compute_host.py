"""The embedded compute node: ``dataledger serve`` starts it in its own environment.

The node (``compute_nodes/host.py``) runs PySyft 0.9.5, which the server never imports: it
is a child process of ``serve`` using the interpreter of ``.venv-compute`` (made by
``compute_nodes/setup-env``), with the repository on its path. It talks to this server as
any integrator does, over HTTP on loopback, with the credentials each provider enrolled
(``dataledger compute-node enroll``). It trusts the keys serve hands it at start, written
to ``<data dir>/node/trust.json`` (``ChainService.trust_document``, the document of
``GET /ledger/witnesses``): serve's own log key and witnesses, so the same operator's word,
a development default the node says it runs on (``DATALEDGER_NODE_TRUST_FROM_SERVE``). A
provider who wants the platform checked runs a node of its own with ``--trust FILE``.

The supervisor (``core.supervise``) restarts a node that exits, with a growing pause, and
stops it with the server (SIGTERM to its process group, then SIGKILL after a grace period).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from core.files import write_private
from core.supervise import Backoff, PopenChild, Supervisor
from runtime.settings import ROOT

log = logging.getLogger(__name__)

STOP_GRACE_S = 15.0
RESTART_PAUSE_S = (1.0, 30.0)  # first pause after an exit, and the most
STEADY_S = 60.0  # a node that ran this long is restarted after the first pause again

#: what the embedded node inherits from serve's environment (not the admin token, the
#: database URL or any other DATALEDGER_* secret of the server)
NODE_ENV_ALLOWED = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "SSL_CERT_FILE",
                    "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy",
                    "https_proxy", "no_proxy")


def compute_env(extra: dict[str, str] | None = None, *,
                allow_listed: bool = False) -> dict[str, str]:
    """The environment of a compute-node process: ours (``allow_listed``: only the
    variables a node needs), the repository on its path, then ``extra``."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    base = dict(os.environ)
    if allow_listed:
        base = {k: v for k, v in base.items() if k in NODE_ENV_ALLOWED or k.startswith("LC_")}
    return {**base, "PYTHONPATH": path, **(extra or {})}


class NodeSupervisor:
    """Runs ``python -m compute_nodes.host run`` from the compute venv and keeps it running."""

    def __init__(self, node_dir: Path, platform_url: str, trust: dict[str, Any], *,
                 python: Path) -> None:
        self.node_dir = node_dir
        self.platform_url = platform_url
        self.trust = trust
        self.python = python
        self._supervisor = Supervisor("the compute node", self._spawn,
                                      Backoff(*RESTART_PAUSE_S, STEADY_S), log=log)

    @property
    def starts(self) -> int:
        return self._supervisor.starts

    def command(self) -> list[str]:
        return [str(self.python), "-m", "compute_nodes.host", "run"]

    def environment(self) -> dict[str, str]:
        return compute_env({
            "DATALEDGER_NODE_PLATFORM_URL": self.platform_url,
            "DATALEDGER_NODE_DATA_DIR": str(self.node_dir),
            "DATALEDGER_NODE_TRUST": str(self.node_dir / "trust.json"),
            # the node says that it trusts what serve handed it, not a file of its own
            "DATALEDGER_NODE_TRUST_FROM_SERVE": "1",
            # the product's code never sees the server's directory (its databases, keys)
            "DATALEDGER_NODE_HIDE": str(self.node_dir.parent),
            # the node exits when this process is gone (even after a kill -9)
            "DATALEDGER_NODE_PARENT_PID": str(os.getpid()),
        }, allow_listed=True)

    def start(self) -> None:
        if not self.python.exists():
            raise FileNotFoundError(
                f"the compute environment is missing ({self.python}): run "
                "compute_nodes/setup-env (./dev serve does), or set DATALEDGER_COMPUTE_NODE=false")
        write_private(self.node_dir / "trust.json", json.dumps(self.trust, indent=2))
        self._supervisor.start()

    def _spawn(self) -> PopenChild:
        log.info("starting the compute node: %s", " ".join(self.command()))
        return PopenChild(subprocess.Popen(self.command(), env=self.environment(),
                                           cwd=str(ROOT), stdin=subprocess.DEVNULL,
                                           start_new_session=True), group=True)

    @property
    def pid(self) -> int | None:
        child = self._supervisor.child
        return child.pid if child is not None and self._supervisor.running else None

    def stop(self) -> None:
        self._supervisor.stop(STOP_GRACE_S)
