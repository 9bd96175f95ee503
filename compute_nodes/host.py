"""The embedded compute node: one process hosting every enrolled provider's node.

``dataledger serve`` starts it from the compute venv (``api/node_supervisor.py``). For each
provider that enrolled (``enroll``) it runs an in-process PySyft 0.9.5 datasite of that
provider's own (``sy.orchestra.launch``, state under ``<node dir>/datasites``) and a
:class:`~compute_nodes.worker.ComputeNode` acting with that provider's credentials, fed
from the log as that provider sees it (``GET /ledger/events``, a page per provider per
round, in one thread: the embedded default has no NATS; a standalone node follows JetStream
with ``dataledger compute-node run --nats URL``). Data is loaded into a provider's
datasite through the running host (``load`` drops a job in ``<node dir>/jobs`` and waits
for its answer), since an in-process datasite belongs to the process that runs it.

    python -m compute_nodes.host run
    python -m compute_nodes.host enroll --token TOKEN [--datasite NAME]
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
    jobs/<id>.json, <id>.answer.json  load requests and their answers
    host.json                        the running host's pid
    datasites/                       the datasites' state
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

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
    """Atomically, readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


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


# -- the host -------------------------------------------------------------------------------


@dataclass
class Hosted:
    enrollment: Enrollment
    node: Any  # compute_nodes.worker.ComputeNode
    site: Any  # compute_nodes.datasite.Datasite
    position: int


