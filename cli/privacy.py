"""``dataledger privacy``: the platform's privacy controls run on its host.

``erase --subject ID`` erases a data subject (密钥销毁, docs/PRIVACY.md): a member whose
name the log holds sealed. Its key is destroyed in the key store, ``privacy.subject_erased``
is recorded by the server's system actor, and the read models are brought up to it, so
the API, the read models, an export and a rebuild show ``[erased]``; the log, its proofs,
``chain verify`` and ``audit replay`` still pass. Idempotent. Exit 0 erased (now or
before), 1 refused by the ledger (a name recorded in clear, before names were sealed) or
not yet scrubbed from the key store's files (run it again), 2 an unknown subject.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from cli.common import build_or_exit, load_settings

if TYPE_CHECKING:
    from cli.common import Subcommands


def register(sub: Subcommands) -> None:
    privacy = sub.add_parser("privacy", help="personal data in the log (docs/PRIVACY.md)")
    privacy_sub = privacy.add_subparsers(dest="privacy_command", required=True)
    erase = privacy_sub.add_parser(
        "erase", help="destroy a data subject's key (a member id) and record "
        "privacy.subject_erased: its name reads [erased] everywhere from then on")
    erase.add_argument("--subject", required=True, metavar="ID",
                       help="the subject: a member's id")
    erase.set_defaults(func=_erase)


def _erase(args: argparse.Namespace) -> int:
    from core.sealed import key_id_of
    from domain.erasure import erase_subject
    from domain.errors import DomainError
    from domain.participant import Participant
    from privacy.erase import UnknownSubject, erase
    from privacy.keystore import KeyStoreBusy
    from projections.participants import participant_of_member
    from runtime.build import SYSTEM

    container = build_or_exit(load_settings(), start_background=False)
    seqs: list[int] = []

    def find(subject: str) -> tuple[str, list[str]] | None:
        """The member's participant (read model), and its name's key (the log itself)."""
        with container.engine.connect() as conn:
            pid = participant_of_member(conn, subject)
        if pid is None:
            return None
        member = Participant.replay(pid, container.store.load(pid)).members.get(subject)
        key_id = None if member is None else key_id_of(member.name)
        return pid, [] if key_id is None else [key_id]

    def record(subject: str, participant: str) -> bool:
        result = container.ledger.execute(erase_subject, SYSTEM, subject,
                                          participant_id=participant)
        seqs.extend(result.seqs)
        return bool(result.body["recorded"])

    try:
        done = erase(container.keystore, args.subject, find=find,
                     forget=container.store.forget_answers, record=record)
        container.runner.catch_up()
    except UnknownSubject as exc:
        print(f"dataledger privacy erase: --subject: {exc}", file=sys.stderr)
        return 2
    except (DomainError, KeyStoreBusy) as exc:
        print(f"dataledger privacy erase: refused: {exc}", file=sys.stderr)
        return 1
    finally:
        container.close()
    key = "key destroyed" if done.keys_destroyed else "no key left (destroyed before)"
    event = (f"privacy.subject_erased recorded at seq {seqs[-1]}" if done.recorded
             else "privacy.subject_erased recorded before")
    print(f"subject {done.subject_id} (member of participant {done.participant_id}): "
          f"{key}; {done.answers_forgotten} idempotency record(s) naming it deleted; "
          f"{event}; read models refreshed")
    return 0
