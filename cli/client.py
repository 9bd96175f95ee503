"""``dataledger client``: a participant's side of the platform, run on its own machine.

``hidden-query`` is the bank's hidden query (隐匿查询, white paper 6.1 steps 3 to 5): the
credit codes are read here, blinded here (``client/hidden_query.py``), and only the blinded
request goes to the platform; each code's row comes back as one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cli.common import Subcommands

PROG = "dataledger client hidden-query"


def register(sub: Subcommands) -> None:
    client = sub.add_parser("client", help="a participant's side, on its own machine: "
                            "hidden-query (the bank's 隐匿查询 by credit code)")
    client_sub = client.add_subparsers(dest="client_command", required=True)
    query = client_sub.add_parser(
        "hidden-query", help="look credit codes up in an order's published joint table; the "
        "codes never leave this machine (token from $DATALEDGER_TOKEN)",
        description="Blind the codes here, post the blinded request, open the rows here. "
        "Prints one JSON line per code: {\"code\": ..., \"row\": {...} or null}. The bearer "
        "token is read from DATALEDGER_TOKEN only (never from the command line). Exit 0 on "
        "an answer, 1 when the platform refuses or the answer does not check, 2 for bad "
        "input.")
    query.add_argument("--url", default=os.environ.get("DATALEDGER_URL",
                                                       "http://127.0.0.1:8000"),
                       help="the platform (default $DATALEDGER_URL or http://127.0.0.1:8000)")
    query.add_argument("--order", required=True, metavar="ID", help="the bank's order")
    query.add_argument("--joint", metavar="ID", default=None,
                       help="the joint computation (default: the order's latest published)")
    query.add_argument("--codes-file", type=Path, metavar="FILE",
                       help="one code a line (blank lines and # comments skipped; - for "
                       "stdin): keeps the codes out of the process list")
    query.add_argument("--cache-dir", type=Path, metavar="DIR",
                       help="keep downloaded tables here (0600), so a table is fetched once")
    query.add_argument("codes", nargs="*", metavar="CODE", help="codes (or --codes-file)")
    query.set_defaults(func=hidden_query_command)


def _fail(code: int, message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def read_codes(args: argparse.Namespace) -> list[str]:
    """The codes of ``--codes-file`` or the arguments (not both); ValueError saying why."""
    if args.codes_file is not None and args.codes:
        raise ValueError("give codes either with --codes-file or as arguments, not both")
    if args.codes_file is None:
        lines = list(args.codes)
    else:
        try:
            text = (sys.stdin.read() if str(args.codes_file) == "-"
                    else args.codes_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ValueError(f"--codes-file {args.codes_file}: {reason}") from None
        lines = text.splitlines()
    codes = [c.strip() for c in lines if c.strip() and not c.strip().startswith("#")]
    if not codes:
        raise ValueError("no code given: name codes as arguments or in --codes-file")
    return codes


def hidden_query_command(args: argparse.Namespace) -> int:
    """Run the query; exit 0 with the rows, 1 on a refusal or a bad answer, 2 on bad input."""
    import httpx

    from client.hidden_query import HiddenQueryFailed, check_codes, hidden_query
    from client.platform import Platform, PlatformError

    token = os.environ.get("DATALEDGER_TOKEN", "")
    if not token:
        return _fail(2, "set DATALEDGER_TOKEN to the bank member's bearer token (it is never "
                     "read from the command line)")
    try:
        codes = check_codes(read_codes(args))
    except (ValueError, HiddenQueryFailed) as exc:
        return _fail(2, str(exc))
    try:
        with Platform.at(args.url, timeout=120) as api:
            rows = hidden_query(api, token, args.order, codes, joint_id=args.joint,
                                table_cache=args.cache_dir)
    except PlatformError as exc:
        code = 2 if exc.status in (400, 404, 413, 422) else 1
        return _fail(code, f"the platform refused: {exc.method} {exc.path}: {exc.status} "
                     f"{exc.body[:500]}")
    except HiddenQueryFailed as exc:
        return _fail(1, str(exc))
    except httpx.HTTPError as exc:
        return _fail(1, f"--url {args.url}: {exc}")
    except OSError as exc:
        return _fail(2, f"--cache-dir {args.cache_dir}: {exc.strerror or exc}")
    for code, row in rows.items():
        print(json.dumps({"code": code, "row": row}, ensure_ascii=False, sort_keys=True))
    found = sum(row is not None for row in rows.values())
    print(f"{PROG}: {len(rows)} code(s) looked up, {found} in the table", file=sys.stderr)
    return 0
