"""``dataledger serve``: the HTTP API, its background process and the embedded compute node."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import TYPE_CHECKING, Any

from cli.common import build_or_exit, load_settings, loopback_url, tcp_port

if TYPE_CHECKING:
    from cli.common import Subcommands
    from runtime.build import Container
    from runtime.compute_host import NodeSupervisor
    from runtime.settings import Settings


def register(sub: Subcommands) -> None:
    serve = sub.add_parser("serve", help="run the HTTP API on the configured store")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=tcp_port, default=None)
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from runtime.http_server import uvicorn_options

    settings = load_settings()
    # The event loop thread gives up the GIL at every system call and then waits for the
    # background threads (projections, chain, group commit) to hand it back: a shorter
    # switch interval bounds that wait (CPython's default is 5 ms).
    sys.setswitchinterval(settings.switch_interval_ms / 1000)
    host = args.host or settings.host
    port = args.port or settings.port
    container = build_or_exit(settings)
    from api.watermarking import key_mismatch

    problem = key_mismatch(container.engine, settings.data_dir)
    if problem is not None:  # the deliveries it marks would trace under a key no one else has
        print(f"dataledger serve: {problem}", file=sys.stderr)
        container.close()
        return 2
    _say_witnesses(container)
    app = create_app(container)
    try:
        node = _start_compute_node(settings, container, host, port)
    except BaseException:
        container.close()
        raise
    # uvicorn shuts down gracefully on SIGTERM, then restores the previous handler and raises
    # the signal again: with the default handler the process would die here, before the
    # cleanup below (the background process and the compute node left behind). This one
    # turns it into a normal exit.
    signal.signal(signal.SIGTERM, _exit_now)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info",
                    access_log=settings.access_log, **uvicorn_options(settings))
    finally:
        if node is not None:
            node.stop()
        container.close()
    return 0


def _exit_now(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _say_witnesses(container: Container) -> None:
    """One line at start: whether the witnesses are independent of this server (``/health``
    says the same)."""
    if container.chain is None:
        return
    said = container.chain.independence()
    head = "independent" if said["independent"] else "NOT independent"
    print(f"Witnesses: {head}: {said['why']}", flush=True)


def _start_compute_node(settings: Settings, container: Container, host: str,
                        port: int) -> NodeSupervisor | None:
    """The embedded compute node (``DATALEDGER_COMPUTE_NODE``), or None."""
    from runtime.compute_host import NodeSupervisor

    wanted = settings.compute_node
    if wanted == "false":
        return None
    chain, why = container.chain, ""
    if chain is None:
        why = "the node trusts anchored checkpoints only, and DATALEDGER_CHAIN=false"
    elif not settings.compute_python.exists():
        why = (f"the compute environment {settings.compute_venv} is missing "
               "(compute_nodes/setup-env makes it; ./dev serve does)")
    if why or chain is None:
        if wanted == "true":
            raise SystemExit(f"DATALEDGER_COMPUTE_NODE=true but {why}")
        print(f"No compute node: {why}. Contracts will not be computed.", flush=True)
        return None
    node = NodeSupervisor(settings.data_dir.absolute() / "node", loopback_url(host, port),
                          chain.trust_document(), python=settings.compute_python)
    node.start()
    print(f"Compute node: started from {settings.compute_python}; providers enroll with "
          "`DATALEDGER_NODE_TOKEN=TOKEN dataledger compute-node enroll`. It trusts this "
          "server's own keys (the same operator: a development default; a provider's own "
          "node takes --trust FILE)", flush=True)
    return node
