"""``dataledger demo finance``, its last step: what each party saw, each claim checked.

- each provider: the events it may read and its own node's files; none of the bank's codes;
- the aggregation node: the blinded request (its commitment, its size), the masked parts; the
  platform's databases hold none of the codes the bank asked about outside the table;
- the bank: its rows (the sums), no provider's part (no delivery, no layout);
- the regulator: the ledger's record of each query (commitment, size, answer hash), checked
  against the bytes the bank kept, and every decision's signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chain.bls import WitnessPublicKey, cosignatures, trust_witness
from chain.checkpoint import open_checkpoint
from chain.note import Verifier
from chain.verify import VerificationError, verify_inclusion
from client.platform import PlatformError
from core.decision import event_signature_verifies, key_id
from core.record import leaf_hash
from demo.harness import say

if TYPE_CHECKING:
    from demo.finance import Finance


def files_holding(roots: Iterable[Path], needles: Iterable[str]) -> dict[Path, set[str]]:
    """Each file under ``roots`` (a root may be a file) whose bytes hold one of ``needles`` in
    clear (UTF-8), with the needles it holds."""
    wanted = [(n, n.encode()) for n in needles]
    found: dict[Path, set[str]] = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in paths:
            try:
                data = path.read_bytes()
            except OSError:  # a socket or a file that went away
                continue
            hits = {n for n, raw in wanted if raw in data}
            if hits:
                found[path] = hits
    return found


def report(demo: Finance, order: str, joint: dict[str, Any]) -> None:
    print("\n9. What each party saw", flush=True)
    providers_saw(demo)
    aggregation_node_saw(demo, joint)
    bank_saw(demo, order, joint)
    regulator_saw(demo, order, joint)
    verify_included(demo, "joint.queried")
    verify_signatures(demo)


def providers_saw(demo: Finance) -> None:
    """No provider's reads of the log, nor its node's logs, hold a queried code; no file of
    its node holds a code the bank asked about outside the table."""
    codes = demo.queries.codes
    for p in demo.providers.values():
        events = demo.api.events(p.party)
        text = json.dumps(events, ensure_ascii=False)
        queried = [e for e in events if e["type"] == "joint.queried"]
        demo.check(f"{p.view}: none of the {len(codes)} queried codes in the "
                   f"{len(events)} events it may read", not any(c in text for c in codes))
        say(p.name, f"saw {len(queried)} hidden quer{'y' if len(queried) == 1 else 'ies'} "
            "on the ledger: "
            + (", ".join(f"commitment {e['payload']['request_commitment'][:12]}… of "
                         f"{e['payload']['request_size']} codes" for e in queried) or "none")
            + "; no code")
    node = demo.data_dir / "node"
    logs = [p for p in node.rglob("*.log") if p.is_file()]
    server_log = demo.data_dir / "serve.log"  # the nodes' operational lines go there
    in_logs = files_holding([*logs, server_log], codes)
    demo.check(f"the providers' node logs ({len(logs)} private.log files) and the server's "
               "log (with the nodes' operational lines) name none of the queried codes",
               not in_logs)
    outside = files_holding([node], demo.queries.outsiders)
    demo.check("no file of any provider's node holds a code the bank asked about outside "
               "the table", not outside)
    say("providers", "their nodes ran the model and masked their parts before the bank asked "
        "anything; the query never reached them: their node directories hold none of the "
        f"{len(demo.queries.outsiders)} codes outside the table, their logs none of the "
        f"{len(codes)} queried")


def aggregation_node_saw(demo: Finance, joint: dict[str, Any]) -> None:
    """The node got the blinded request only: its commitment and size are what it recorded;
    the platform's databases hold no code asked about outside the table."""
    answer = demo.queries.answers[0]
    joint = demo.api.joint(demo.regulator, str(joint["id"]))  # after the queries
    commitment = hashlib.sha256(answer.request).hexdigest()
    demo.check("the aggregation node's record of the bank's query is the blinded request's "
               "commitment and size", answer.recorded["request_commitment"] == commitment
               and answer.recorded["request_size"] == len(answer.rows))
    stores = [p for p in demo.data_dir.glob("*.db*") if p.is_file()]
    outside = files_holding(stores, demo.queries.outsiders)
    demo.check(f"the platform's databases ({', '.join(sorted(p.name for p in stores))}) hold "
               "none of the codes the bank asked about outside the table", not outside)
    say("aggregation node", f"received {len(joint['parts'])} masked parts (random-looking "
        f"vectors; only their sum has meaning) and {joint['queries']} blinded requests "
        f"({joint['queried']} group elements in all): request {commitment[:16]}… holds "
        f"{len(answer.request)} bytes and no code")


def bank_saw(demo: Finance, order: str, joint: dict[str, Any]) -> None:
    """The bank holds its rows, the sums; no provider's part nor the layout reached it."""
    rows = {c: r for a in demo.queries.answers for c, r in a.rows.items() if r is not None}
    say("bank", f"credit points for its {len(rows)} applicants in the table (the sum of the "
        "three views; it never saw a view alone):")
    for code, row in sorted(rows.items(), key=lambda kv: -int(kv[1]["points"]))[:5]:
        say("bank", f"  {code}  {int(row['points']):>4} points")
    refused = []
    for comp in demo.api.computations(demo.bank, order):
        if comp["execution"] == 1:
            try:
                demo.api.delivery(demo.bank, comp["computation_id"])
            except PlatformError as exc:
                refused.append(exc.status)
    demo.check("the bank can fetch no provider's part of the joint computation (no delivery)",
               len(refused) == len(demo.providers))
    try:
        demo.api.call("GET", f"/joint/{joint['id']}/layout", demo.bank)
        layout_status = 200
    except PlatformError as exc:
        layout_status = exc.status
    demo.check("the bank may not read the layout (the key universe)", layout_status == 403)
    code, row = next(iter(rows.items()))
    parts = demo.points[code]
    say("bank", f"e.g. {code}: {row['points']} points; the providers' parts (market "
        f"{parts['market']}, tax {parts['tax']}, power {parts['power']}: the demo's own "
        "reference) never left their datasites unmasked")


