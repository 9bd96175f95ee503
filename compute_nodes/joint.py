"""A provider's part of a joint computation (white paper 6.1, step 1; docs/SECAGG.md).

For a product that declares a joint output (its proven ``product.registered`` payload's
``joint``), an execution >= 1 does not deliver this provider's rows. Once the output
contract passed, :class:`JointNode` turns them into this provider's masked part:

1. the **layout**: the layout provider (the owner of the product's first input) posts the
   sorted unique key-column values of its output (``POST /joint/{id}/layout``); every
   provider waits for it (until the joint's deadline) and checks its SHA-256 (of the key
   list's canonical JSON) against the joint's proven ``joint.layout_published``; the hash is
   bound into every pair's mask (``secagg.mask``'s ``layout_sha256``), so parts laid out
   over different layouts never cancel;
2. the **vector**: row-major over the layout, for each key each value column: the
   provider's value, 0 where it has no row (two rows of one key add up; a row whose key is
   not in the layout is dropped, counted in the private log only), in fixed point
   (``secagg.to_fixed``);
3. the **keys**: this node's X25519 key (``<node dir>/providers/<pid>.node-key``, made at
   enrollment) must be the one its provider registered; each peer's key comes from its
   participant view, checked against its ``participant.node_key_registered`` event proven
   under an anchored checkpoint (``compute_nodes/trust.py``), signed by a member of that
   provider (``compute_nodes/joint_proofs.py``), never the platform's word;
4. the **masked part** (``secagg.mask``) is stored under the node's directory (0600) before
   it is posted (``POST /computations/{id}/masked-part``); a retry posts the stored part
   again and never masks twice (two maskings under one execution id would leak the
   difference of the two vectors).

The joint's providers and terms the platform shows are checked against the proven events:
the view against its ``joint.started``, the key and value columns against
``product.registered``, the providers (the distinct owners of the product's inputs, each
proven from its ``dataset.registered``, in input order) against the parties of the proven
``contract.proposed``. A failure raises :class:`JointFailed`; the executor records it
(``reason`` on the log, ``detail`` in the provider's private log only).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from client.platform import PlatformError
from compute_nodes.enrollment import read_node_key
from compute_nodes.joint_proofs import JointProofs
from compute_nodes.logs import private_log
from compute_nodes.outcome import Outcome
from compute_nodes.platform import NodePlatform
from compute_nodes.trust import TrustError, Verifier
from core import secagg
from core.canonical import canonical_bytes
from core.files import private_dir, write_private

#: a layout key: a non-empty string of at most this many characters, and of at most
#: ``secagg.MAX_CODE_BYTES`` bytes of UTF-8 (a code of the hidden table)
MAX_KEY_CHARS = 200
MAX_LAYOUT = 2_000_000
POLL_S = 0.5  # pause between two looks at the joint while waiting (layout, peers' keys)


class JointFailed(Exception):
    """The joint part cannot be made or posted: ``reason`` (``"<code>: <sentence>"``) goes
    on the log and never quotes a private value; ``detail`` to the private log only."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


# -- the terms, the layout and the vector ---------------------------------------------------

@dataclass(frozen=True)
class JointTerms:
    """A joint product's terms, from proven events: its key and value columns and bounds
    (``product.registered``), every input dataset in product order, and the parties of the
    contract (``contract.proposed``'s ``required_approvals``)."""

    key_column: str
    value_columns: tuple[str, ...]
    min_providers: int
    deadline_seconds: int
    input_ids: tuple[str, ...]
    parties: tuple[str, ...]

    @classmethod
    def of(cls, registered: Mapping[str, Any],
           proposed: Mapping[str, Any]) -> JointTerms | None:
        """The terms of a proven ``product.registered`` payload (None: plain mode) under
        the proven ``contract.proposed`` payload."""
        joint = registered.get("joint")
        if joint is None:
            return None
        if not isinstance(joint, Mapping) or not isinstance(registered.get("key_column"), str):
            raise TrustError("product.registered: a joint output without a key column")
        return cls(str(registered["key_column"]),
                   tuple(str(c) for c in joint.get("value_columns") or ()),
                   int(joint.get("min_providers", 2)), int(joint.get("deadline_seconds", 600)),
                   tuple(str(i["dataset_id"]) for i in registered.get("inputs") or ()),
                   tuple(str(p) for p in proposed.get("required_approvals") or ()))


