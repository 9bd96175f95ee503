"""`dataledger bench compute`: a provider's compute node end to end, and the publisher.

For each backend it starts the real server (``dataledger serve`` from this venv, on a
free loopback port, a fresh temporary data dir; PostgreSQL in a fresh schema dropped at
the end), checkpoints cut every ``checkpoint_s`` seconds with the server's two in-process
witnesses, and builds over HTTP one provider / dataset / scenario / authorization / listed
product (``bench/compute_market.py``). Then, in a subprocess
of the compute venv (``.venv-compute/bin/python -m bench.compute_node <config>``,
``bench/compute_node.py``; PySyft is never imported in the server's venv):

* an in-process PySyft datasite is launched and a synthetic enterprise table
  (``rows`` rows) loaded through ``ComputeNode.load`` (recorded on the ledger);
* the node follows the log in a thread, as a deployed node does: first
  ``ComputeNode.follow_http`` (``GET /ledger/events`` from the start, ``poll_s`` after an
  empty page), then, when NATS answers at ``nats://127.0.0.1:4222``, ``follow_nats`` (the
  server was started with ``DATALEDGER_NATS_URL`` and a stream / subject prefix of this
  run's own, ``BENCH_<random>`` / ``bench<random>``, deleted at the end; the durable
  consumer catches up from the stream's start, re-handling the earlier contracts, which
  the ledger answers as already succeeded). For each follower:
* one warm-up contract is approved and delivered (not counted);
* **sequential**: ``sequential`` times, a contract is approved over HTTP and the bench
  waits until the node's ``on_outcome`` callback reports it delivered; the time is from
  the final approval's HTTP call returning (``contract.approved`` committed) to that
  callback (the node's ``POST /computations/<id>/result`` returned: ``delivery.made``
  committed);
* **at once**: ``concurrent`` contracts are prepared, their final approvals sent back to
  back, and the bench waits until all are delivered; the same time per contract.
* The split of each time: when the node first handled the event, when the bench's own
  watcher (``GET /ledger/checkpoints/latest?anchored=true`` every ``watch_s``) first saw
  an anchored checkpoint covering it, when the execution started (the node starts it as
  soon as it sees the event, before it is anchored), and the execution itself.

Then **baseline**: the product's function (the same source) run directly with pandas on
the same private table (read from the same CSV) in the same process, ``baseline_runs``
times, each beside the same function run in the node's sandbox (a warm confined worker,
the table over a pipe, JSON back): goal, under 100 ms added at p50. The server runs
without its embedded node host (``DATALEDGER_COMPUTE_NODE=false``): the node measured is
the bench's own.

Goals for the latency: one contract at a time, p50 within the checkpoint interval + 1 s;
``concurrent`` approved at once, p50 within twice the single contract's p50.
Then ``bench.publisher.measure`` (the outbox publisher's events/s to JetStream beside the
bare nats-py rate, goal >= 0.5x) on the same backend, at ``nats://127.0.0.1:4222``; the
row is skipped with a note when NATS does not answer. Last, once for all backends,
``bench.compute_startup`` (compute venv): a datasite's start-up after the node host or one
node process is killed and started again, three providers; goal, under 5 s per provider.
Every wait is bounded, every process started here is stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.append.server import free_port
from bench.compute_market import FULL, QUICK, RESULT_MARK, SCORE, Sizes, build_market, summary
from bench.table import all_met, now
from client.platform import Platform
from runtime.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / ".venv" / "bin" / "dataledger"
NATS_URL = "nats://127.0.0.1:4222"


def _nats_up(url: str = NATS_URL) -> bool:
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _delete_stream(name: str) -> str | None:
    """Delete a JetStream stream (best effort, bounded); what went wrong, if anything."""
    import asyncio

    import nats

    async def delete() -> None:
        nc = await nats.connect(NATS_URL, connect_timeout=2, max_reconnect_attempts=1)
        try:
            await asyncio.wait_for(nc.jetstream().delete_stream(name), timeout=10)
        finally:
            await nc.close()

    try:
        asyncio.run(asyncio.wait_for(delete(), timeout=20))
    except Exception as exc:  # noqa: BLE001 - reported as a note
        return f"stream {name} not deleted: {exc!r}"[:300]
    return None


def _server_env(backend: str, sizes: Sizes, tmp: Path, admin: str,
                nats_cfg: dict[str, str] | None) -> tuple[dict[str, str], str | None]:
    """The server's environment, and the PostgreSQL schema made for it (None: SQLite)."""
    from bench.databases import PG_URL, check_postgres
    from events.url import DatabaseURL

    env = {**os.environ, "DATALEDGER_DATA_DIR": str(tmp / "ledger"),
           "DATALEDGER_ADMIN_TOKEN": admin,
           "DATALEDGER_CHECKPOINT_EVERY_SECONDS": str(sizes.checkpoint_s),
           # the bench runs its own node; no embedded node host competing for the cores
           "DATALEDGER_COMPUTE_NODE": "false", "DATALEDGER_NATS_URL": ""}
    env.pop("VIRTUAL_ENV", None)
    if nats_cfg is not None:
        env.update({"DATALEDGER_NATS_URL": NATS_URL,
                    "DATALEDGER_NATS_STREAM": nats_cfg["stream"],
                    "DATALEDGER_NATS_SUBJECT_PREFIX": nats_cfg["prefix"]})
    schema = None
    if backend == "postgresql":
        check_postgres(DatabaseURL.parse(PG_URL))
        schema = f"bench_{secrets.token_hex(4)}"
        env["DATALEDGER_DATABASE_URL"] = f"{PG_URL}?schema={schema}"
    else:
        env.pop("DATALEDGER_DATABASE_URL", None)
    return env, schema


