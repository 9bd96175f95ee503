"""``dataledger audit replay``: the whole log checked on the auditor's machine, in numbered steps.

Nothing from the platform is trusted but the keys of ``--trust`` (the log key, the
witnesses' keys and their quorum, taken out of band). Like sigstore-python's verifier, the
replay runs numbered steps and stops at the first thing that does not hold, naming the
step, the seq, what was expected and what was found (report.py lists the steps):

1. records: seqs run gap-free from 1, each line exactly the canonical record of an event;
2. tree: every leaf hashed from the events and every checkpoint's root recomputed (with
   chain/merkle.py's bulk core over a compact range: memory stays bounded however long the
   log);
3. signatures: each checkpoint's log signature (read before its body is believed), and for
   an anchored one the co-signed note's body, the witnesses' co-signatures, their quorum
   and aggregate (chain/anchored.py, the checks ``chain verify`` makes too); every event
   must lie under an anchored checkpoint;
4. consistency: checkpoints grow in size and in time, each linking the one before
   (``prev``); since every root is recomputed from one pass over one log, each older tree
   is a prefix of each newer one; each event's ``at`` no later than the ``time`` of the
   first checkpoint over it and never more than AT_TOLERANCE before an earlier event's;
5. index: each checkpoint's ``index`` line recomputed (audit/index_step.py); once a
   checkpoint carried one, every later one must;
6. business rules: the rule book of audit/rules, replayed from the events alone;
7. read models (``--database`` only): the live read models against those rebuilt.

The events stream through once: steps 1, 2, 5 and 6 consume them as they come, steps 2 to
5 judge each checkpoint when the walk reaches its size. Failures are reported as the walk
meets them. A root that differs names the events between the last good checkpoint and
that one, where the log's stored leaf hashes (a bundle's ``leaves/``, the tree's tiles with
``--database``) cannot say which event changed: each leaf hashed is held to the stored one
first, which names the very seq (step 2) unless the stored leaves were changed too.
"""

from __future__ import annotations

import base64
import binascii
import gc
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from audit import rules_worker
from audit.bundle import BundleError
from audit.report import UNWITNESSED, CheckpointSeen, Failure, Report
from audit.sources import Source
from chain import merkle
from chain.anchored import b64, cosigned_problem, link_problem, quorum_problem
from chain.checkpoint import INDEX, NO_PREVIOUS, Checkpoint, checkpoint_hash, open_checkpoint
from chain.compact import fold
from chain.hasher import EMPTY_ROOT
from chain.note import parse_note
from chain.trust import TrustedKeys
from chain.verify import VerificationError
from core.record import LogEntry, RecordError

if TYPE_CHECKING:
    from core.actor_index import IndexFold

#: events hashed per call of the Merkle core
BATCH = 8192
#: store_from beyond any level: the walk needs the roots only, no completed nodes
_NO_NODES = 64
#: how far an event's ``at`` may lie before the latest ``at`` of the events before it. The
#: domain stamps ``at`` when a command starts, before group commit gives it its seq, so
#: concurrent commands land a little out of order: at most 78 ms on the logs measured
#: (docs/AUDIT.md, "Times"); an event further back was written with a time not its own
AT_TOLERANCE = timedelta(seconds=5)

Progress = Callable[[int, int | None], None]
"""Told (events done, events expected if known) as the walk advances."""


class Rules(Protocol):
    """The rule book (audit/rules ``RuleBook``): fed the events in seq order, it returns the
    findings (seq, rule, expected, found) on each, and those it still holds at the end."""

    def feed(self, entry: LogEntry) -> list[Any]: ...

    def finish(self) -> list[Any]: ...


class _Stop(Exception):
    """The walk met its first failure (already in the report)."""


def rule_book() -> Rules | str:
    """audit/rules' rule book, or why step 6 cannot run here."""
    try:
        from audit.rules import RuleBook
    except ImportError as exc:
        if exc.name not in (None, "audit.rules"):
            raise
        return f"the rule book is not in this installation ({exc})"
    return RuleBook()


