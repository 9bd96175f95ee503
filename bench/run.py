"""Entry point of `dataledger bench`: run a suite, print a table, write JSON."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.append.suite import GOAL_RATIO
from bench.table import aligned, format_rows, now

SUITES = ("append", "audit", "chain", "compute", "joint", "privacy", "security")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "date": now(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_mb"] = int(line.split()[1]) // 1024
                break
    except OSError:
        pass
    with contextlib.suppress(Exception):  # informative only
        from importlib.metadata import version

        info["packages"] = {p: version(p) for p in
                            ("eventsourcing", "psycopg", "fastapi", "uvicorn", "httpx")}
    try:
        root = Path(__file__).resolve().parent.parent
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, timeout=5,
                             capture_output=True, text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, timeout=5, capture_output=True, text=True,
                               check=False).stdout.strip()
        if rev:
            info["git"] = rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _fmt_ratio(ratio: float, met: bool | None) -> str:
    """Two decimals, or three where two would hide which side of the goal it is."""
    text = f"{ratio:.2f}"
    if met is False and float(text) >= GOAL_RATIO or met and float(text) < GOAL_RATIO:
        text = f"{ratio:.3f}"
    return text + "x"


def format_table(table: list[dict[str, Any]]) -> str:
    """backend | measure | rate | baseline | ratio | goal | met?"""
    header = ["backend", "measure", "rate", "baseline", "ratio", "goal", "met?"]
    lines = [header]
    for r in table:
        rate = "-" if r.get("rate") is None else f"{_fmt_rate(r['rate'])} {r['unit']}"
        if r.get("commands_per_s") is not None and r["unit"] == "events/s":
            rate += f" ({_fmt_rate(r['commands_per_s'])} cmd/s)"
        if r.get("errors"):
            rate += f" [{r['errors']} errors]"
        baseline = "-" if r.get("baseline_rate") is None else \
            f"{_fmt_rate(r['baseline_rate'])} ({r['baseline']})"
        ratio = "-" if r.get("ratio") is None else _fmt_ratio(r["ratio"], r.get("met"))
        met = "-" if r.get("met") is None else ("yes" if r["met"] else "NO")
        lines.append([r["backend"], r["measure"], rate, baseline, ratio, r.get("goal") or "-",
                      met])
    return aligned(lines)


def main(args: Any) -> int:
    """Run ``args.suite`` on ``args.backend``; print the table; write ``args.json``."""
    suite = getattr(args, "suite", "append")
    if suite not in SUITES:
        print(f"unknown bench suite {suite!r} (have: {', '.join(SUITES)})", file=sys.stderr)
        return 2
    backend = getattr(args, "backend", "both") or "both"
    backends = ["sqlite", "postgresql"] if backend == "both" else [backend]
    quick = bool(getattr(args, "quick", False))
    json_path = Path(getattr(args, "json", None) or f"bench-results/{suite}.json")

    from bench import compute, security
    from bench.append import suite as append
    from bench.audit import suite as audit
    from bench.chain import suite as chain
    from bench.joint import suite as joint
    from bench.privacy import suite as privacy

    command = f"dataledger bench {suite} --backend {backend}" + (" --quick" if quick else "")
    if suite == "joint":
        try:
            sizes = joint.sizes_of(args, quick)
        except ValueError as exc:
            print(f"dataledger bench joint: {exc}", file=sys.stderr)
            return 2
        command += " " + joint.options(sizes)
    if suite == "privacy":
        try:
            private = privacy.sizes_of(args, quick)
        except ValueError as exc:
            print(f"dataledger bench privacy: {exc}", file=sys.stderr)
            return 2
        command += " " + privacy.options(private)
    run_suite, table_of = {"append": (append.run, format_table),
                           "audit": (audit.run, format_rows),
                           "chain": (chain.run, format_rows),
                           "compute": (compute.run, format_rows),
                           "joint": (lambda b, q: joint.run(b, q, sizes), format_rows),
                           "privacy": (lambda b, q: privacy.run(b, q, private), format_rows),
                           "security": (security.run, format_rows)}[suite]
    print(f"{command}: measuring {', '.join(backends)}"
          f"{' (quick: short runs, figures are indicative only)' if quick else ''} ...",
          flush=True)
    report = run_suite(backends, quick)
    report = {"command": command, "machine": machine(), **report}
    print()
    print(table_of(report["table"]))
    print()
    for note in report["notes"]:
        print(f"note: {note}")
    for result in report["results"]:
        for note in result.get("notes", []):
            print(f"note ({result['backend']}): {note}")
        if "error" in result:
            print(f"error ({result['backend']}): {result['error']}")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"goals {'all met' if report['all_goals_met'] else 'NOT all met'}; "
          f"JSON written to {json_path}")
    return 1 if any("error" in r for r in report["results"]) else 0
