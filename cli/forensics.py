"""``dataledger forensics``: evidence a participant takes home about its own conduct.

``self-proof`` fetches the clean self-proof (清白自证) of a participant on a resource from a
running server (``GET /forensics/self-proof``, as that participant or as the regulator) and
writes it to a file for anyone to check offline with ``dataledger audit verify-proof``.
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


def register(sub: Subcommands) -> None:
    forensics = sub.add_parser("forensics", help="evidence about an actor's conduct")
    forensics_sub = forensics.add_subparsers(dest="forensics_command", required=True)
    proof = forensics_sub.add_parser(
        "self-proof", help="fetch the clean self-proof of a participant on a resource (every "
        "event it caused there, proven under an anchored checkpoint) for `dataledger audit "
        "verify-proof`")
    proof.add_argument("--actor", required=True, metavar="PARTICIPANT",
                       help="the participant id the proof is about")
    proof.add_argument("--resource", required=True, metavar="KIND:ID",
                       help="e.g. dataset:<id> (docs/INDEX.md lists the kinds)")
    proof.add_argument("--from", dest="start", metavar="T1",
                       help="RFC 3339 start of the period the verifier reports")
    proof.add_argument("--to", dest="end", metavar="T2",
                       help="RFC 3339 end of the period the verifier reports")
    proof.add_argument("--out", required=True, type=Path, metavar="PROOF.json",
                       help="where to write the proof")
    proof.add_argument("--url", default=os.environ.get("DATALEDGER_URL",
                                                       "http://127.0.0.1:8000"),
                       help="the server (default $DATALEDGER_URL or http://127.0.0.1:8000)")
    proof.add_argument("--token", default=os.environ.get("DATALEDGER_TOKEN"),
                       help="a bearer token of the participant itself or of the regulator "
                       "(default $DATALEDGER_TOKEN)")
    proof.set_defaults(func=_self_proof)


def _self_proof(args: argparse.Namespace) -> int:
    """Fetch the proof and write it; exit 1 when the server refuses, 2 on usage errors."""
    import httpx

    from client.platform import Platform, PlatformError

    if not args.token:
        print("dataledger forensics self-proof: --token: give a bearer token (or set "
              "DATALEDGER_TOKEN)", file=sys.stderr)
        return 2
    try:
        with Platform.at(args.url) as platform:
            proof = platform.self_proof(args.token, args.actor, args.resource, args.start,
                                        args.end)
    except PlatformError as exc:
        print(f"dataledger forensics self-proof: the server refused: {exc.status} "
              f"{exc.body[:500]}", file=sys.stderr)
        return 2 if exc.status == 422 else 1
    except httpx.HTTPError as exc:
        print(f"dataledger forensics self-proof: --url {args.url}: {exc}", file=sys.stderr)
        return 1
    try:
        args.out.write_text(json.dumps(proof, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        print(f"dataledger forensics self-proof: --out {args.out}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(proof['events'])} event(s) of participant {args.actor} on "
          f"{args.resource} up to size {proof['tree_size']}; check it with `dataledger audit "
          f"verify-proof {args.out} --trust FILE`")
    return 0
