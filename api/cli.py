"""The ``dataledger`` command."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any


def _settings() -> Any:
    """The settings from the environment, or exit with one line per bad one, naming it."""
    from pydantic import ValidationError

    from api.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper()
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"DATALEDGER_{name}: {message}" if name else message)
        raise SystemExit("dataledger: invalid settings:\n  " + "\n  ".join(lines)) from None


def _build(settings: Any, **kwargs: Any) -> Any:
    """``api.bootstrap.build``, a bad setting or an unreachable database said in one line,
    and the first admin token printed as soon as it is made (whichever command made it)."""
    import psycopg
    from eventsourcing.persistence import PersistenceError

    from api.bootstrap import build
    from events.store import DatabaseURL

    try:
        url = DatabaseURL.parse(settings.resolved_database_url())
    except ValueError as exc:
        raise SystemExit(f"dataledger: {exc}") from None
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SystemExit(f"dataledger: DATALEDGER_DATA_DIR: cannot create {settings.data_dir}: "
                         f"{exc.strerror or exc}") from None
    try:
        container = build(settings, **kwargs)
    except (PersistenceError, psycopg.Error) as exc:
        where = (f"{url.kind} at {url.host}:{url.port}/{url.dbname}" if url.kind == "postgresql"
                 else f"SQLite file {url.path}")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SystemExit(f"dataledger: cannot open the store ({where}, from "
                         f"DATALEDGER_DATABASE_URL / DATALEDGER_DATA_DIR): {first}") from None
    if container.first_admin_token:
        print("First start: the platform admin's bearer token (shown once, keep it):",
              flush=True)
        print(f"  {container.first_admin_token}", flush=True)
    return container


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    settings = _settings()
    # The event loop thread gives up the GIL at every system call and then waits for the
    # background threads (projections, chain, group commit) to hand it back: a shorter
    # switch interval bounds that wait (CPython's default is 5 ms).
    sys.setswitchinterval(settings.switch_interval_ms / 1000)
    host = args.host or settings.host
    port = args.port or settings.port
    container = _build(settings)
    app = create_app(settings, container)
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
                    access_log=settings.access_log)
    finally:
        if node is not None:
            node.stop()
        container.close()
    return 0


def _port(text: str) -> int:
    """A TCP port (argparse type): 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (1 to 65535)")
    return port


