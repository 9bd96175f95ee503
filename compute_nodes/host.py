"""The embedded compute node: a host process keeping one node process per enrolled provider.

``dataledger serve`` starts the host from the compute venv (``runtime/compute_host.py``).
For each provider that enrolled (``enroll``) the host runs a process of its own (restarted if
it exits, by ``core.supervise``), with an allow-listed environment and only that provider's
credentials: the product's code runs there (PySyft runs approved code in the datasite's
process), so it can reach neither another provider's data or token nor the server's secrets.
That process runs an in-process PySyft 0.9.5 datasite of the provider's own
(``sy.orchestra.launch``, state under ``<node dir>/datasites``, mode 0700) and a
:class:`~compute_nodes.node.ComputeNode` acting with the provider's credentials, fed
from the log as that provider sees it (``GET /ledger/events``, a page per provider per
round, in one thread: the embedded default has no NATS; a standalone node follows JetStream
with ``dataledger compute-node run --nats URL``). Data is loaded into a provider's
datasite through the running host (``load`` drops a job in ``<node dir>/jobs``; the host
hands it to the owner's process, which answers), since an in-process datasite belongs to
the process that runs it. One host per node directory (``host.lock``).

    python -m compute_nodes.host run
    python -m compute_nodes.host provider --id PARTICIPANT_ID      (started by run)
    DATALEDGER_NODE_TOKEN=TOKEN python -m compute_nodes.host enroll [--datasite NAME]
    python -m compute_nodes.host load --dataset ID --private FILE --mock FILE
    python -m compute_nodes.host status

Settings from the environment (``dataledger compute-node`` and ``serve`` set the first two):
    DATALEDGER_NODE_DATA_DIR       the node's directory (default var/node)
    DATALEDGER_NODE_PLATFORM_URL   the ledger API (default http://127.0.0.1:8000)
    DATALEDGER_NODE_TRUST_FILE     the keys trusted (default <node dir>/trust.json)
    DATALEDGER_NODE_POLL_SECONDS   pause between rounds when idle (default 1)
    DATALEDGER_NODE_PARENT_PID     set by serve: the host exits when that process is gone

Layout of the node directory:
    providers/<participant id>.json  an enrolled provider: token, datasite name and password
                                     (mode 0600: the provider's credentials)
    positions/<participant id>.json  the last seq of the log this provider's node handled
    jobs/<id>.json, <id>.answer.json  load requests and their answers (jobs/<participant id>/:
                                     requests handed to that provider's process)
    host.json, host.lock             the running host's pid; the lock one host holds
    datasites/                       the datasites' state
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from core.files import write_private
from core.supervise import Backoff, PopenChild, Supervisor

log = logging.getLogger("compute_nodes.host")

RUNNER_EMAIL = "compute-node@dataledger.example"
PAGE = 500  # events per poll
JOB_TIMEOUT_S = 600.0
HOST_START_S = 30.0  # how long load waits for the host of a serve that is starting


def node_dir() -> Path:
    return Path(os.environ.get("DATALEDGER_NODE_DATA_DIR") or "var/node").absolute()


def platform_url() -> str:
    return os.environ.get("DATALEDGER_NODE_PLATFORM_URL") or "http://127.0.0.1:8000"


def _write_private(path: Path, data: dict[str, Any]) -> None:
    write_private(path, json.dumps(data, ensure_ascii=False, indent=2))


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return data if isinstance(data, dict) else None


# -- enrollment -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Enrollment:
    """A provider whose node this host runs."""

    participant_id: str
    name: str
    token: str
    datasite: str
    datasite_password: str

    @classmethod
    def load(cls, path: Path) -> Enrollment:
        data = _read(path)
        if data is None:
            raise ValueError(f"{path}: not a JSON object")
        return cls(**{k: str(data[k]) for k in cls.__dataclass_fields__})


class EnrollmentError(Exception):
    """The token does not belong to an admitted provider, or the platform said no."""


def whoami(url: str, token: str) -> dict[str, Any]:
    """``GET /participants/me`` with ``token``: the participant and the member."""
    try:
        r = httpx.get(f"{url.rstrip('/')}/participants/me",
                      headers={"Authorization": f"Bearer {token}"}, timeout=30)
    except httpx.HTTPError as exc:
        raise EnrollmentError(f"the platform at {url} does not answer: {exc}") from exc
    if r.status_code == 401:
        raise EnrollmentError("the platform does not know this token (401)")
    if r.status_code != 200:
        raise EnrollmentError(f"GET /participants/me: {r.status_code} {r.text[:300]}")
    me: dict[str, Any] = r.json()
    return me


def enroll(directory: Path, url: str, token: str, datasite: str | None = None) -> Enrollment:
    """Record a provider's node credentials; the running host picks them up."""
    participant = whoami(url, token)["participant"]
    if participant.get("role") != "provider":
        raise EnrollmentError(f"participant {participant.get('id')} is a "
                              f"{participant.get('role')}, not a provider: only providers "
                              "run datasites")
    if participant.get("state") not in (None, "admitted"):
        raise EnrollmentError(f"provider {participant['id']} is {participant.get('state')}, "
                              "not admitted")
    pid = str(participant["id"])
    path = directory / "providers" / f"{pid}.json"
    before = _read(path) or {}
    entry = Enrollment(
        participant_id=pid, name=str(participant.get("name", "")), token=token,
        # a datasite keeps its name and password across re-enrollment (token rotation)
        datasite=str(before.get("datasite") or datasite or f"datasite-{pid[:8]}"),
        datasite_password=str(before.get("datasite_password") or secrets.token_urlsafe(24)))
    _write_private(path, asdict(entry))
    return entry


