"""``dataledger compute-node``: the compute node's commands, in its own environment.

PySyft is never imported here: the command is handed to ``.venv-compute`` (made by
``compute_nodes/setup-env`` the first time), with the repository on its path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

from cli.common import load_settings, loopback_url

if TYPE_CHECKING:
    from cli.common import Subcommands


def register(sub: Subcommands) -> None:
    """Listed in ``dataledger --help``; ``main`` hands its arguments on."""
    sub.add_parser("compute-node", help="the compute node, in its own environment: "
                   "enroll (token from DATALEDGER_NODE_TOKEN or stdin) | "
                   "load --dataset ID --private FILE --mock FILE | "
                   "status | host | run --trust FILE (a standalone node; see --help of "
                   "each)")


def main(argv: list[str]) -> int:
    """``dataledger compute-node load|run …`` in the compute environment."""
    from runtime.compute_host import compute_env
    from runtime.settings import ROOT

    setup = subprocess.run([str(ROOT / "compute_nodes" / "setup-env")], check=False)
    if setup.returncode != 0:
        print("dataledger compute-node: the compute environment could not be set up",
              file=sys.stderr)
        return setup.returncode
    settings = load_settings()
    defaults = {"DATALEDGER_NODE_DATA_DIR": str(settings.data_dir.absolute() / "node"),
                "DATALEDGER_NODE_PLATFORM_URL": loopback_url(settings.host, settings.port)}
    env = compute_env({k: v for k, v in defaults.items() if not os.environ.get(k)})
    # run: a standalone node for one provider; the rest: the host that serve starts
    module = "compute_nodes.cli" if argv[:1] == ["run"] else "compute_nodes.host"
    if argv[:1] == ["host"]:
        argv = ["run", *argv[1:]]
    return subprocess.run([str(settings.compute_python), "-m", module, *argv], env=env,
                          check=False).returncode
