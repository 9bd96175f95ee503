"""``dataledger events``: the event catalogue."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cli.common import Subcommands


def register(sub: Subcommands) -> None:
    events = sub.add_parser("events", help="the event catalogue")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    events_sub.add_parser("catalogue", help="print the JSON schema of every event type"
                          ).set_defaults(func=_catalogue)


def _catalogue(_: argparse.Namespace) -> int:
    from events.catalogue import json_schemas

    json.dump(json_schemas(), sys.stdout, indent=2, ensure_ascii=False, sort_keys=True)
    print()
    return 0
