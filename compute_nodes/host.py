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

The host forks the node processes from a fork server (``compute_nodes/forkserver.py``) that
imported PySyft once, so a node's datasite is ready about a second after it is started
rather than after the several seconds of a fresh import. Each process dies with its parent,
even after a ``kill -9`` (``PR_SET_PDEATHSIG``, ``compute_nodes/hygiene.py``), and holds the
host's lock, so that no new host starts while one of them lives; a node process holds its
datasite directory's lock (``node.lock``) for its life, so that two PySyft instances never
run on one datasite (a second one waits ``DATALEDGER_NODE_SITE_LOCK_SECONDS``, then exits
with an error and is started again later). A node process's logs (``compute_nodes/logs.py``): its operational
log on stderr, which reaches serve's output, with every secret redacted; PySyft's records,
whatever is printed, and the private logger (``dataledger.provider_private``) in the
``private.log`` of its datasite directory, which may hold private values.

    python -m compute_nodes.host run --trust FILE
    python -m compute_nodes.host fork-server                       (started by run)
    python -m compute_nodes.host provider --id PARTICIPANT_ID      (forked by the fork server)
    DATALEDGER_NODE_TOKEN=TOKEN python -m compute_nodes.host enroll [--datasite NAME]
    python -m compute_nodes.host load --dataset ID --private FILE --mock FILE
    python -m compute_nodes.host status

Settings from the environment (``dataledger compute-node`` and ``serve`` set the first two):
    DATALEDGER_NODE_DATA_DIR       the node's directory (default var/node)
    DATALEDGER_NODE_PLATFORM_URL   the ledger API (default http://127.0.0.1:8000)
    DATALEDGER_NODE_TRUST          the keys trusted, as run's --trust FILE (required: serve
                                   hands over its own, with DATALEDGER_NODE_TRUST_FROM_SERVE=1,
                                   and the host says so; compute_nodes/trust.py)
    DATALEDGER_NODE_POLL_SECONDS   pause between rounds when idle (default 1)
    DATALEDGER_NODE_PARALLEL       executions at once per provider (default 4)
    DATALEDGER_NODE_HIDE           more paths the sandbox hides (serve: its data directory)
    DATALEDGER_NODE_PARENT_PID     set by serve: the host exits when that process is gone
    DATALEDGER_NODE_SITE_LOCK_SECONDS  how long a node process waits for its datasite (30)