def _run_node_part(cfg: dict[str, Any], tmp: Path, sizes: Sizes,
                   started: list[subprocess.Popen[Any]]) -> dict[str, Any]:
    """``bench.compute_node`` in the compute venv on ``cfg``; its result."""
    (tmp / "node").mkdir()
    (tmp / "node.json").write_text(json.dumps(cfg))
    node_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    node_env.pop("VIRTUAL_ENV", None)
    node = subprocess.Popen([str(Settings().compute_python), "-m", "bench.compute_node",
                             str(tmp / "node.json")], cwd=ROOT, env=node_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started.append(node)
    try:
        out, err = node.communicate(timeout=sizes.node_timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"compute node part exceeded {sizes.node_timeout_s:g} s") from exc
    lines = [ln for ln in out.splitlines() if ln.startswith(RESULT_MARK)]
    if not lines:
        raise RuntimeError(f"compute node part gave no result (rc {node.returncode}): "
                           f"{err[-1500:]}")
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_MARK):])
    if "error" in result:
        raise RuntimeError(f"compute node part: {result['error']} {err[-800:]}")
    return result


def measure_compute(backend: str, sizes: Sizes, nats_follow: bool,
                    notes: list[str]) -> dict[str, Any]:
    """Start the server, build the market, run the node part in the compute venv; with
    ``nats_follow`` the server publishes to a JetStream stream of its own (deleted at the
    end) and the node follows it too, after following HTTP."""
    tmp = Path(tempfile.mkdtemp(prefix=f"dataledger-bench-compute-{backend}-"))
    admin = "dl_bench_compute_admin_" + secrets.token_hex(12)
    tag = secrets.token_hex(5)
    nats_cfg = None
    if nats_follow:
        nats_cfg = {"url": NATS_URL, "stream": f"BENCH_{tag.upper()}", "prefix": f"bench{tag}",
                    "durable": f"bench-node-{tag}"}
    schema = None
    started: list[subprocess.Popen[Any]] = []
    try:
        env, schema = _server_env(backend, sizes, tmp, admin, nats_cfg)
        url = f"http://127.0.0.1:{free_port()}"
        log_path = tmp / "server.log"
        with log_path.open("wb") as log_file:
            server = subprocess.Popen([str(SERVER), "serve", "--port", url.rsplit(":", 1)[1]],
                                      env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                      cwd=tmp)
            started.append(server)
            api = Platform.at(url)
            if not api.wait_until_up(30, alive=lambda: server.poll() is None):
                raise RuntimeError("server did not start: "
                                   + log_path.read_text(errors="replace")[-1500:])
            market = build_market(api, admin)
            (tmp / "trust.json").write_text(json.dumps(api.witnesses(admin)))
            cfg = {**market, "url": url, "admin_token": admin, "tmp": str(tmp / "node"),
                   "trust_file": str(tmp / "trust.json"), "code": SCORE,
                   "sizes": asdict(sizes), "nats": nats_cfg}
            return _run_node_part(cfg, tmp, sizes, started)
    finally:
        _clean_up(backend, started, nats_cfg, schema, notes)
        shutil.rmtree(tmp, ignore_errors=True)


