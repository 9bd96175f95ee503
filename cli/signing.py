"""``dataledger keys new`` and ``dataledger sign``: a member's decision key, and a decision
signed with it (签名), for an integrator that does not use ``client/`` (docs/SIGNING.md).

``keys new --out FILE`` writes a new Ed25519 private key as PEM (mode 0600) and prints its
key id and the public key to register (``POST /participants/{id}/keys``). ``sign --key FILE
--command FILE`` reads a command file ``{"command", "aggregate_id", "aggregate_version",
"member_id", "body"}`` and prints the body to send, its ``signature`` added. A bad file or
key is a one-line error and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cli.common import Subcommands

#: the command file's fields and their JSON types
COMMAND_FIELDS: dict[str, type] = {"command": str, "aggregate_id": str,
                                   "aggregate_version": int, "member_id": str, "body": dict}


class Refused(Exception):
    """A bad input file or key: the message says which and why (exit 2)."""


def register(sub: Subcommands) -> None:
    keys = sub.add_parser("keys", help="a member's Ed25519 key for signed decisions")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    new = keys_sub.add_parser("new", help="write a new private key (PEM, 0600); print its "
                              "key id and the public key to register")
    new.add_argument("--out", type=Path, required=True, help="the private key file to write")
    new.add_argument("--force", action="store_true", help="overwrite an existing file")
    new.set_defaults(func=_keys_new)
    sign = sub.add_parser("sign", help="sign a decision: print its body with the signature")
    sign.add_argument("--key", type=Path, required=True, help="the member's private key (PEM)")
    sign.add_argument("--command", type=Path, required=True, dest="command_file",
                      help='a JSON file (- for stdin): {"command", "aggregate_id", '
                      '"aggregate_version", "member_id", "body"}')
    sign.set_defaults(func=_sign)


def _fail(what: str, message: str) -> int:
    print(f"dataledger {what}: {message}", file=sys.stderr)
    return 2


def _keys_new(args: argparse.Namespace) -> int:
    from client.signing import public_key, write_key
    from core.decision import new_private_key

    out: Path = args.out
    if out.exists() and not args.force:
        return _fail("keys new", f"{out} exists; refusing to overwrite a key (--force to)")
    key = new_private_key()
    try:
        write_key(out, key)
    except OSError as exc:
        return _fail("keys new", f"cannot write {out}: {exc.strerror or exc}")
    text, kid = public_key(key)
    json.dump({"key_id": kid, "public_key": text, "private_key_file": str(out)}, sys.stdout,
              indent=2)
    print()
    return 0


def _sign(args: argparse.Namespace) -> int:
    from core.decision import signed_body

    try:
        key = _read_key(args.key)
        cmd = _read_command(args.command_file)
        body = signed_body(key, cmd["command"], cmd["aggregate_id"],
                           cmd["aggregate_version"], cmd["member_id"], cmd["body"])
    except Refused as exc:
        return _fail("sign", str(exc))
    except ValueError as exc:  # an unknown command, a body with no canonical form
        return _fail("sign", f"{args.command_file}: {exc}")
    json.dump(body, sys.stdout, ensure_ascii=False, indent=2, sort_keys=True)
    print()
    return 0


def _read_key(path: Path) -> Any:
    from client.signing import read_key
    from core.decision import DecisionFormatError

    try:
        return read_key(path)
    except OSError as exc:
        raise Refused(f"cannot read the key {path}: {exc.strerror or exc}") from None
    except DecisionFormatError as exc:
        raise Refused(f"{path}: {exc}") from None


def _read_command(path: Path) -> dict[str, Any]:
    """The command file, checked: an object with each of COMMAND_FIELDS of its type."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
        cmd = json.loads(text)
    except OSError as exc:
        raise Refused(f"cannot read the command file {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(f"{path} is not a JSON file: {exc}") from None
    if not isinstance(cmd, dict):
        raise Refused(f"{path} must hold a JSON object with {', '.join(COMMAND_FIELDS)}")
    for name, kind in COMMAND_FIELDS.items():
        value = cmd.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise Refused(f"{path}: {name!r} must be a JSON {_json_type(kind)}")
    if cmd["aggregate_version"] < 0 or not cmd["aggregate_id"] or not cmd["member_id"]:
        raise Refused(f"{path}: aggregate_id and member_id must not be empty, "
                      "aggregate_version not negative")
    if "signature" in cmd["body"]:
        raise Refused(f"{path}: the body holds a signature already; give it unsigned")
    unknown = set(cmd) - set(COMMAND_FIELDS)
    if unknown:
        raise Refused(f"{path}: unknown field(s) {', '.join(sorted(unknown))}")
    return cmd


def _json_type(kind: type) -> str:
    return {str: "string", int: "integer", dict: "object"}[kind]