# -- one provider's node process -------------------------------------------------------------


#: what a node process inherits from its parent's environment (nothing else: not the
#: server's admin token, database URL or keys, which product code run here could read)
ENV_ALLOWED = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH",
               "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
               "http_proxy", "https_proxy", "no_proxy")
ENV_ALLOWED_PREFIXES = ("LC_", "DATALEDGER_NODE_")
RESTART_PAUSE_S = (2.0, 60.0)  # after a provider's node process exits: first, most
STEADY_S = 300.0  # a node that ran this long is restarted after the first pause again
STOP_GRACE_S = 15.0


def node_environment(extra: dict[str, str]) -> dict[str, str]:
    """An allow-listed copy of this environment, plus ``extra``."""
    kept = {k: v for k, v in os.environ.items()
            if k in ENV_ALLOWED or k.startswith(ENV_ALLOWED_PREFIXES)}
    return {**kept, **extra}


class ProviderNode:
    """One enrolled provider's datasite and node, alone in this process
    (``python -m compute_nodes.host provider --id P``, started by :class:`Host`).

    The product's code runs in this process (PySyft runs approved code in the datasite's
    process, and the trial here): it holds this provider's credentials and datasite only.
    """

    def __init__(self, directory: Path, url: str, trust_file: Path,
                 participant_id: str) -> None:
        self.dir = directory
        self.url = url.rstrip("/")
        self.trust_file = trust_file
        self.participant_id = participant_id
        self.enrollment = Enrollment.load(directory / "providers" / f"{participant_id}.json")
        self.node: Any = None  # compute_nodes.node.ComputeNode
        self.site: Any = None  # compute_nodes.datasite.Datasite
        self.position = int((_read(self._position_file()) or {}).get("seq", 0))
        self.anchoring = False  # an event waits for an anchored checkpoint
        self.behind = False  # the log has more than the last page showed
        self.stopping = threading.Event()

    def start(self) -> None:
        from compute_nodes import datasite
        from compute_nodes.node import ComputeNode
        from compute_nodes.trust import Trust

        trust = Trust.from_file(self.trust_file)
        sites = self.dir / "datasites"
        sites.mkdir(mode=0o700, parents=True, exist_ok=True)
        site = datasite.launch(self.enrollment.datasite, data_dir=sites,
                               admin_password=self.enrollment.datasite_password)
        try:
            admin = site.admin()
            runner = datasite.data_scientist(site, admin, RUNNER_EMAIL,
                                             self.enrollment.datasite_password + "-runner")
        except BaseException:
            site.land()
            raise
        self.site = site
        self.node = ComputeNode(self.url, self.enrollment.token, admin, runner,
                                self.enrollment.datasite, trust)
        log.info("hosting %s (%s) on datasite %s from seq %d", self.enrollment.name,
                 self.participant_id, self.enrollment.datasite, self.position)

    def _position_file(self) -> Path:
        return self.dir / "positions" / f"{self.participant_id}.json"

    def _save_position(self) -> None:
        _write_private(self._position_file(), {"seq": self.position})

    # -- the log --------------------------------------------------------------------
    def follow(self) -> int:
        """Hand the next page of the log to the node; the number of events it acted on.

        The position moves past an event only once its outcome is settled on the ledger
        (or the event needs nothing); an event not yet anchored, or a platform error, stops
        the page there and comes again next round. Handling an event twice is harmless:
        the node's executions are idempotent.
        """
        from compute_nodes.outcome import SOON, WATCHED, settled

        r = self.node.http.get("/ledger/events", params={"after": self.position, "limit": PAGE})
        if r.status_code != 200:
            raise RuntimeError(f"GET /ledger/events: {r.status_code} {r.text[:300]}")
        page = r.json()
        handled = 0
        for event in page["events"]:
            if event.get("type") in WATCHED:
                outcomes = self.node.handle(event)
                for outcome in outcomes:
                    log.info("%s: %s", self.enrollment.name,
                             json.dumps(asdict(outcome), ensure_ascii=False, default=str))
                if not settled(outcomes):  # not anchored yet, or the platform failed
                    self._save_position()
                    if all(o.settled or o.status in SOON for o in outcomes):
                        self.anchoring = True  # look again soon: checkpoints come often
                    return handled
                handled += 1
            self.position = int(event["seq"])
        self.position = max(self.position, int(page.get("next_after") or self.position))
        self.behind = self.position < int(page.get("head") or 0)
        self._save_position()
        return handled

    # -- loads ----------------------------------------------------------------------
    def jobs(self) -> None:
        """Load the datasets the host routed to this provider (``jobs/<participant id>/``)."""
        for path in sorted((self.dir / "jobs" / self.participant_id).glob("*.json")):
            job = _read(path) or {}
            try:
                result = self.node.load(str(job["dataset_id"]), job["private"], job["mock"])
                answer = {"ok": True, "result": result}
            except Exception as exc:  # noqa: BLE001 - reported to the waiting command
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            _write_private(self.dir / "jobs" / path.name.replace(".json", ".answer.json"),
                           answer)
            path.unlink(missing_ok=True)

    # -- the loop -------------------------------------------------------------------
    def run(self, pause: float) -> None:
        from compute_nodes.feeds import ANCHOR_RETRY_S

        self.start()
        parent = int(os.environ.get("DATALEDGER_NODE_PARENT_PID") or 0)
        try:
            while not self.stopping.is_set():
                if parent and os.getppid() != parent:
                    log.error("the host that started this node (pid %d) is gone", parent)
                    break
                self.jobs()
                self.anchoring = self.behind = False
                try:
                    busy = self.follow()
                except (httpx.HTTPError, RuntimeError) as exc:
                    log.warning("%s: the platform: %s", self.enrollment.name, exc)
                    busy = 0
                if busy == 0 and not self.behind:
                    self.stopping.wait(min(pause, ANCHOR_RETRY_S) if self.anchoring else pause)
        finally:
            self.site.land()