def _exit_now(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _loopback_url(host: str, port: int) -> str:
    """How a process on this machine reaches a server listening on ``host``."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _start_compute_node(settings: Any, container: Any, host: str, port: int) -> Any:
    """The embedded compute node (``DATALEDGER_COMPUTE_NODE``), or None."""
    from api.node_supervisor import NodeSupervisor, compute_python, trust_document

    wanted = settings.compute_node
    if wanted == "false":
        return None
    why = ""
    if container.chain is None:
        why = "the node trusts anchored checkpoints only, and DATALEDGER_CHAIN=false"
    elif not compute_python().exists():
        why = (f"the compute environment {compute_python().parent.parent} is missing "
               "(compute_nodes/setup-env makes it; ./dev serve does)")
    if why:
        if wanted == "true":
            raise SystemExit(f"DATALEDGER_COMPUTE_NODE=true but {why}")
        print(f"No compute node: {why}. Contracts will not be computed.", flush=True)
        return None
    node = NodeSupervisor(settings.data_dir.absolute() / "node", _loopback_url(host, port),
                          trust_document(container))
    node.start()
    print(f"Compute node: started from {compute_python()}; providers enroll with "
          "`DATALEDGER_NODE_TOKEN=TOKEN dataledger compute-node enroll`", flush=True)
    return node


def _catalogue(_: argparse.Namespace) -> int:
    from events.catalogue import json_schemas

    json.dump(json_schemas(), sys.stdout, indent=2, ensure_ascii=False, sort_keys=True)
    print()
    return 0


def _rebuild(_: argparse.Namespace) -> int:
    container = _build(_settings(), start_background=False)
    try:
        before = container.runner.digests()
        position = container.runner.rebuild()
        after = container.runner.digests()
    finally:
        container.close()
    for name in after:
        same = "same" if before.get(name) == after[name] else "CHANGED"
        print(f"{name:<16} {after[name][:16]}  {same}")
    print(f"rebuilt from seq 1 to {position}")
    return 0 if before == after else 1


def _open_chain() -> tuple[Any, Any]:
    """The event store and the chain service as configured (nothing started)."""
    from api.settings import Settings
    from chain.checkpointer import CutPolicy
    from chain.service import build_chain
    from events.store import DatabaseURL, open_store

    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = DatabaseURL.parse(settings.resolved_database_url())
    store = open_store(url)
    chain = build_chain(store, url, settings.data_dir, origin=settings.log_origin,
                        key_file=settings.log_key_file,
                        witness_urls=[u for u in settings.witness_urls.split(",") if u.strip()],
                        quorum=settings.witness_quorum,
                        policy=CutPolicy(settings.checkpoint_every_leaves,
                                         settings.checkpoint_every_seconds))
    return store, chain


def _chain_run(args: argparse.Namespace) -> int:
    """Integrate and checkpoint in this process (the chain half of serve, on its own)."""
    import threading

    store, chain = _open_chain()
    try:
        if args.once:
            latest = chain.step()
            print(f"tree size {chain.tree.size()}; latest checkpoint "
                  f"{latest.size if latest else 0} (anchored: {bool(latest and latest.anchored)})")
            return 0
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        chain.start()
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
    finally:
        chain.close()
        store.close()
    return 0


def _chain_verify(_: argparse.Namespace) -> int:
    from chain.check import ChainChecker

    store, chain = _open_chain()
    cp = chain.checkpointer
    try:
        checker = ChainChecker(store, chain.tree, cp.signer.verifier(), cp.origin, cp.trusted,
                               cp.quorum)
        findings = checker.run()
        checkpoints = chain.tree.checkpoints()
        size = chain.tree.size()
    finally:
        chain.close()
        store.close()
    for finding in findings:
        print(f"FAIL {finding}")
    anchored = [c for c in checkpoints if c.anchored]
    summary = (f"{size} leaves recomputed, {len(checkpoints)} checkpoints "
               f"({len(anchored)} anchored, latest anchored at size "
               f"{anchored[-1].size if anchored else 0})")
    print(("FAILED: " if findings else "ok: ") + summary)
    return 1 if findings else 0


def _compute_node(argv: list[str]) -> int:
    """``dataledger compute-node load|run …``: the node's CLI in its own environment.

    PySyft is never imported here: the command is handed to ``.venv-compute`` (made by
    ``compute_nodes/setup-env`` the first time), with the repository on its path.
    """
    import subprocess

    from api.node_supervisor import ROOT, compute_env, compute_python
    from api.settings import Settings

    setup = subprocess.run([str(ROOT / "compute_nodes" / "setup-env")], check=False)
    if setup.returncode != 0:
        print("dataledger compute-node: the compute environment could not be set up",
              file=sys.stderr)
        return setup.returncode
    settings = Settings()
    defaults = {"DATALEDGER_NODE_DATA_DIR": str(settings.data_dir.absolute() / "node"),
                "DATALEDGER_NODE_PLATFORM_URL": _loopback_url(settings.host, settings.port)}
    env = compute_env({k: v for k, v in defaults.items() if not os.environ.get(k)})
    # run: a standalone node for one provider; the rest: the host that serve starts
    module = "compute_nodes.cli" if argv[:1] == ["run"] else "compute_nodes.host"
    if argv[:1] == ["host"]:
        argv = ["run", *argv[1:]]
    return subprocess.run([str(compute_python()), "-m", module, *argv], env=env,
                          check=False).returncode


def _bench(args: argparse.Namespace) -> int:
    from bench import run as bench_run

    return bench_run.main(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dataledger", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP API on the configured store")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=_port, default=None)
    serve.set_defaults(func=_serve)
    events = sub.add_parser("events", help="the event catalogue")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    events_sub.add_parser("catalogue", help="print the JSON schema of every event type"
                          ).set_defaults(func=_catalogue)
    proj = sub.add_parser("projections", help="read models")
    proj_sub = proj.add_subparsers(dest="projections_command", required=True)
    proj_sub.add_parser("rebuild", help="drop and rebuild every read model from seq 1; "
                        "exit 1 if the state differs").set_defaults(func=_rebuild)
    chain = sub.add_parser("chain", help="the verifiable log")
    chain_sub = chain.add_subparsers(dest="chain_command", required=True)
    run = chain_sub.add_parser("run", help="integrate the log into the tree and cut "
                               "checkpoints in this process (what serve does in a thread)")
    run.add_argument("--once", action="store_true", help="catch up once, then exit")
    run.set_defaults(func=_chain_run)
    chain_sub.add_parser("verify", help="recompute every leaf and tree hash from the stored "
                         "events and check the checkpoints; exit 1 naming what differs"
                         ).set_defaults(func=_chain_verify)
    sub.add_parser("witness", help="run a witness (see dataledger witness --help)")
    sub.add_parser("compute-node", help="the compute node, in its own environment: "
                   "enroll (token from DATALEDGER_NODE_TOKEN or stdin) | "
                   "load --dataset ID --private FILE --mock FILE | "
                   "status | host | run (a standalone node; see --help of each)")
    demo = sub.add_parser("demo", help="run a scenario of the white paper end to end")
    demo.add_argument("scenario", choices=["finance"],
                      help="finance: inclusive finance (6.1), see dataledger demo finance --help")
    bench = sub.add_parser("bench", help="benchmarks (print a table, write JSON)")
    bench.add_argument("suite", choices=["append", "chain", "compute"])
    bench.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    bench.add_argument("--json", default=None, help="default: bench-results/<suite>.json")
    bench.add_argument("--quick", action="store_true", help="a short run (for tests)")
    bench.set_defaults(func=_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["witness"]:  # its own parser, flags and all
        from chain.witness_app import main as witness_main

        return witness_main(argv[1:])
    if argv[:1] == ["compute-node"]:  # runs in the compute node's own environment
        return _compute_node(argv[1:])
    if argv[:2] == ["demo", "finance"]:  # its own flags
        from demo.finance import main as finance_main

        return finance_main(argv[2:])
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
