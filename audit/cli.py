"""``dataledger audit``: the regulator's and any verifier's offline checks.

Each subcommand is a function ``add_<name>(audit_sub)`` listed in :data:`SUBCOMMANDS`; to add
one, write its ``add_`` function and list it. Exit codes: 0 all holds, 1 something is off
(named), 2 a usage error (a bad argument, an unreadable file).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from audit.replay_cli import add_replay

#: the ``dataledger`` subcommands object (argparse's private type; see cli/common.py)
Subcommands = Any


def register(sub: Subcommands) -> None:
    """Add the ``audit`` group and its subcommands to ``dataledger``."""
    audit = sub.add_parser("audit", help="offline checks of the log against your own keys")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    for add in SUBCOMMANDS:
        add(audit_sub)


def _usage(command: str, message: str) -> int:
    print(f"dataledger audit {command}: {message}", file=sys.stderr)
    return 2


# -- verify-proof -------------------------------------------------------------------------
def add_verify_proof(audit_sub: Subcommands) -> None:
    verify = audit_sub.add_parser(
        "verify-proof", help="check a clean self-proof (from `dataledger forensics "
        "self-proof`) offline against a trust file; exit 1 naming what is off")
    verify.add_argument("proof", type=Path, metavar="PROOF.json", help="the proof document")
    verify.add_argument("--trust", required=True, type=Path, metavar="FILE",
                        help="the trust document (log key, witnesses, quorum) you took out of "
                        "band, e.g. `dataledger chain trust --out FILE` on the operator's "
                        "machine checked with each witness; never one the proof came with")
    verify.add_argument("--accept-unwitnessed", action="store_true", help="check against a "
                        "trust file of quorum 0 all the same (refused otherwise: no witness "
                        "would vouch for the log, the operator alone could make a proof that "
                        "passes); the sentence then says so")
    verify.set_defaults(func=_verify_proof)


def _verify_proof(args: argparse.Namespace) -> int:
    """Check the proof; print the sentence (exit 0) or what is off (exit 1)."""
    from audit.selfproof import SelfProofError, verify_self_proof
    from chain.trust import TrustDocumentError, TrustedKeys

    try:
        keys = TrustedKeys.from_file(args.trust)
    except TrustDocumentError as exc:
        return _usage("verify-proof", f"--trust: {exc}")
    if keys.quorum == 0 and not args.accept_unwitnessed:
        return _usage("verify-proof", f"--trust: {args.trust} has quorum 0: no witness would "
                      "vouch for the log, so a proof the operator made alone would pass; give "
                      "--accept-unwitnessed to check it anyway")
    try:
        doc = json.loads(args.proof.read_text(encoding="utf-8"))
    except OSError as exc:
        return _usage("verify-proof", f"{args.proof}: {exc.strerror or exc}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"FAILED: {args.proof} is not a JSON document: {exc}")
        return 1
    try:
        verdict = verify_self_proof(doc, keys)
    except SelfProofError as exc:
        print(f"FAILED: {args.proof}: {exc}")
        return 1
    print(verdict.sentence() + ".")
    for event in verdict.within:
        print(f"  seq {event.seq}  {event.at.isoformat().replace('+00:00', 'Z')}  "
              f"{event.type_name}")
    outside = len(verdict.events) - len(verdict.within)
    if outside:
        print(f"  ({outside} more of its events on it, outside the period, were checked too)")
    return 0


#: the subcommands of ``dataledger audit``, in the order ``--help`` lists them
SUBCOMMANDS: list[Callable[[Subcommands], None]] = [add_replay, add_verify_proof]