def layout_sha256(keys: Sequence[str]) -> str:
    """The layout's hash as the ledger records it: SHA-256 of the key list's canonical
    JSON."""
    return hashlib.sha256(canonical_bytes(list(keys))).hexdigest()


def _key(row: Mapping[str, Any], key_column: str) -> str | None:
    value = row.get(key_column)
    return value if _usable(value) else None


def _usable(key: Any) -> bool:
    """A key the ledger lays out: a non-empty string of at most 200 characters and
    ``secagg.MAX_CODE_BYTES`` bytes of UTF-8, no NUL (nor a lone surrogate, which has no
    UTF-8)."""
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS or "\x00" in key:
        return False
    try:
        return len(key.encode("utf-8")) <= secagg.MAX_CODE_BYTES
    except UnicodeEncodeError:
        return False


def layout_of(rows: Sequence[Mapping[str, Any]], key_column: str) -> tuple[list[str], int]:
    """The layout the layout provider posts: the sorted unique key-column values of its
    rows, and how many rows had no usable key (``_usable``)."""
    keys = {_key(row, key_column) for row in rows}
    unusable = sum(1 for row in rows if _key(row, key_column) is None)
    keys.discard(None)
    return sorted(k for k in keys if k is not None), unusable


def check_layout(keys: Any) -> list[str]:
    """A layout as fetched: a list of 1 to 2,000,000 sorted unique keys."""
    if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_LAYOUT or not all(
            _usable(k) for k in keys) or any(
            a >= b for a, b in itertools.pairwise(keys)):
        raise JointFailed("layout_refused: the layout is not 1 to 2,000,000 sorted unique "
                          "keys")
    return keys


@dataclass(frozen=True)
class Vector:
    """A provider's values laid out (real numbers, before ``to_fixed``) and what was left
    out: rows whose key is not in the layout, and null values counted as 0."""

    values: list[float | int]
    dropped: int
    nulls: int


def vector(rows: Sequence[Mapping[str, Any]], layout: Sequence[str], key_column: str,
           value_columns: Sequence[str]) -> Vector:
    """Row-major over ``layout``: for each key, each value column (0 without a row; the
    rows of one key add up). A value that is not a number raises JointFailed."""
    width = len(value_columns)
    index = {key: i * width for i, key in enumerate(layout)}
    values: list[float | int] = [0] * (len(layout) * width)
    dropped = nulls = 0
    for row in rows:
        key = _key(row, key_column)
        at = None if key is None else index.get(key)
        if at is None:
            dropped += 1
            continue
        for j, column in enumerate(value_columns):
            value = row.get(column)
            if value is None:
                nulls += 1
            elif isinstance(value, bool) or not isinstance(value, int | float) or (
                    isinstance(value, float) and not math.isfinite(value)):
                raise JointFailed(f"result_not_reportable: the value column {column!r} "
                                  "holds a value that is not a finite number")
            else:
                values[at + j] += value
    return Vector(values, dropped, nulls)


def joint_rows(result: Any) -> list[dict[str, Any]]:
    """The product's output as rows of plain values (floats kept: a number column may be
    fractional, and the rows never leave the node in clear)."""
    import pandas as pd  # type: ignore[import-untyped]  # the compute venv has it

    if isinstance(result, pd.DataFrame):
        result = result.to_dict(orient="records")
    if not isinstance(result, list) or not all(isinstance(r, Mapping) for r in result):
        raise JointFailed("result_not_reportable: a joint product's output must be a table "
                          "of rows")
    return [{str(k): _plain(v) for k, v in row.items()} for row in result]


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy scalars
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# -- the stored parts -----------------------------------------------------------------------

class PartStore:
    """The masked parts this node made, one file per joint execution (0600, in a 0700
    directory): posted again on a retry, never masked twice."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def path(self, joint_id: str) -> Path:
        return self.dir / f"{hashlib.sha256(joint_id.encode()).hexdigest()[:32]}.part.json"

    def load(self, joint_id: str) -> secagg.MaskedPart | None:
        try:
            data = json.loads(self.path(joint_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        part = secagg.MaskedPart(data["header"], base64.b64decode(data["body"]))
        if part.header.get("execution_id") != joint_id:
            raise JointFailed("part_store: the stored part is not of this execution")
        return part

    def save(self, part: secagg.MaskedPart) -> None:
        private_dir(self.dir)
        write_private(self.path(str(part.header["execution_id"])), json.dumps(
            {"header": dict(part.header), "body": base64.b64encode(part.body).decode()}))

    def all(self) -> list[secagg.MaskedPart]:
        """Every part stored (the tests read them)."""
        out = []
        for path in sorted(self.dir.glob("*.part.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            out.append(secagg.MaskedPart(data["header"], base64.b64decode(data["body"])))
        return out


# -- the node's side ------------------------------------------------------------------------

def deadline_of(view: Mapping[str, Any]) -> float:
    """The joint's deadline (ISO UTC) as a POSIX time."""
    text = str(view.get("deadline") or "")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise TrustError(f"the joint's deadline {text!r} is not an ISO time in UTC")
    return when.timestamp()


