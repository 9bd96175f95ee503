"""The ``dataledger`` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.bootstrap import build
    from api.settings import Settings

    settings = Settings()
    host = args.host or settings.host
    port = args.port or settings.port
    container = build(settings)
    if container.first_admin_token:
        print("First start: the platform admin's bearer token (shown once, keep it):",
              flush=True)
        print(f"  {container.first_admin_token}", flush=True)
    app = create_app(settings, container)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        container.close()
    return 0


def _catalogue(_: argparse.Namespace) -> int:
    from events.catalogue import json_schemas

    json.dump(json_schemas(), sys.stdout, indent=2, ensure_ascii=False, sort_keys=True)
    print()
    return 0


def _rebuild(_: argparse.Namespace) -> int:
    from api.bootstrap import build
    from api.settings import Settings

    container = build(Settings(), start_background=False)
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


def _bench(args: argparse.Namespace) -> int:
    from bench import run as bench_run

    return bench_run.main(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dataledger", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP API on the configured store")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(func=_serve)
    events = sub.add_parser("events", help="the event catalogue")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    events_sub.add_parser("catalogue", help="print the JSON schema of every event type"
                          ).set_defaults(func=_catalogue)
    proj = sub.add_parser("projections", help="read models")
    proj_sub = proj.add_subparsers(dest="projections_command", required=True)
    proj_sub.add_parser("rebuild", help="drop and rebuild every read model from seq 1; "
                        "exit 1 if the state differs").set_defaults(func=_rebuild)
    bench = sub.add_parser("bench", help="benchmarks (print a table, write JSON)")
    bench.add_argument("suite", choices=["append"])
    bench.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    bench.add_argument("--json", default="bench-results/append.json")
    bench.add_argument("--quick", action="store_true", help="a short run (for tests)")
    bench.set_defaults(func=_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
