"""Datasite start-up after a restart (issue 11): how long each provider's datasite takes to be
ready when the compute node host starts again, and when one node process is started again.

    .venv-compute/bin/python -m bench.compute_startup [--providers 3] [--rounds 3]

or :func:`measure_startup` from a benchmark (compute venv: the host runs there). A node
directory of its own, with ``providers`` made-up providers enrolled (no platform is needed:
a node process's datasite is ready before it first asks the platform, which here does not
answer); a first start makes the datasites; then, ``rounds`` times:

- the host is killed (SIGKILL) and started again: from the new host's start to each
  provider's datasite being ready (``host_restart_s``: the fork server's import of PySyft
  included), and from each node process's start to its datasite being ready (``node_s``);
- one node process is killed (SIGKILL) and the host starts it again: from that start to
  ready (``node_restart_s``).

"Ready" is what the node process writes in ``nodes/<participant id>.json`` once its datasite
is launched and logged into (``compute_nodes/host.py``). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.compute_market import summary
from chain.note import generate_ed25519
from compute_nodes.enrollment import Enrollment, write_json
from compute_nodes.hygiene import alive

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 180.0


def _enroll(node_dir: Path, providers: int) -> list[str]:
    ids = []
    for n in range(providers):
        entry = Enrollment(participant_id=f"bench-provider-{n}", name=f"provider {n}",
                           token="dl_" + secrets.token_urlsafe(32), datasite=f"bench-site-{n}",
                           datasite_password=secrets.token_urlsafe(24))
        write_json(node_dir / "providers" / f"{entry.participant_id}.json", asdict(entry))
        ids.append(entry.participant_id)
    _, vkey = generate_ed25519("bench-log")
    write_json(node_dir / "trust.json",
               {"origin": "bench-log", "log_vkey": vkey, "quorum": 0, "witnesses": []})
    return ids


def _host(node_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATALEDGER_")}
    env.update(DATALEDGER_NODE_DATA_DIR=str(node_dir), PYTHONPATH=str(ROOT),
               DATALEDGER_NODE_PLATFORM_URL="http://127.0.0.1:9",
               DATALEDGER_NODE_TRUST=str(node_dir / "trust.json"),
               DATALEDGER_NODE_POLL_SECONDS="5")
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "compute_nodes.host", "run"], env=env,
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def _ready(node_dir: Path, ids: list[str], after: float,
           host: subprocess.Popen[bytes]) -> dict[str, dict[str, float]]:
    """Each provider's node record once its datasite is ready (readied after ``after``)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    ready: dict[str, dict[str, float]] = {}
    while len(ready) < len(ids):
        if host.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{len(ids) - len(ready)} datasite(s) never ready "
                               f"(host exit code {host.poll()})")
        for pid in ids:
            path = node_dir / "nodes" / f"{pid}.json"
            record = json.loads(path.read_text()) if path.exists() else {}
            if record and record["ready_at"] > after and alive(int(record["pid"])):
                ready[pid] = record
        time.sleep(0.05)
    return ready


def _kill(host: subprocess.Popen[bytes]) -> None:
    host.send_signal(signal.SIGKILL)
    host.wait()
    time.sleep(0.5)  # its fork server and node processes die with it


def measure_startup(providers: int = 3, rounds: int = 3,
                    work: Path | None = None) -> dict[str, Any]:
    """The figures of the module's docstring, each a summary (n, p50, p95, max, mean)."""
    with tempfile.TemporaryDirectory(prefix="dl-startup-", dir=work) as tmp:
        node_dir, log = Path(tmp) / "node", Path(tmp) / "host.log"
        ids = _enroll(node_dir, providers)
        started = time.time()
        host = _host(node_dir, log)
        first = _ready(node_dir, ids, 0.0, host)
        out: dict[str, list[float]] = {"first_start_s": [r["ready_at"] - started
                                                         for r in first.values()],
                                       "host_restart_s": [], "node_s": [], "node_restart_s": []}
        try:
            for _ in range(rounds):
                _kill(host)
                started = time.time()
                host = _host(node_dir, log)
                ready = _ready(node_dir, ids, started, host)
                out["host_restart_s"] += [r["ready_at"] - started for r in ready.values()]
                out["node_s"] += [r["ready_at"] - r["started_at"] for r in ready.values()]
                victim = ready[ids[0]]
                os.kill(int(victim["pid"]), signal.SIGKILL)
                again = _ready(node_dir, ids[:1], victim["ready_at"], host)[ids[0]]
                out["node_restart_s"].append(again["ready_at"] - again["started_at"])
        finally:
            _kill(host)
        return {"providers": providers, "rounds": rounds, "cpus": os.cpu_count(),
                **{key: summary(values) for key, values in out.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compute_startup",
                                     description="datasite start-up after a restart")
    parser.add_argument("--providers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(measure_startup(args.providers, args.rounds), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
