"""The clean self-proof (清白自证), checked offline: what one actor did on one resource.

A participant under suspicion hands anyone a ``dataledger-self-proof/1`` document (made by
``GET /forensics/self-proof``); :func:`verify_self_proof` checks it against nothing but the
verifier's own trust document (``chain/trust.py``), in numbered steps:

1. the document's shape;
2. the checkpoint it hangs on: signed by the trusted log key for the trusted origin, of the
   size the document states, co-signed by a quorum of the trusted witnesses, and committing
   to an ``index`` root (the per-actor index, docs/INDEX.md); the period ends no later
   than the checkpoint's ``time`` (an older proof speaks of nothing after it);
3. each event: its canonical bytes parse, its seq is the one stated, seqs rise, its RFC
   6962 inclusion proof leads to the checkpoint's root, and its ``at`` is no later than the
   checkpoint's ``time`` (an event dated after it would fall outside any period asked);
4. each event names the actor and the resource (``core/actor_index.py``'s stateless rule);
5. the index value recomputed from the events (count, head seq, and the hash chain linking
   each event to the actor's previous one on the resource) equals the document's entry;
6. the map proof of that entry (or of its absence, when there is no event) leads to the
   checkpoint's ``index`` root.

So the events shown are all the actor's events on the resource up to the checkpoint: one
more would change the chain, one fewer too, and the chain's value is bound by the map proof
to the root the witnesses co-signed. The period (``from``, ``to``, ``to`` cut back to the
checkpoint's time) only filters which of them the sentence reports, by each event's ``at``.

Pure: imports ``core`` and ``chain`` only (no server room, no database).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chain.bls import cosignatures
from chain.checkpoint import INDEX, Checkpoint, open_checkpoint
from chain.smt import MapProof, verify_map_proof
from chain.trust import TrustedKeys
from chain.verify import VerificationError, verify_inclusion
from core.actor_index import IndexValue, index_key_hash, next_value, stateless_keys
from core.record import LogEntry, RecordError

FORMAT = "dataledger-self-proof/1"

#: an actor id, and a resource "<kind>:<id>": printable ASCII without spaces, so that a proof
#: about a look-alike key (a zero-width or combining character, a trailing no-break space)
#: cannot print as the real one in the sentence (the server's ids are UUIDs)
_ACTOR = re.compile(r"[!-~]+", re.ASCII)
_RESOURCE = re.compile(r"[a-z][a-z_]*:[!-9;-~]+", re.ASCII)

#: the steps, numbered as the module docstring and the error messages number them
STEPS = ("document", "checkpoint", "inclusion", "indexing", "chain", "map proof")


class SelfProofError(ValueError):
    """The proof does not hold; ``step`` (1-based, :data:`STEPS`) says where, the message what."""

    def __init__(self, step: int, message: str) -> None:
        super().__init__(f"step {step} ({STEPS[step - 1]}): {message}")
        self.step = step


@dataclass(frozen=True)
class ProvenEvent:
    """One of the actor's events, proven in the log."""

    seq: int
    type_name: str
    at: datetime
    entry: LogEntry


@dataclass(frozen=True)
class Verdict:
    """What a verified proof establishes."""

    actor: str
    resource: str
    start: datetime | None
    end: datetime | None
    size: int
    #: every event of the actor on the resource up to ``size`` (the chain needs them all)
    events: tuple[ProvenEvent, ...]
    #: checked against a trust file of quorum 0: no witness vouches for the log
    unwitnessed: bool = False

    @property
    def within(self) -> tuple[ProvenEvent, ...]:
        """The events whose ``at`` lies in [start, end]."""
        return tuple(e for e in self.events if (self.start is None or e.at >= self.start)
                     and (self.end is None or e.at <= self.end))

    def sentence(self) -> str:
        """The one plain sentence a verifier prints."""
        kind, _, ident = self.resource.partition(":")
        what = f"{kind} {ident}" if ident else self.resource
        n = len(self.within)
        caused = f"exactly these {n} event{'' if n == 1 else 's'}" if n else "no event"
        loud = ("UNWITNESSED (quorum 0: no witness vouches for the log, the operator alone "
                "could have made this proof): " if self.unwitnessed else "")
        return (f"{loud}participant {self.actor} caused {caused} on {what} between "
                f"{_when(self.start, 'the start of the log')} and "
                f"{_when(self.end, 'now')}; the log up to size {self.size} holds "
                f"{'no other' if n else 'none'}")


