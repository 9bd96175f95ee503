"""``dataledger forensics``: evidence a participant takes home about its own conduct.

``self-proof`` fetches the clean self-proof (清白自证) of a participant on a resource from a
running server (``GET /forensics/self-proof``, as that participant or as the regulator) and
writes it to a file for anyone to check offline with ``dataledger audit verify-proof``.

``trace-leak FILE`` is the platform's own tool (溯源), run on its host (it reads the watermark
key in the data directory and the log through the settings, as ``serve`` does): it reads the
watermark out of a leaked table (CSV, Parquet, JSON), compares it with every watermarked
delivery on the log, prints the delivery, contract and demander it came from with a
confidence, or "no match", and records ``forensics.leak_traced`` as the server's system
actor. Every copy under the threshold is named (several: a merged copy); the operator's and
the regulator's copies are their own (marked for them at access), so a trace names them.
Exit 0 on a match, 3 on no match (``NO_MATCH``), 2 (``CANNOT``, nothing recorded) for a
file it cannot read, no usable watermark key in the data directory (it never makes one),
or a key whose id is on none of the watermarked deliveries.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    leak = forensics_sub.add_parser(
        "trace-leak", help="name the delivery (contract, demander) a leaked table came from, "
        "by its watermark, with a confidence; or no match (exit 3); records "
        "forensics.leak_traced (the platform's host: its data directory and database)")
    leak.add_argument("file", type=Path, metavar="FILE",
                      help="the leaked copy: CSV, Parquet or JSON (rows or columns)")
    leak.add_argument("--json", action="store_true", help="print the answer as one JSON object")
    leak.set_defaults(func=_trace_leak)


#: the exit code of ``trace-leak`` when the file matches no delivery
NO_MATCH = 3
#: the exit code of ``trace-leak`` when it cannot trace (unreadable file, no usable key, a
#: key that marked none of the watermarked deliveries): nothing is recorded
CANNOT = 2


def _candidates(conn: Any, own_key_id: str) -> tuple[list[Any], set[str], int]:
    """The copies to compare a leak with (each watermarked delivery's demander copy, and the
    copies its other readers were served), the products' key columns, and how many
    watermarked deliveries carry another key's id."""
    from sqlalchemy import select

    from privacy.trace import Candidate
    from projections.computations import computations, deliveries
    from projections.forensics import delivery_readers
    from projections.products import products

    rows = conn.execute(select(
        deliveries.c.id, deliveries.c.contract_id, deliveries.c.demander_id,
        deliveries.c.watermark, products.c.key_column)
        .join(computations, computations.c.id == deliveries.c.id)
        .join(products, products.c.id == computations.c.product_id)
        .where(deliveries.c.watermark.is_not(None)).order_by(deliveries.c.id)).all()
    readers: dict[str, list[str]] = {}
    for r in conn.execute(select(delivery_readers.c.delivery_id, delivery_readers.c.reader_id)
                          .order_by(delivery_readers.c.reader_id)):
        readers.setdefault(r.delivery_id, []).append(r.reader_id)
    mine = [r for r in rows if (r.watermark or {}).get("key_id") in (None, own_key_id)]
    out = []
    for r in mine:
        out.append(Candidate(r.id, r.contract_id, r.demander_id))
        out += [Candidate(r.id, r.contract_id, r.demander_id, reader)
                for reader in readers.get(r.id, ()) if reader != r.demander_id]
    return out, {r.key_column for r in mine if r.key_column}, len(rows) - len(mine)


def _trace_leak(args: argparse.Namespace) -> int:
    """Trace ``args.file`` among the copies served and record the trace; 0 match, 3 none,
    2 when it cannot trace (nothing recorded)."""
    from cli.common import build_or_exit, load_settings
    from domain.forensics import record_leak_trace
    from privacy.trace import read_table, trace
    from privacy.watermark import KeyMissing, key_id, load_key
    from runtime.build import SYSTEM

    try:
        data = args.file.read_bytes()
        table = read_table(args.file)
    except (OSError, ValueError) as exc:
        print(f"dataledger forensics trace-leak: {args.file}: {exc}", file=sys.stderr)
        return CANNOT
    settings = load_settings()
    try:  # never a fresh key: a trace under a key that marked nothing would exonerate
        key = load_key(settings.data_dir)
    except KeyMissing as exc:
        print(f"dataledger forensics trace-leak: {exc}; nothing recorded", file=sys.stderr)
        return CANNOT
    container = build_or_exit(settings, start_background=False)
    try:
        with container.engine.connect() as conn:
            candidates, skip, foreign = _candidates(conn, key_id(key))
        if foreign and not candidates:
            print(f"dataledger forensics trace-leak: the watermark key in {settings.data_dir} "
                  f"(key id {key_id(key)}) marked none of the {foreign} watermarked "
                  "deliveries on this log (another host's key, or a wrong data directory); "
                  "nothing recorded", file=sys.stderr)
            return CANNOT
        # the products' key columns are never marked: a CSV reader may read them as numbers
        found = trace(table, key, candidates, skip=skip)
        digest = hashlib.sha256(data).hexdigest()
        done = container.ledger.execute(record_leak_trace, SYSTEM, file_sha256=digest,
                                        evidence=found.record())
        container.runner.catch_up()
    finally:
        container.close()
    _print_trace(args, digest, found, done.body["trace_id"], done.seqs, foreign)
    return 0 if found.matches else NO_MATCH


def _print_trace(args: argparse.Namespace, digest: str, found: Any, trace_id: str,
                 seqs: list[int], foreign: int) -> None:
    from privacy.trace import SHIFTS

    record = {"file": str(args.file), "file_sha256": digest,
              "match": None if found.match is None else found.match._asdict(),
              **found.record(), "other_key_deliveries": foreign, "trace_id": trace_id,
              "seqs": seqs}
    if args.json:
        print(json.dumps(record, ensure_ascii=False))
        return
    votes = record["votes"]
    print(f"file        {args.file} (sha256 {digest})")
    if not found.matches:
        print(f"no match    among {found.candidates} copies of watermarked deliveries (best "
              f"candidate's p-value {record['p_value']}; a match needs <= 1e-09)")
    if found.merged:
        print(f"MERGED      {len(found.matches)} copies match: a copy merged from several, "
              "or readers who colluded (none is picked among them)")
    for m in found.matches:
        c = m.candidate
        reader = "the demander's copy" if c.reader_id is None else f"{c.reader_id}'s copy"
        print(f"delivery    {c.delivery_id}\ncontract    {c.contract_id}\n"
              f"demander    {c.demander_id}\nreader      {reader}\n"
              f"confidence  1 - {m.p_value:.3g} (Bonferroni over {found.candidates} copies "
              f"and {len(SHIFTS)} shifts; {m.agreeing} of {found.bits} bits agree)")
    print(f"votes       {votes['cast']} cast, {votes['bits_decided']} codeword bits decided, "
          f"{votes['bits_agreeing']} agreeing with the best candidate"
          + (f", integers shifted by {-found.shift} undone" if found.shift else ""))
    if foreign:
        print(f"warning     {foreign} watermarked deliveries carry another key's id: not "
              "compared")
    print(f"recorded    forensics.leak_traced {trace_id} (seq {', '.join(map(str, seqs))})")


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
