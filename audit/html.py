"""``--html REPORT``: the replay's report as one self-contained page a regulator reads.

One file, no script, no external asset (styles and charts inline; the charts are SVG drawn
here): the verdict, the first failure in red, the numbered steps, the events per type and
per day, and the checkpoints over time (tree size against the time each was cut).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from html import escape
from typing import Any

from audit.report import FAILED, PASSED, SKIPPED, UNWITNESSED, Report

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;
max-width:70em;color:#1d2330;padding:0 1em}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin-top:1.8em;
border-bottom:1px solid #d5d9e0;padding-bottom:.2em}
.verdict{font-size:1.2em;font-weight:600;padding:.6em 1em;border-radius:6px}
.ok{background:#e5f5ea;color:#14622f}.bad{background:#fdeaea;color:#a11212}
.failure{border:2px solid #c62828;background:#fdeaea;color:#7a0c0c;padding:.8em 1em;
border-radius:6px}.failure b{color:#c62828}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.35em .6em;
border-bottom:1px solid #e4e7ec;vertical-align:top}th{background:#f4f6f9}
.passed{color:#14622f;font-weight:600}.failed{color:#c62828;font-weight:700}
.skipped,.stopped{color:#8a6d00;font-weight:600}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1.2em}dt{color:#5b6475}
dd{margin:0}svg{max-width:100%;height:auto}.muted{color:#5b6475}code{font-size:.92em}
"""


def render(report: Report) -> str:
    """The whole page."""
    data = report.to_json()
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>dataledger audit replay: {'passed' if report.ok else 'FAILED'}</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>dataledger audit replay</h1>",
        _verdict(report), _facts(data), _failure(report),
        "<h2>Steps</h2>", _steps(data["steps"]),
        "<h2>Events per type</h2>", _bars_horizontal(data["events_per_type"]),
        "<h2>Events per day</h2>", _bars_vertical(data["events_per_day"]),
        "<h2>Checkpoints over time</h2>", _checkpoints(data["checkpoints"]["list"]),
        _notes(data["notes"]), "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _verdict(report: Report) -> str:
    if report.unwitnessed:  # quorum 0: whatever the verdict, loudly first
        loud = (f'<p class="verdict bad">{escape(UNWITNESSED)}</p>')
        return loud + ('\n<p class="verdict ok">The checks hold: the log is as its '
                       "checkpoints say, which only its operator signed.</p>" if report.ok
                       else _verdict(replace(report, unwitnessed=False)))
    if report.ok:
        return ('<p class="verdict ok">All checks hold: the log is as its checkpoints and '
                "the witnesses say.</p>")
    assert report.failure is not None
    return (f'<p class="verdict bad">FAILED at step {report.failure.step}: '
            f"{escape(report.failure.what)}</p>")


def _facts(data: dict[str, Any]) -> str:
    cps = data["checkpoints"]
    rows = [("source", data["source"]), ("trusted keys", data["trust"]),
            ("started", data["started_at"]), ("took", f"{data['seconds']} s"),
            ("events", f"{data['events']:,}"),
            ("checkpoints", (f"{cps['count']:,} ({cps['anchored']:,} anchored, the latest "
                             f"anchored at size {cps['latest_anchored_size']:,})")),
            ("Merkle core", data["merkle_core"])]
    return "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>"
                            for k, v in rows) + "</dl>"


def _failure(report: Report) -> str:
    f = report.failure
    if f is None:
        return ""
    items = [("step", f"{f.step}"), ("seq", "—" if f.seq is None else str(f.seq)),
             ("where", f.where), ("what", f.what), ("expected", f.expected or "—"),
             ("found", f.found or "—")]
    body = "".join(f"<dt>{k}</dt><dd><code>{escape(v)}</code></dd>" for k, v in items)
    return f'<h2>First failure</h2><div class="failure"><b>{escape(f.line())}</b>' \
           f"<dl>{body}</dl></div>"


def _steps(steps: Sequence[dict[str, Any]]) -> str:
    marks = {PASSED: "✔ passed", FAILED: "✘ failed", SKIPPED: "– skipped"}
    rows = "".join(
        f"<tr><td>{s['number']}</td><td>{escape(s['name'])}</td><td>{escape(s['checks'])}"
        f'</td><td class="{s["status"]}">{escape(marks.get(s["status"], s["status"]))}</td>'
        f"<td>{s['checked']:,}</td><td>{escape(s['reason'])}</td></tr>" for s in steps)
    return ("<table><tr><th>#</th><th>step</th><th>checks</th><th>status</th>"
            f"<th>checked</th><th>note</th></tr>{rows}</table>")