Layout of the node directory (every directory 0700, every file 0600: the node's user only;
the product's code runs as another user, in a sandbox that sees none of it):
    providers/<participant id>.json  an enrolled provider: token, datasite name and password
                                     (the provider's credentials); .node-key: its node key
    parts/<participant id>/          the masked parts of joint products it made (joint.py)
    positions/<participant id>.json  the last seq of the log this provider's node handled
    nodes/<participant id>.json      its running node process: pid, when started, when ready
    jobs/<id>.json, <id>.answer.json  load requests and their answers (jobs/<participant id>/:
                                     requests handed to that provider's process)
    host.json, host.lock             the running host's pid; the lock one host holds
    datasites/<uid>/                 a datasite's state (db/, blob/), its node.lock and its
                                     private.log (<uid>: PySyft's uid of the datasite's name)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import httpx

from compute_nodes import forkserver, hygiene, logs
from compute_nodes.enrollment import (
    JOB_TIMEOUT_S,
    Enrollment,
    enroll,
    enroll_command,
    load_command,
    node_key_path,
    running_host,
    status_command,
    submit_load,
)
from compute_nodes.enrollment import read_json as _read
from compute_nodes.enrollment import write_json as _write_private
from core.files import private_dir
from core.supervise import Backoff, Supervisor

__all__ = ["Host", "ProviderNode", "enroll", "main", "node_environment", "running_host",
           "submit_load"]

log = logging.getLogger("compute_nodes.host")

RUNNER_EMAIL = "compute-node@dataledger.example"
PAGE = 500  # events per poll
SITE_LOCK_WAIT_S = 30.0  # a node process waits this long for its datasite's lock
HOST_LOCK_WAIT_S = 10.0  # a host waits this long for the node processes of a killed one
#: what the fork server imports once for every node process it forks
PRELOAD = ("pandas", "syft", "compute_nodes.datasite", "compute_nodes.node",
           "compute_nodes.trust", "compute_nodes.feeds", "compute_nodes.outcome")


def node_dir() -> Path:
    return Path(os.environ.get("DATALEDGER_NODE_DATA_DIR") or "var/node").absolute()


def platform_url() -> str:
    return os.environ.get("DATALEDGER_NODE_PLATFORM_URL") or "http://127.0.0.1:8000"


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
        self.sandbox: Any = None  # compute_nodes.sandbox.Sandbox
        self.follower: Any = None  # compute_nodes.feeds.HttpFollower, once started
        self.stopping = threading.Event()
        #: when this process started (forked: the fork server says when), for the record
        self.started_at = float(os.environ.get("DATALEDGER_NODE_STARTED_AT") or time.time())
        self._site_lock: IO[str] | None = None

    def claim(self) -> Path:
        """Hold the datasite directory's lock for this process's life, and send this
        process's logs where they belong (``compute_nodes/logs.py``); the directory.

        Exits with 75 (EX_TEMPFAIL) if another process still holds the lock after
        ``DATALEDGER_NODE_SITE_LOCK_SECONDS``: the host starts this node again later."""
        from syft.server.utils import get_named_server_uid

        sites = private_dir(self.dir / "datasites")
        site_dir = private_dir(sites / str(get_named_server_uid(self.enrollment.datasite)))
        try:
            self._site_lock = hygiene.hold(site_dir / "node.lock", float(
                os.environ.get("DATALEDGER_NODE_SITE_LOCK_SECONDS") or SITE_LOCK_WAIT_S))
        except hygiene.Taken as exc:
            log.error("the node of %s cannot start: datasite %s is in use by another node "
                      "process (pid %s) of %s", self.enrollment.name, self.enrollment.datasite,
                      exc.holder or "unknown", site_dir)
            raise SystemExit(75) from None
        logs.provider_logging(site_dir, self.enrollment.secrets)
        return site_dir

    def start(self) -> None:
        from compute_nodes import datasite
        from compute_nodes.feeds import HttpFollower, Position
        from compute_nodes.node import ComputeNode
        from compute_nodes.runs import PARALLEL
        from compute_nodes.sandbox import Sandbox
        from compute_nodes.trust import Trust

        trust = Trust.from_file(self.trust_file)
        # the product's code runs in the sandbox, which sees none of the node's directory;
        # its warm workers start (processes of their own) while the datasite starts here
        made: dict[str, Any] = {}

        def start_sandbox() -> None:
            try:
                made["sandbox"] = Sandbox(hide=hidden_paths(self.dir))
            except BaseException as exc:  # noqa: BLE001 - raised below, in this thread
                made["error"] = exc

        starting = threading.Thread(target=start_sandbox, name="sandbox-start", daemon=True)
        starting.start()
        site = None
        try:
            site = datasite.launch(self.enrollment.datasite, data_dir=self.dir / "datasites")
            admin, runner = self._clients(site)
        except BaseException:
            starting.join()
            if "sandbox" in made:
                made["sandbox"].close()
            if site is not None:
                site.land()
            raise
        starting.join()
        if "error" in made:
            site.land()
            raise made["error"]
        self.site, self.sandbox = site, made["sandbox"]
        self.node = ComputeNode(self.url, self.enrollment.token,
                                (admin, runner, self.enrollment.datasite), trust, self.sandbox,
                                parallel=int(os.environ.get("DATALEDGER_NODE_PARALLEL")
                                             or PARALLEL))
        self.node.use_node_key(node_key_path(self.dir, self.participant_id),
                               self.dir / "parts" / self.participant_id)
        self.follower = HttpFollower(self.node, Position(self._position_file()),
                                     on_outcome=self._tell)
        ready = time.time()
        _write_private(self._node_file(), {"pid": os.getpid(), "started_at": self.started_at,
                                           "ready_at": ready})
        log.info("hosting %s (%s) on datasite %s from seq %d (ready %.1f s after its start)",
                 self.enrollment.name, self.participant_id, self.enrollment.datasite,
                 self.follower.pos.seq, ready - self.started_at)

    def _clients(self, site: Any) -> tuple[Any, Any]:
        """The datasite admin's client and the runner's (which submits code requests): once
        the runner's account exists (a restart), both made from the keys the in-process
        datasite keeps for them (``Datasite.session``: no bcrypt verification of each
        password); the first start sets the admin's password (PySyft's default until then)
        and makes the runner's account."""
        from syft.types.errors import SyftException

        from compute_nodes import datasite

        site.admin_password = self.enrollment.datasite_password
        with contextlib.suppress(SyftException, datasite.DatasiteUnavailableError):  # restart
            runner = site.session(RUNNER_EMAIL)
            return site.session(site.admin_email), runner
        try:
            admin = site.admin()
        except SyftException:  # the first start
            first = site.login(site.admin_email, datasite.DEFAULT_ADMIN_PASSWORD)
            first.account.set_password(self.enrollment.datasite_password, confirm=False)
            admin = site.admin()
        try:
            runner = site.login(RUNNER_EMAIL, self.enrollment.runner_password)
        except SyftException:  # the first start
            runner = datasite.data_scientist(site, admin, RUNNER_EMAIL,
                                             self.enrollment.runner_password)
        return admin, runner

    def _node_file(self) -> Path:
        return self.dir / "nodes" / f"{self.participant_id}.json"

    def _position_file(self) -> Path:
        return self.dir / "positions" / f"{self.participant_id}.json"

    def _tell(self, outcome: Any) -> None:
        log.info("%s: %s", self.enrollment.name,
                 json.dumps(asdict(outcome), ensure_ascii=False, default=str))

    # -- the log: compute_nodes.feeds.HttpFollower, a page per round ------------------------

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
        from client.platform import PlatformError
        from compute_nodes.feeds import IDLE, MORE, WAITING

        self.claim()
        self.start()
        parent = int(os.environ.get("DATALEDGER_NODE_PARENT_PID") or 0)
        try:
            while not self.stopping.is_set():
                if parent and os.getppid() != parent:
                    log.error("the fork server that started this node (pid %d) is gone",
                              parent)
                    break
                self.jobs()
                try:
                    state = self.follower.step(self.stopping, PAGE)
                except (PlatformError, httpx.HTTPError, ValueError) as exc:
                    log.warning("%s: the platform: %s", self.enrollment.name, exc)
                    state = IDLE
                if state != MORE:
                    self.stopping.wait(min(pause, self.follower.pending.due_in())
                                       if state == WAITING else pause)
        finally:
            self.node.close()
            self.sandbox.close()
            self.site.land()
            self._node_file().unlink(missing_ok=True)


# -- the host: a process per provider -----------------------------------------------------------


class Host:
    """Keeps one node process per enrolled provider (:class:`ProviderNode`), forked by its
    fork server, and routes the load requests of ``jobs/`` to the owner's process. Imports
    no PySyft itself."""

    def __init__(self, directory: Path, url: str, trust_file: Path | None) -> None:
        self.dir = directory
        self.url = url.rstrip("/")
        #: the keys the node processes trust (None until read: the host may start its fork
        #: server first, no node process before it is set)
        self.trust_file = trust_file
        #: a provider's node process, kept running
        self.children: dict[str, Supervisor[forkserver.ForkedChild]] = {}
        self.stopping = threading.Event()
        self.forks: forkserver.ForkServer | None = None
        #: the secrets of the providers enrolled, redacted from this process's log
        self.redactor = logs.Redactor()
        self._lock: IO[str] | None = None
        self._forks_backoff = Backoff(*RESTART_PAUSE_S, STEADY_S)
        self._forks_again = 0.0  # monotonic time the fork server may be started again

    def enrolled(self) -> dict[str, Enrollment]:
        out = {}
        for path in sorted((self.dir / "providers").glob("*.json")):
            try:
                entry = Enrollment.load(path)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("bad enrollment file %s: %s", path, exc)
                continue
            self.redactor.add(*entry.secrets)
            out[entry.participant_id] = entry
        return out

    # -- the provider processes -----------------------------------------------------
    def keep_running(self, enrolled: dict[str, Enrollment], pause: float) -> None:
        """Start the node process of each provider enrolled since the last call, all at
        once, as soon as the fork server is ready."""
        if self.forks is None or not self.forks.ready.is_set():
            return
        for pid, entry in enrolled.items():
            if pid in self.children:
                continue
            child = Supervisor(f"the node of {entry.name}",
                               functools.partial(self._start_node, pid, entry, pause),
                               Backoff(*RESTART_PAUSE_S, STEADY_S), log=log)
            try:
                child.start()
            except forkserver.ForkServerError as exc:  # tried again next round
                log.error("could not start the node of %s: %s", entry.name, exc)
                continue
            self.children[pid] = child

    def _start_node(self, pid: str, entry: Enrollment, pause: float) -> forkserver.ForkedChild:
        assert self.forks is not None
        child = self.forks.spawn(pid, node_environment({
            "DATALEDGER_NODE_DATA_DIR": str(self.dir),
            "DATALEDGER_NODE_PLATFORM_URL": self.url,
            "DATALEDGER_NODE_TRUST": str(self.trust_file),
            "DATALEDGER_NODE_POLL_SECONDS": str(pause)}))
        log.info("started the node of %s (pid %s)", entry.name, child.pid)
        return child

    def stop_children(self) -> None:
        for child in self.children.values():
            child.request_stop()
        for child in self.children.values():
            child.stop(STOP_GRACE_S)

    # -- the fork server ------------------------------------------------------------
    def keep_fork_server(self) -> None:
        """Start the fork server, and again after a pause if it died (the node processes
        died with it; their supervisors start them again once it is ready). From the main
        thread only: the fork server dies when the thread that started it ends."""
        assert threading.current_thread() is threading.main_thread()
        assert self._lock is not None
        if self.forks is None:
            self.forks = forkserver.ForkServer(
                [sys.executable, "-m", "compute_nodes.host", "fork-server"],
                node_environment({"DATALEDGER_NODE_PARENT_PID": str(os.getpid())}),
                pass_fds=(self._lock.fileno(),))  # the host's lock covers what it forks
        elif self.forks.alive or time.monotonic() < self._forks_again:
            return
        started = time.monotonic()
        self.forks.start()
        self._forks_again = started + self._forks_backoff.pause(0.0)

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
            if owner is not None and child is None:
                continue  # its node starts once the fork server is ready: the job waits
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
    def take_directory(self) -> None:
        """The node directory, for this host only: its subdirectories made 0700 (an older
        directory too), and ``host.lock`` held, which the fork server and every node
        process inherit. Exits if another host runs; waits ``HOST_LOCK_WAIT_S`` for the
        node processes of a host that died (they die with it)."""
        for sub in ("", "providers", "positions", "nodes", "jobs", "datasites", "parts"):
            private_dir(self.dir / sub)
        try:
            self._lock = hygiene.hold(self.dir / "host.lock", 0)
            return
        except hygiene.Taken:
            other = running_host(self.dir)
            if other is not None:
                raise SystemExit(f"another compute node host runs on {self.dir} "
                                 f"(pid {other})") from None
        try:
            self._lock = hygiene.hold(self.dir / "host.lock", HOST_LOCK_WAIT_S)
        except hygiene.Taken as exc:
            raise SystemExit(f"{exc}: processes of a compute node host that is gone "
                             "still run") from None

    def run(self, pause: float) -> None:
        assert self.trust_file is not None
        if self._lock is None:  # main() may have taken it already
            self.take_directory()
        _write_private(self.dir / "host.json", {"pid": os.getpid(), "url": self.url})
        self.clean_spool()
        parent = int(os.environ.get("DATALEDGER_NODE_PARENT_PID") or 0)
        try:
            while not self.stopping.is_set():
                if parent and os.getppid() != parent:
                    log.error("the server that started this node (pid %d) is gone", parent)
                    break
                enrolled = self.enrolled()
                if enrolled:  # PySyft is imported once there is a datasite to run
                    self.keep_fork_server()
                self.keep_running(enrolled, pause)
                self.route_jobs(enrolled)
                if self.forks is not None and self.forks.alive and \
                        not self.forks.ready.is_set():  # the nodes start once it is ready
                    self.forks.ready.wait(min(pause, 0.5))
                else:
                    self.stopping.wait(min(pause, 0.5))
        finally:
            self.stop_children()
            if self.forks is not None:
                self.forks.stop()
            (self.dir / "host.json").unlink(missing_ok=True)


def hidden_paths(directory: Path) -> list[Path]:
    """What the sandbox hides: the node's directory and ``DATALEDGER_NODE_HIDE`` (paths
    separated by ``os.pathsep``; serve names its data directory)."""
    extra = os.environ.get("DATALEDGER_NODE_HIDE", "")
    return [directory.resolve(), *(Path(p).resolve() for p in extra.split(os.pathsep) if p)]


# -- command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dataledger compute-node",
                                     description="the embedded compute node host")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "host every enrolled provider's datasite and node"),
                       ("host", "the same as run")):
        sub.add_parser(name, help=text).add_argument(
            "--trust", metavar="FILE", help="the keys the nodes trust, taken out of band "
            "(default DATALEDGER_NODE_TRUST)")
    sub.add_parser("fork-server", help="fork the node processes (started by run)")
    pv = sub.add_parser("provider", help="one provider's node (forked by run)")
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
    sub.add_parser("status", help="the enrolled providers, their node processes and the "
                   "host's pid")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    directory = node_dir()
    if args.command == "enroll":
        return enroll_command(directory, platform_url(), args.datasite)
    if args.command == "load":
        return load_command(directory, args.dataset, args.private, args.mock)
    if args.command == "status":
        return status_command(directory)
    if args.command == "fork-server":
        logs.operational_logging(logs.Redactor())
        return forkserver.serve(lambda participant: main(["provider", "--id", participant]),
                                functools.partial(forkserver.preload, PRELOAD))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=logs.FORMAT)
    host = None
    if args.command != "provider":
        # the fork server's import of PySyft (seconds) starts first: the trust keys are read
        # meanwhile (compute_nodes.trust's own import takes a few tenths of a second)
        host = Host(directory, platform_url(), None)
        logs.operational_logging(host.redactor)
        host.take_directory()
        if host.enrolled():
            host.keep_fork_server()
    from compute_nodes.trust import TrustError, node_trust

    try:
        trust, _, said = node_trust(getattr(args, "trust", None))
    except TrustError as exc:
        print(f"compute node {args.command}: {exc}", file=sys.stderr)
        if host is not None and host.forks is not None:
            host.forks.stop()
        return 2
    pause = float(os.environ.get("DATALEDGER_NODE_POLL_SECONDS") or 1)
    runner: Host | ProviderNode
    if args.command == "provider":  # its logs are set up once it holds its datasite
        try:
            runner = ProviderNode(directory, platform_url(), trust, args.id)
        except (ValueError, KeyError, TypeError) as exc:
            print(f"provider {args.id}: not enrolled here: {exc}", file=sys.stderr)
            return 1
    else:
        assert host is not None
        runner, host.trust_file = host, trust
        log.info("compute node host: %s", said)
    signal.signal(signal.SIGTERM, lambda *_: runner.stopping.set())
    try:
        runner.run(pause)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
