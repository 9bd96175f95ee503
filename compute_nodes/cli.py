"""A standalone compute node's command line (compute venv only): one provider, one datasite.

    python -m compute_nodes.cli load --trust FILE --dataset ID --private FILE --mock FILE
    python -m compute_nodes.cli run --trust FILE [--once] [--nats URL [--stream NAME]
                                    [--durable NAME] [--subject-prefix PREFIX]]

``load`` puts a dataset's private data and mock on the datasite and records it on the
ledger (``POST /datasets/{id}/data-loaded``). ``run`` follows the log and acts on
``contract.approved`` and ``contract.query_submitted`` (see compute_nodes/node.py): from
JetStream with ``--nats`` (a durable pull consumer, acknowledged once each outcome is on
the ledger), else by polling ``GET /ledger/events`` from the position kept in
``<data dir>/position.json``; a joint product's masked parts are kept in ``<data dir>/parts``
and made with the node's key ``<data dir>/node.key`` (made on the first run; its public half
is printed for the provider to register). ``--once`` (HTTP only): catch up with the log, then exit.
Each outcome is printed as one JSON line on stdout; logs go to stderr. SIGTERM and Ctrl-C
stop it between two events (an event being handled is finished or left unacknowledged).
``--trust FILE`` (or ``DATALEDGER_NODE_TRUST``) is required: the trust document (the log key,
the witnesses' keys, the quorum) its operator took out of band, e.g. from the platform's
operator (``dataledger chain trust --out FILE``) with each witness's key checked with that
witness; the node never asks the platform which keys to trust.

Settings from the environment:
    DATALEDGER_NODE_PLATFORM_URL   the ledger API, e.g. http://127.0.0.1:8000
    DATALEDGER_NODE_TOKEN          this provider's bearer token
    DATALEDGER_NODE_TRUST          as --trust: the trust document (chain/trust.py)
    DATALEDGER_NODE_DATA_DIR       the datasite's state and position.json (default var/node)
    DATALEDGER_NODE_DATASITE_PORT  empty = in-process datasite; a port = HTTP on 127.0.0.1
    DATALEDGER_NODE_DATASITE_NAME  (optional, default "provider-datasite")
    DATALEDGER_NODE_DATASITE_PASSWORD  (optional) the datasite admin's password
    DATALEDGER_NODE_POLL_SECONDS   (optional, default 2) pause when the log has nothing new
    DATALEDGER_NODE_PARALLEL       (optional, default 4) executions at once
    DATALEDGER_NODE_NATS_URL       (optional) as --nats
    DATALEDGER_NODE_NATS_STREAM    (optional, default LEDGER) as --stream
    DATALEDGER_NODE_NATS_DURABLE   (optional, default compute-<participant id>) as --durable
    DATALEDGER_NODE_NATS_SUBJECT_PREFIX  (optional, default ledger) as --subject-prefix
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
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


def data_dir() -> Path:
    return Path(_env("DATALEDGER_NODE_DATA_DIR", "var/node"))


def _node(trust: Any) -> tuple[Any, Any]:
    from compute_nodes import datasite
    from compute_nodes.node import ComputeNode
    from compute_nodes.runs import PARALLEL
    from compute_nodes.sandbox import Sandbox

    port_text = os.environ.get("DATALEDGER_NODE_DATASITE_PORT", "")
    name = _env("DATALEDGER_NODE_DATASITE_NAME", "provider-datasite")
    password = os.environ.get("DATALEDGER_NODE_DATASITE_PASSWORD") or None
    site = datasite.launch(name, port=int(port_text) if port_text else None,
                           data_dir=data_dir() / "datasites", admin_password=password)
    try:
        admin = site.admin()
        runner_password = password or "node-runner-pass"
        runner = datasite.data_scientist(site, admin, RUNNER_EMAIL, runner_password)
        sandbox = Sandbox(hide=[data_dir().resolve()])
        node = ComputeNode(_env("DATALEDGER_NODE_PLATFORM_URL"), _env("DATALEDGER_NODE_TOKEN"),
                           (admin, runner, name), trust, sandbox,
                           parallel=int(_env("DATALEDGER_NODE_PARALLEL", str(PARALLEL))))
        _node_key(node)
    except BaseException:
        site.land()
        raise
    return node, site


def _node_key(node: Any) -> None:
    """A standalone node's key for joint products, made on its first run
    (``<data dir>/node.key``); its public half is printed for the provider to register."""
    from compute_nodes.enrollment import ensure_node_key, node_public_key

    key_file = data_dir() / "node.key"
    ensure_node_key(key_file)
    node.use_node_key(key_file, data_dir() / "parts")
    print(f"compute node: node key {node_public_key(key_file)} (the provider registers it: "
          "POST /participants/{id}/node-key)", file=sys.stderr, flush=True)


def _trusted(parser: argparse.ArgumentParser, path: str | None) -> Any:
    """The keys of the trust file, or a usage error (exit 2) naming --trust."""
    from compute_nodes.trust import TrustError, node_trust

    try:
        _, trust, said = node_trust(path)
    except TrustError as exc:
        parser.error(str(exc))
    print(f"compute node: {said}", file=sys.stderr, flush=True)
    return trust


def _print(outcome: Any) -> None:
    print(json.dumps(asdict(outcome), ensure_ascii=False, default=str), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compute_nodes.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    trust = argparse.ArgumentParser(add_help=False)
    trust.add_argument("--trust", metavar="FILE",
                       help="the trust document taken out of band (default "
                       "DATALEDGER_NODE_TRUST): the only keys this node trusts")
    load = sub.add_parser("load", parents=[trust],
                          help="load a dataset's private data and mock")
    load.add_argument("--dataset", required=True)
    load.add_argument("--private", required=True)
    load.add_argument("--mock", required=True)
    run = sub.add_parser("run", parents=[trust],
                         help="follow the log and act on contract events")
    run.add_argument("--once", action="store_true",
                     help="HTTP: catch up with the log, then exit")
    run.add_argument("--nats", default=os.environ.get("DATALEDGER_NODE_NATS_URL") or None,
                     metavar="URL", help="follow JetStream at URL instead of polling HTTP")
    run.add_argument("--stream", default=_env("DATALEDGER_NODE_NATS_STREAM", "LEDGER"))
    run.add_argument("--durable", default=os.environ.get("DATALEDGER_NODE_NATS_DURABLE")
                     or None, help="the durable consumer's name "
                     "(default compute-<participant id>)")
    run.add_argument("--subject-prefix",
                     default=_env("DATALEDGER_NODE_NATS_SUBJECT_PREFIX", "ledger"))
    args = parser.parse_args(argv)
    if args.command == "run" and args.once and args.nats:
        parser.error("--once follows the HTTP log only")
    trusted = _trusted(parser, args.trust)
    from compute_nodes.logs import standalone_logging

    standalone_logging(data_dir(), [os.environ.get(name, "") for name in (
        "DATALEDGER_NODE_TOKEN", "DATALEDGER_NODE_DATASITE_PASSWORD")])
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    node, site = _node(trusted)
    try:
        if args.command == "load":
            info = node.load(args.dataset, args.private, args.mock)
            print(json.dumps(info, ensure_ascii=False, default=str))
            return 0
        if args.nats:
            from compute_nodes.feeds import JetStreamSettings

            node.follow_nats(JetStreamSettings(args.nats, args.stream, args.durable,
                                               subject_prefix=args.subject_prefix),
                             stop=stop, on_outcome=_print)
        else:
            node.follow_http(data_dir() / "position.json", stop=stop, once=args.once,
                             poll_s=float(_env("DATALEDGER_NODE_POLL_SECONDS", "2")),
                             on_outcome=_print)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        node.close()
        node.executor.sandbox.close()
        site.land()


if __name__ == "__main__":
    raise SystemExit(main())
