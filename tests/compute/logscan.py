"""A scan of logs for secrets and private values, for the tests that run the whole platform:
the demo (``test_demo.py``) and the hostile-product suite, each after its run.

:func:`scan` reads every log file under the directories it is given (``*.log``, ``*.out``,
``*.err``: the demo's ``serve.log`` holds serve's stdout and stderr, and a provider's
private log is ``private.log`` in its datasite directory) and each captured output given as
text, and reports each finding by label and place, never by value (a test's own output is
a log too):

- ``secrets`` (node tokens, datasite and runner passwords, admin tokens): found nowhere,
  not even in a provider's private log;
- ``private`` (values of the private tables): found nowhere but in a provider's private
  log, which is the provider's own (``compute_nodes/logs.py``);
- :data:`PATTERNS`, what is shaped like a platform token or a password given as a keyword
  and not redacted: found nowhere.

A value of ``private`` is matched as a whole word (``1234567`` is not found in
``91234567``); pick values that cannot appear by accident (:func:`private_values` takes
numbers of seven digits or more and texts of eight characters or more).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from compute_nodes.enrollment import Enrollment
from compute_nodes.logs import PRIVATE_LOG

LOG_GLOBS = ("*.log", "*.log.*", "*.out", "*.err")
PATTERNS: dict[str, re.Pattern[str]] = {
    "a platform bearer token (dl_...)": re.compile(r"\bdl_[A-Za-z0-9_\-]{20,}"),
    "a password given as a keyword": re.compile(
        r"""(?i)password\w*['"]?\s*[:=]\s*(['"])(?!\[redacted\])(?:(?!\1).){1,500}?\1"""),
    "a bearer token in a header": re.compile(r"(?i)\bbearer\s+(?!\[redacted\])[A-Za-z0-9._~+/\-]{16,}"),
}


@dataclass(frozen=True)
class Leak:
    """``what`` (a label, never the value) was found in ``where`` at line ``line``."""

    where: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.what}"


def log_files(roots: Iterable[Path]) -> list[Path]:
    """Every log file under ``roots`` (a root may itself be a file)."""
    found: set[Path] = set()
    for root in roots:
        if root.is_file():
            found.add(root)
            continue
        for pattern in LOG_GLOBS:
            found.update(p for p in root.rglob(pattern) if p.is_file())
    return sorted(found)


def scan(roots: Iterable[Path] = (), *, secrets: Mapping[str, str],
         private: Mapping[str, str] | None = None, texts: Mapping[str, str] | None = None,
         patterns: Mapping[str, re.Pattern[str]] | None = None) -> list[Leak]:
    """What leaked into the log files under ``roots`` and into ``texts`` (label -> captured
    output); ``secrets`` and ``private`` map a label to a value. Empty when nothing did."""
    sources = [(str(path), path.name == PRIVATE_LOG, path.read_text(errors="replace"))
               for path in log_files(roots)]
    sources += [(label, False, text) for label, text in (texts or {}).items()]
    words = {label: re.compile(rf"(?<![\w.]){re.escape(value)}(?![\w.])")
             for label, value in (private or {}).items() if value}
    shapes = PATTERNS if patterns is None else patterns
    leaks = []
    for where, own, text in sources:
        for number, line in enumerate(text.splitlines(), 1):
            leaks += [Leak(where, number, label) for label, value in secrets.items()
                      if value and value in line]
            leaks += [Leak(where, number, label) for label, shape in shapes.items()
                      if shape.search(line)]
            if not own:
                leaks += [Leak(where, number, f"private value {label}")
                          for label, word in words.items() if word.search(line)]
    return leaks


def node_secrets(node_dir: Path) -> dict[str, str]:
    """The secrets a node directory holds: each enrolled provider's token, datasite
    password and runner password (``providers/*.json``)."""
    found = {}
    for path in sorted((node_dir / "providers").glob("*.json")):
        entry = Enrollment.load(path)
        for what, value in zip(("node token", "datasite password", "runner password"),
                               entry.secrets, strict=True):
            found[f"{what} of {entry.name or entry.participant_id}"] = value
    return found


def private_values(table: Path, columns: Sequence[str] | None = None, *,
                   min_digits: int = 7, min_text: int = 8,
                   public: Iterable[str] = ()) -> dict[str, str]:
    """The values of ``table`` (a CSV; ``columns``, else all) that cannot appear in a log by
    accident: whole numbers of ``min_digits`` digits or more, texts of ``min_text``
    characters or more that are not in ``public`` (e.g. the credit codes outputs show)."""
    shown = set(public)
    found = {}
    with table.open(encoding="utf-8", newline="") as handle:
        for row_number, row in enumerate(csv.DictReader(handle), 2):
            for column in columns or list(row):
                value = (row.get(column) or "").strip()
                distinctive = len(value) >= min_digits if value.isdigit() else (
                    len(value) >= min_text and not re.fullmatch(r"[\d.eE+\-]+", value))
                if distinctive and value not in shown:
                    found[f"{table.name}:{row_number}:{column}"] = value
    return found