class Host:
    """Every enrolled provider's datasite and node, in this process."""

    def __init__(self, directory: Path, url: str, trust_file: Path) -> None:
        self.dir = directory
        self.url = url.rstrip("/")
        self.trust_file = trust_file
        self.hosted: dict[str, Hosted] = {}
        self.failed: dict[str, str] = {}  # participant id -> why it is not hosted
        self.anchoring = False  # an event waits for an anchored checkpoint
        self.stopping = threading.Event()

    # -- providers ------------------------------------------------------------------
    def refresh(self) -> None:
        """Host every enrolled provider not hosted yet; follow token rotations."""
        for path in sorted((self.dir / "providers").glob("*.json")):
            try:
                entry = Enrollment.load(path)
            except (ValueError, KeyError, TypeError) as exc:
                self._problem(path.stem, f"bad enrollment file {path}: {exc}")
                continue
            hosted = self.hosted.get(entry.participant_id)
            if hosted is not None:
                if hosted.enrollment.token != entry.token:
                    hosted.node.http.headers["Authorization"] = f"Bearer {entry.token}"
                    hosted.enrollment = entry
                continue
            try:
                self.hosted[entry.participant_id] = self._start(entry)
                self.failed.pop(entry.participant_id, None)
            except Exception as exc:  # noqa: BLE001 - PySyft raises many kinds; retried
                self._problem(entry.participant_id, f"cannot host {entry.name}: "
                              f"{type(exc).__name__}: {exc}")

    def _problem(self, key: str, why: str) -> None:
        if self.failed.get(key) != why:
            log.error("%s", why)
        self.failed[key] = why

    def _start(self, entry: Enrollment) -> Hosted:
        from compute_nodes import datasite
        from compute_nodes.worker import ComputeNode, Trust

        trust = Trust.from_file(self.trust_file)
        site = datasite.launch(entry.datasite, data_dir=self.dir / "datasites",
                               admin_password=entry.datasite_password)
        admin = site.admin()
        runner = datasite.data_scientist(site, admin, RUNNER_EMAIL,
                                         entry.datasite_password + "-runner")
        node = ComputeNode(self.url, entry.token, admin, runner, entry.datasite, trust)
        position = int((_read(self._position_file(entry.participant_id)) or {}).get("seq", 0))
        log.info("hosting %s (%s) on datasite %s from seq %d", entry.name,
                 entry.participant_id, entry.datasite, position)
        return Hosted(entry, node, site, position)

    def _position_file(self, participant_id: str) -> Path:
        return self.dir / "positions" / f"{participant_id}.json"

    # -- the log --------------------------------------------------------------------
    def follow(self, hosted: Hosted) -> int:
        """Hand the next page of the log to one provider's node; the number handled.

        The position moves past an event only once its outcome is on the ledger (or the
        event needs nothing); an event not yet anchored, or a platform error, stops the
        page there and comes again next round. Handling an event twice is harmless: the
        node's executions are idempotent.
        """
        r = hosted.node.http.get("/ledger/events",
                                 params={"after": hosted.position, "limit": PAGE})
        if r.status_code != 200:
            raise RuntimeError(f"GET /ledger/events: {r.status_code} {r.text[:300]}")
        from compute_nodes.worker import WATCHED, settled

        page = r.json()
        handled = 0
        for event in page["events"]:
            if event.get("type") in WATCHED:
                outcomes = hosted.node.handle(event)
                for outcome in outcomes:
                    log.info("%s: %s", hosted.enrollment.name,
                             json.dumps(asdict(outcome), ensure_ascii=False, default=str))
                if not settled(outcomes):  # not anchored yet, or the platform failed
                    self._save_position(hosted)
                    if all(o.settled or o.status == "not_anchored" for o in outcomes):
                        self.anchoring = True  # look again soon: checkpoints come often
                    return handled
                handled += 1
            hosted.position = int(event["seq"])
        next_after = int(page.get("next_after") or hosted.position)
        hosted.position = max(hosted.position, next_after)
        self._save_position(hosted)
        return handled

    def _save_position(self, hosted: Hosted) -> None:
        _write_private(self._position_file(hosted.enrollment.participant_id),
                       {"seq": hosted.position})

    # -- jobs -----------------------------------------------------------------------
    def jobs(self) -> None:
        """Answer the load requests waiting in ``jobs/``."""
        for path in sorted((self.dir / "jobs").glob("*.json")):
            if path.name.endswith(".answer.json"):
                continue
            answer_path = path.with_name(path.stem + ".answer.json")
            if answer_path.exists():
                continue
            job = _read(path) or {}
            try:
                answer = {"ok": True, "result": self._load(job)}
            except Exception as exc:  # noqa: BLE001 - reported to the waiting command
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            _write_private(answer_path, answer)

    def _load(self, job: dict[str, Any]) -> Any:
        dataset_id = str(job["dataset_id"])
        owner = None
        for hosted in self.hosted.values():
            r = hosted.node.http.get(f"/datasets/{dataset_id}")
            if r.status_code == 200 and r.json().get("owner_id") == \
                    hosted.enrollment.participant_id:
                owner = hosted
                break
        if owner is None:
            raise LookupError(f"dataset {dataset_id} belongs to no provider enrolled here "
                              f"(enrolled: {sorted(h.enrollment.name for h in self.hosted.values())}"
                              f"{'; not hosted: ' + str(self.failed) if self.failed else ''})")
        return owner.node.load(dataset_id, job["private"], job["mock"])

    # -- the loop -------------------------------------------------------------------
    def step(self) -> int:
        self.refresh()
        self.jobs()
        self.anchoring = False
        busy = 0
        for hosted in list(self.hosted.values()):
            try:
                busy += self.follow(hosted)
            except (httpx.HTTPError, RuntimeError) as exc:
                log.warning("%s: the platform: %s", hosted.enrollment.name, exc)
        return busy

    def run(self, pause: float) -> None:
        _write_private(self.dir / "host.json", {"pid": os.getpid(), "url": self.url})
        from compute_nodes.worker import ANCHOR_RETRY_S  # imports PySyft (seconds)

        parent = int(os.environ.get("DATALEDGER_NODE_PARENT_PID") or 0)
        try:
            while not self.stopping.is_set():
                if parent and os.getppid() != parent:
                    log.error("the server that started this node (pid %d) is gone", parent)
                    break
                if self.step() == 0:
                    self.stopping.wait(min(pause, ANCHOR_RETRY_S) if self.anchoring else pause)
        finally:
            for hosted in self.hosted.values():
                try:
                    hosted.site.land()
                except Exception as exc:  # noqa: BLE001
                    log.warning("landing %s: %s", hosted.enrollment.datasite, exc)
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
    en = sub.add_parser("enroll", help="give the node a provider's credentials")
    en.add_argument("--token", required=True,
                    help="a bearer token of the provider (e.g. a member made for the node)")
    en.add_argument("--datasite", default=None, help="the datasite's name")
    ld = sub.add_parser("load", help="load a dataset's private data and mock")
    ld.add_argument("--dataset", required=True)
    ld.add_argument("--private", required=True, type=Path)
    ld.add_argument("--mock", required=True, type=Path)
    sub.add_parser("status", help="the enrolled providers and the host's pid")
    args = parser.parse_args(argv)
    directory = node_dir()
    if args.command == "enroll":
        try:
            entry = enroll(directory, platform_url(), args.token, args.datasite)
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
    host = Host(directory, platform_url(), trust)
    signal.signal(signal.SIGTERM, lambda *_: host.stopping.set())
    try:
        host.run(float(os.environ.get("DATALEDGER_NODE_POLL_SECONDS") or 1))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
