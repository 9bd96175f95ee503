"""The bank's side of a hidden query (隐匿查询, white paper 6.1 steps 3 to 5; docs/HIDDEN_QUERY.md).

:func:`hidden_query` looks credit codes up in a joint computation's published table without
the codes ever leaving the caller's machine: it downloads the sealed table once (kept in a
:class:`TableCache` by its digest, which the ledger records), blinds the codes here
(``core.hidden_query.blind``), posts only the blinded request to the platform's aggregation
node, checks the answer against what the platform says it recorded, and opens its rows in
its own copy of the table. A code in the table gives its row (a dict), one outside it None.

``core/hidden_query.py`` needs ``rbcl``, which only the server's environment has: nothing
the compute node imports may import this module (``client/platform.py`` does not).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.platform import Caller, Platform
from core import hidden_query as hq
from core.files import private_dir, write_private

#: a table digest as the ledger writes it, and the cache's file names
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class HiddenQueryFailed(Exception):
    """The query could not be made or its answer does not check; the message says why."""


class TableCache:
    """Published tables by digest: the last few in memory, and every one under ``directory``
    (0700, its files 0600) if given.

    A table read back from disk is used only if its bytes still hash to its digest."""

    #: tables kept in memory at most (a 1,000,000-row table takes about 100 MB)
    IN_MEMORY = 2

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self.tables: dict[str, hq.HiddenTable] = {}

    def _remember(self, digest: str, table: hq.HiddenTable) -> None:
        self.tables.pop(digest, None)
        self.tables[digest] = table
        while len(self.tables) > self.IN_MEMORY:
            del self.tables[next(iter(self.tables))]

    def _path(self, digest: str) -> Path | None:
        if self.directory is None or not _DIGEST.match(digest):
            return None
        return self.directory / f"{digest}.table"

    def get(self, digest: str) -> hq.HiddenTable | None:
        """The table of ``digest``, if this cache holds it intact."""
        if digest in self.tables:
            return self.tables[digest]
        path = self._path(digest)
        if path is None or not path.is_file():
            return None
        try:
            table = hq.HiddenTable.from_bytes(path.read_bytes())
        except (OSError, hq.HiddenQueryError):
            return None
        if table.digest() != digest:
            return None
        self._remember(digest, table)
        return table

    def put(self, table: hq.HiddenTable, raw: bytes) -> None:
        """Keep ``table`` (whose bytes are ``raw``) under its digest."""
        digest = table.digest()
        self._remember(digest, table)
        path = self._path(digest)
        if path is not None:
            write_private(private_dir(path.parent) / path.name, raw)


def _as_cache(table_cache: TableCache | Path | str | None) -> TableCache:
    if isinstance(table_cache, TableCache):
        return table_cache
    return TableCache(None if table_cache is None else Path(table_cache))


def check_codes(codes: Iterable[str]) -> list[str]:
    """The codes in order, each once (a repeated code would count twice against the
    contract's ``query_count``), each a valid OPRF input."""
    seen: dict[str, None] = {}
    for code in codes:
        try:
            hq.code_bytes(code)
        except hq.HiddenQueryError as exc:
            raise HiddenQueryFailed(f"code {str(code)[:40]!r}: {exc}") from None
        seen.setdefault(code, None)
    if not seen:
        raise HiddenQueryFailed("no code to look up")
    if len(seen) > hq.MAX_CODES:
        raise HiddenQueryFailed(f"at most {hq.MAX_CODES} codes in one query, not {len(seen)}")
    return list(seen)


def published_joint(api: Platform, who: Caller, order_id: str,
                    joint_id: str | None = None) -> dict[str, Any]:
    """The joint computation to query: ``joint_id``'s, or the order's latest published one.
    An order the caller cannot see is refused first (``PlatformError``, 404)."""
    api.order(who, order_id)
    if joint_id is None:
        joints = [j for j in api.joints(who, order_id) if j.get("state") == "published"]
        if not joints:
            raise HiddenQueryFailed(f"order {order_id} has no published joint table yet")
        joint_id = str(max(joints, key=lambda j: int(j["execution"]))["id"])
    view = api.joint(who, joint_id)
    if view.get("contract_id") != order_id:
        raise HiddenQueryFailed(f"joint {joint_id} is not a computation of order {order_id}")
    if view.get("state") != "published":
        raise HiddenQueryFailed(f"joint {joint_id} is {view.get('state')}, not published")
    return view


def fetch_table(api: Platform, who: Caller, view: dict[str, Any],
                cache: TableCache) -> hq.HiddenTable:
    """The joint's sealed table: from the cache, else downloaded; its digest must be the one
    the ledger recorded (``joint.published``)."""
    digest = str(view.get("table_digest") or "")
    table = cache.get(digest)
    if table is not None:
        return table
    raw = api.joint_table(who, str(view["id"]))
    try:
        table = hq.HiddenTable.from_bytes(raw)
    except hq.HiddenQueryError as exc:
        raise HiddenQueryFailed(f"the table downloaded for joint {view['id']}: {exc}") from None
    if table.digest() != digest:
        raise HiddenQueryFailed(f"the table downloaded for joint {view['id']} does not hash "
                                f"to the digest the ledger recorded ({digest[:16]}…)")
    cache.put(table, raw)
    return table


def _checked_response(answer: dict[str, Any], request: bytes) -> bytes:
    """The response bytes, once the platform's answer names this request and its hash."""
    try:
        response = base64.b64decode(str(answer.get("response", "")), validate=True)
    except ValueError:
        raise HiddenQueryFailed("the platform's response is not base64") from None
    if answer.get("request_commitment") != hq.request_commitment(request):
        raise HiddenQueryFailed("the platform recorded another request's commitment")
    if answer.get("request_size") != hq.request_size(request):
        raise HiddenQueryFailed("the platform recorded another request size")
    try:
        recorded = hq.answer_hash(response)
    except hq.HiddenQueryError as exc:
        raise HiddenQueryFailed(f"the platform's response: {exc}") from None
    if answer.get("answer_hash") != recorded:
        raise HiddenQueryFailed("the response does not hash to the answer hash recorded")
    return response


def _row(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    row: dict[str, Any] = json.loads(raw)
    return row


@dataclass(frozen=True)
class Answer:
    """One hidden query as the bank made it: the joint view it asked, the blinded request and
    the response (what the platform saw and what it recorded: ``recorded``), and the rows."""

    joint: dict[str, Any]
    request: bytes = field(repr=False)
    response: bytes = field(repr=False)
    recorded: dict[str, Any]
    rows: dict[str, dict[str, Any] | None]


def ask(api: Platform, who: Caller, order_id: str, codes: Iterable[str], *,
        joint_id: str | None = None,
        table_cache: TableCache | Path | str | None = None) -> Answer:
    """:func:`hidden_query`, with the exchange it made (for an audit or a demo)."""
    wanted = check_codes(codes)
    view = published_joint(api, who, order_id, joint_id)
    table = fetch_table(api, who, view, _as_cache(table_cache))
    state, request = hq.blind(wanted)
    recorded = api.hidden_query(who, order_id, str(view["id"]), request)
    response = _checked_response(recorded, request)
    try:
        opened = hq.lookup(table, state, response)
    except hq.HiddenQueryError as exc:
        raise HiddenQueryFailed(f"the answer does not open: {exc}") from None
    rows = {code: _row(opened[code]) for code in wanted}
    return Answer(view, request, response, recorded, rows)


def hidden_query(api: Platform, who: Caller, order_id: str, codes: Iterable[str], *,
                 joint_id: str | None = None,
                 table_cache: TableCache | Path | str | None = None,
                 ) -> dict[str, dict[str, Any] | None]:
    """Look ``codes`` up in the order's published joint table (the latest, or ``joint_id``'s)
    as the demander ``who``: code -> its row, or None if the table holds no row for it.

    The codes stay here; the platform gets only the blinded request and records its
    commitment, its size and the answer's hash. ``table_cache``: a :class:`TableCache` or a
    directory, so a table is downloaded once. Raises :class:`HiddenQueryFailed` (bad codes,
    nothing published, an answer that does not check) or ``PlatformError`` (a refusal:
    the contract's window, its ``query_count``, a caller that is not the demander)."""
    return ask(api, who, order_id, codes, joint_id=joint_id, table_cache=table_cache).rows