# -- the host: a process per provider -----------------------------------------------------------


class Host:
    """Keeps one node process per enrolled provider (:class:`ProviderNode`) and routes the
    load requests of ``jobs/`` to the owner's process. Imports no PySyft itself."""

    def __init__(self, directory: Path, url: str, trust_file: Path) -> None:
        self.dir = directory
        self.url = url.rstrip("/")
        self.trust_file = trust_file
        #: a provider's node process, kept running
        self.children: dict[str, Supervisor[PopenChild]] = {}
        self.stopping = threading.Event()
        self._lock: Any = None

    def enrolled(self) -> dict[str, Enrollment]:
        out = {}
        for path in sorted((self.dir / "providers").glob("*.json")):
            try:
                entry = Enrollment.load(path)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("bad enrollment file %s: %s", path, exc)
                continue
            out[entry.participant_id] = entry
        return out

    # -- the provider processes -----------------------------------------------------
    def keep_running(self, enrolled: dict[str, Enrollment], pause: float) -> None:
        """Start the node process of each provider enrolled since the last call."""
        for pid, entry in enrolled.items():
            if pid in self.children:
                continue
            child = Supervisor(f"the node of {entry.name}",
                               functools.partial(self._start_node, pid, entry, pause),
                               Backoff(*RESTART_PAUSE_S, STEADY_S), log=log)
            self.children[pid] = child
            child.start()

    def _start_node(self, pid: str, entry: Enrollment, pause: float) -> PopenChild:
        process = subprocess.Popen(
            [sys.executable, "-m", "compute_nodes.host", "provider", "--id", pid],
            env=node_environment({
                "DATALEDGER_NODE_DATA_DIR": str(self.dir),
                "DATALEDGER_NODE_PLATFORM_URL": self.url,
                "DATALEDGER_NODE_TRUST_FILE": str(self.trust_file),
                "DATALEDGER_NODE_POLL_SECONDS": str(pause),
                "DATALEDGER_NODE_PARENT_PID": str(os.getpid())}),
            stdin=subprocess.DEVNULL)
        log.info("started the node of %s (pid %d)", entry.name, process.pid)
        return PopenChild(process)

    def stop_children(self) -> None:
        for child in self.children.values():
            child.request_stop()
        for child in self.children.values():
            child.stop(STOP_GRACE_S)

    # -- loads ----------------------------------------------------------------------
    def route_jobs(self, enrolled: dict[str, Enrollment]) -> None:
        """Hand each load request to the process of the dataset's owner."""
        for path in sorted((self.dir / "jobs").glob("*.json")):
            if path.name.endswith(".answer.json"):
                continue
            job = _read(path) or {}
            dataset_id = str(job.get("dataset_id", ""))
            owner = self._owner(dataset_id, enrolled)
            child = self.children.get(owner or "")
            if owner is None or child is None or not child.running:
                why = (f"dataset {dataset_id} belongs to no provider enrolled here "
                       f"(enrolled: {sorted(e.name for e in enrolled.values())})"
                       if owner is None else f"the node of {enrolled[owner].name} is not "
                       "running (see the server's log)")
                _write_private(path.with_name(path.stem + ".answer.json"),
                               {"ok": False, "error": why})
                path.unlink(missing_ok=True)
                continue
            target = self.dir / "jobs" / owner / path.name
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.replace(path, target)

    def _owner(self, dataset_id: str, enrolled: dict[str, Enrollment]) -> str | None:
        for pid, entry in enrolled.items():
            try:
                r = httpx.get(f"{self.url}/datasets/{dataset_id}", timeout=30,
                              headers={"Authorization": f"Bearer {entry.token}"})
            except httpx.HTTPError:
                continue
            if r.status_code == 200 and r.json().get("owner_id") == pid:
                return pid
        return None

    def clean_spool(self) -> None:
        """Forget requests and answers nobody waits for any more."""
        old = time.time() - 2 * JOB_TIMEOUT_S
        for path in (self.dir / "jobs").rglob("*.json"):
            try:
                if path.stat().st_mtime < old:
                    path.unlink()
            except FileNotFoundError:
                pass

    # -- the loop -------------------------------------------------------------------
    def run(self, pause: float) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.dir / "host.lock", "a")  # noqa: SIM115 - held until exit
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"another compute node host runs on {self.dir} "
                             f"(pid {running_host(self.dir)})") from None
        _write_private(self.dir / "host.json", {"pid": os.getpid(), "url": self.url})
        self.clean_spool()
        parent = int(os.environ.get("DATALEDGER_NODE_PARENT_PID") or 0)
        try:
            while not self.stopping.is_set():
                if parent and os.getppid() != parent:
                    log.error("the server that started this node (pid %d) is gone", parent)
                    break
                enrolled = self.enrolled()
                self.keep_running(enrolled, pause)
                self.route_jobs(enrolled)
                self.stopping.wait(min(pause, 0.5))
        finally:
            self.stop_children()
            (self.dir / "host.json").unlink(missing_ok=True)


