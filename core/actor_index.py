"""The per-actor index: which events index under which (actor, resource) keys, and the value
each key holds. One definition, used by the server (anchoring/actor_index.py) and by the
regulator's replay and the self-proof verifier (audit/), so they cannot disagree.

A key is (participant id, resource), a resource ``"<kind>:<id>"`` (dataset, order,
authorization, product, scenario, participant, computation, joint). :class:`IndexRules`
folds the log in seq order and says each event's keys (the table is in docs/INDEX.md):

1. every event, under (its actor's participant, the aggregate it belongs to);
2. the events of an order and its contract, under the demander with the order, and under
   the demander and each input dataset's provider with ``dataset:<id>``;
3. computations, deliveries and the uses of a delivered result, under the demander and the
   computing provider with each input dataset; a leak trace (``forensics.leak_traced``, by
   the system actor) that names a delivery, under that delivery's demander (or, when the
   copy matched was another reader's own, that reader) with the delivery's computation and
   its order, for each copy it names;
4. authorizations, under the grantor (provider) and the grantee (operator) with each
   dataset they cover;
5. a dataset's events (its data loads among them), under its owner with the dataset;
6. a product's registration, under its operator and each input's provider with the dataset;
7. a joint execution's events (and a refused hidden query's ``usage.refused``), under its
   contract's parties (the demander, each provider, the operator) with ``joint:<id>``, and
   under the demander and each input dataset's owner with the dataset; a part also under
   its provider with its computation, a hidden query under the demander with its order;
8. a provider's compute-node key, under that provider with the participant;
9. privacy budget spent (``privacy.budget_spent``), under its actor (the computing
   provider), the dataset's owner and the contract's demander with the dataset.

The value of a key after its k-th event e_k is :class:`IndexValue` (count k, head_seq the
seq of e_k, chain_k = SHA-256("dataledger-index-chain\\0" ‖ chain_{k-1} ‖ leafhash(e_k)),
chain_0 = 32 zero bytes): the chain links each event the actor caused on the resource to
the previous one, so the value commits to exactly that list of events. The map from key
hash to value hash is the sparse Merkle tree of chain/smt.py (:class:`IndexFold`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from typing import Any, NamedTuple

from chain import smt
from core.canonical import canonical_bytes
from core.record import LogEntry

Key = tuple[str, str]
"""(actor participant id, resource)."""

CHAIN_PREFIX = b"dataledger-index-chain\x00"
CHAIN_START = bytes(32)
"""chain_0: the chain of a key with no event."""

#: type prefix -> the kind of resource its aggregate is
_AGGREGATE_KIND = {"contract": "order", "delivery": "computation", "usage": "computation"}
_ORDER_FAMILY = ("order.", "contract.")
_COMPUTATION_FAMILY = ("computation.", "delivery.", "usage.")


class IndexValue(NamedTuple):
    """What the index holds for a key: how many events, the last one's seq, their chain.
    (A named tuple: the replay makes one per key per event.)"""

    count: int
    head_seq: int
    chain: bytes

    def canonical(self) -> bytes:
        """Canonical JSON of {"chain" (base64), "count", "head_seq"} (what is hashed)."""
        chain = base64.b64encode(self.chain).decode()
        # equal to core.canonical.canonical_bytes of the dict (tests hold them equal):
        # sorted keys, no spaces; base64 has nothing JSON escapes
        return f'{{"chain":"{chain}","count":{self.count},"head_seq":{self.head_seq}}}'.encode()

    def hash(self) -> bytes:
        """The value hash the map holds: SHA-256 of :meth:`canonical`."""
        return hashlib.sha256(self.canonical()).digest()

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "head_seq": self.head_seq,
                "chain": base64.b64encode(self.chain).decode()}

    @classmethod
    def from_json(cls, doc: Any, where: str = "value") -> IndexValue:
        """Parse :meth:`to_json`'s form; ValueError names the bad field."""
        if not isinstance(doc, dict):
            raise ValueError(  # noqa: TRY004 - one error type for every malformed field
                f"{where}: must be an object with count, head_seq and chain")
        count, head = doc.get("count"), doc.get("head_seq")
        if type(count) is not int or count < 1:
            raise ValueError(f"{where}.count: must be an integer >= 1")
        if type(head) is not int or head < 1:
            raise ValueError(f"{where}.head_seq: must be an integer >= 1")
        try:
            chain = base64.b64decode(doc.get("chain"), validate=True)
        except (binascii.Error, TypeError, ValueError):
            chain = b""
        if len(chain) != 32:
            raise ValueError(f"{where}.chain: must be base64 of 32 bytes")
        return cls(count, head, chain)