def _when(moment: datetime | None, otherwise: str) -> str:
    return otherwise if moment is None else moment.isoformat().replace("+00:00", "Z")


def parse_time(text: Any, field: str) -> datetime:
    """An RFC 3339 time with its offset (``Z`` or ``+hh:mm``), as an aware UTC datetime.

    Raises ValueError naming ``field`` otherwise.
    """
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"{field}: {text!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise ValueError(f"{field}: {text!r} has no time zone (add Z)")
    return moment.astimezone(UTC)


def verify_self_proof(doc: Any, keys: TrustedKeys) -> Verdict:
    """Check a self-proof document against ``keys``; the verdict, or SelfProofError."""
    actor, resource, start, end, size = _document(doc)
    checkpoint, index_root = _checkpoint(doc["checkpoint"], size, keys)
    end = _period_end(checkpoint, start, end)
    events = _events(doc["events"], checkpoint)
    _indexing(events, actor, resource)
    value = _chain(events, doc.get("entry"), actor, resource)
    _map_proof(doc.get("map_proof"), index_root, index_key_hash(actor, resource), value)
    return Verdict(actor, resource, start, end, size, tuple(events),
                   unwitnessed=keys.quorum == 0)


# -- 1. the document ------------------------------------------------------------------------
def _document(doc: Any) -> tuple[str, str, datetime | None, datetime | None, int]:
    if not isinstance(doc, Mapping):
        raise SelfProofError(1, "not a JSON object")
    if doc.get("format") != FORMAT:
        raise SelfProofError(1, f"format is {doc.get('format')!r}, want {FORMAT!r}")
    missing = [k for k in ("actor", "resource", "checkpoint", "tree_size", "events")
               if k not in doc]
    if missing:
        raise SelfProofError(1, f"missing {', '.join(missing)}")
    actor, resource, size = doc["actor"], doc["resource"], doc["tree_size"]
    for field, value, shape in (("actor", actor, _ACTOR), ("resource", resource, _RESOURCE)):
        if not isinstance(value, str) or not shape.fullmatch(value):
            raise SelfProofError(1, f"{field} {value!r} is not a printable ASCII id"
                                 f"{' <kind>:<id>' if field == 'resource' else ''}")
    if type(size) is not int or size < 1:
        raise SelfProofError(1, f"tree_size {size!r} is not a positive integer")
    if not isinstance(doc["checkpoint"], Mapping) or not isinstance(doc["events"], list):
        raise SelfProofError(1, "checkpoint must be an object and events a list")
    try:
        start, end = (None if doc.get(f) is None else parse_time(doc[f], f)
                      for f in ("from", "to"))
    except ValueError as exc:
        raise SelfProofError(1, str(exc)) from None
    if start is not None and end is not None and end < start:
        raise SelfProofError(1, f"to {doc['to']} is before from {doc['from']}")
    return actor, resource, start, end, size


