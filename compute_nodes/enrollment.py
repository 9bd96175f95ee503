"""What the node directory records for the host: the providers enrolled (their credentials)
and the load requests the running host answers.

    providers/<participant id>.json   an enrolled provider: token, datasite name and password
                                      (0600, in a 0700 directory: the provider's credentials)
    providers/<participant id>.node-key  its node's X25519 key for joint products (32 raw
                                      bytes, 0600): made once, kept across re-enrollment
    jobs/<id>.json, <id>.answer.json  a load request and its answer
    host.json                         the running host's pid
    nodes/<participant id>.json       a running node process: pid, when started, when ready

Used by ``compute_nodes/host.py``, with the commands that read or write them (``enroll``,
``load``, ``status``); imports no PySyft.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from compute_nodes.hygiene import alive
from core import secagg
from core.files import private_dir, write_private

JOB_TIMEOUT_S = 600.0
HOST_START_S = 30.0  # how long load waits for the host of a serve that is starting


def write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` as JSON in ``path``, readable by this user only (0600, in a 0700 directory)."""
    private_dir(path.parent)
    write_private(path, json.dumps(data, ensure_ascii=False, indent=2))


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None if there is no such file or it holds no object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return data if isinstance(data, dict) else None


# -- the node's key for joint products (docs/SECAGG.md) ------------------------------------

def node_key_path(directory: Path, participant_id: str) -> Path:
    """Where a host's node keeps a provider's X25519 key: beside its enrollment."""
    return directory / "providers" / f"{participant_id}.node-key"


def ensure_node_key(path: Path) -> X25519PrivateKey:
    """The node's key kept at ``path`` (32 raw bytes, 0600), made once: an existing key is
    kept (re-enrollment rotates the token, not the key its peers know)."""
    if path.exists():
        return read_node_key(path)
    private_dir(path.parent)
    key = secagg.new_node_key()
    spare = path.with_name(f".{path.name}.{os.getpid()}.new")
    write_private(spare, key.private_bytes_raw())
    try:
        os.link(spare, path)  # never replaces a key another process made meanwhile
    except FileExistsError:
        return read_node_key(path)
    finally:
        spare.unlink(missing_ok=True)
    return key


def read_node_key(path: Path) -> X25519PrivateKey:
    """The key at ``path``; ValueError if it is not 32 raw bytes."""
    raw = path.read_bytes()
    if len(raw) != 32:
        raise ValueError(f"{path}: a node key is 32 raw bytes, not {len(raw)}")
    return X25519PrivateKey.from_private_bytes(raw)


def node_public_key(path: Path) -> str:
    """The public half of the key at ``path``, as its provider registers it
    (``secagg.public_key_text``: base64 of 32 bytes)."""
    return secagg.public_key_text(read_node_key(path).public_key())


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
        data = read_json(path)
        if data is None:
            raise ValueError(f"{path}: not a JSON object")
        return cls(**{k: str(data[k]) for k in cls.__dataclass_fields__})

    @property
    def runner_password(self) -> str:
        """The password of the datasite account that submits code requests."""
        return self.datasite_password + "-runner"

    @property
    def secrets(self) -> tuple[str, str, str]:
        """What no log may show: the token and the datasite's two passwords."""
        return self.token, self.datasite_password, self.runner_password


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
    """Record a provider's node credentials, and make its node key unless it has one; the
    running host picks them up."""
    participant = whoami(url, token)["participant"]
    if participant.get("role") != "provider":
        raise EnrollmentError(f"participant {participant.get('id')} is a "
                              f"{participant.get('role')}, not a provider: only providers "
                              "run datasites")
    if participant.get("state") not in (None, "admitted"):
        raise EnrollmentError(f"provider {participant['id']} is {participant.get('state')}, "
                              "not admitted")
    pid = str(participant["id"])
    private_dir(directory)
    path = directory / "providers" / f"{pid}.json"
    before = read_json(path) or {}
    entry = Enrollment(
        participant_id=pid, name=str(participant.get("name", "")), token=token,
        # a datasite keeps its name and password across re-enrollment (token rotation)
        datasite=str(before.get("datasite") or datasite or f"datasite-{pid[:8]}"),
        datasite_password=str(before.get("datasite_password") or secrets.token_urlsafe(24)))
    write_json(path, asdict(entry))
    ensure_node_key(node_key_path(directory, pid))
    return entry