def chain_step(chain: bytes, leaf: bytes) -> bytes:
    """chain_k from chain_{k-1} and the leaf hash of e_k."""
    return hashlib.sha256(CHAIN_PREFIX + chain + leaf).digest()


def next_value(prev: IndexValue | None, entry: LogEntry, leaf: bytes | None = None) -> IndexValue:
    """The key's value after ``entry`` (``prev``: before it, None for none); ``leaf`` is the
    entry's leaf hash when the caller already has it."""
    if leaf is None:
        leaf = entry.leaf_hash()
    if prev is None:
        return IndexValue(1, entry.seq, chain_step(CHAIN_START, leaf))
    return IndexValue(prev.count + 1, entry.seq, chain_step(prev.chain, leaf))


def key_bytes(actor: str, resource: str) -> bytes:
    """A key's canonical bytes: the canonical JSON array [actor, resource]."""
    both = actor + resource
    if both.isascii() and both.isprintable() and '"' not in both and "\\" not in both:
        return f'["{actor}","{resource}"]'.encode()  # what canonical_bytes gives (tested)
    return canonical_bytes([actor, resource])


def index_key_hash(actor: str, resource: str) -> bytes:
    """The key's slot in the map: SHA-256("dataledger-index-key\\0" ‖ key_bytes)."""
    return smt.key_hash(key_bytes(actor, resource))


def aggregate_resource(entry: LogEntry, payload: dict[str, Any]) -> str:
    """The resource an event's aggregate is: ``"<kind>:<id>"``."""
    prefix = entry.type_name.split(".", 1)[0]
    if entry.type_name in ("delivery.accessed", "usage.refused") \
            and isinstance(payload.get("computation_id"), str):
        return f"computation:{payload['computation_id']}"
    return f"{_AGGREGATE_KIND.get(prefix, prefix)}:{entry.originator_id}"


def _traced(payload: dict[str, Any]) -> list[tuple[Any, str]]:
    """A leak trace's keys: each accused (the demander, or the reader whose own copy it
    was) with the delivery's computation and its order (``match``: version 1)."""
    matches = payload.get("matches", [payload.get("match")])
    out: list[tuple[Any, str]] = []
    for match in matches if isinstance(matches, list) else ():
        if isinstance(match, dict):
            who = match.get("reader_id") or match.get("demander_id")
            out += [(who, f"computation:{match.get('delivery_id')}"),
                    (who, f"order:{match.get('contract_id')}")]
    return out


def actor_of(payload: dict[str, Any]) -> str | None:
    """The participant that caused the event (its recorded actor), if any."""
    actor = payload.get("actor")
    participant = actor.get("participant") if isinstance(actor, dict) else None
    return participant if isinstance(participant, str) and participant else None


def _ids(items: Any, field: str = "dataset_id") -> list[str]:
    """The ids a payload list names (dicts with ``field``, or plain strings)."""
    out: list[str] = []
    for item in items if isinstance(items, list) else ():
        value = item.get(field) if isinstance(item, dict) else item
        if isinstance(value, str):
            out.append(value)
    return out


def _dedupe(keys: Iterable[tuple[Any, str]]) -> list[Key]:
    """The keys with a participant, each once, in order (a handful: a list is quickest)."""
    out: list[Key] = []
    for key in keys:
        actor = key[0]
        if isinstance(actor, str) and actor and key not in out:
            out.append(key)
    return out


