"""Many more cycles in the shape of the seed's one, fast: the audit bench's million events.

The seed's cycle (``bench.audit.seed``) is cut into *commands* (the events one command wrote
together: same ``at``) and each event into a template of its payload's bytes, with slots
where a new cycle differs: the order id, the ids derived from it (each computation's, by
``domain.computation.computation_id``; the usage stream's, by ``domain.usage.usage_id``), the
bank (participant, member, key id), the time, the result's hash, and each signature. A new
cycle fills the slots and signs each of its decisions again with the deciding member's
registered key, over the statement the event carries (``core.decision``), so every
decision verifies. Substituting ids of the same length inside canonical JSON keeps it
canonical (no key is one of them; the test reads every line back with
``LogEntry.from_canonical``).

Cycles run interleaved (a few contracts in flight, one command at a time, each command's
events together, as the log commits them), each for 1 to 3 executions of its contract
(the contract's processing count is 3), by a bank chosen so that some banks have few cycles
and some many (``Plan``). The times step forward from the seed's end, inside every grant's
and contract's usage window.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bench.audit.seed import Seed
from core.canonical import canonical_bytes, decode
from core.record import LogEntry

#: cycles in flight at once
IN_FLIGHT = 8
#: how likely a cycle runs 1, 2 or 3 executions
EXECUTION_WEIGHTS = (0.2, 0.3, 0.5)
#: mean time between two commands of the synthesized history
STEP = timedelta(seconds=20)

Part = bytes | str  # literal bytes, or the name of a slot


@dataclass
class EventTemplate:
    """One event of the cycle: its stream id and payload as parts, the statement it signs."""

    id_slot: str
    version: int
    type_name: str
    payload: list[Part]
    statement: list[Part] | None = None
    signer_slot: str | None = None  # None: the statement's member signs (not the bank)
    member: str = ""


@dataclass
class CycleTemplate:
    commands: list[list[EventTemplate]]
    #: how many commands a cycle of 1, 2, 3 executions has
    command_ends: list[int]
    #: old computation id -> (execution, provider id)
    computations: dict[str, tuple[int, str]] = field(default_factory=dict)


def _split(data: bytes, tokens: dict[bytes, str], pattern: re.Pattern[bytes]) -> list[Part]:
    parts: list[Part] = []
    for i, piece in enumerate(pattern.split(data)):
        if i % 2:
            parts.append(tokens[piece])
        elif piece:
            parts.append(piece)
    return parts


def _tokens(seed: Seed, cycle: list[LogEntry]) -> tuple[dict[bytes, str], dict[str, Any]]:
    """What differs between cycles, as it appears in the template: bytes -> slot name."""
    from domain.usage import usage_id

    order = cycle[0].originator_id
    bank_pid, bank_mid, bank_kid = seed.demanders[0]
    tokens = {order.encode(): "order", usage_id(order).encode(): "usage",
              bank_pid.encode(): "bank_pid", bank_mid.encode(): "bank_mid",
              bank_kid.encode(): "bank_kid"}
    computations: dict[str, tuple[int, str]] = {}
    for e in cycle:
        p = e.payload()
        tokens[p["at"].encode()] = "at"
        if e.type_name == "computation.requested":
            computations[e.originator_id] = (p["execution"], p["provider_id"])
            tokens[e.originator_id.encode()] = "comp:" + e.originator_id
        if e.type_name == "computation.succeeded":
            tokens[p["result_sha256"].encode()] = "sha"
        if isinstance(p.get("signature"), dict):
            tokens[p["signature"]["value"].encode()] = "sig"
    return tokens, {"computations": computations}


def template(seed: Seed) -> CycleTemplate:
    """The seed's cycle as a template."""
    cycle = [LogEntry.from_canonical(b)
             for b in seed.entries[seed.cycle_first - 1:seed.cycle_last]]
    tokens, extra = _tokens(seed, cycle)
    pattern = re.compile(b"(" + b"|".join(re.escape(t) for t in
                                          sorted(tokens, key=len, reverse=True)) + b")")
    commands: list[list[EventTemplate]] = []
    ends, last_at = [], None
    for e in cycle:
        p = e.payload()
        t = EventTemplate(tokens.get(e.originator_id.encode(), e.originator_id), e.version,
                          e.type_name, _split(e.payload_bytes, tokens, pattern))
        if isinstance(p.get("signature"), dict):
            stmt = p["signature"]["statement"]
            t.statement = _split(canonical_bytes(stmt), tokens, pattern)
            t.member = stmt["member_id"]
            t.signer_slot = "bank" if stmt["member_id"] == seed.demanders[0][1] else None
        if p["at"] != last_at:
            commands.append([])
            last_at = p["at"]
        commands[-1].append(t)
        if e.seq in seed.execution_ends:
            ends.append(len(commands))
    return CycleTemplate(commands, ends, extra["computations"])


