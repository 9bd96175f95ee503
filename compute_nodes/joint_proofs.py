"""What a provider's node proves of a joint execution before it masks (docs/SECAGG.md).

The platform is not trusted (DESIGN.md section 8): whatever a view says that the masks
depend on is proven from events under an anchored checkpoint (``compute_nodes/trust.py``):

- the **providers** of the product: each input's owner from its ``dataset.registered``
  (the dataset view's ``registered_seq``), never the dataset view's word;
- the **joint's terms**: providers, layout provider, columns and deadline from its
  ``joint.started`` (the joint view's ``started_seq``), and its layout's SHA-256 from its
  ``joint.layout_published`` (``layout_seq``), so every provider masks over the one layout
  the log holds;
- a **node key**: its ``participant.node_key_registered`` carries a decision signature
  (``core.decision``) by a member of that provider, verifying under the member key proven
  from that provider's ``participant.key_registered`` (the node key view's
  ``signer_seq``), not revoked before it as far as the log the node reads shows, and no
  later registration of that provider under the checkpoint: a platform cannot slip a key of
  its own in, unsigned or signed by a key it made up.

Every failed check raises ``TrustError``: the node does not act on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chain.checkpoint import Checkpoint
from compute_nodes.platform import NodePlatform
from compute_nodes.trust import TrustError, Verifier
from core import decision
from core.record import LogEntry

KEY_EVENT = "participant.node_key_registered"
MEMBER_KEY_EVENT = "participant.key_registered"
REVOKED_EVENT = "participant.key_revoked"
NODE_KEY_COMMAND = "participant.node_key"
#: the fields of ``joint.started`` a joint view must show as they are recorded
STARTED_FIELDS = ("contract_id", "execution", "product_id", "providers", "layout_provider",
                  "key_column", "value_columns", "deadline")
PAGE = 1000


class JointProofs:
    """Proves the joint's terms, its layout's hash, input owners and node keys."""

    def __init__(self, platform: NodePlatform, verifier: Verifier) -> None:
        self.platform = platform
        self.verifier = verifier
        self._owners: dict[str, str] = {}  # dataset id -> proven owner
        #: (participant, seq, public key) of a node key event proven and its signature
        #: verified; (participant, seq) -> how far the log was read for a later one
        self._keys: set[tuple[str, int, str]] = set()
        self._scanned: dict[tuple[str, int], int] = {}

    def owner(self, dataset_id: str, checkpoint: Checkpoint) -> str:
        """The owner of ``dataset_id`` as its proven ``dataset.registered`` says."""
        known = self._owners.get(dataset_id)
        if known is not None:
            return known
        view = self.platform.dataset(dataset_id)
        entry = self.verifier.proven(view, "registered_seq", "dataset.registered",
                                     dataset_id, checkpoint)
        owner = entry.payload().get("owner_id")
        if not isinstance(owner, str) or not owner:
            raise TrustError(f"dataset.registered of {dataset_id} (event {entry.seq}) names "
                             "no owner")
        self._owners[dataset_id] = owner
        return owner

    def started(self, view: Mapping[str, Any], joint_id: str,
                checkpoint: Checkpoint) -> None:
        """The joint view's terms are those of its proven ``joint.started``."""
        entry = self.verifier.proven(view, "started_seq", "joint.started", joint_id,
                                     checkpoint)
        if entry.version != 1:
            raise TrustError(f"event {entry.seq} is not the start of joint {joint_id}")
        Verifier.agree(view, entry, STARTED_FIELDS, "joint")

    def layout(self, view: Mapping[str, Any], joint_id: str, checkpoint: Checkpoint) -> str:
        """The layout's SHA-256 of the joint's proven ``joint.layout_published``."""
        entry = self.verifier.proven(view, "layout_seq", "joint.layout_published", joint_id,
                                     checkpoint)
        if entry.version != 2:  # the joint's one layout: the event right after its start
            raise TrustError(f"event {entry.seq} is not the layout of joint {joint_id}")
        Verifier.agree(view, entry, ("layout_sha256", "length"), "joint")
        return str(entry.payload()["layout_sha256"])

    # -- node keys -------------------------------------------------------------------------
    def node_key(self, participant_id: str, node_key: Mapping[str, Any],
                 checkpoint: Checkpoint) -> str:
        """The public key of ``participant_id``'s node, from its proven, signed, latest
        ``participant.node_key_registered`` (the view's ``node_key``). The event and its
        signature are proven once; whether a later registration came is read on every call,
        from where the last one stopped."""
        seq, text = node_key.get("seq"), node_key.get("public_key")
        if not isinstance(seq, int) or not isinstance(text, str):
            raise TrustError(f"participant {participant_id}: node_key {dict(node_key)!r}")
        if (participant_id, seq, text) not in self._keys:
            entry = self.verifier.proven(node_key, "seq", KEY_EVENT, participant_id,
                                         checkpoint)
            if entry.payload().get("public_key") != text:
                raise TrustError(f"participant {participant_id}'s node key is not the one of "
                                 f"its {KEY_EVENT} (event {entry.seq})")
            self._signed(participant_id, node_key, entry, checkpoint)
            self._keys.add((participant_id, seq, text))
        start = max(seq, self._scanned.get((participant_id, seq), seq))
        later = self._find(start, checkpoint.size, lambda e: (
            e.type_name == KEY_EVENT and e.originator_id == participant_id))
        if later is not None:
            raise TrustError(f"participant {participant_id} registered another node key "
                             f"(event {later.seq}) after the one shown (event {seq})")
        self._scanned[(participant_id, seq)] = max(start, checkpoint.size)
        return text

    def _signed(self, participant_id: str, node_key: Mapping[str, Any], entry: LogEntry,
                checkpoint: Checkpoint) -> None:
        """The event's signature is a member's of that provider, over this registration."""
        payload = entry.payload()
        signature = payload.get("signature")
        actor = payload.get("actor")
        member = actor.get("member") if isinstance(actor, dict) else None
        if not isinstance(signature, dict) or not isinstance(member, str):
            raise TrustError(f"{KEY_EVENT} of {participant_id} (event {entry.seq}) is not "
                             "signed by a member of the provider")
        try:
            wanted = decision.statement(NODE_KEY_COMMAND, participant_id, entry.version - 1,
                                        member, {"public_key": payload.get("public_key")})
        except decision.DecisionFormatError as exc:
            raise TrustError(str(exc)) from None
        if signature.get("statement") != wanted:
            raise TrustError(f"the signed statement of {KEY_EVENT} (event {entry.seq}) is "
                             "not this registration's")
        signer_seq = node_key.get("signer_seq")
        if isinstance(signer_seq, int) and signer_seq >= entry.seq:
            raise TrustError(f"the key that signed event {entry.seq} was registered after it")
        signer = self.verifier.proven(node_key, "signer_seq", MEMBER_KEY_EVENT,
                                      participant_id, checkpoint).payload()
        public_key = signer.get("public_key")
        if not isinstance(public_key, str) or signer.get("member_id") != member:
            raise TrustError(f"the key that signed event {entry.seq} is not member {member}'s")
        kid = signature.get("key_id")
        if (signer.get("key_id") or decision.key_id(public_key)) != kid or \
                not decision.event_signature_verifies(public_key, signature):
            raise TrustError(f"the signature of {KEY_EVENT} (event {entry.seq}) does not "
                             f"verify under member {member}'s key {kid}")
        revoked = self._find(int(node_key["signer_seq"]), entry.seq - 1, lambda e: (
            e.type_name == REVOKED_EVENT and e.originator_id == participant_id
            and e.payload().get("key_id") == kid))
        if revoked is not None:
            raise TrustError(f"member key {kid} was revoked (event {revoked.seq}) before it "
                             f"signed event {entry.seq}")

    def _find(self, after: int, until: int,
              match: Callable[[LogEntry], bool]) -> LogEntry | None:
        """The first event in (after, until] of those the node may read that ``match``es."""
        while after < until:
            page = self.platform.events(after, PAGE)
            for view in page.get("events") or ():
                if isinstance(view, Mapping) and isinstance(view.get("seq"), int) \
                        and after < view["seq"] <= until:
                    entry = self.verifier.record(view)
                    if match(entry):
                        return entry
            nxt = page.get("next_after")
            if not isinstance(nxt, int) or nxt <= after:
                return None
            after = nxt
        return None
