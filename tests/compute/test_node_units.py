"""The compute node's pure parts: event parsing, queries, results, positions, filters.

Runs inside the compute venv only: ``compute_nodes/setup-env test``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pandas as pd
import pytest

from client.platform import PlatformError
from compute_nodes.executor import _final, code_failed
from compute_nodes.feeds import Position, message_seq
from compute_nodes.jetstream import common_filter
from compute_nodes.outcome import RETRY_LATER, SOON, NodeError, Outcome, settled
from compute_nodes.result_rows import ResultError, apply_query, check_query, to_json_result
from core.record import LogEntry


def canonical(seq: int = 7, type_name: str = "contract.approved", payload: dict | None = None,
              originator: str = "c-1") -> bytes:
    record = {"id": originator, "payload": payload or {}, "seq": seq, "type": type_name,
              "version": 5}
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def test_an_event_is_read_from_its_canonical_bytes() -> None:
    raw = canonical(payload={"execution": 2, "query": None}, type_name="contract.query_submitted")
    view = {"seq": 7, "type": "contract.query_submitted", "originator_id": "c-1",
            "canonical": base64.b64encode(raw).decode(), "payload": {"forged": True}}
    event = LogEntry.from_view(view)
    assert (event.seq, event.type_name, event.originator_id) == (7, "contract.query_submitted",
                                                                 "c-1")
    assert event.payload() == {"execution": 2, "query": None}  # not the view's payload
    assert LogEntry.from_canonical(raw) == event


@pytest.mark.parametrize(("view", "problem"), [
    ({"seq": 8, "canonical": base64.b64encode(canonical()).decode()}, "the view says"),
    ({"seq": 7}, "canonical bytes"),
    ({"canonical": "not base64!"}, "base64"),
    ({"canonical": base64.b64encode(b'{"id":"c"}').decode()}, "not a stored event"),
    ({"canonical": base64.b64encode(b"\xff").decode()}, "not canonical JSON"),
])
def test_an_event_whose_view_and_bytes_disagree_is_refused(view: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        LogEntry.from_view(view)


def test_queries_keep_only_the_asked_rows() -> None:
    rows = [{"uscc": "A", "score": 1}, {"uscc": "B", "score": 2}, {"uscc": "C", "score": 3}]
    assert apply_query(rows, None) == rows
    assert apply_query(rows, {"field": "uscc", "values": ["C", "A", "Z"]}) == [rows[0], rows[2]]
    table = pd.DataFrame({"id": [1, 2, 3], "n": [4, 5, 6]})
    assert apply_query(table, {"field": "id", "values": ["2"]}) == [{"id": 2, "n": 5}]
    with pytest.raises(ValueError, match="no column 'x'"):
        apply_query(rows, {"field": "x", "values": ["A"]})
    with pytest.raises(ValueError, match="table of rows"):
        apply_query({"rows": 3}, {"field": "uscc", "values": ["A"]})
    assert apply_query([], {"field": "uscc", "values": ["A"]}) == []


@pytest.mark.parametrize("query", [
    {"field": "uscc"}, {"field": "", "values": ["a"]}, {"field": "uscc", "values": [1]},
    {"field": "uscc", "values": "a"}, ["uscc"], {"field": "u", "values": ["a"], "x": 1},
])
def test_a_malformed_query_is_refused(query: object) -> None:
    with pytest.raises(NodeError):
        check_query(query)


def test_results_are_plain_json_with_rows() -> None:
    value, rows = to_json_result(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
    assert (value, rows) == ([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}], 2)
    assert to_json_result({"n": 3.0}) == ({"n": 3}, 1)
    with pytest.raises(ValueError, match="non-integral"):
        to_json_result([0.5])


def test_outcomes_left_for_later() -> None:
    assert RETRY_LATER == {"not_anchored", "lagging", "refused", "error", "running"}
    assert SOON <= RETRY_LATER
    assert settled([Outcome("c", "delivered"), Outcome("c", "ignored"), Outcome("c", "failed")])
    assert settled([])
    assert not settled([Outcome("c", "skipped"), Outcome("c", "not_anchored")])


def test_position_is_kept_in_a_file_and_never_moves_back(tmp_path: Path) -> None:
    path = tmp_path / "node" / "position.json"
    assert Position(path).seq == 0
    Position(path).save(12)
    position = Position(path)
    assert position.seq == 12
    position.save(5)
    assert json.loads(path.read_text()) == {"seq": 12}


def test_common_filter_for_servers_without_filter_subjects() -> None:
    assert common_filter(["ledger.contract.approved", "ledger.contract.query_submitted"]) == \
        "ledger.contract.>"
    assert common_filter(["x.a", "x.a"]) == "x.a"


@pytest.mark.parametrize(("status", "body", "final"), [
    (403, '{"error":"forbidden","detail":"not a party"}', True),
    (404, '{"error":"not_found","detail":"no contract"}', True),
    (422, '{"error":"invalid_input","detail":"execution"}', True),
    (409, '{"error":"wrong_state","detail":"execution 3 was not asked for"}', True),
    (409, '{"error":"concurrency_conflict","detail":"try again"}', False),
    (500, '{"error":"internal"}', False),
    (503, "", False),
])
def test_which_refusals_of_a_computation_request_are_final(status: int, body: str,
                                                           final: bool) -> None:
    exc = PlatformError("POST", "/computations", status, body)
    assert _final(exc) is final
    assert ("rejected" not in RETRY_LATER) and Outcome("c", "rejected").settled


def test_a_failure_on_private_data_is_recorded_by_the_exception_type_only() -> None:
    from compute_nodes.sandbox import CodeRaised

    detail = ("Traceback (most recent call last):\n"
              '  File "<product>", line 4, in leaky\n'
              "ValueError: invalid literal for int() with base 10: '91330100张三'\n")
    reason = code_failed(CodeRaised("ValueError", detail), 1)
    assert reason == ("code_failed: the product's code raised ValueError on the private "
                      "data; details are in the provider's private log")
    assert "张三" not in reason
    assert "张三" not in code_failed(CodeRaised("not a name; 张三", detail), 2)
    # the code names its own classes: only a built-in exception's name is quoted
    spelled = code_failed(CodeRaised("Taxpayer91330100张三Owes90000", detail), 1)
    assert "张三" not in spelled and "raised an exception on" in spelled
    assert code_failed(CodeRaised("ValueError", "Traceback ...\nValueError: bad 'x'\n"), 0) \
        == "code_failed: ValueError: bad 'x'"  # the trial, on mock rows, keeps its details
    with pytest.raises(ResultError) as caught:
        to_json_result([{"ratio": 52341.27}])
    assert "52341.27" in str(caught.value) and "52341" not in caught.value.public


def test_a_message_names_its_seq_or_nothing() -> None:
    from types import SimpleNamespace

    assert message_seq(SimpleNamespace(data=canonical(seq=42), headers=None)) == 42
    assert message_seq(SimpleNamespace(data=b"\xff", headers={"Dataledger-Seq": "9"})) == 9
    assert message_seq(SimpleNamespace(data=b"{}", headers={"Dataledger-Seq": "x"})) is None
    assert message_seq(SimpleNamespace(data=b'{"seq": 0}', headers=None)) is None