def _clean_up(backend: str, started: list[subprocess.Popen[Any]],
              nats_cfg: dict[str, str] | None, schema: str | None, notes: list[str]) -> None:
    """Stop what was started (the node part first), delete the stream, drop the schema."""
    from bench.databases import PG_URL, drop_schemas
    from events.url import DatabaseURL

    for proc in reversed(started):
        _stop(proc)
    if nats_cfg is not None:
        trouble = _delete_stream(nats_cfg["stream"])
        if trouble:
            notes.append(f"{backend}: {trouble}")
    if schema is not None:
        with contextlib.suppress(Exception):  # best effort, as the suite ends
            drop_schemas(DatabaseURL.parse(PG_URL), [schema])


def _ms(stats: dict[str, float]) -> str:
    return f"p50 {1000 * stats['p50']:,.1f} ms, p95 {1000 * stats['p95']:,.1f} ms"


def _round(stats: dict[str, float], digits: int = 4) -> dict[str, float]:
    return {k: round(v, digits) for k, v in stats.items()}


FOLLOWING = {"http": "node follows GET /ledger/events", "nats": "node follows JetStream"}


def _latency_goal(key: str, total: dict[str, float], single: dict[str, float],
                  sizes: Sizes) -> tuple[str, bool]:
    """The goal of a latency row: one contract within the checkpoint interval + 1 s at
    p50; contracts approved at once within twice the single contract's p50."""
    if key == "sequential":
        return (f"p50 <= {sizes.checkpoint_s + 1:g} s (cut interval + 1 s)",
                total["p50"] <= sizes.checkpoint_s + 1)
    return "p50 <= 2x the single contract's p50", total["p50"] <= 2 * single["p50"]


def compute_rows(backend: str, sizes: Sizes, r: dict[str, Any]) -> list[Any]:
    from bench.table import Row

    base = summary(r["baseline_s"])
    rows = [sandbox_row(backend, r)]
    for s in r["sessions"]:
        single = summary(s["sequential"]["total_s"])
        for key, label in (("sequential", f"{sizes.sequential} one after another"),
                           ("concurrent", f"{sizes.concurrent} approved at once")):
            lat = s[key]
            total = summary(lat["total_s"])
            goal, met = _latency_goal(key, total, single, sizes)
            rows.append(Row(
                backend, f"approved_to_delivered_{s['mode']}_{key}",
                f"ContractApproved -> DeliveryMade, {FOLLOWING[s['mode']]}, "
                f"{r['rows']:,} rows, {label}",
                _ms(total), f"{_ms(base)} (same function, pandas, direct)",
                f"{total['p50'] / base['p50']:,.0f}x (p50)", goal, met,
                {"latency_s": _round(total),
                 "until_seen_s": _round(summary(lat["until_seen_s"])),
                 "until_anchored_s": _round(summary(lat["until_anchored_s"])),
                 "until_execution_started_s": _round(summary(lat["until_execution_s"])),
                 "execution_and_report_s": _round(summary(lat["execution_s"])),
                 "times_handled": lat["handled_times"],
                 "baseline_s": _round(base, 6),
                 "raw_latency_s": [round(v, 4) for v in lat["total_s"]]}))
    return rows