def _notes(notes: Sequence[str]) -> str:
    if not notes:
        return ""
    return "<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>"


# -- charts ---------------------------------------------------------------------------------
def _svg(width: int, height: int, body: str, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" aria-label="{escape(label)}">'
            f"{body}</svg>")


def _bars_horizontal(counts: dict[str, int]) -> str:
    if not counts:
        return '<p class="muted">no events</p>'
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    top = max(counts.values())
    label_w, bar_w, row = 260, 520, 22
    out = []
    for i, (name, n) in enumerate(items):
        y = i * row
        w = max(1.0, bar_w * n / top)
        out.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" '
                   f'font-size="12">{escape(name)}</text>'
                   f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row - 8}" '
                   f'fill="#3b6fd1"><title>{escape(name)}: {n:,}</title></rect>'
                   f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" font-size="12">{n:,}</text>')
    return _svg(label_w + bar_w + 80, len(items) * row + 4, "".join(out), "events per type")


def _bars_vertical(counts: dict[str, int]) -> str:
    if not counts:
        return '<p class="muted">no events</p>'
    days = sorted(counts)
    top = max(counts.values())
    height, left, bottom = 220, 50, 40
    step = max(3.0, min(40.0, 800 / len(days)))
    out = [_axis_left(left, height, top, left + len(days) * step)]
    for i, day in enumerate(days):
        h = (height - 10) * counts[day] / top
        x = left + i * step
        out.append(f'<rect x="{x + 1:.1f}" y="{height - h:.1f}" width="{max(1.0, step - 2):.1f}"'
                   f' height="{h:.1f}" fill="#2f9e72"><title>{escape(day)}: {counts[day]:,}'
                   "</title></rect>")
    for i in sorted({0, len(days) - 1, *range(0, len(days), max(1, len(days) // 6))}):
        out.append(f'<text x="{left + i * step + step / 2:.1f}" y="{height + 16}" '
                   f'font-size="11" text-anchor="middle">{escape(days[i])}</text>')
    width = int(left + len(days) * step + 60)
    return _svg(max(width, 300), height + bottom, "".join(out), "events per day")


def _axis_left(left: int, height: int, top: int, right: float) -> str:
    return (f'<line x1="{left}" y1="0" x2="{left}" y2="{height}" stroke="#8a93a3"/>'
            f'<line x1="{left}" y1="{height}" x2="{right:.1f}" y2="{height}" stroke="#8a93a3"/>'
            f'<text x="{left - 6}" y="14" font-size="11" text-anchor="end">{top:,}</text>'
            f'<text x="{left - 6}" y="{height}" font-size="11" text-anchor="end">0</text>')


def _checkpoints(cps: Sequence[dict[str, Any]]) -> str:
    timed = [(datetime.fromisoformat(c["time"]), c)
             for c in cps if c["time"]]
    if not timed:
        return '<p class="muted">no checkpoint with a time line</p>'
    t0, t1 = timed[0][0], timed[-1][0]
    span = max((t1 - t0).total_seconds(), 1.0)
    top = max(c["size"] for _, c in timed) or 1
    width, height, left = 800, 220, 60
    out = [_axis_left(left, height, top, width - 20)]
    points = []
    for when, c in timed:
        x = left + (width - left - 20) * (when - t0).total_seconds() / span
        y = height - (height - 10) * c["size"] / top
        points.append(f"{x:.1f},{y:.1f}")
        fill = "#3b6fd1" if c["anchored"] else "#ffffff"
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{fill}" '
                   f'stroke="#3b6fd1"><title>size {c["size"]:,} at {escape(c["time"])}'
                   f'{" (anchored)" if c["anchored"] else " (not anchored)"}</title></circle>')
    out.insert(1, f'<polyline points="{" ".join(points)}" fill="none" stroke="#9bb3e6"/>')
    for when, anchor in ((t0, "start"), (t1, "end")):
        x = left if anchor == "start" else width - 20
        out.append(f'<text x="{x}" y="{height + 16}" font-size="11" text-anchor="{anchor}">'
                   f"{escape(when.isoformat(timespec='seconds'))}</text>")
    legend = ('<p class="muted">tree size against the time each checkpoint was cut; filled: '
              "anchored by a quorum of witnesses, hollow: not anchored</p>")
    return _svg(width, height + 30, "".join(out), "checkpoints over time") + legend
