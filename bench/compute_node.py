"""The compute-venv half of ``dataledger bench compute``: a node measured end to end.

``.venv-compute/bin/python -m bench.compute_node CONFIG.json`` (started by
``bench.compute.measure_compute``; PySyft is imported here only): an in-process PySyft
datasite is launched and a synthetic enterprise table loaded through ``ComputeNode.load``;
the node follows the log in a thread (HTTP, then JetStream when configured) while contracts
are approved one after another and at once; each time is split by when the node first
handled the event, when the bench's own watcher saw an anchored checkpoint covering it and
when the execution started. Then the product's function is run directly with pandas on the
same table (the baseline). The result is printed as one JSON line after ``RESULT_MARK``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.compute_market import RESULT_MARK, Sizes, approve, prepare_order, summary
from client.platform import Platform, PlatformError


@dataclass
class Timings:
    """What the bench records per contract (by its id) while the node works."""

    seen: dict[str, float] = field(default_factory=dict)      # the node first handled it
    attempts: dict[str, int] = field(default_factory=dict)    # times its event was handled
    started: dict[str, float] = field(default_factory=dict)   # its execution started
    delivered: dict[str, float] = field(default_factory=dict)  # on_outcome saw it delivered
    approved: dict[str, float] = field(default_factory=dict)  # its final approval returned
    event_seq: dict[str, int] = field(default_factory=dict)   # seq of its contract.approved
    computation: dict[str, str] = field(default_factory=dict)
    other: dict[str, list[str]] = field(default_factory=dict)  # statuses but delivered
    problems: list[str] = field(default_factory=list)

    def handled(self, at: float, outcomes: list[Any]) -> None:
        for o in outcomes:
            if o.contract_id:
                self.seen.setdefault(o.contract_id, at)
                self.attempts[o.contract_id] = self.attempts.get(o.contract_id, 0) + 1
            if o.status in ("refused", "error"):  # retried by the node; kept for a report
                self.problems.append(f"{o.contract_id}: {o.status} {o.detail}"[:300])

    def on_outcome(self, o: Any) -> None:
        if o.status == "delivered":
            self.delivered[o.contract_id] = time.perf_counter()
            self.computation[o.contract_id] = str(o.computation_id)
            if o.seq is not None:
                self.event_seq[o.contract_id] = o.seq
        else:
            self.other.setdefault(o.contract_id, []).append(f"{o.status} {o.detail}"[:200])

    def latencies(self, contracts: list[str],
                  anchored_after: Callable[[int], float | None]) -> dict[str, Any]:
        out: dict[str, list[float]] = {"total_s": [], "until_seen_s": [],
                                       "until_anchored_s": [], "until_execution_s": [],
                                       "execution_s": [], "handled_times": []}
        for c in contracts:
            a = self.approved[c]
            out["total_s"].append(self.delivered[c] - a)
            out["until_seen_s"].append(self.seen[c] - a)
            out["until_execution_s"].append(self.started[c] - a)
            out["execution_s"].append(self.delivered[c] - self.started[c])
            out["handled_times"].append(self.attempts.get(c, 0))
            at = anchored_after(self.event_seq[c]) if c in self.event_seq else None
            if at is not None:
                out["until_anchored_s"].append(at - a)
        return out


def timed_node(timings: Timings, *args: Any, **kwargs: Any) -> Any:
    """A ComputeNode that records when each event was first handled and when each
    execution started."""
    from compute_nodes.node import ComputeNode

    class TimedNode(ComputeNode):
        def handle(self, event: Any, *, wait: bool = True) -> list[Any]:
            at = time.perf_counter()
            outcomes = super().handle(event, wait=wait)
            timings.handled(at, outcomes)
            return outcomes

    node = TimedNode(*args, **kwargs)
    prepare = node.executor.prepare

    def timed_prepare(job: Any) -> Any:
        timings.started.setdefault(job.contract_id, time.perf_counter())
        return prepare(job)

    node.executor.prepare = timed_prepare  # type: ignore[method-assign]
    return node


class AnchorWatch:
    """When each anchored checkpoint size was first seen (its own client, not the node's)."""

    def __init__(self, url: str, admin_token: str, every_s: float) -> None:
        self.url, self.admin_token, self.every_s = url, admin_token, every_s
        self.anchored: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="anchored-watch", daemon=True)

    def _watch(self) -> None:
        import httpx

        with Platform.at(self.url, timeout=10) as api:
            while not self.stop.is_set():
                # none anchored yet, or the server busy: look again at the next tick
                with contextlib.suppress(PlatformError, httpx.HTTPError, ValueError, KeyError):
                    size = int(api.latest_checkpoint(self.admin_token)["size"])
                    if not self.anchored or size > self.anchored[-1][1]:
                        self.anchored.append((time.perf_counter(), size))
                self.stop.wait(self.every_s)

    def after(self, seq: int) -> float | None:
        """When an anchored checkpoint covering ``seq`` was first seen."""
        return next((t for t, size in list(self.anchored) if size >= seq), None)

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=15)