class IndexRules:
    """The fold over the log (seq order) that says each event's keys; see the module doc.

    It remembers what later events need and do not carry: a dataset's owner, a product's
    inputs, an order's demander and product, a computation's parties and datasets, an
    authorization's parties and datasets.
    """

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}
        self.inputs: dict[str, list[str]] = {}
        self.orders: dict[str, tuple[str, str]] = {}
        self.computations: dict[str, tuple[str, str, list[str]]] = {}
        self.authorizations: dict[str, tuple[str, str, list[str]]] = {}
        #: product id -> its operator (a joint execution's party)
        self.operators: dict[str, str] = {}
        #: joint id -> (its demander; its parties: the demander, the providers, the operator;
        #: the product's input datasets)
        self.joints: dict[str, tuple[Any, list[Any], list[str]]] = {}

    def keys(self, entry: LogEntry, payload: dict[str, Any] | None = None) -> list[Key]:
        """The keys ``entry`` indexes under; call it for every entry in seq order."""
        if payload is None:
            payload = entry.payload()
        t, oid = entry.type_name, entry.originator_id
        self._remember(t, oid, payload)
        out: list[tuple[Any, str]] = [(actor_of(payload), aggregate_resource(entry, payload))]
        if t.startswith(_ORDER_FAMILY) and oid in self.orders:
            demander, product = self.orders[oid]
            out.append((demander, f"order:{oid}"))
            out.extend(self._both(demander, self.inputs.get(product, [])))
        elif t.startswith(_COMPUTATION_FAMILY):
            cid = aggregate_resource(entry, payload).split(":", 1)[1]
            if cid in self.computations:
                demander, provider, datasets = self.computations[cid]
                for ds in datasets:
                    out += [(demander, f"dataset:{ds}"), (provider, f"dataset:{ds}")]
            elif cid in self.joints:  # a hidden query refused (its computation_id: the joint)
                out += self._joint(cid)
        elif t.startswith("joint."):
            out += self._joint(oid) if oid in self.joints else []
            if t == "joint.part_received":
                out.append((payload.get("provider_id"),
                            f"computation:{payload.get('computation_id')}"))
            elif t == "joint.queried":
                out.append((payload.get("demander_id"), f"order:{payload.get('contract_id')}"))
        elif t == "participant.node_key_registered":
            out.append((oid, f"participant:{oid}"))
        elif t == "privacy.subject_erased":  # a member's erasure, under its participant
            pid = payload.get("participant_id")
            out.append((pid, f"participant:{pid}"))
        elif t == "privacy.budget_spent":
            datasets = _ids([payload.get("dataset_id")], "")
            demander = self.orders.get(str(payload.get("contract_id")), (None, ""))[0]
            out += self._both(actor_of(payload), datasets)
            out += [(demander, f"dataset:{ds}") for ds in datasets]
        elif t.startswith("authorization.") and oid in self.authorizations:
            provider, operator, datasets = self.authorizations[oid]
            for ds in datasets:
                out += [(provider, f"dataset:{ds}"), (operator, f"dataset:{ds}")]
        elif t.startswith("dataset.") and oid in self.owner:
            out.append((self.owner[oid], f"dataset:{oid}"))
        elif t == "product.registered":
            out.extend(self._both(payload.get("operator_id"), self.inputs.get(oid, [])))
        elif t == "forensics.leak_traced":
            out += _traced(payload)
        return _dedupe(out)

    def _joint(self, jid: str) -> list[tuple[Any, str]]:
        """A joint execution's keys: each party with the joint, and the demander and each
        input's owner with the dataset."""
        demander, parties, datasets = self.joints[jid]
        out: list[tuple[Any, str]] = [(p, f"joint:{jid}") for p in parties]
        return out + self._both(demander, datasets)

    def _both(self, party: Any, datasets: list[str]) -> list[tuple[Any, str]]:
        """(party, dataset) and (the dataset's owner, dataset) for each dataset."""
        out: list[tuple[Any, str]] = []
        for ds in datasets:
            out += [(party, f"dataset:{ds}"), (self.owner.get(ds), f"dataset:{ds}")]
        return out

    def _remember(self, t: str, oid: str, p: dict[str, Any]) -> None:
        """Keep what later events' keys need from this one."""
        if t == "dataset.registered" and isinstance(p.get("owner_id"), str):
            self.owner[oid] = p["owner_id"]
        elif t == "product.registered":
            self.inputs[oid] = _ids(p.get("inputs"))
            if isinstance(p.get("operator_id"), str):
                self.operators[oid] = p["operator_id"]
        elif t == "order.placed" and isinstance(p.get("demander_id"), str):
            self.orders[oid] = (p["demander_id"], str(p.get("product_id")))
        elif t == "computation.requested":
            self.computations[oid] = (str(p.get("demander_id")), str(p.get("provider_id")),
                                      _ids(p.get("dataset_ids")))
        elif t == "authorization.granted":
            self.authorizations[oid] = (str(p.get("provider_id")), str(p.get("operator_id")),
                                        _ids(p.get("datasets")))
        elif t == "joint.started" and oid not in self.joints:
            product, demander = str(p.get("product_id")), p.get("demander_id")
            parties = [demander, *_ids(p.get("providers"), ""), self.operators.get(product)]
            self.joints[oid] = (demander, parties, self.inputs.get(product, []))