def sandbox_row(backend: str, r: dict[str, Any]) -> Any:
    """The sandbox's cost per execution: the product's function run in it (a warm
    worker, inputs over a pipe, JSON back) against the same function run directly."""
    from bench.table import Row

    base, boxed = summary(r["baseline_s"]), summary(r["sandbox_s"])
    added = boxed["p50"] - base["p50"]
    return Row(backend, "sandbox_cost",
               f"the product's function in the sandbox, {r['rows']:,} rows, "
               f"{boxed['n']} runs", _ms(boxed), f"{_ms(base)} (direct)",
               f"+{1000 * added:,.1f} ms (p50)", "< 100 ms added at p50", added < 0.1,
               {"sandbox_s": _round(boxed, 6), "direct_s": _round(base, 6)})


def publisher_row(backend: str, quick: bool, notes: list[str]) -> tuple[Any, dict[str, Any]]:
    from bench import publisher
    from bench.table import Row

    if not _nats_up():
        notes.append(f"{backend}: publisher row skipped: NATS does not answer at {NATS_URL}")
        return None, {"skipped": f"NATS down at {NATS_URL}"}
    out = publisher.measure(NATS_URL, backend, publisher.QUICK if quick else publisher.FULL)
    t = out["table"][0]
    return Row(backend, "publisher",
               f"outbox publisher to JetStream, {out['events']:,} events, "
               f"{out['rounds']} round(s)",
               f"{t['rate']:,.0f} events/s", f"{t['baseline_rate']:,.0f} events/s (bare nats-py)",
               f"{t['ratio']:.2f}x", t["goal"], bool(t["met"]),
               {k: out[k] for k in ("events", "rounds", "window", "batch_size",
                                    "payload_bytes", "publisher", "bare", "ratio")}), out


def run(backends: list[str], quick: bool) -> dict[str, Any]:
    """The whole suite; what run.py prints and writes."""
    sizes = QUICK if quick else FULL
    results: list[dict[str, Any]] = []
    table: list[dict[str, Any]] = []
    notes: list[str] = []
    for backend in backends:
        t0 = time.monotonic()
        result: dict[str, Any] = {"backend": backend, "started_at": now(), "notes": []}
        print(f"  {backend}: compute node (server, market, datasite, contracts) ...",
              flush=True)
        _compute_part(backend, sizes, result, table, notes)
        print(f"  {backend}: publisher vs bare nats-py ...", flush=True)
        _publisher_part(backend, quick, result, table, notes)
        result["wall_seconds"] = round(time.monotonic() - t0, 1)
        results.append(result)
    print("  datasite start-up after a restart ...", flush=True)
    startup = _startup_part(quick, table)
    return {"suite": "compute", "quick": quick, "sizes": asdict(sizes), "results": results,
            "startup": startup,
            "table": table, "all_goals_met": all_met(table),
            "notes": notes + _notes(sizes)}


def _compute_part(backend: str, sizes: Sizes, result: dict[str, Any],
                  table: list[dict[str, Any]], notes: list[str]) -> None:
    """The node's rows of one backend, and what its result says is wrong."""
    from bench.table import Row

    try:
        node = measure_compute(backend, sizes, nats_follow=_nats_up(), notes=notes)
        result["compute"] = node
        table += [row.as_json() for row in compute_rows(backend, sizes, node)]
        if node.get("result_matches_direct_run") is False:
            result["notes"].append("the delivered result differs from the direct run!")
        expected = node["contracts"]
        if node["deliveries_in_log"] != expected:
            result["notes"].append(f"{node['deliveries_in_log']} delivery.made events for "
                                   f"{expected} contracts")
        if node["non_delivered_outcomes"] or node["problems"]:
            result["notes"].append(f"outcomes other than delivered: "
                                   f"{node['non_delivered_outcomes']}; node problems: "
                                   f"{node['problems'][:5]}"[:1500])
        if node.get("nats_error"):
            result["notes"].append(f"the JetStream follower failed: {node['nats_error']}")
            table.append(Row(backend, "compute_nats_error",
                             f"JetStream follower FAILED: {node['nats_error']}"[:200], "-",
                             met=False).as_json())
        elif not any(s["mode"] == "nats" for s in node["sessions"]):
            notes.append(f"{backend}: no JetStream rows: NATS does not answer at {NATS_URL}")
    except Exception as exc:  # noqa: BLE001 - reported
        result["error"] = repr(exc)[:3000]
        table.append(Row(backend, "compute_error", f"compute FAILED: {exc!r}"[:200], "-",
                         met=False).as_json())