def regulator_saw(demo: Finance, order: str, joint: dict[str, Any]) -> None:
    """The ledger's record of the queries: each commitment, size and answer hash, matched
    against the bytes the bank kept; no code anywhere in the log."""
    events = demo.api.events(demo.regulator)
    types = Counter(e["type"] for e in events)
    text = json.dumps(events, ensure_ascii=False)
    demo.check(f"none of the queried codes in the whole log ({len(events)} events)",
               not any(c in text for c in demo.queries.codes))
    queried = [e["payload"] for e in events if e["type"] == "joint.queried"]
    first = demo.queries.answers[0]
    demo.check("the ledger's first query record matches the bank's request and response "
               "bytes", bool(queried)
               and queried[0]["request_commitment"] == hashlib.sha256(first.request).hexdigest()
               and queried[0]["answer_hash"] == hashlib.sha256(first.response).hexdigest()
               and queried[0]["request_size"] == len(first.rows))
    sizes = len(demo.queries.codes) + len(demo.queries.cli_codes)
    view = demo.api.joint(demo.regulator, str(joint["id"]))
    demo.check(f"the regulator counts {sizes} codes in {len(queried)} hidden queries, the "
               "contract's query_count, and the refusal past it",
               len(queried) == view["queries"] == 2 and view["queried"] == sizes
               and sum(q["request_size"] for q in queried) == sizes
               and types["usage.refused"] >= 1)
    execution_1 = {c["computation_id"] for c in demo.api.computations(demo.regulator, order)
                   if c["execution"] == 1}
    delivered = {e["payload"].get("computation_id") for e in events
                 if e["type"] == "delivery.made"}
    demo.check("no delivery of the joint computation: only the trial's per-provider results",
               not delivered & execution_1 and types["delivery.made"] == len(demo.providers))
    say("regulator", f"the whole log: {len(events)} events; joint: {types['joint.started']} "
        f"started, {types['joint.part_received']} masked parts, {types['joint.published']} "
        f"published, {types['joint.queried']} hidden queries ("
        + ", ".join(f"{q['request_size']} codes, commitment {q['request_commitment'][:12]}…, "
                    f"answer {q['answer_hash'][:12]}…" for q in queried)
        + f"); {types['delivery.made']} deliveries (the trial's), "
        f"{types['dataset.data_loaded']} data loads (hashes only)")


def verify_signatures(demo: Finance) -> None:
    """Every decision of the run was signed by the member who made it (签名验签): each
    verifies from its event and the key that member registered on the ledger alone."""
    events = demo.api.events(demo.regulator)
    keys = {key_id(e["payload"]["public_key"]): e["payload"]["public_key"]
            for e in events if e["type"] == "participant.key_registered"}
    founded = demo.market.platform.id  # admitted by the system at first start, unsigned
    decisions = [e["payload"]["signature"] for e in events
                 if "signature" in e["payload"] and e["originator_id"] != founded]
    verified = [s for s in decisions
                if s is not None and event_signature_verifies(keys.get(s["key_id"], ""), s)]
    demo.check(f"all {len(decisions)} decisions are signed and verify from their events",
               bool(decisions) and len(verified) == len(decisions))
    say("regulator", f"{len(verified)} of {len(decisions)} decisions (admissions, node keys, "
        "opinions, grants, listing, contract steps) verify with their member's registered key, "
        "from the events alone")


def verify_included(demo: Finance, event_type: str) -> None:
    """The bank proves its last ``event_type`` event is in the log a quorum of witnesses
    signed."""
    keys = demo.api.witnesses(demo.bank)
    witnesses = [trust_witness(WitnessPublicKey.parse(w["vkey"])) for w in keys["witnesses"]]
    found = [e for e in demo.api.events(demo.bank) if e["type"] == event_type]
    if not demo.check(f"the bank can see its {event_type} events in the log", bool(found)):
        return
    target = found[-1]
    deadline = time.monotonic() + 30
    while True:
        view = demo.api.latest_checkpoint(demo.bank)
        if view["size"] >= target["seq"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    checkpoint, _ = open_checkpoint(view["cosigned"], [Verifier.from_vkey(keys["log_vkey"])],
                                    keys["origin"])
    signers = len(cosignatures(view["cosigned"], witnesses))
    proof = demo.api.inclusion_proof(demo.bank, target["seq"] - 1, checkpoint.size)
    try:
        verify_inclusion(leaf_hash(base64.b64decode(target["canonical"])), target["seq"] - 1,
                         checkpoint.size, [base64.b64decode(h) for h in proof["proof"]],
                         checkpoint.root)
        ok = True
    except VerificationError as exc:
        print(f"  inclusion proof refused: {exc}", flush=True)
        ok = False
    demo.check(f"the bank verified {event_type} (seq {target['seq']}) against checkpoint "
               f"{checkpoint.size}, co-signed by {signers} of {len(witnesses)} witnesses "
               f"(quorum {keys['quorum']})", ok and signers >= keys["quorum"])