def stateless_keys(entry: LogEntry, payload: dict[str, Any] | None = None) -> list[Key]:
    """The keys of ``entry`` that the event alone shows (its actor with its aggregate, and
    the parties and datasets its own payload names); :class:`IndexRules` may add keys that
    need earlier events. A verifier holding only the event checks against these."""
    if payload is None:
        payload = entry.payload()
    return IndexRules().keys(entry, payload)


class IndexFold:
    """The whole index over a log read in seq order: the rules, each key's value and the
    map of key hash → value hash (chain/smt.py), whose root is committed at each
    checkpoint by the ``index`` extension line. The server and the replay both use it.
    """

    def __init__(self, core: str | None = None) -> None:
        self.rules = IndexRules()
        self.values: dict[bytes, IndexValue] = {}
        self.tree = smt.SparseMerkleTree(core)
        self._hashes: dict[Key, bytes] = {}
        self._dirty: set[bytes] = set()
        #: the seq of the last entry applied
        self.size = 0

    def key_hash(self, key: Key) -> bytes:
        """The key hash of ``key`` (remembered: keys repeat)."""
        kh = self._hashes.get(key)
        if kh is None:
            kh = self._hashes[key] = index_key_hash(*key)
        return kh

    def apply(self, entry: LogEntry, leaf: bytes | None = None,
              payload: dict[str, Any] | None = None) -> list[tuple[Key, bytes, IndexValue]]:
        """Index the next entry (seq must be :attr:`size` + 1); return (key, keyhash, new
        value) for each of its keys. ``leaf`` and ``payload``: when the caller has them."""
        if entry.seq != self.size + 1:
            raise ValueError(f"the index is at seq {self.size}; seq {entry.seq} cannot follow")
        if leaf is None:
            leaf = entry.leaf_hash()
        out = []
        values, hashes, dirty, seq = self.values, self._hashes, self._dirty, entry.seq
        sha256, new = hashlib.sha256, tuple.__new__
        for key in self.rules.keys(entry, payload):
            kh = hashes.get(key) or self.key_hash(key)
            # next_value and chain_step, inlined (this runs per key per event); the named
            # tuple built by tuple.__new__, which skips its Python-level __new__
            prev = values.get(kh)
            count, chain = (0, CHAIN_START) if prev is None else (prev[0], prev[2])
            value = values[kh] = new(IndexValue, (
                count + 1, seq, sha256(CHAIN_PREFIX + chain + leaf).digest()))
            dirty.add(kh)
            out.append((key, kh, value))
        self.size = entry.seq
        return out

    def root(self) -> bytes:
        """The map's root over everything applied (the dirty keys are hashed in first)."""
        if self._dirty:
            values = self.values
            self.tree.update({kh: values[kh].hash() for kh in self._dirty})
            self._dirty.clear()
        return self.tree.root()

    def load(self, values: dict[bytes, IndexValue], size: int) -> bytes:
        """Start from stored values at log size ``size`` (the server's restart)."""
        self.values = dict(values)
        self._dirty = set(values)
        self.size = size
        return self.root()
