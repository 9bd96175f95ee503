"""The aggregation store: the bytes of joint computations, which never go in the log.

The log records only their hashes (``domain.joint``): a layout's SHA-256
(``joint.layout_published``), each masked part's digest (``joint.part_received``), the
sealed table's digest (``joint.published``). The bytes are kept here, in tables beside
the read models with a ``MetaData`` of their own (``events/offlog.py``: made once per
engine, stored before the command that records them, dropped if it refuses, swept if a
crash left them unrecorded), so they survive a rebuild of the read models, on SQLite and
PostgreSQL:

- layouts: (joint id, SHA-256) -> the canonical JSON of the sorted key list;
- masked parts: (joint id, provider id, digest) -> the header (JSON) and the body (bytes);
- sealed tables: (joint id, digest) -> the bytes (``HiddenTable.to_bytes()``) and the
  table's OPRF key, the platform's secret: it never goes in a view, a log line or an event.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Column, Engine, Float, LargeBinary, MetaData, String, Table, Text, select

from core.secagg import MaskedPart
from events.offlog import ORPHAN_GRACE_S, Log, OffLogTable

METADATA = MetaData()

layouts = Table(
    "rm_joint_layouts", METADATA,
    Column("joint_id", String, primary_key=True),
    Column("sha256", String, primary_key=True),
    Column("content", LargeBinary, nullable=False),
    Column("stored_at", Float, nullable=True),
)

parts = Table(
    "rm_joint_parts", METADATA,
    Column("joint_id", String, primary_key=True),
    Column("provider_id", String, primary_key=True),
    Column("digest", String, primary_key=True),
    Column("header", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("stored_at", Float, nullable=True),
)

sealed = Table(
    "rm_joint_tables", METADATA,
    Column("joint_id", String, primary_key=True),
    Column("digest", String, primary_key=True),
    Column("content", LargeBinary, nullable=False),
    Column("oprf_key", LargeBinary, nullable=False),
    Column("stored_at", Float, nullable=True),
)


def _recorded_in(log: Log, joint_id: str, type_name: str, **fields: str) -> bool:
    """Whether the joint's stream holds an event of ``type_name`` with these fields."""
    return any(e.type_name == type_name
               and all(e.payload().get(k) == v for k, v in fields.items())
               for e in log.load(joint_id))


def _layout_recorded(log: Log, key: Mapping[str, Any]) -> bool:
    return _recorded_in(log, key["joint_id"], "joint.layout_published",
                        layout_sha256=key["sha256"])


def _part_recorded(log: Log, key: Mapping[str, Any]) -> bool:
    return _recorded_in(log, key["joint_id"], "joint.part_received",
                        provider_id=key["provider_id"], digest=key["digest"])


def _table_recorded(log: Log, key: Mapping[str, Any]) -> bool:
    return _recorded_in(log, key["joint_id"], "joint.published", table_digest=key["digest"])


LAYOUTS = OffLogTable(layouts, _layout_recorded)
PARTS = OffLogTable(parts, _part_recorded)
TABLES = OffLogTable(sealed, _table_recorded)
STORES = (LAYOUTS, PARTS, TABLES)


# -- layouts ----------------------------------------------------------------------
def put_layout(engine: Engine, joint_id: str, sha256: str, content: bytes) -> None:
    """Store a layout's canonical JSON under its SHA-256 (``domain.joint.layout_bytes``)."""
    LAYOUTS.put(engine, {"joint_id": joint_id, "sha256": sha256, "content": content})


def get_layout(engine: Engine, joint_id: str, sha256: str) -> list[str] | None:
    """The keys of the joint's layout of that SHA-256, or None."""
    LAYOUTS.ensure(engine)
    with engine.connect() as conn:
        content = conn.execute(select(layouts.c.content).where(
            layouts.c.joint_id == joint_id, layouts.c.sha256 == sha256)).scalar()
    return None if content is None else list(json.loads(bytes(content)))


def discard_layout(engine: Engine, log: Log, joint_id: str, sha256: str) -> bool:
    return LAYOUTS.discard(engine, log, {"joint_id": joint_id, "sha256": sha256})


# -- masked parts -----------------------------------------------------------------
def put_part(engine: Engine, joint_id: str, part: MaskedPart) -> str:
    """Store a provider's masked part under its digest, which it returns."""
    digest = part.digest()
    PARTS.put(engine, {"joint_id": joint_id, "provider_id": part.provider_id,
                       "digest": digest, "header": json.dumps(dict(part.header)),
                       "body": part.body})
    return digest


def get_parts(engine: Engine, joint_id: str,
              digests: Mapping[str, str]) -> dict[str, MaskedPart]:
    """The stored parts of the joint whose digests are ``digests`` (provider id -> digest,
    as ``joint.part_received`` recorded them), by provider; a provider whose part is not
    stored is left out."""
    PARTS.ensure(engine)
    with engine.connect() as conn:
        rows = conn.execute(select(parts).where(parts.c.joint_id == joint_id)).mappings()
        found = {r["provider_id"]: MaskedPart(json.loads(r["header"]), bytes(r["body"]))
                 for r in rows if digests.get(r["provider_id"]) == r["digest"]}
    return found


def discard_part(engine: Engine, log: Log, joint_id: str, provider_id: str,
                 digest: str) -> bool:
    return PARTS.discard(engine, log, {"joint_id": joint_id, "provider_id": provider_id,
                                       "digest": digest})


# -- sealed tables and their OPRF keys ---------------------------------------------
def put_table(engine: Engine, joint_id: str, digest: str, content: bytes,
              oprf_key: bytes) -> None:
    """Store the joint's sealed table (``HiddenTable.to_bytes()``, its ``digest()``) and its
    OPRF key, before ``joint.published`` records the digest."""
    TABLES.put(engine, {"joint_id": joint_id, "digest": digest, "content": content,
                        "oprf_key": oprf_key})


def get_table(engine: Engine, joint_id: str, digest: str) -> bytes | None:
    """The sealed table's bytes of that digest (the one ``joint.published`` records)."""
    return _table_column(engine, joint_id, digest, sealed.c.content)


def get_key(engine: Engine, joint_id: str, digest: str) -> bytes | None:
    """The OPRF key of the joint's sealed table of that digest (never shown to anyone)."""
    return _table_column(engine, joint_id, digest, sealed.c.oprf_key)


def _table_column(engine: Engine, joint_id: str, digest: str, column: Any) -> bytes | None:
    TABLES.ensure(engine)
    with engine.connect() as conn:
        value = conn.execute(select(column).where(
            sealed.c.joint_id == joint_id, sealed.c.digest == digest)).scalar()
    return None if value is None else bytes(value)


def discard_table(engine: Engine, log: Log, joint_id: str, digest: str) -> bool:
    return TABLES.discard(engine, log, {"joint_id": joint_id, "digest": digest})


def sweep(engine: Engine, log: Log, *, older_than: float = ORPHAN_GRACE_S) -> int:
    """Drop the layouts, parts and sealed tables (with their keys) that no event records,
    stored more than ``older_than`` seconds ago; how many rows were dropped."""
    return sum(store.sweep(engine, log, older_than=older_than) for store in STORES)