@dataclass
class Plan:
    """Which bank runs each cycle: bank ``i`` of ``designated`` (1-based) runs 2**(i-1)
    cycles, so the log has banks with 1, 2, 4, ... cycles; the rest go to the other banks."""

    banks: list[tuple[str, str, str]]
    designated: int
    total_events: int

    def assignments(self, rng: random.Random) -> Iterator[tuple[str, str, str]]:
        cycles = max(1, self.total_events // 37)
        fixed = [self.banks[i] for i in range(1, self.designated + 1)
                 for _ in range(2 ** (i - 1))]
        others = [self.banks[0], *self.banks[self.designated + 1:]]
        slots = [rng.choice(others) for _ in range(max(cycles, len(fixed)))]
        span = max(int(len(slots) * 0.9), len(fixed))  # never the very end of the log
        for pos, bank in zip(rng.sample(range(span), len(fixed)), fixed, strict=True):
            slots[pos] = bank
        yield from slots
        while True:
            yield rng.choice(others)


class Cycle:
    """One synthesized cycle in flight: its slots' values and the commands left."""

    def __init__(self, tpl: CycleTemplate, bank: tuple[str, str, str], executions: int,
                 rng: random.Random) -> None:
        from domain.computation import computation_id
        from domain.usage import usage_id

        order = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.values: dict[str, bytes] = {
            "order": order.encode(), "usage": usage_id(order).encode(),
            "bank_pid": bank[0].encode(), "bank_mid": bank[1].encode(),
            "bank_kid": bank[2].encode()}
        for old, (execution, provider) in tpl.computations.items():
            self.values["comp:" + old] = computation_id(order, execution, provider).encode()
        self.commands = tpl.commands[:tpl.command_ends[executions - 1]]
        self.next = 0
        self.bank_member = bank[1]

    def done(self) -> bool:
        return self.next >= len(self.commands)


def _fill(parts: list[Part], values: dict[str, bytes]) -> bytes:
    return b"".join(p if isinstance(p, bytes) else values[p] for p in parts)


class Synthesizer:
    """Yields the seed's events, then synthesized ones, up to ``total`` events."""

    def __init__(self, seed: Seed, total: int, designated: int = 8, rng_seed: int = 13) -> None:
        self.seed = seed
        self.total = total
        self.tpl = template(seed)
        self.rng = random.Random(rng_seed)
        self.plan = Plan(seed.demanders, designated, total).assignments(self.rng)
        self.now: datetime = seed.end
        self.signing = {mid: key for mid, key in seed.keys.items()}

    def _new_cycle(self) -> Cycle:
        executions = self.rng.choices((1, 2, 3), EXECUTION_WEIGHTS)[0]
        return Cycle(self.tpl, next(self.plan), executions, self.rng)

    def _event(self, t: EventTemplate, cycle: Cycle, seq: int) -> LogEntry:
        values = cycle.values
        originator = values[t.id_slot].decode() if t.id_slot in values else t.id_slot
        if "sha" in t.payload:
            values["sha"] = hashlib.sha256(b"result of " + originator.encode()).hexdigest() \
                .encode()
        if t.statement is not None:
            member = cycle.bank_member if t.signer_slot == "bank" else t.member
            signed = self.signing[member].sign(_fill(t.statement, values))
            values["sig"] = base64.b64encode(signed)
        return LogEntry(seq, originator, t.version, t.type_name, _fill(t.payload, values))

    def entries(self) -> Iterator[LogEntry]:
        """Every event in seq order."""
        for data in self.seed.entries[:self.total]:
            yield LogEntry.from_canonical(data)
        seq = len(self.seed.entries)
        flight = [self._new_cycle() for _ in range(IN_FLIGHT)]
        while seq < self.total:
            i = self.rng.randrange(len(flight))
            cycle = flight[i]
            command = cycle.commands[cycle.next]
            if seq + len(command) > self.total:  # the last commands: only those that fit
                cycle = flight[i] = self._new_cycle()
                command = cycle.commands[0]
            self.now += STEP * (0.5 + self.rng.random())
            cycle.values["at"] = (self.now.isoformat(timespec="microseconds")
                                  .replace("+00:00", "Z").encode())
            for t in command:
                seq += 1
                yield self._event(t, cycle, seq)
            cycle.next += 1
            if cycle.done():
                flight[i] = self._new_cycle()


def check_template_roundtrip(entries: list[LogEntry]) -> None:
    """Raise unless each entry's canonical bytes parse back to it (canonical form kept)."""
    for e in entries:
        if LogEntry.from_canonical(e.canonical()) != e:
            raise ValueError(f"seq {e.seq}: the synthesized bytes are not canonical")
        decode(e.payload_bytes)