def index_fold() -> IndexFold | str:
    """The per-actor index recomputed from nothing (core/actor_index.py), or why step 5
    cannot run here."""
    try:
        from core.actor_index import IndexFold
    except ImportError as exc:
        if exc.name not in (None, "core.actor_index", "chain.smt"):
            raise
        return f"the index cannot be recomputed in this installation ({exc})"
    return IndexFold()


@dataclass
class _Walk:
    """Where the walk stands: the tree's compact range, the checkpoints still ahead, the
    last checkpoint judged, and the folds."""

    checkpoints: list[dict[str, Any]]
    next_cp: int = 0
    size: int = 0
    roots: list[bytes] = field(default_factory=list)
    last_good: int = 0
    prev_note_hash: bytes = NO_PREVIOUS
    prev_size: int = -1
    prev_time: datetime | None = None
    anchored_size: int = 0
    index: IndexFold | str = ""
    without_index: int = 0
    #: the size of the first checkpoint that carried an ``index`` line
    index_from: int | None = None
    #: step 4 on the events: the latest ``at`` so far; the ``time`` of the checkpoint ahead
    #: (number ``deadline_cp``; read ahead from its note, which is verified when judged);
    #: the first event whose ``at`` does not hold, held like a rule's finding
    latest_at: datetime | None = None
    deadline: datetime | None = None
    deadline_cp: int = -1
    late: Failure | None = None

    def cut(self) -> int | None:
        """The size of the next checkpoint to judge, if any."""
        return self.checkpoints[self.next_cp]["size"] if self.next_cp < len(
            self.checkpoints) else None