class Sessions:
    """The node follows the log in a thread while the bench approves contracts."""

    def __init__(self, api: Platform, cfg: dict[str, Any], timings: Timings,
                 watch: AnchorWatch) -> None:
        self.api, self.cfg, self.t, self.watch = api, cfg, timings, watch
        self.sizes = Sizes(**cfg["sizes"])

    def wait_delivered(self, contracts: list[str], follower: threading.Thread) -> None:
        deadline = time.monotonic() + self.sizes.deliver_timeout_s
        while not all(c in self.t.delivered for c in contracts):
            bad = [f"{c}: {self.t.other[c]}" for c in contracts if c in self.t.other]
            if bad:
                raise RuntimeError(f"not delivered: {bad[:3]}")
            if not follower.is_alive():
                raise RuntimeError("the node's follower thread stopped")
            if time.monotonic() > deadline:
                missing = [c for c in contracts if c not in self.t.delivered]
                raise RuntimeError(f"{len(missing)} contract(s) not delivered within "
                                   f"{self.sizes.deliver_timeout_s:g} s; the node reported "
                                   f"{self.t.problems[-3:]}")
            time.sleep(0.005)

    def approve(self, oid: str) -> None:
        self.t.approved[oid] = approve(self.api, self.cfg, oid)

    def session(self, mode: str, follow: Callable[[threading.Event], Any]) -> dict[str, Any]:
        """The node follows the log (``follow``) in a thread while contracts are approved."""
        stop = threading.Event()
        failure: list[str] = []

        def target() -> None:
            try:
                follow(stop)
            except Exception as exc:  # noqa: BLE001 - reported by the waiter
                failure.append(repr(exc)[:500])
                self.t.problems.append(f"{mode} follower: {exc!r}"[:300])

        follower = threading.Thread(target=target, name=f"follow-{mode}", daemon=True)
        t0 = time.perf_counter()
        follower.start()
        try:
            warm, sequential, batch = self._contracts(follower)
        finally:
            stop.set()
            follower.join(timeout=self.sizes.stop_timeout_s)
        if follower.is_alive():
            self.t.problems.append(f"{mode} follower still running "
                                   f"{self.sizes.stop_timeout_s:g} s after stop")
        approved = self.t.approved
        return {"mode": mode, "warm_up_s": self.t.delivered[warm] - approved[warm],
                "warm_up_id": warm, "sequential": self.t.latencies(sequential, self.watch.after),
                "concurrent": self.t.latencies(batch, self.watch.after),
                "approvals_span_s": approved[batch[-1]] - approved[batch[0]] if batch else 0.0,
                "sequential_ids": sequential, "wall_s": time.perf_counter() - t0,
                "follower_error": failure, "contracts": 1 + len(sequential) + len(batch)}

    def _contracts(self, follower: threading.Thread) -> tuple[str, list[str], list[str]]:
        """A warm-up contract, then the sequential ones, then those approved at once."""
        sizes = self.sizes
        # warm-up (not counted): the first code request, the first run on the datasite;
        # with JetStream also the catch-up of the stream from its start
        warm = prepare_order(self.api, self.cfg)
        self.approve(warm)
        self.wait_delivered([warm], follower)
        sequential: list[str] = []
        for _ in range(sizes.sequential):
            oid = prepare_order(self.api, self.cfg)
            time.sleep(sizes.idle_s)  # the node is idle between contracts
            self.approve(oid)
            self.wait_delivered([oid], follower)
            sequential.append(oid)
        batch = [prepare_order(self.api, self.cfg) for _ in range(sizes.concurrent)]
        time.sleep(sizes.idle_s)
        for oid in batch:
            self.approve(oid)
        self.wait_delivered(batch, follower)
        return warm, sequential, batch


def synthetic_table(rows: int, seed: int) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    chars = np.array(list("0123456789ABCDEFGHJKLMNPQRTUWXY"))
    codes = ["91330100" + "".join(rng.choice(chars, 10)) for _ in range(rows)]
    return pd.DataFrame({
        "uscc": codes,
        "industry": rng.choice(["manufacturing", "retail", "logistics", "software"], rows),
        "tax_paid_yuan": rng.integers(0, 200_000, rows),
        "power_kwh": rng.integers(0, 80_000, rows),
    })


def follow_sessions(node: Any, sessions: Sessions, cfg: dict[str, Any]) -> tuple[
        list[dict[str, Any]], str | None]:
    """The HTTP session, then the JetStream one when configured; and how JetStream failed."""
    from compute_nodes.feeds import JetStreamSettings

    sizes, t = sessions.sizes, sessions.t
    out = [sessions.session("http", lambda stop: node.follow_http(
        None, stop=stop, poll_s=sizes.poll_s, retry_s=sizes.retry_s,
        on_outcome=t.on_outcome))]
    nats_error = None
    if cfg.get("nats"):
        n = cfg["nats"]
        settings = JetStreamSettings(n["url"], n["stream"], n["durable"],
                                     subject_prefix=n["prefix"],
                                     fetch_timeout=sizes.fetch_timeout_s,
                                     retry_s=sizes.retry_s)
        try:  # a JetStream failure keeps the HTTP figures; it is reported
            out.append(sessions.session("nats", lambda stop: node.follow_nats(
                settings, stop=stop, on_outcome=t.on_outcome)))
        except RuntimeError as exc:
            nats_error = repr(exc)[:1000]
    return out, nats_error


