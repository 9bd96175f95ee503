"""``dataledger forensics``: evidence a participant takes home about its own conduct.

``self-proof`` fetches the clean self-proof (清白自证) of a participant on a resource from a
running server (``GET /forensics/self-proof``, as that participant or as the regulator) and
writes it to a file for anyone to check offline with ``dataledger audit verify-proof``.

``trace-leak FILE`` is the platform's own tool (溯源), run on its host (it reads the watermark
key in the data directory and the log through the settings, as ``serve`` does): it reads the
watermark out of a leaked table (CSV, Parquet, JSON), compares it with every watermarked
delivery on the log, prints the delivery, contract and demander it came from with a
confidence, or "no match", and records ``forensics.leak_traced`` as the server's system
actor. Exit 0 on a match, 3 on no match (``NO_MATCH``), 2 for a file it cannot read.
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


def _trace_leak(args: argparse.Namespace) -> int:
    """Trace ``args.file`` among the deliveries and record the trace; 0 match, 3 none."""
    from sqlalchemy import select

    from cli.common import build_or_exit, load_settings
    from domain.forensics import record_leak_trace
    from privacy.trace import Candidate, read_table, trace
    from privacy.watermark import load_or_create_key
    from projections.computations import computations, deliveries
    from projections.products import products
    from runtime.build import SYSTEM

    try:
        data = args.file.read_bytes()
        table = read_table(args.file)
    except (OSError, ValueError) as exc:
        print(f"dataledger forensics trace-leak: {args.file}: {exc}", file=sys.stderr)
        return 2
    settings = load_settings()
    container = build_or_exit(settings, start_background=False)
    try:
        with container.engine.connect() as conn:
            rows = conn.execute(select(
                deliveries.c.id, deliveries.c.contract_id, deliveries.c.demander_id,
                products.c.key_column).join(computations, computations.c.id == deliveries.c.id)
                .join(products, products.c.id == computations.c.product_id)
                .where(deliveries.c.watermark.is_not(None)).order_by(deliveries.c.id)).all()
        # the products' key columns are never marked: a CSV reader may read them as numbers
        found = trace(table, load_or_create_key(settings.data_dir),
                      [Candidate(r.id, r.contract_id, r.demander_id) for r in rows],
                      skip={r.key_column for r in rows if r.key_column})
        digest = hashlib.sha256(data).hexdigest()
        done = container.ledger.execute(
            record_leak_trace, SYSTEM, file_sha256=digest,
            match=None if found.match is None else found.match._asdict(),
            evidence=found.record())
        container.runner.catch_up()
    finally:
        container.close()
    _print_trace(args, digest, found, done.body["trace_id"], done.seqs)
    return 0 if found.match is not None else NO_MATCH


def _print_trace(args: argparse.Namespace, digest: str, found: Any, trace_id: str,
                 seqs: list[int]) -> None:
    record = {"file": str(args.file), "file_sha256": digest,
              "match": None if found.match is None else found.match._asdict(),
              **found.record(), "trace_id": trace_id, "seqs": seqs}
    if args.json:
        print(json.dumps(record, ensure_ascii=False))
        return
    votes = record["votes"]
    print(f"file        {args.file} (sha256 {digest})")
    if found.match is None:
        print(f"no match    among {found.candidates} watermarked deliveries (best candidate's "
              f"p-value {record['p_value']}; a match needs <= 1e-09)")
    else:
        m = found.match
        print(f"delivery    {m.delivery_id}\ncontract    {m.contract_id}\n"
              f"demander    {m.demander_id}\nconfidence  {record['confidence']} "
              f"(Bonferroni over {found.candidates} watermarked deliveries)")
    print(f"votes       {votes['cast']} cast, {votes['bits_decided']} codeword bits decided, "
          f"{votes['bits_agreeing']} agreeing with the best candidate")
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