# -- 2. the checkpoint ----------------------------------------------------------------------
def _checkpoint(stored: Mapping[str, Any], size: int,
                keys: TrustedKeys) -> tuple[Checkpoint, bytes]:
    note = stored.get("cosigned")
    if not isinstance(note, str):
        raise SelfProofError(2, "the checkpoint has no co-signed note (cosigned)")
    try:
        checkpoint, _ = open_checkpoint(note, [keys.log_verifier], keys.origin)
    except VerificationError as exc:
        raise SelfProofError(2, f"not a checkpoint of the trusted log {keys.origin} "
                             f"(key {keys.log_verifier.key_id:08x}): {exc}") from None
    if checkpoint.size != size:
        raise SelfProofError(2, f"the checkpoint is of size {checkpoint.size}, the proof "
                             f"claims size {size}")
    try:
        signed = cosignatures(note, keys.witnesses)
    except VerificationError as exc:
        raise SelfProofError(2, f"checkpoint {size}: {exc}") from None
    if len(signed) < keys.quorum:
        raise SelfProofError(2, f"checkpoint {size} is co-signed by {len(signed)} trusted "
                             f"witness(es), the quorum is {keys.quorum}")
    try:
        root = checkpoint.extension_hash(INDEX)
    except VerificationError as exc:
        raise SelfProofError(2, f"checkpoint {size}: {exc}") from None
    if root is None:
        raise SelfProofError(2, f"checkpoint {size} commits to no per-actor index "
                             f"(no {INDEX!r} line)")
    return checkpoint, root


def _period_end(checkpoint: Checkpoint, start: datetime | None,
                end: datetime | None) -> datetime | None:
    """The end of the period the proof can speak for: ``to``, but no later than the time
    the checkpoint was cut (an older proof says nothing of what came after it)."""
    try:
        cut = checkpoint.time
    except VerificationError as exc:
        raise SelfProofError(2, f"checkpoint {checkpoint.size}: {exc}") from None
    if cut is None:
        return end
    if start is not None and start > cut:
        raise SelfProofError(2, f"the period starts at {_when(start, '')}, after the "
                             f"checkpoint of size {checkpoint.size} was cut "
                             f"({_when(cut, '')}): the proof cannot speak of it")
    return cut if end is None or end > cut else end


# -- 3. the events and their inclusion ------------------------------------------------------
def _events(items: Sequence[Any], checkpoint: Checkpoint) -> list[ProvenEvent]:
    out: list[ProvenEvent] = []
    cut = checkpoint.time  # read (and checked) by _period_end already
    for k, item in enumerate(items):
        where = f"events[{k}]"
        if not isinstance(item, Mapping):
            raise SelfProofError(3, f"{where} is not an object")
        entry = _entry(item, where)
        if out and entry.seq <= out[-1].seq:
            raise SelfProofError(3, f"{where}: seq {entry.seq} does not follow seq "
                                 f"{out[-1].seq}")
        if entry.seq > checkpoint.size:
            raise SelfProofError(3, f"seq {entry.seq} is beyond the checkpoint's size "
                                 f"{checkpoint.size}")
        try:
            proof = [base64.b64decode(h, validate=True) for h in item.get("inclusion", [])]
            verify_inclusion(entry.leaf_hash(), entry.seq - 1, checkpoint.size, proof,
                             checkpoint.root)
        except (VerificationError, binascii.Error, TypeError, ValueError) as exc:
            raise SelfProofError(3, f"seq {entry.seq} is not in the log at size "
                                 f"{checkpoint.size}: {exc}") from None
        payload = entry.payload()
        try:
            at = parse_time(payload.get("at"), f"seq {entry.seq}: at")
        except ValueError as exc:
            raise SelfProofError(3, str(exc)) from None
        if cut is not None and at > cut:
            raise SelfProofError(3, f"seq {entry.seq}: its at {payload.get('at')} is later "
                                 f"than the time of checkpoint {checkpoint.size} over it "
                                 f"({_when(cut, '')}): written with a time not its own")
        out.append(ProvenEvent(entry.seq, entry.type_name, at, entry))
    return out


def _entry(item: Mapping[str, Any], where: str) -> LogEntry:
    try:
        entry = LogEntry.from_canonical(base64.b64decode(item.get("canonical", ""),
                                                         validate=True))
    except (RecordError, binascii.Error, TypeError, ValueError) as exc:
        raise SelfProofError(3, f"{where}: not a stored event: {exc}") from None
    if item.get("seq") != entry.seq:
        raise SelfProofError(3, f"{where} says seq {item.get('seq')!r}, its bytes say seq "
                             f"{entry.seq}")
    return entry