# -- the commands ---------------------------------------------------------------------------


def enroll_command(directory: Path, url: str, datasite: str | None) -> int:
    """``enroll``: the token from DATALEDGER_NODE_TOKEN or standard input."""
    token = (os.environ.get("DATALEDGER_NODE_TOKEN") or sys.stdin.readline()).strip()
    if not token:
        print("enroll: no token (set DATALEDGER_NODE_TOKEN or give it on standard input)",
              file=sys.stderr)
        return 2
    try:
        entry = enroll(directory, url, token, datasite)
    except EnrollmentError as exc:
        print(f"enroll: {exc}", file=sys.stderr)
        return 1
    # the provider's member registers node_key (POST /participants/{id}/node-key, signed):
    # its peers mask against it in a joint product
    print(json.dumps({"participant_id": entry.participant_id, "name": entry.name,
                      "datasite": entry.datasite, "node_key": node_public_key(
                          node_key_path(directory, entry.participant_id))},
                     ensure_ascii=False))
    return 0


def load_command(directory: Path, dataset_id: str, private: Path, mock: Path) -> int:
    """``load``: through the running host (a standalone node: into its own datasite)."""
    if os.environ.get("DATALEDGER_NODE_TOKEN"):  # a standalone node's own datasite
        from compute_nodes import cli

        return cli.main(["load", "--dataset", dataset_id, "--private", str(private),
                         "--mock", str(mock)])
    try:
        answer = submit_load(directory, dataset_id, private, mock)
    except (RuntimeError, TimeoutError, FileNotFoundError) as exc:
        print(f"load: {exc}", file=sys.stderr)
        return 1
    if not answer.get("ok"):
        print(f"load: {answer.get('error')}", file=sys.stderr)
        return 1
    print(json.dumps(answer["result"], ensure_ascii=False, default=str))
    return 0


def status_command(directory: Path) -> int:
    """``status``: the providers enrolled, their node processes, the host."""
    providers = []
    for path in sorted((directory / "providers").glob("*.json")):
        entry = Enrollment.load(path)
        position = (read_json(directory / "positions" / path.name) or {}).get("seq", 0)
        node_pid = int((read_json(directory / "nodes" / path.name) or {}).get("pid") or 0)
        providers.append({"participant_id": entry.participant_id, "name": entry.name,
                          "datasite": entry.datasite, "position": position,
                          "node_pid": node_pid if node_pid and alive(node_pid) else None})
    print(json.dumps({"host_pid": running_host(directory), "providers": providers},
                     ensure_ascii=False, indent=2))
    return 0


# -- load requests --------------------------------------------------------------------------


def running_host(directory: Path) -> int | None:
    """The pid of the host running on ``directory``, if any."""
    data = read_json(directory / "host.json")
    if not data:
        return None
    pid = int(data.get("pid", 0))
    return pid if pid and alive(pid) else None


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
    write_json(job, {"dataset_id": dataset_id, "private": str(private.absolute()),
                     "mock": str(mock.absolute())})
    answer_path = job.with_name(f"{job_id}.answer.json")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            answer = read_json(answer_path)
            if answer is not None:
                return answer
            if running_host(directory) is None:
                raise RuntimeError("the compute node host stopped before answering")
            time.sleep(0.2)
        raise TimeoutError(f"the host did not answer within {timeout:.0f} s")
    finally:
        job.unlink(missing_ok=True)
        answer_path.unlink(missing_ok=True)