#: a peer's key not proven yet: its event is above the latest anchored checkpoint
_NOT_ANCHORED = object()


class JointNode:
    """Makes and posts this provider's masked part of a joint execution."""

    def __init__(self, platform: NodePlatform, verifier: Verifier, key_file: Path | None,
                 parts: PartStore | None, *, sleep: Callable[[float], Any] = time.sleep,
                 clock: Callable[[], float] = time.time, poll_s: float = POLL_S) -> None:
        """``key_file``: this node's X25519 key (None: none, every joint execution fails
        ``node_key_not_registered``); ``parts``: where its masked parts are kept;
        ``clock``: wall time (POSIX seconds), compared with the joint's deadline."""
        self.platform = platform
        self.verifier = verifier
        self.key_file = key_file
        self.parts = parts
        self.sleep = sleep
        self.clock = clock
        self.poll_s = poll_s
        self.proofs = JointProofs(platform, verifier)

    @property
    def me(self) -> str:
        return self.platform.participant_id

    def deliver(self, job: Any, computation_id: str, joint_id: str, result: Any,
                hashes: dict[str, str], datasite: str) -> Outcome:
        """This provider's masked part of ``job`` (an executor ``Job`` whose ``joint`` is
        set) made from ``result`` (stored, or the one stored by an earlier try) and posted.
        Raises JointFailed (to be recorded) or TrustError (the platform's word failed a
        check: handled again later)."""
        if self.parts is None:
            raise JointFailed("node_key_not_registered: this node keeps no node key nor "
                              "parts directory (enroll it)")
        view = self.checked_view(job, joint_id)
        if view.get("state") == "failed":
            raise JointFailed("joint_failed: the joint execution failed before this "
                              f"provider's part ({str(view.get('reason') or '')[:500]})")
        if view.get("state") == "published":
            return Outcome(job.contract_id, "skipped", "the joint execution is published",
                           job.execution, computation_id)
        part = self.parts.load(joint_id)
        if part is None:
            part = self._masked(job, joint_id, view, result)
        return self._post(job, computation_id, part, hashes, datasite)

    # -- the joint's view, checked against the proven terms -------------------------------
    def checked_view(self, job: Any, joint_id: str) -> dict[str, Any]:
        """The joint's view, once it agrees with its proven ``joint.started`` and that
        with the proven terms (TrustError otherwise)."""
        terms: JointTerms = job.joint
        view = self.platform.joint(joint_id)
        checkpoint = self._checkpoint(view, "started_seq", "joint.started")
        self.proofs.started(view, joint_id, checkpoint)
        said = (view.get("id"), view.get("contract_id"), view.get("execution"),
                view.get("key_column"), list(view.get("value_columns") or ()))
        wanted = (joint_id, job.contract_id, job.execution, terms.key_column,
                  list(terms.value_columns))
        if said != wanted:
            raise TrustError(f"the joint view {said!r} is not the proven {wanted!r}")
        providers = view.get("providers")
        owners = list(dict.fromkeys(self.proofs.owner(d, checkpoint) for d in terms.input_ids))
        if providers != owners or self.me not in owners or len(owners) < max(
                2, terms.min_providers) or not set(owners) <= set(terms.parties):
            raise TrustError(f"the joint's providers {providers!r} are not the owners of the "
                             f"product's inputs {owners!r} among the contract's parties")
        if view.get("layout_provider") != owners[0]:
            raise TrustError("the joint's layout provider is not the first input's owner")
        deadline_of(view)
        return view

    def _checkpoint(self, view: Mapping[str, Any], key: str, what: str) -> Any:
        """An anchored checkpoint covering the event ``view[key]`` names, waited for until
        the joint's deadline (TrustError if none comes)."""
        seq = view.get(key)
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise TrustError(f"the joint view names no {what} event ({key} {seq!r})")
        deadline = deadline_of(view)
        checkpoint = self.verifier.anchored(seq)
        while checkpoint is None and self.clock() < deadline:
            self.sleep(self.poll_s)
            checkpoint = self.verifier.anchored(seq)
        if checkpoint is None:
            raise TrustError(f"{what} (event {seq}) is under no anchored checkpoint by the "
                             "joint's deadline")
        return checkpoint

    # -- making the part --------------------------------------------------------------------
    def _masked(self, job: Any, joint_id: str, view: dict[str, Any],
                result: Any) -> secagg.MaskedPart:
        terms: JointTerms = job.joint
        key = self._own_key(deadline_of(view))
        rows = joint_rows(result)
        layout, laid_sha256 = self._layout(joint_id, view, rows, terms.key_column)
        laid = vector(rows, layout, terms.key_column, terms.value_columns)
        if laid.dropped or laid.nulls:
            private_log.info("joint %s: %d row(s) with a key not in the layout dropped, %d "
                             "null value(s) counted as 0", joint_id, laid.dropped, laid.nulls)
        try:
            fixed = secagg.to_fixed(laid.values)
        except ValueError as exc:
            raise JointFailed("result_not_reportable: a value is beyond what a masked part "
                              "holds (|x| <= 2**40)", str(exc)) from None
        peers = self._peer_keys(view["providers"], deadline_of(view))
        part = secagg.mask(key, joint_id, self.me, view["providers"], peers, fixed,
                           layout_sha256=laid_sha256)
        assert self.parts is not None  # deliver checked it
        self.parts.save(part)  # before the post: a retry posts these bytes again
        return part

    def _own_key(self, deadline: float) -> X25519PrivateKey:
        """This node's key, once it is the one its provider registered."""
        if self.key_file is None or not self.key_file.exists():
            raise JointFailed("node_key_not_registered: this node has no node key (enroll "
                              "makes it)")
        key = read_node_key(self.key_file)
        registered = self._registered(self.me)
        while registered is _NOT_ANCHORED and self.clock() < deadline:
            self.sleep(self.poll_s)
            registered = self._registered(self.me)
        if registered != secagg.public_key_text(key.public_key()):
            raise JointFailed(f"node_key_not_registered: the node key registered for "
                              f"provider {self.me} is not this node's key")
        return key

    def _peer_keys(self, providers: list[str], deadline: float) -> dict[str, str]:
        """Each peer's registered key, proven; waited for until the deadline."""
        keys: dict[str, str] = {}
        while True:
            for peer in providers:
                if peer != self.me and peer not in keys:
                    found = self._registered(peer)
                    if isinstance(found, str):
                        keys[peer] = found
            missing = [p for p in providers if p != self.me and p not in keys]
            if not missing:
                return keys
            if self.clock() >= deadline:
                raise JointFailed(f"node_key_not_registered: provider {missing[0]} has no "
                                  "node key proven on the ledger by the joint's deadline")
            self.sleep(self.poll_s)

    def _registered(self, participant_id: str) -> str | object | None:
        """The node key ``participant_id`` registered, from its participant view checked
        against its proven ``participant.node_key_registered``; None if it has none,
        ``_NOT_ANCHORED`` while its event is not under an anchored checkpoint."""
        view = self.platform.participant(participant_id) or {}
        node_key = view.get("node_key")
        if not node_key:
            return None
        seq, text = node_key.get("seq"), node_key.get("public_key")
        if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(text, str):
            raise TrustError(f"participant {participant_id}: node_key {node_key!r}")
        checkpoint = self.verifier.anchored(seq)
        if checkpoint is None:
            return _NOT_ANCHORED
        self.proofs.node_key(participant_id, node_key, checkpoint)
        try:
            secagg.load_public_key(text)
        except ValueError as exc:
            raise TrustError(f"participant {participant_id}'s node key: {exc}") from None
        return text

    # -- the layout -------------------------------------------------------------------------
    def _layout(self, joint_id: str, view: dict[str, Any], rows: list[dict[str, Any]],
                key_column: str) -> tuple[list[str], str]:
        """The layout and its SHA-256: the layout provider posts its own; the others wait
        for it and check it against its proven event."""
        if view["layout_provider"] != self.me:
            return self._fetched_layout(joint_id, view)
        keys, unusable = layout_of(rows, key_column)
        if unusable:
            private_log.info("joint %s: %d row(s) without a usable key left out of the "
                             "layout", joint_id, unusable)
        if not keys or len(keys) > MAX_LAYOUT:
            raise JointFailed(f"layout_refused: the layout provider's output has {len(keys)} "
                              f"keys (1 to {MAX_LAYOUT:,} are laid out)")
        try:
            answer = self.platform.post_layout(joint_id, keys)
        except PlatformError as exc:
            if exc.status in (409, 413, 422):
                raise JointFailed(self._refusal("layout_refused", "the layout", exc),
                                  str(exc)) from None
            raise
        if answer.get("layout_sha256") != layout_sha256(keys):
            raise TrustError(f"the ledger answered the layout {answer.get('layout_sha256')!r}"
                             f", not its hash {layout_sha256(keys)}")
        view = self._wait(joint_id, view, "its layout")
        checkpoint = self._checkpoint(view, "layout_seq", "joint.layout_published")
        if self.proofs.layout(view, joint_id, checkpoint) != layout_sha256(keys):
            raise TrustError("the joint.layout_published the log holds is not this "
                             "provider's layout")
        return keys, layout_sha256(keys)

    def _wait(self, joint_id: str, view: dict[str, Any], what: str) -> dict[str, Any]:
        """The joint's view once it shows a layout, looked at again until the deadline."""
        deadline = deadline_of(view)
        while not view.get("layout_sha256") or not view.get("layout_seq"):
            if view.get("state") == "failed":
                raise JointFailed(f"joint_failed: the joint execution failed before {what} "
                                  f"({str(view.get('reason') or '')[:500]})")
            if self.clock() >= deadline:
                raise JointFailed("layout_missing: the layout provider posted no layout by "
                                  "the joint's deadline")
            self.sleep(self.poll_s)
            view = self.platform.joint(joint_id)
        return view

    def _fetched_layout(self, joint_id: str, view: dict[str, Any]) -> tuple[list[str], str]:
        view = self._wait(joint_id, view, "its layout")
        checkpoint = self._checkpoint(view, "layout_seq", "joint.layout_published")
        self.proofs.started(view, joint_id, checkpoint)  # the view, read again
        proven = self.proofs.layout(view, joint_id, checkpoint)
        fetched = self.platform.joint_layout(joint_id)
        keys = check_layout(fetched.get("keys"))
        if layout_sha256(keys) != proven:
            raise TrustError(f"the layout served is not the joint's {proven} (its "
                             "joint.layout_published)")
        return keys, proven

    # -- the post ---------------------------------------------------------------------------
    @staticmethod
    def _refusal(code: str, what: str, exc: PlatformError) -> str:
        """The reason recorded for a refused post: the ledger's status and its error's
        fixed words (``error``, ``reason``, ``field``: never a value)."""
        try:
            said = json.loads(exc.body)
        except ValueError:
            said = None
        said = said if isinstance(said, dict) else {}
        words = [f"{k} {said[k]}" for k in ("error", "reason", "field")
                 if isinstance(said.get(k), str)
                 and re.fullmatch(r"[a-z0-9_.\[\]]{1,80}", said[k])]
        if said.get("error") == "wrong_state":
            return f"joint_failed: the joint execution ended before {what} was posted"
        return f"{code}: the ledger refused {what} (HTTP {exc.status}" + "".join(
            f", {w}" for w in words) + ")"

    def _post(self, job: Any, computation_id: str, part: secagg.MaskedPart,
              hashes: dict[str, str], datasite: str) -> Outcome:
        body = {"header": dict(part.header), "body": base64.b64encode(part.body).decode(),
                "input_hashes": hashes, "datasite": datasite}
        try:
            answer = self.platform.post_masked_part(computation_id, body)
        except PlatformError as exc:
            if exc.status == 409 and "policy_lapsed" in exc.body:
                # the contract or a grant ended while it ran: the ledger recorded the failure
                return Outcome(job.contract_id, "failed", str(exc), job.execution,
                               computation_id)
            if exc.status in (409, 413, 422):
                raise JointFailed(self._refusal("part_refused", "the masked part", exc),
                                  str(exc)) from None
            raise
        if answer.get("state") == "failed":  # the policy lapsed while it ran: recorded
            return Outcome(job.contract_id, "failed", str(answer.get("reason") or ""),
                           job.execution, computation_id)
        if answer.get("digest") != part.digest():
            raise TrustError(f"the ledger recorded the part as {answer.get('digest')!r}, not "
                             f"{part.digest()}")
        width = max(1, len(job.joint.value_columns))
        return Outcome(job.contract_id, "posted", "", job.execution, computation_id,
                       part.digest(), extra={"joint_id": part.header["execution_id"],
                                             "rows": part.header["length"] // width,
                                             "joint_state": answer.get("joint_state")})

