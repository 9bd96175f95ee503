"""The compute node's command line (compute venv only).

    python -m compute_nodes.cli load --dataset ID --private FILE --mock FILE
    python -m compute_nodes.cli run [--once]

Settings from the environment:
    DATALEDGER_NODE_PLATFORM_URL   the ledger API, e.g. http://127.0.0.1:8000
    DATALEDGER_NODE_TOKEN          this provider's bearer token
    DATALEDGER_NODE_TRUST_FILE     JSON shaped like GET /ledger/witnesses: the keys trusted
    DATALEDGER_NODE_DATA_DIR       where the datasite keeps its state (default var/node)
    DATALEDGER_NODE_DATASITE_PORT  empty = in-process datasite; a port = HTTP on loopback
    DATALEDGER_NODE_DATASITE_NAME  (optional, default "provider-datasite")
    DATALEDGER_NODE_DATASITE_PASSWORD  (optional) the datasite admin's password
    DATALEDGER_NODE_POLL_SECONDS   (optional, default 2) pause between rounds of ``run``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

RUNNER_EMAIL = "compute-node@dataledger.example"  # .local is refused by EmailStr


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None or value == "":
        if default is not None:
            return default
        raise SystemExit(f"compute node: {name} is not set")
    return value


def _node() -> tuple[Any, Any]:
    from compute_nodes import datasite
    from compute_nodes.worker import ComputeNode, Trust

    trust = Trust.from_file(_env("DATALEDGER_NODE_TRUST_FILE"))
    data_dir = Path(_env("DATALEDGER_NODE_DATA_DIR", "var/node"))
    port_text = os.environ.get("DATALEDGER_NODE_DATASITE_PORT", "")
    name = _env("DATALEDGER_NODE_DATASITE_NAME", "provider-datasite")
    password = os.environ.get("DATALEDGER_NODE_DATASITE_PASSWORD") or None
    site = datasite.launch(name, port=int(port_text) if port_text else None,
                           data_dir=data_dir / "datasites", admin_password=password)
    admin = site.admin()
    runner_password = password or "node-runner-pass"
    runner = datasite.data_scientist(site, admin, RUNNER_EMAIL, runner_password)
    node = ComputeNode(_env("DATALEDGER_NODE_PLATFORM_URL"), _env("DATALEDGER_NODE_TOKEN"),
                       admin, runner, name, trust)
    return node, site


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compute_nodes.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="load a dataset's private data and mock")
    load.add_argument("--dataset", required=True)
    load.add_argument("--private", required=True)
    load.add_argument("--mock", required=True)
    run = sub.add_parser("run", help="act on approved contracts")
    run.add_argument("--once", action="store_true", help="one round, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    node, site = _node()
    try:
        if args.command == "load":
            info = node.load(args.dataset, args.private, args.mock)
            print(json.dumps(info, ensure_ascii=False, default=str))
            return 0
        pause = float(_env("DATALEDGER_NODE_POLL_SECONDS", "2"))
        while True:
            for outcome in node.run_once():
                print(json.dumps(asdict(outcome), ensure_ascii=False, default=str), flush=True)
            if args.once:
                return 0
            time.sleep(pause)
    except KeyboardInterrupt:
        return 0
    finally:
        site.land()


if __name__ == "__main__":
    raise SystemExit(main())