def _publisher_part(backend: str, quick: bool, result: dict[str, Any],
                    table: list[dict[str, Any]], notes: list[str]) -> None:
    """The publisher's row of one backend."""
    from bench.table import Row

    try:
        row, out = publisher_row(backend, quick, notes)
        result["publisher"] = out
        if row is not None:
            table.append(row.as_json())
    except Exception as exc:  # noqa: BLE001 - reported
        result.setdefault("error", "")
        result["error"] += f" publisher: {exc!r}"[:1000]
        table.append(Row(backend, "publisher_error", f"publisher FAILED: {exc!r}"[:200],
                         "-", met=False).as_json())


STARTUP_GOAL_S = 5.0


def _startup_part(quick: bool, table: list[dict[str, Any]]) -> dict[str, Any]:
    """``bench.compute_startup`` in the compute venv (its own node directory, three
    providers): a datasite's start-up when the host restarts and when one node process
    restarts; the goal, under 5 s per provider."""
    from bench.table import Row

    rounds = 1 if quick else 3
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("VIRTUAL_ENV", None)
    try:
        done = subprocess.run([str(Settings().compute_python), "-m", "bench.compute_startup",
                               "--providers", "3", "--rounds", str(rounds)], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=900, check=True)
        out: dict[str, Any] = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        table.append(Row("-", "startup_error", f"start-up FAILED: {exc!r}"[:200], "-",
                         met=False).as_json())
        return {"error": repr(exc)[:2000]}
    labels = {
        "host_restart_s": "host killed and started again: from its start to each "
                          "provider's datasite ready",
        "node_s": "after a host restart: from a provider's node process start to its "
                  "datasite ready",
        "node_restart_s": "one provider's node process killed: from its new start to its "
                          "datasite ready"}
    for key, label in labels.items():
        stats = out[key]
        table.append(Row("-", f"datasite_startup_{key.removesuffix('_s')}",
                         f"{label} ({out['providers']} providers)",
                         f"p50 {stats['p50']:.2f} s, max {stats['max']:.2f} s", "-", "-",
                         f"< {STARTUP_GOAL_S:g} s per provider",
                         stats["max"] < STARTUP_GOAL_S, {"s": _round(stats)}).as_json())
    return out


def _notes(sizes: Sizes) -> list[str]:
    """What the suite's figures measure."""
    return [
        (f"latency: from the final approval's HTTP call returning (contract.approved "
         f"committed) to the node's on_outcome callback seeing it delivered (its "
         f"result POST returned: delivery.made committed). The node is event-driven: "
         f"ComputeNode.follow_http (GET /ledger/events, {sizes.poll_s:g} s pause after "
         f"an empty page) or follow_nats (a durable JetStream pull consumer on a "
         f"stream of this run's own), in a thread of the compute-venv process. It "
         f"acts only once contract.approved is under a checkpoint co-signed by the "
         f"witnesses; an event not yet anchored is handled again after "
         f"{sizes.retry_s:g} s, then doubling (the node's default). The server cuts "
         f"checkpoints every {sizes.checkpoint_s:g} s (its default is 5 s); one "
         f"warm-up contract per follower is not counted"),
        ("split (compute.json): until_seen = the node first handled the event; "
         "until_anchored = the bench's own watcher (GET /ledger/checkpoints/latest"
         f"?anchored=true every {sizes.watch_s:g} s) first saw an anchored checkpoint "
         "covering it; until_execution_started = the node started the execution "
         "(it starts before the event is anchored); execution_and_report = POST "
         "/computations, the PySyft request / approve, the sandbox run, the deposit and "
         "POST /computations/<id>/result"),
        ("baseline: the product's own function on the same private table (read from "
         "the same CSV), pandas, in the same compute-venv process; no goal is given "
         "for this latency, the ratio is p50 / p50 for information"),
        ("at once: the contracts are prepared first, their final approvals sent back to "
         "back; the node starts each execution as soon as it sees the approval (before "
         "the anchored checkpoint proves it; nothing is reported before) and runs up to "
         "DATALEDGER_NODE_PARALLEL (4) at once, each in its own sandboxed process"),
    ]
