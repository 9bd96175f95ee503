"""The bank's client (``client/hidden_query.py``) against a fake aggregation node over
``httpx.MockTransport``: the node's side is the real ``core.hidden_query`` (a sealed table,
``evaluate``), so what is checked is the client's part: which joint it picks, the table
downloaded once and checked against the recorded digest, the answer checked against the
recorded hashes, and the rows it opens. The server's routes are tested end to end in
``tests/e2e/test_hidden_query_client.py``."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from client.hidden_query import HiddenQueryFailed, TableCache, ask, check_codes, hidden_query
from client.platform import Platform, PlatformError
from core import hidden_query as hq

ORDER = "order-1"
TOKEN = "dl_bank_token_for_the_fake_node_only"
MEMBERS = {f"91310115MA0000{i:03d}X": {"uscc": f"91310115MA0000{i:03d}X", "points": 10 * i}
           for i in range(1, 6)}
OUTSIDER = "91320106MA9999999Y"


class FakeNode:
    """The platform's joint routes for one published joint (execution 2) beside a failed one
    (execution 1), with counters and hooks to tamper with what it answers."""

    def __init__(self) -> None:
        self.key = hq.generate_key()
        rows = {code: json.dumps(row, sort_keys=True).encode() for code, row in MEMBERS.items()}
        self.table = hq.prepare_table(self.key, rows)
        self.raw = self.table.to_bytes()
        self.digest = self.table.digest()
        self.downloads = 0
        self.requests: list[bytes] = []
        self.tamper: Callable[[dict[str, Any]], None] = lambda answer: None

    def view(self, joint_id: str) -> dict[str, Any]:
        published = joint_id == "joint-2"
        return {"id": joint_id, "contract_id": ORDER, "execution": 2 if published else 1,
                "state": "published" if published else "failed",
                "table_digest": self.digest if published else None}

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return httpx.Response(401, json={"error": "unauthenticated"})
        path = request.url.path
        if path in (f"/orders/{ORDER}", "/orders/other"):
            return httpx.Response(200, json={"id": path.rsplit("/", 1)[1]})
        if path == "/joint":
            return httpx.Response(200, json=[self.view("joint-1"), self.view("joint-2")])
        if path in ("/joint/joint-1", "/joint/joint-2"):
            return httpx.Response(200, json=self.view(path.rsplit("/", 1)[1]))
        if path == "/joint/joint-2/table":
            self.downloads += 1
            return httpx.Response(200, content=self.raw,
                                  headers={"content-type": "application/octet-stream",
                                           "X-Table-Digest": self.digest})
        if path == f"/orders/{ORDER}/hidden-queries":
            body = json.loads(request.content)
            blinded = base64.b64decode(body["request"])
            self.requests.append(blinded)
            response = hq.evaluate(self.key, blinded)
            answer = {"joint_id": body["joint_id"],
                      "request_commitment": hq.request_commitment(blinded),
                      "request_size": hq.request_size(blinded),
                      "answer_hash": hq.answer_hash(response),
                      "response": base64.b64encode(response).decode()}
            self.tamper(answer)
            return httpx.Response(200, json=answer)
        return httpx.Response(404, json={"error": "not_found"})


@pytest.fixture
def node() -> FakeNode:
    return FakeNode()


@pytest.fixture
def api(node: FakeNode) -> Platform:
    return Platform(httpx.Client(base_url="http://platform.test",
                                 transport=httpx.MockTransport(node.handle)))


def test_members_get_their_row_and_outsiders_none(api: Platform, node: FakeNode) -> None:
    codes = [*list(MEMBERS)[:3], OUTSIDER]
    rows = hidden_query(api, TOKEN, ORDER, codes)
    assert rows == {**{c: MEMBERS[c] for c in codes[:3]}, OUTSIDER: None}
    assert list(rows) == codes  # in the order asked
    # the node got one blinded request of four elements and none of the codes
    assert len(node.requests) == 1 and hq.request_size(node.requests[0]) == 4
    assert not any(c.encode() in node.requests[0] for c in codes)


def test_the_latest_published_joint_is_asked_and_its_table_downloaded_once(
        api: Platform, node: FakeNode, tmp_path: Path) -> None:
    answer = ask(api, TOKEN, ORDER, [OUTSIDER], table_cache=tmp_path)
    assert answer.joint["id"] == "joint-2"
    assert (tmp_path / f"{node.digest}.table").read_bytes() == node.raw
    assert (tmp_path / f"{node.digest}.table").stat().st_mode & 0o777 == 0o600
    assert tmp_path.stat().st_mode & 0o777 == 0o700
    first = next(iter(MEMBERS))
    again = hidden_query(api, TOKEN, ORDER, [first], table_cache=tmp_path)
    assert again == {first: MEMBERS[first]}
    assert node.downloads == 1  # the second query read the table from the directory
    cache = TableCache()
    hidden_query(api, TOKEN, ORDER, [OUTSIDER], table_cache=cache)
    hidden_query(api, TOKEN, ORDER, [OUTSIDER], table_cache=cache)
    assert node.downloads == 2  # an in-memory cache: one more download for both


def test_a_damaged_cached_table_is_downloaded_again(api: Platform, node: FakeNode,
                                                     tmp_path: Path) -> None:
    (tmp_path / f"{node.digest}.table").write_bytes(node.raw[:-1] + b"\x00")
    assert hidden_query(api, TOKEN, ORDER, list(MEMBERS)[:2], table_cache=tmp_path)
    assert node.downloads == 1
    assert (tmp_path / f"{node.digest}.table").read_bytes() == node.raw


def test_a_table_that_is_not_the_recorded_one_is_refused(api: Platform,
                                                          node: FakeNode) -> None:
    other = hq.prepare_table(hq.generate_key(), {"x": b"{}"})
    node.raw = other.to_bytes()
    with pytest.raises(HiddenQueryFailed, match="does not hash to the digest the ledger"):
        hidden_query(api, TOKEN, ORDER, [OUTSIDER])
    node.raw = b"not a table"
    with pytest.raises(HiddenQueryFailed, match="not a hidden-query table"):
        hidden_query(api, TOKEN, ORDER, [OUTSIDER])
    assert not node.requests  # nothing was asked of a table that does not check


@pytest.mark.parametrize(("field", "value", "message"), [
    ("answer_hash", "0" * 64, "does not hash to the answer hash recorded"),
    ("request_commitment", "0" * 64, "another request's commitment"),
    ("request_size", 99, "another request size"),
    ("response", "%%%", "not base64"),
])
def test_an_answer_that_does_not_match_its_record_is_refused(
        api: Platform, node: FakeNode, field: str, value: Any, message: str) -> None:
    node.tamper = lambda answer: answer.__setitem__(field, value)
    with pytest.raises(HiddenQueryFailed, match=message):
        hidden_query(api, TOKEN, ORDER, [OUTSIDER])


def test_a_node_evaluating_under_another_key_opens_no_row(api: Platform,
                                                          node: FakeNode) -> None:
    def other_key(answer: dict[str, Any]) -> None:
        response = hq.evaluate(hq.generate_key(), node.requests[-1])
        answer["response"] = base64.b64encode(response).decode()
        answer["answer_hash"] = hq.answer_hash(response)

    node.tamper = other_key
    assert hidden_query(api, TOKEN, ORDER, list(MEMBERS)) == dict.fromkeys(MEMBERS)


def test_nothing_published_and_a_joint_of_another_order_are_refused(
        api: Platform, node: FakeNode) -> None:
    with pytest.raises(HiddenQueryFailed, match="joint-1 is failed, not published"):
        hidden_query(api, TOKEN, ORDER, [OUTSIDER], joint_id="joint-1")
    with pytest.raises(HiddenQueryFailed, match="not a computation of order other"):
        hidden_query(api, TOKEN, "other", [OUTSIDER], joint_id="joint-2")
    with pytest.raises(PlatformError) as refused:
        hidden_query(api, "dl_someone_else_entirely", ORDER, [OUTSIDER])
    assert refused.value.status == 401


@pytest.mark.parametrize(("codes", "message"), [
    ([], "no code to look up"),
    (["x" * 257], "1 to 256 bytes"),
    ([""], "1 to 256 bytes"),
])
def test_bad_codes_are_refused_before_anything_is_sent(
        api: Platform, node: FakeNode, codes: list[str], message: str) -> None:
    with pytest.raises(HiddenQueryFailed, match=message):
        hidden_query(api, TOKEN, ORDER, codes)
    assert node.downloads == 0 and not node.requests


def test_repeated_codes_are_asked_once() -> None:
    assert check_codes(["b", "a", "b", "a"]) == ["b", "a"]


def test_the_memory_keeps_the_last_tables_only() -> None:
    cache = TableCache()
    tables = [hq.prepare_table(hq.generate_key(), {f"c{i}": b"{}"}) for i in range(3)]
    for table in tables:
        cache.put(table, table.to_bytes())
    assert cache.get(tables[0].digest()) is None  # no directory: gone
    assert cache.get(tables[2].digest()) is tables[2]
    assert len(cache.tables) == TableCache.IN_MEMORY
