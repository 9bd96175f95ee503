"""The chain as the server runs it: integrate new events, cut and co-sign checkpoints."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anchoring.actor_index import ActorIndex
from anchoring.checkpointer import Checkpointer, CutPolicy, WitnessClient
from anchoring.checkpoints import StoredCheckpoint
from anchoring.integrator import Integrator
from anchoring.tilestore_postgres import PostgresTileStore
from anchoring.tilestore_sqlite import SQLiteTileStore
from anchoring.treestore import TreeStore
from anchoring.witness import Witness
from anchoring.witness_clients import HttpWitness, LocalWitness, http_witnesses
from anchoring.witness_state import WitnessState, load_or_create_key
from chain.note import Signer, generate_ed25519
from chain.trust import trust_document
from events.store import EventStore
from events.url import DatabaseURL

log = logging.getLogger(__name__)

#: the embedded default's two witnesses (DESIGN.md §3): the regulator's and the providers'
EMBEDDED_WITNESSES = ("regulator-witness", "provider-consortium-witness")


def open_tree(url: DatabaseURL, data_dir: Path) -> TreeStore:
    """The tree beside the events: chain.db in the data dir, or the same PostgreSQL schema."""
    if url.kind == "sqlite":
        return TreeStore(SQLiteTileStore(os.fspath(data_dir.absolute() / "chain.db")))
    return TreeStore(PostgresTileStore(url.conninfo(), url.schema))


def load_or_create_signer(path: Path, origin: str) -> Signer:
    """The platform's Ed25519 note key, made at first start (file mode 0600)."""
    if path.exists():
        signer = Signer.from_key(path.read_text().strip())
        if signer.name != origin:
            raise ValueError(f"{path} holds the key of {signer.name!r}, not {origin!r}")
        return signer
    path.parent.mkdir(parents=True, exist_ok=True)
    skey, _ = generate_ed25519(origin)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(skey + "\n")
        f.flush()
        os.fsync(f.fileno())
    return Signer.from_key(skey)


def embedded_witnesses(data_dir: Path, origin_host: str, signer: Signer) -> list[WitnessClient]:
    """Two in-process witnesses, each with its own key and state file under data_dir."""
    out: list[WitnessClient] = []
    for short in EMBEDDED_WITNESSES:
        home = data_dir / "witnesses" / short
        key = load_or_create_key(home / "witness.key", f"{origin_host}/{short}")
        state = WitnessState(home / "state.db")
        out.append(LocalWitness(Witness(key, {signer.name: signer.verifier()}, state)))
    return out


def independence(witnesses: Sequence[WitnessClient], quorum: int) -> dict[str, Any]:
    """``{"independent", "why"}``: independent only if a quorum cannot be reached without a
    witness on another host. An in-process witness, or one at a loopback URL, counts as the
    operator's: its key and state are where the operator can rewrite them."""
    if quorum == 0:
        return {"independent": False, "why": "the quorum is 0: a checkpoint is anchored "
                "with no witness's co-signature"}
    local = [w.name for w in witnesses if not isinstance(w, HttpWitness) or w.on_this_host]
    if len(local) < quorum:
        remote = [w.url for w in witnesses if isinstance(w, HttpWitness) and not w.on_this_host]
        return {"independent": True, "why": (
            f"a quorum of {quorum} needs a witness on another host ({', '.join(remote)}): "
            "each keeps its own key and state and refuses to co-sign a rewritten log; "
            "independent as far as the operators of those hosts are")}
    if not any(isinstance(w, HttpWitness) for w in witnesses):
        where = ("in-process: their keys and state sit in this server's data dir beside the "
                 "log key")
    else:
        where = f"on this host ({', '.join(local)})"
    return {"independent": False, "why": (
        f"{len(local)} of the {len(witnesses)} witnesses run {where}, enough for the quorum "
        f"of {quorum}: whoever runs this server can rewrite the log, re-sign it and have them "
        "co-sign again. Run `dataledger witness` on other hosts and set "
        "DATALEDGER_WITNESS_URLS (README: Independent witnesses)")}


class ChainService:
    """Follows the log in a thread: integrate, then checkpoint when due."""

    def __init__(self, store: EventStore, tree: TreeStore, checkpointer: Checkpointer,
                 interval: float = 0.2) -> None:
        self.tree = tree
        self.integrator = Integrator(store, tree)
        self.checkpointer = checkpointer
        #: the per-actor index the checkpoints commit to (None: checkpoints without it)
        self.index = checkpointer.index if isinstance(checkpointer.index, ActorIndex) else None
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def witnesses(self) -> Sequence[WitnessClient]:
        return self.checkpointer.witnesses

    def trust_document(self) -> dict[str, Any]:
        """The log's key and origin, the witnesses and the quorum (``chain.trust``): what
        ``dataledger chain trust`` exports for a verifier to keep out of band."""
        cp = self.checkpointer
        return trust_document(cp.origin, cp.signer.verifier().vkey, cp.quorum,
                              [w.published() for w in self.witnesses])

    def independence(self) -> dict[str, Any]:
        """Whether the witnesses can hold this server's operator to the log (``/health``,
        serve's start line): :func:`independence`."""
        return independence(self.witnesses, self.checkpointer.quorum)

    def step(self) -> StoredCheckpoint | None:
        """Integrate everything stored, cut and co-sign if due; the newest checkpoint."""
        with self._lock:
            self.integrator.catch_up()
            return self.checkpointer.tick()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="chain", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def close(self) -> None:
        self.stop()
        self.tree.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.step()
            except Exception:  # keep following: the next round resumes from the tree size
                log.exception("chain step failed")
                time.sleep(self.interval)
            self._stop.wait(0.05)  # under load, integrate the events of 50 ms at once

    def wait_anchored(self, size: int, timeout: float = 10.0) -> StoredCheckpoint | None:
        """Block until an anchored checkpoint covers ``size`` leaves (None on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest = self.tree.checkpoints.latest(anchored=True)
            if latest is not None and latest.size >= size:
                return latest
            if self._thread is None:
                self.step()
            time.sleep(0.05)
        return None


def build_chain(store: EventStore, url: DatabaseURL, data_dir: Path, *, origin: str,
                key_file: Path | None, witness_urls: Sequence[str], quorum: int | None,
                policy: CutPolicy) -> ChainService:
    """Wire the tree, the platform key and the witnesses from settings."""
    tree = open_tree(url, data_dir)
    signer = load_or_create_signer(key_file or data_dir / "log.key", origin)
    witnesses: list[WitnessClient] = (
        list(http_witnesses(witness_urls)) if witness_urls
        else embedded_witnesses(data_dir, origin.split("/")[0], signer))
    needed = len(witnesses) if quorum is None else quorum
    index = ActorIndex(store, tree.tiles) if policy.index else None
    return ChainService(store, tree, Checkpointer(tree, signer, witnesses, needed, policy,
                                                  index=index))
