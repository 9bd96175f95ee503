"""A scripted platform for :class:`compute_nodes.joint.JointNode`, with the log it proves
from: three providers' dataset registrations (seqs 1 to 3), their members' decision keys
(4 to 6), their node keys (10 to 12, each signed by its member), the joint's
``joint.started`` (20) and, once posted, its ``joint.layout_published`` (21). A test
changes what the platform shows (``view``, ``keys``) or what its log holds (``signers``,
``extra``, ``layout_event``) to play a platform that lies.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from compute_nodes.joint import JointNode, JointTerms, PartStore, layout_sha256
from compute_nodes.trust import TrustError
from core import decision, secagg

PROVIDERS = ["market", "tax", "power"]
KEYS = {p: secagg.new_node_key() for p in PROVIDERS}
TEXT = {p: secagg.public_key_text(k.public_key()) for p, k in KEYS.items()}
#: each provider's member who signs its node key registration, and that member's key
MEMBERS = {p: decision.new_private_key() for p in PROVIDERS}
MEMBER_TEXT = {p: decision.public_key_text(k.public_key()) for p, k in MEMBERS.items()}
OWNERS = {"d1": "market", "d2": "tax", "d3": "power"}
STARTED, LAYOUT = 20, 21
CHECKPOINT = 100


def member(provider: str) -> str:
    return f"{provider}-admin"


def signed(provider: str, public_key: str, version: int,
           key: Any = None) -> dict[str, Any]:
    """The ``signature`` a node key registration records, by ``key`` (the provider's
    member key unless given)."""
    key = key or MEMBERS[provider]
    stmt = decision.statement("participant.node_key", provider, version - 1,
                              member(provider), {"public_key": public_key})
    return {"key_id": decision.key_id(decision.public_key_text(key.public_key())),
            "statement": stmt, "value": decision.sign(key, stmt)}


class Scripted:
    """The platform as one provider's node sees it, scripted, with its log."""

    def __init__(self, me: str, **view: Any) -> None:
        self.participant_id = me
        self.view = {"id": "J", "contract_id": "C", "execution": 1, "product_id": "P",
                     "key_column": "k", "value_columns": ["x"], "providers": PROVIDERS,
                     "layout_provider": "market", "state": "started",
                     "deadline": "2999-01-01T00:00:00Z", "layout_sha256": None,
                     "started_seq": STARTED, **view}
        if self.view.get("layout_sha256"):
            self.view.setdefault("layout_seq", LAYOUT)
        self.layout: list[str] | None = None
        self.posted: list[dict[str, Any]] = []
        self.keys = {p: {"public_key": TEXT[p], "key_id": "x", "seq": 10 + i,
                         "signer_seq": 4 + i} for i, p in enumerate(PROVIDERS)}
        #: provider -> the key its node key event is signed with (None: unsigned)
        self.signers: dict[str, Any] = dict(MEMBERS)
        #: the joint.started the log holds (None: the view's terms)
        self.started_event: dict[str, Any] | None = None
        #: the joint.layout_published the log holds (None: the view's layout)
        self.layout_event: dict[str, Any] | None = None
        #: more events: seq -> (type, originator, payload)
        self.extra: dict[int, tuple[str, str, dict[str, Any]]] = {}

    # -- the views ---------------------------------------------------------------------
    def joint(self, joint_id: str) -> dict[str, Any]:
        return {"length": len(self.layout) if self.layout else None, **self.view}

    def joint_layout(self, joint_id: str) -> dict[str, Any]:
        return {"keys": self.layout, "layout_sha256": self.view["layout_sha256"]}

    def post_layout(self, joint_id: str, keys: list[str]) -> dict[str, Any]:
        self.layout = keys
        self.view.update(layout_sha256=layout_sha256(keys), layout_seq=LAYOUT,
                         state="layout_published")
        return {"joint_id": joint_id, "layout_sha256": layout_sha256(keys),
                "length": len(keys)}

    def post_masked_part(self, computation_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.posted.append(body)
        digest = secagg.MaskedPart(body["header"], b"").digest()
        return {"computation_id": computation_id, "joint_id": "J", "digest": digest,
                "state": "parts"}

    def participant(self, participant_id: str) -> dict[str, Any]:
        return {"id": participant_id, "node_key": self.keys.get(participant_id)}

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        return {"id": dataset_id, "owner_id": OWNERS[dataset_id],
                "registered_seq": 1 + list(OWNERS).index(dataset_id)}

    def dataset_owner(self, dataset_id: str) -> str:
        return OWNERS[dataset_id]

    # -- the log -----------------------------------------------------------------------
    def log(self) -> dict[int, tuple[str, str, dict[str, Any]]]:
        """seq -> (type, originator, payload) of every event the node may read."""
        out: dict[int, tuple[str, str, dict[str, Any]]] = {}
        for i, (dataset_id, owner) in enumerate(OWNERS.items()):
            out[1 + i] = ("dataset.registered", dataset_id, {"owner_id": owner})
        for i, p in enumerate(PROVIDERS):
            out[4 + i] = ("participant.key_registered", p, {
                "member_id": member(p), "public_key": MEMBER_TEXT[p],
                "key_id": decision.key_id(MEMBER_TEXT[p])})
        for p, shown in self.keys.items():
            if shown is not None:
                key = self.signers.get(p)
                out[shown["seq"]] = (
                    "participant.node_key_registered", p,
                    {"public_key": shown["public_key"], "key_id": "x",
                     "actor": {"participant": p, "member": member(p), "role": "admin"},
                     "signature": None if key is None else signed(
                         p, shown["public_key"], 2, key)})
        out[STARTED] = ("joint.started", "J", self.started_event or {
            k: self.view[k] for k in ("contract_id", "execution", "product_id",
                                      "providers", "layout_provider", "key_column",
                                      "value_columns", "deadline")})
        if self.layout_event is not None or self.view.get("layout_sha256"):
            out[LAYOUT] = ("joint.layout_published", "J", self.layout_event or {
                "layout_sha256": self.view["layout_sha256"],
                "length": len(self.layout) if self.layout else None})
        out.update(self.extra)
        return out

    def events(self, after: int, limit: int) -> dict[str, Any]:
        seqs = [s for s in sorted(self.log()) if s > after][:limit]
        return {"events": [{"seq": s} for s in seqs],
                "next_after": seqs[-1] if seqs else after}


class Proving:
    """A verifier over the scripted log: every event up to seq 100 is anchored, and
    proven when the log holds it with the type and originator asked for."""

    def __init__(self, platform: Scripted) -> None:
        self.platform = platform
        self.proofs = 0

    def anchored(self, seq: int) -> Any:
        return SimpleNamespace(size=CHECKPOINT) if seq <= CHECKPOINT else None

    def record(self, view: dict[str, Any]) -> Any:
        seq = view["seq"]
        type_name, originator, payload = self.platform.log()[seq]
        version = 1 if type_name == "joint.started" else 2
        return SimpleNamespace(seq=seq, type_name=type_name, originator_id=originator,
                               version=version, payload=lambda: payload)

    def proven(self, view: dict[str, Any], key: str, type_name: str, originator: str,
               checkpoint: Any) -> Any:
        seq = view.get(key)
        if not isinstance(seq, int) or not 1 <= seq <= checkpoint.size \
                or seq not in self.platform.log():
            raise TrustError(f"{type_name}: {key} {seq!r} is no event under the checkpoint")
        entry = self.record({"seq": seq})
        if (entry.type_name, entry.originator_id) != (type_name, originator):
            raise TrustError(f"event {seq} is not {type_name} of {originator}")
        if type_name == "participant.node_key_registered":
            self.proofs += 1
        return entry


TERMS = JointTerms("k", ("x",), 2, 600, ("d1", "d2", "d3"), (*PROVIDERS, "operator"))
JOB = SimpleNamespace(contract_id="C", execution=1, joint=TERMS)
ROWS = [{"k": "b", "x": 2}, {"k": "a", "x": 1}]


def node_for(tmp_path: Path, platform: Scripted, *, key: bool = True) -> JointNode:
    """A node of ``platform``'s provider over the scripted platform and log; its clock
    counts a second per look."""
    key_file = tmp_path / f"{platform.participant_id}.node-key"
    tmp_path.mkdir(parents=True, exist_ok=True)
    if key:
        key_file.write_bytes(KEYS[platform.participant_id].private_bytes_raw())
    clock = iter(range(10**6))
    return JointNode(platform, Proving(platform), key_file,  # type: ignore[arg-type]
                     PartStore(tmp_path / "parts" / platform.participant_id),
                     sleep=lambda s: None, clock=lambda: float(next(clock)))