def running_host(directory: Path) -> int | None:
    """The pid of the host running on ``directory``, if any."""
    data = _read(directory / "host.json")
    if not data:
        return None
    pid = int(data.get("pid", 0))
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return None
    return pid


def submit_load(directory: Path, dataset_id: str, private: Path, mock: Path,
                timeout: float = JOB_TIMEOUT_S) -> dict[str, Any]:
    """Ask the running host to load a dataset into its owner's datasite; its answer."""
    deadline = time.monotonic() + HOST_START_S  # a host that serve just started
    while running_host(directory) is None and (directory / "trust.json").exists() \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    if running_host(directory) is None:
        raise RuntimeError(f"no compute node host runs on {directory}: start `dataledger "
                           "serve` (it starts one), or run a standalone node "
                           "(`dataledger compute-node run`) with DATALEDGER_NODE_TOKEN")
    for path in (private, mock):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
    job_id = uuid.uuid4().hex
    job = directory / "jobs" / f"{job_id}.json"
    _write_private(job, {"dataset_id": dataset_id, "private": str(private.absolute()),
                         "mock": str(mock.absolute())})
    answer_path = job.with_name(f"{job_id}.answer.json")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            answer = _read(answer_path)
            if answer is not None:
                return answer
            if running_host(directory) is None:
                raise RuntimeError("the compute node host stopped before answering")
            time.sleep(0.2)
        raise TimeoutError(f"the host did not answer within {timeout:.0f} s")
    finally:
        job.unlink(missing_ok=True)
        answer_path.unlink(missing_ok=True)