class Replay:
    """One replay of a source against the trusted keys; :meth:`run` returns the report."""

    def __init__(self, trust: TrustedKeys, *, trust_label: str = "",
                 rules: Rules | str | None = None, progress: Progress | None = None,
                 anchored_only: bool = False, batch: int = BATCH,
                 workers: bool | None = None) -> None:
        self.trust, self.progress, self.batch = trust, progress, batch
        #: the rule book in a worker process (audit/rules_worker.py): None, for a long log
        self.workers = workers
        self.anchored_only = anchored_only
        self.trust_label = trust_label or trust.describe()
        self._rules = rules

    def run(self, source: Source) -> Report:
        """Replay ``source``; :class:`audit.sources.SourceUnavailable` if it cannot be read."""
        started = time.perf_counter()
        self.report = report = Report(source.description, self.trust_label,
                                      started_at=_now(), merkle_core=merkle.IMPLEMENTATION)
        self.source, self.total = source, source.total()
        self.rules = rule_book() if self._rules is None else self._rules
        if isinstance(self.rules, str):
            report.skip(6, self.rules)
        elif self._rules is None and (rules_worker.wanted(self.total) if self.workers is None
                                      else self.workers):
            self.rules = rules_worker.RulesWorker()
        worker = self.rules if isinstance(self.rules, rules_worker.RulesWorker) else None
        self.walked = False
        self.pending: Any = None
        try:
            try:
                self.walk = _Walk(self._checkpoints(source), index=index_fold())
                self._events()
                self.walked = True
                self._finish()
            except _Stop:
                pass  # the first failure is recorded; the walk ends there
            found = [] if worker is None else worker.drain()
        finally:
            gc.unfreeze()
            if worker is not None:
                worker.close()
        if found:  # a rule broken: replayed in order, to name the first failure in order
            report = Replay(self.trust, trust_label=self.trust_label, progress=self.progress,
                            anchored_only=self.anchored_only, batch=self.batch,
                            workers=False).run(source)
        report.seconds = time.perf_counter() - started
        return report

    def _checkpoints(self, source: Source) -> list[dict[str, Any]]:
        """The source's checkpoints; with ``anchored_only``, those up to the newest one
        said to be anchored, where the walk will stop (it is checked like any other)."""
        checkpoints = source.checkpoints()
        if self.trust.quorum == 0:  # said first, whatever the verdict
            self.report.unwitnessed = True
            self.report.notes.append(UNWITNESSED)
        self.skipped_after: int | None = None
        if self.anchored_only:
            anchored = [cp["size"] for cp in checkpoints if cp.get("anchored")]
            self.skipped_after = max(anchored, default=0)
            checkpoints = [cp for cp in checkpoints if cp["size"] <= self.skipped_after]
        return checkpoints

    # -- the walk ---------------------------------------------------------------------
    def _fail(self, step: int, seq: int | None, where: str, what: str,
              expected: str = "", found: str = "") -> NoReturn:
        self.report.fail(Failure(step, seq, where, what, expected, found),
                         walked=self.walked)
        raise _Stop

    def _hold(self, findings: list[Any]) -> None:
        """Keep the rule book's earliest finding until an anchored checkpoint over it has
        held: a log changed behind its checkpoints is named by the step that proves it (1
        to 5), not by the rule its changed events happen to break."""
        for f in findings:
            if self.pending is None or f.seq < self.pending.seq:
                self.pending = f

    def _rules_due(self, upto: int) -> None:
        """Step 6: a finding held on an event up to ``upto`` is the failure."""
        f = self.pending
        if f is not None and f.seq <= upto:
            self._fail(6, f.seq, f"seq {f.seq}", f"breaks the rule {f.rule}",
                       str(f.expected), str(f.found))

    def _times(self, batch: list[tuple[LogEntry, dict[str, Any]]]) -> None:
        """Step 4 on the events of ``batch``, all under the checkpoint ahead: each ``at`` no
        later than that checkpoint's ``time``, and never more than AT_TOLERANCE before the
        latest ``at`` before it (the rules and self-proofs judge by ``at``: a backdated one
        could slip an execution into its window). The first that does not hold waits, like
        a rule's finding, for the anchored checkpoint over it."""
        walk = self.walk
        deadline, latest = self._deadline(), walk.latest_at
        floor = None if latest is None else latest - AT_TOLERANCE
        for k, (_, payload) in enumerate(batch):
            at = _instant(payload.get("at"))
            if walk.late is None and (at is None or (floor is not None and at < floor) or (
                    deadline is not None and at > deadline)):
                walk.late = self._late(walk.size + 1 + k, payload.get("at"), at, latest)
            if at is not None and (latest is None or at > latest):
                latest, floor = at, at - AT_TOLERANCE
        walk.latest_at = latest

    def _late(self, seq: int, text: Any, at: datetime | None,
              latest: datetime | None) -> Failure:
        """What is off with the ``at`` of ``seq`` (``text``, parsed as ``at``)."""
        where = f"seq {seq}"
        if at is None:
            return Failure(4, seq, where, "its at is not an RFC 3339 time with its offset "
                           "(the rules judge by it)", "a time such as 2030-03-01T09:00:00Z",
                           repr(text)[:60])
        if latest is not None and at < latest - AT_TOLERANCE:
            return Failure(4, seq, where, f"its at goes back more than "
                           f"{AT_TOLERANCE.total_seconds():g} s before an earlier event's: "
                           "written with a time not its own", f"an at from "
                           f"{_iso(latest - AT_TOLERANCE)}", str(text))
        cut = self.walk.cut()
        return Failure(4, seq, where, f"its at is later than the time of checkpoint {cut}, "
                       "the first that covers it", f"at most {_iso(self.walk.deadline)}",
                       str(text))

    def _deadline(self) -> datetime | None:
        """The ``time`` of the checkpoint ahead, read from its note before it is judged
        (None if it has none or cannot be read: judging it will say why)."""
        walk = self.walk
        if walk.deadline_cp != walk.next_cp:
            walk.deadline_cp, walk.deadline = walk.next_cp, None
            if walk.next_cp < len(walk.checkpoints):
                try:
                    body, _ = parse_note(walk.checkpoints[walk.next_cp]["note"])
                    walk.deadline = Checkpoint.unmarshal(body).time
                except (VerificationError, KeyError, TypeError, ValueError):
                    pass  # no deadline: judging this checkpoint at step 3 names why
        return walk.deadline

    def _times_due(self, upto: int) -> None:
        """Step 4 on the events: a held finding up to ``upto`` is the failure, unless a
        rule's finding is on an earlier seq (then that one is)."""
        late, rule = self.walk.late, self.pending
        if late is None or late.seq is None or late.seq > upto or (
                rule is not None and rule.seq < late.seq):
            return
        self._fail(late.step, late.seq, late.where, late.what, late.expected, late.found)

    def _events(self) -> None:
        """Walk the events: step 1 on each, the rules on each, the tree in batches."""
        walk, rules = self.walk, self.rules
        batch: list[tuple[LogEntry, dict[str, Any]]] = []
        self._judge_due()  # a checkpoint of size 0, if any
        try:
            for entry in self.source.events():
                if self.skipped_after is not None and entry.seq > self.skipped_after:
                    break
                want = walk.size + len(batch) + 1
                if entry.seq != want:
                    self._flush(batch)
                    self._gap(want, entry.seq)
                payload = self._count(entry)
                batch.append((entry, payload))
                if not isinstance(rules, str):  # the replay's own book takes the payload
                    self._hold(rules.feed(entry) if self._rules is not None else rules.feed(
                        entry, payload if entry.read_canonical else None))
                if len(batch) >= self.batch or walk.size + len(batch) == walk.cut():
                    self._flush(batch)
        except (RecordError, BundleError) as exc:
            self._flush(batch)
            self._unreadable(exc)
        self._flush(batch)
        if not isinstance(rules, str):
            self._hold(rules.finish())
            self.report.steps[6].checked = walk.size

    def _gap(self, want: int, found: int) -> None:
        what = ("missing from the log" if found > want else
                "out of order: a seq that came already" if found < want else "")
        self._fail(1, want, f"seq {want}", f"{what}: seqs must run gap-free from 1",
                   f"seq {want}", f"seq {found}")

    def _unreadable(self, exc: Exception) -> None:
        """A file or line the source could not read as records: step 1, at its seq."""
        seq: int | None = self.walk.size + 1
        where = "the log"
        path = getattr(exc, "path", None)
        if path is not None:
            where = str(path)
            line = re.match(r"line (\d+):", str(getattr(exc, "reason", "")))
            if line is None:
                seq = None  # a whole file is off (its hash, its length)
            else:
                seq = self.walk.size + int(line.group(1))
        self._fail(1, seq, where, f"not the log's records: {getattr(exc, 'reason', exc)}")

    def _count(self, entry: LogEntry) -> dict[str, Any]:
        """Count the event by type and day; return its payload, decoded once."""
        report = self.report
        report.events += 1
        report.per_type[entry.type_name] += 1
        # the record was read as canonical (its source's parser) or is held to its leaf
        # (step 2): a plain decode serves to count and index it
        payload: dict[str, Any] = json.loads(entry.payload_bytes)
        at = payload.get("at")
        report.per_day[at[:10] if isinstance(at, str) else "unknown"] += 1
        return payload

    def _flush(self, batch: list[tuple[LogEntry, dict[str, Any]]]) -> None:
        """Hash the batch into the tree and the index, then judge the checkpoint it reaches."""
        if not batch:
            return
        walk = self.walk
        leaves, _, walk.roots = merkle.append(walk.size, walk.roots,
                                              [e.canonical() for e, _ in batch],
                                              store_from=_NO_NODES)
        self._stored_leaves(walk.size + 1, leaves)
        if not isinstance(walk.index, str):
            apply = walk.index.apply
            for k, (entry, payload) in enumerate(batch):
                apply(entry, leaves[32 * k:32 * k + 32], payload)
        self._times(batch)
        walk.size += len(batch)
        batch.clear()
        gc.freeze()  # what the walk still holds is long-lived: the collector skips it from now
        self.report.steps[1].checked = self.report.steps[2].checked = walk.size
        if self.progress is not None:
            self.progress(walk.size, self.total)
        self._judge_due()

    def _stored_leaves(self, first: int, leaves: bytes) -> None:
        """Step 2, to the event: the leaves just hashed (seqs from ``first`` on) against
        those the log stored, where the source holds them. A stored leaf changed as well
        goes unseen here; the checkpoint's root then names the span of seqs."""
        stored_leaves = getattr(self.source, "stored_leaves", None)
        if stored_leaves is None:
            return
        try:
            stored = stored_leaves(first, first + len(leaves) // 32 - 1)
        except BundleError as exc:
            self._unreadable(exc)
        n = min(len(stored), len(leaves))
        if stored[:n] == leaves[:n]:
            return
        k = next(i for i in range(0, n, 32) if stored[i:i + 32] != leaves[i:i + 32])
        seq = first + k // 32
        self._fail(2, seq, f"seq {seq}", "the event's bytes do not hash to the leaf the log "
                   "stored", b64(stored[k:k + 32]), b64(leaves[k:k + 32]))

    def _judge_due(self) -> None:
        walk = self.walk
        while walk.cut() is not None and walk.cut() == walk.size:
            self._judge(walk.checkpoints[walk.next_cp])
            walk.next_cp += 1
        cut = walk.cut()
        if cut is not None and cut < walk.size:
            self._fail(4, None, f"checkpoint {cut}", "checkpoints must come in size order",
                       f"a size above {walk.prev_size}", str(cut))

    # -- a checkpoint, steps 2 to 5 -------------------------------------------------------
    def _judge(self, record: dict[str, Any]) -> None:
        walk, size = self.walk, record["size"]
        where = f"checkpoint {size}"
        shapes = {"note": str, "cosigned": str, "anchored": bool, "signers": list}
        wrong = [name for name, kind in shapes.items()
                 if not isinstance(record.get(name), kind)]
        if wrong:
            self._fail(3, size or None, where, f"a malformed record: {', '.join(wrong)}")
        # 3. The log's signature first: an unverified body is never believed.
        try:
            cp, _ = open_checkpoint(record["note"], [self.trust.log_verifier],
                                    self.trust.origin)
        except VerificationError as exc:
            self._fail(3, size or None, where, f"the log's signature does not verify: {exc}")
        if cp.size != size:
            self._fail(3, size or None, where, "the signed size differs from its record",
                       str(size), str(cp.size))
        # 2. The root signed is the root of the events up to its size.
        root = fold(walk.roots) if walk.roots else EMPTY_ROOT
        if cp.root != root:
            first = walk.last_good + 1
            seq, span = (first, f"seq {first}") if first == size else (
                None, f"one of seqs {first} to {size}")
            self._fail(2, seq, f"{where} ({span})", "the signed root differs from the root "
                       "recomputed from the events", b64(root), b64(cp.root))
        self.report.steps[3].checked += 1
        anchored = self._witnesses(where, size, record)
        self._link(where, size, cp)
        has_index = self._index(where, size, cp)
        if anchored:
            self._times_due(size)
            self._rules_due(size)
        walk.last_good, walk.prev_size = size, size
        walk.prev_note_hash = checkpoint_hash(record["note"])
        if anchored:
            walk.anchored_size = size
        when = cp.time
        self.report.checkpoints.append(CheckpointSeen(
            size, None if when is None else when.isoformat().replace("+00:00", "Z"),
            anchored, len(record.get("signers") or []) if anchored else 0, has_index))

    def _witnesses(self, where: str, size: int, record: dict[str, Any]) -> bool:
        """Step 3 for an anchored checkpoint; whether it is anchored."""
        if not record.get("anchored"):
            return False
        problem = cosigned_problem(record["note"], record["cosigned"])
        if problem is None:
            try:
                aggregate = (None if record["aggregate"] is None else
                             base64.b64decode(record["aggregate"], validate=True))
            except (binascii.Error, TypeError, ValueError):
                self._fail(3, size or None, where, "its aggregate is not base64", "base64",
                           repr(record["aggregate"])[:60])
            problem = quorum_problem(record["cosigned"], aggregate, self.trust.witnesses,
                                     self.trust.quorum)
        if problem is not None:
            self._fail(3, size or None, where, problem.what, problem.expected, problem.found)
        return True

    def _link(self, where: str, size: int, cp: Checkpoint) -> None:
        """Step 4: size and time grow, and ``prev`` names the checkpoint before."""
        walk = self.walk
        if size <= walk.prev_size:
            self._fail(4, size or None, where, "checkpoints must grow in size",
                       f"a size above {walk.prev_size}", str(size))
        problem = link_problem(cp, walk.prev_note_hash)
        if problem is not None:
            self._fail(4, size or None, where, problem.what, problem.expected, problem.found)
        try:
            when = cp.time
        except VerificationError as exc:
            self._fail(4, size or None, where, str(exc))
        if when is not None and walk.prev_time is not None and when < walk.prev_time:
            self._fail(4, size or None, where, "cut before the checkpoint before it",
                       f"a time from {walk.prev_time.isoformat()}", when.isoformat())
        walk.prev_time = when or walk.prev_time
        self.report.steps[4].checked += 1

    def _index(self, where: str, size: int, cp: Checkpoint) -> bool:
        """Step 5: the ``index`` line, where the checkpoint carries one."""
        try:
            signed = cp.extension_hash(INDEX)
        except VerificationError as exc:
            self._fail(5, size or None, where, str(exc))
        if signed is None:
            if self.walk.index_from is not None:
                self._fail(5, size or None, where, f"carries no {INDEX} line, though checkpoint "
                           f"{self.walk.index_from} did: once the line has appeared, every "
                           "later checkpoint must carry it", f"an {INDEX} line", "none")
            self.walk.without_index += 1
            return False
        if self.walk.index_from is None:
            self.walk.index_from = size
        if isinstance(self.walk.index, str):
            return True
        root = self.walk.index.root()
        if root != signed:
            self._fail(5, None, f"{where} (the index over seqs 1 to {size})",
                       "the signed index root differs from the index recomputed from the "
                       "events", b64(root), b64(signed))
        self.report.steps[5].checked += 1
        return True

    # -- after the last event ---------------------------------------------------------------
    def _finish(self) -> None:
        walk, report = self.walk, self.report
        cut = walk.cut()
        if cut is not None:
            self._fail(1, walk.size + 1, f"seq {walk.size + 1}", f"missing from the log: "
                       f"checkpoint {cut} covers it, the log ends at seq {walk.size}",
                       f"{cut} events", f"{walk.size} events")
        if walk.size > walk.anchored_size:
            tail = walk.size - walk.anchored_size
            self._fail(3, walk.anchored_size + 1, f"seq {walk.anchored_size + 1}",
                       "not covered by an anchored checkpoint: no witness vouches for it",
                       f"at most seq {walk.anchored_size}",
                       f"{tail} more events, up to seq {walk.size}")
        self._rules_due(walk.size)
        if self.skipped_after is not None:
            report.notes.append(f"--anchored-only: the events after seq {walk.size}, under "
                                "no anchored checkpoint yet, were not replayed")
        self._index_outcome()
        models = self.source.read_models(walk.size)
        if models is None:
            report.skip(7, "only with --database: the live read models")
        else:
            self._read_models(models)

    def _index_outcome(self) -> None:
        walk, report = self.walk, self.report
        with_index = len(report.checkpoints) - walk.without_index
        if with_index == 0:
            report.skip(5, "no checkpoint carries an index line (cut before the index "
                        "existed)")
        elif isinstance(walk.index, str):
            report.skip(5, walk.index)
        elif walk.without_index:
            report.notes.append(f"{walk.without_index} checkpoints carry no index line (cut "
                                "before the index existed): step 5 checked the others")

    def _read_models(self, models: Any) -> None:
        self.report.steps[7].checked = len(getattr(models, "tables", []))
        for problem in getattr(models, "problems", []):
            self._fail(7, None, "read models", problem)
        for diff in getattr(models, "findings", []):
            self._fail(7, None, f"read model {diff.table}, row {diff.key}",
                       f"column {diff.column} differs from the read model rebuilt from the "
                       "log", diff.expected, diff.found)
        if not models.ok:
            self._fail(7, None, "read models", "differ from those rebuilt from the log")


def _instant(text: Any) -> datetime | None:
    """An event's ``at`` as an aware datetime; None unless an ISO 8601 time with its offset."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo is not None else None


def _iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.isoformat().replace("+00:00", "Z")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def replay(source: Source, trust: TrustedKeys, **options: Any) -> Report:
    """Replay ``source`` against ``trust`` (see :class:`Replay` for the options)."""
    return Replay(trust, **options).run(source)