def checks(api: Platform, cfg: dict[str, Any], private: Any, t: Timings,
           first: list[str], sandbox: Any) -> dict[str, Any]:
    """The delivered result against a direct run, the baseline runs, the same function
    run in the sandbox (as the node runs it), and every delivery once in the log."""
    fn_ns: dict[str, Any] = {}
    exec(compile(cfg["code"], "<product code>", "exec"), fn_ns)  # noqa: S102 - our own code
    function = fn_ns["score"]
    expected = function(private)
    same = None
    if first:
        from privacy.watermark import load_or_create_key, mark_rows

        delivery = t.computation[first[0]]
        got = api.call("GET", f"/deliveries/{delivery}/result", cfg["tokens"]["demander"])
        # the demander is served the result watermarked for its delivery (docs/PRIVACY.md),
        # under the key in the bench server's data directory
        key = load_or_create_key(Path(cfg["tmp"]).parent / "ledger")
        same = got == mark_rows(expected, key, delivery)[0]
    baseline: list[float] = []
    sandboxed: list[float] = []
    for _ in range(Sizes(**cfg["sizes"]).baseline_runs):
        a = time.perf_counter()
        function(private)
        baseline.append(time.perf_counter() - a)
        a = time.perf_counter()
        sandbox.run(cfg["code"], "score", [private])
        sandboxed.append(time.perf_counter() - a)
    events = api.events(cfg["admin_token"])
    return {"baseline_s": baseline, "sandbox_s": sandboxed, "result_matches_direct_run": same,
            "deliveries_in_log": sum(1 for e in events if e["type"] == "delivery.made")}


def node_part(cfg: dict[str, Any]) -> dict[str, Any]:
    """Everything that needs PySyft; returns the timings as a JSON-able dict."""
    import pandas as pd

    from compute_nodes import datasite
    from compute_nodes.sandbox import Sandbox
    from compute_nodes.trust import Trust

    sizes = Sizes(**cfg["sizes"])
    tmp = Path(cfg["tmp"])
    api = Platform.at(cfg["url"])
    t_setup = time.perf_counter()
    synthetic_table(sizes.rows, 3).to_csv(tmp / "private.csv", index=False)
    synthetic_table(50, 4).to_csv(tmp / "mock.csv", index=False)
    private = pd.read_csv(tmp / "private.csv")
    t = Timings()
    watch = AnchorWatch(cfg["url"], cfg["admin_token"], sizes.watch_s)
    site = datasite.launch("bench-tax-node", data_dir=tmp / "datasite", reset=True,
                           admin_password="bench-admin-pass-1")
    sandbox = Sandbox(hide=[tmp / "datasite"])
    try:
        admin = site.admin()
        runner = datasite.data_scientist(site, admin, "node@bench.example", "bench-node-pass-1")
        node = timed_node(t, cfg["url"], cfg["tokens"]["provider"],
                          (admin, runner, "bench-tax-node"), Trust.from_file(cfg["trust_file"]),
                          sandbox, backoff_s=0.05)
        loaded = node.load(cfg["dataset_id"], tmp / "private.csv", tmp / "mock.csv")
        setup_s = time.perf_counter() - t_setup
        watch.thread.start()
        sessions, nats_error = follow_sessions(node, Sessions(api, cfg, t, watch), cfg)
        checked = checks(api, cfg, private, t, sessions[0]["sequential_ids"], sandbox)
        intervals = [b - a for (a, _), (b, _) in itertools.pairwise(watch.anchored)]
        return {"rows": len(private), "setup_s": setup_s, "loaded_rows": loaded["rows"],
                "sessions": sessions, "nats_error": nats_error, **checked,
                "contracts": sum(s["contracts"] for s in sessions),
                "anchored_checkpoint_interval_s": summary(intervals),
                "non_delivered_outcomes": {c: v for c, v in t.other.items()
                                           if not all(s.startswith("skipped") for s in v)},
                "skipped_outcomes": sum(1 for v in t.other.values() for s in v
                                        if s.startswith("skipped")),
                "problems": t.problems}
    finally:
        watch.close()
        sandbox.close()
        site.land()


def main(config_path: str) -> int:
    logging.basicConfig(level=logging.ERROR)
    cfg = json.loads(Path(config_path).read_text())
    try:
        out = node_part(cfg)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        out = {"error": repr(exc)[:2000]}
    sys.stdout.write(RESULT_MARK + json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0 if "error" not in out else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m bench.compute_node CONFIG.json  (compute venv; the suite "
              "itself: dataledger bench compute)", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