# -- 4. each event is the actor's, on the resource ------------------------------------------
#: the families whose events IndexRules also files under a dataset, from what earlier events
#: said (a dataset's owner, an order's demander and product, a computation's datasets, a
#: joint execution's product)
_DATASET_FAMILIES = ("order.", "contract.", "computation.", "delivery.", "usage.",
                     "authorization.", "product.registered", "dataset.", "joint.")


def _indexing(events: Sequence[ProvenEvent], actor: str, resource: str) -> None:
    """Each event indexes under (actor, resource): by the keys the event alone shows
    (``core/actor_index.py`` ``stateless_keys``), or else it is of a kind the rules file
    under such a key from what earlier events said (the chain and the map proof then bind
    it; ``audit replay`` recomputes those keys from the whole log)."""
    kind, _, ident = resource.partition(":")
    for event in events:
        entry = event.entry
        if (actor, resource) in stateless_keys(entry):
            continue
        if not _later(entry, kind, ident):
            raise SelfProofError(4, f"seq {event.seq} ({entry.type_name}) does not index "
                                 f"under participant {actor} and {resource}")


def _later(entry: LogEntry, kind: str, ident: str) -> bool:
    """Whether the rules may file ``entry`` under a key of resource ``kind:ident`` from what
    earlier events said (a dataset's, an order's or a joint execution's parties)."""
    t = entry.type_name
    if kind == "dataset":
        return t.startswith(_DATASET_FAMILIES) and (not t.startswith("dataset.")
                                                    or entry.originator_id == ident)
    if kind == "order":
        return t.startswith(("order.", "contract.")) and entry.originator_id == ident
    if kind == "joint":  # its events, and a hidden query's refusal (computation_id: the joint)
        return (t.startswith("joint.") and entry.originator_id == ident) or (
            t == "usage.refused" and entry.payload().get("computation_id") == ident)
    return False


# -- 5. the chain, count and head ------------------------------------------------------------
def _chain(events: Sequence[ProvenEvent], entry: Any, actor: str,
           resource: str) -> IndexValue | None:
    value: IndexValue | None = None
    for event in events:
        value = next_value(value, event.entry)
    if entry is None:
        if value is not None:
            raise SelfProofError(5, f"the proof shows {value.count} event(s) but states no "
                                 "index entry")
        return None
    stated = _stated_value(entry, actor, resource)
    if value is None:
        raise SelfProofError(5, f"the index entry counts {stated.count} event(s), the proof "
                             "shows none: events are missing")
    for what, want, got in (("count", stated.count, value.count),
                            ("head seq", stated.head_seq, value.head_seq),
                            ("chain", stated.chain, value.chain)):
        if want != got:
            raise SelfProofError(5, f"the {what} recomputed from the events is {_show(got)}, "
                                 f"the index entry says {_show(want)}: an event is missing, "
                                 "added or changed")
    return value


def _stated_value(entry: Any, actor: str, resource: str) -> IndexValue:
    try:
        keyhash = base64.b64decode(entry["keyhash"], validate=True)
        stated = IndexValue.from_json(entry["value"], "entry.value")
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise SelfProofError(5, f"the index entry is malformed: {exc}") from None
    if keyhash != index_key_hash(actor, resource):
        raise SelfProofError(5, f"the index entry's key is not (participant {actor}, "
                             f"{resource})")
    return stated


def _show(value: Any) -> str:
    return base64.b64encode(value).decode() if isinstance(value, bytes) else str(value)


# -- 6. the map proof -------------------------------------------------------------------------
def _map_proof(data: Any, root: bytes, keyhash: bytes, value: IndexValue | None) -> None:
    try:
        proof = MapProof.from_json(data)
    except VerificationError as exc:
        raise SelfProofError(6, f"the map proof is malformed: {exc}") from None
    try:
        verify_map_proof(root, keyhash, None if value is None else value.hash(), proof)
    except VerificationError as exc:
        what = "its absence" if value is None else "the index entry"
        raise SelfProofError(6, f"{what} does not lead to the checkpoint's index root: "
                             f"{exc}") from None