# -- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dataledger compute-node",
                                     description="the embedded compute node host")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="host every enrolled provider's datasite and node")
    sub.add_parser("host", help="the same as run")
    pv = sub.add_parser("provider", help="one provider's node (started by run)")
    pv.add_argument("--id", required=True, help="the provider's participant id")
    en = sub.add_parser("enroll", help="give the node a provider's credentials: a bearer "
                        "token of one of its members, read from DATALEDGER_NODE_TOKEN or "
                        "from standard input (never from the command line, which other "
                        "users of the machine can see)")
    en.add_argument("--datasite", default=None, help="the datasite's name")
    ld = sub.add_parser("load", help="load a dataset's private data and mock")
    ld.add_argument("--dataset", required=True)
    ld.add_argument("--private", required=True, type=Path)
    ld.add_argument("--mock", required=True, type=Path)
    sub.add_parser("status", help="the enrolled providers and the host's pid")
    args = parser.parse_args(argv)
    directory = node_dir()
    if args.command == "enroll":
        token = (os.environ.get("DATALEDGER_NODE_TOKEN") or sys.stdin.readline()).strip()
        if not token:
            print("enroll: no token (set DATALEDGER_NODE_TOKEN or give it on standard input)",
                  file=sys.stderr)
            return 2
        try:
            entry = enroll(directory, platform_url(), token, args.datasite)
        except EnrollmentError as exc:
            print(f"enroll: {exc}", file=sys.stderr)
            return 1
        print(json.dumps({"participant_id": entry.participant_id, "name": entry.name,
                          "datasite": entry.datasite}, ensure_ascii=False))
        return 0
    if args.command == "load":
        if os.environ.get("DATALEDGER_NODE_TOKEN"):  # a standalone node's own datasite
            from compute_nodes import cli

            return cli.main(["load", "--dataset", args.dataset, "--private",
                             str(args.private), "--mock", str(args.mock)])
        try:
            answer = submit_load(directory, args.dataset, args.private, args.mock)
        except (RuntimeError, TimeoutError, FileNotFoundError) as exc:
            print(f"load: {exc}", file=sys.stderr)
            return 1
        if not answer.get("ok"):
            print(f"load: {answer.get('error')}", file=sys.stderr)
            return 1
        print(json.dumps(answer["result"], ensure_ascii=False, default=str))
        return 0
    if args.command == "status":
        providers = []
        for path in sorted((directory / "providers").glob("*.json")):
            entry = Enrollment.load(path)
            position = (_read(directory / "positions" / path.name) or {}).get("seq", 0)
            providers.append({"participant_id": entry.participant_id, "name": entry.name,
                              "datasite": entry.datasite, "position": position})
        print(json.dumps({"host_pid": running_host(directory), "providers": providers},
                         ensure_ascii=False, indent=2))
        return 0
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s compute-node: %(message)s")
    trust = Path(os.environ.get("DATALEDGER_NODE_TRUST_FILE") or directory / "trust.json")
    pause = float(os.environ.get("DATALEDGER_NODE_POLL_SECONDS") or 1)
    runner: Host | ProviderNode
    if args.command == "provider":
        try:
            runner = ProviderNode(directory, platform_url(), trust, args.id)
        except (ValueError, KeyError, TypeError) as exc:
            print(f"provider {args.id}: not enrolled here: {exc}", file=sys.stderr)
            return 1
    else:
        runner = Host(directory, platform_url(), trust)
    signal.signal(signal.SIGTERM, lambda *_: runner.stopping.set())
    try:
        runner.run(pause)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
