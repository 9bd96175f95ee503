"""The trial (试用): before approval, the operator grants a trial; the input provider's node
runs the listed code on its datasite's mock rows only (no code request, nothing on the
private data) and the demander receives that result. After approval the ledger refuses it.

Runs inside the compute venv only: ``compute_nodes/setup-env test``.
"""

from __future__ import annotations

import hashlib
import time
from types import SimpleNamespace

import pandas as pd
import pytest

from compute_nodes import datasite
from compute_nodes.executor import DATASET_WAIT_S
from compute_nodes.node import ComputeNode
from tests.compute.ledger import (
    USED,
    expected_scores,
    provider_view,
    served,
    until_settled,
)
from tests.compute.test_node import delivered_once, result_of
from tests.compute.test_refusals import refused

pytestmark = pytest.mark.timeout(120)
SITE = "tax-trial"  # the datasite of this module's world


def test_a_granted_trial_runs_on_mock_rows_only_and_reaches_the_demander(
        w: SimpleNamespace) -> None:
    contract = w.api.order(w.p, w.p.product_id, approve=False)  # proposed and accepted
    w.api.call("POST", f"/orders/{contract}/trial", w.p.operator.token)
    node = w.node()
    [outcome] = until_settled(node, provider_view(w, contract, "order.trial_granted"))
    assert outcome.status == "delivered" and outcome.execution == 0, outcome
    requested, succeeded, _ = delivered_once(w, outcome)
    assert requested["payload"]["execution"] == 0
    mock = pd.read_csv(w.tmp / "mock.csv")
    result = result_of(w, outcome)
    assert result == served(w, outcome.computation_id, expected_scores(mock))
    assert not {row["uscc"] for row in result} & set(w.private["uscc"])
    # the input hash is the mock table's, and no code request reached the datasite
    text = datasite._asset(w.admin, w.p.dataset_id).mock.to_csv(index=False,
                                                                 lineterminator="\n")
    assert succeeded["payload"]["input_hashes"] == {
        w.p.dataset_id: hashlib.sha256(text.encode()).hexdigest()}
    assert succeeded["payload"]["input_hashes"][w.p.dataset_id] != \
        w.loaded["sha256_of_private_file"]
    assert not datasite.request_exists(w.runner, "score", node.request_key(contract, 0))
    view = w.api.call("GET", f"/computations/{outcome.computation_id}", w.p.demander.token)
    assert view["trial"] is True and view["state"] == "succeeded"
    # handled again: nothing more
    head = len(w.api.events())
    [again] = node.handle(provider_view(w, contract, "order.trial_granted"))
    assert again.status == "skipped"
    assert len(w.api.events()) == head


def test_a_trial_met_after_approval_is_refused(w: SimpleNamespace) -> None:
    contract = w.api.order(w.p, w.p.product_id, approve=False)
    w.api.call("POST", f"/orders/{contract}/trial", w.p.operator.token)
    w.api.approve(w.p, contract)
    outcome = refused(w, w.node(), contract, "trial_after_approval", "order.trial_granted")
    assert outcome.execution == 0


def test_a_trial_that_fails_on_mock_rows_keeps_the_details(w: SimpleNamespace) -> None:
    """Mock rows are no secret: the trial's failure says what the code raised, with what."""
    from tests.compute.test_node import LEAKY

    product = w.api.product(w.p, LEAKY, [{"dataset_id": w.p.dataset_id, "fields": USED}],
                            name="leaky trial")
    contract = w.api.order(w.p, product, approve=False)
    w.api.call("POST", f"/orders/{contract}/trial", w.p.operator.token)
    [outcome] = until_settled(w.node(), provider_view(w, contract, "order.trial_granted"))
    assert outcome.status == "failed" and outcome.execution == 0, outcome
    top = int(pd.read_csv(w.tmp / "mock.csv")["tax_paid_yuan"].max())
    reason = w.api.event(outcome.computation_id, "computation.failed")["payload"]["reason"]
    assert reason.startswith("code_failed: ValueError: invalid literal") and f"{top}张三" in reason


def test_data_not_loaded_yet_is_waited_for_then_the_failure_is_recorded(
        w: SimpleNamespace) -> None:
    """A trial granted before the provider loaded its data runs once it is loaded; an
    execution whose data never comes fails after DATASET_WAIT_S, not at once."""
    site = datasite.launch("tax-empty", data_dir=w.tmp / "empty-datasite", reset=True,
                           admin_password="empty-admin-1")
    try:
        admin = site.admin()
        runner = datasite.data_scientist(site, admin, "node@tax.example", "empty-pass-1")
        node = ComputeNode(w.url, w.p.provider.token, (admin, runner, "tax-empty"), w.trust,
                           w.sandbox, backoff_s=0.05)
        trial = w.api.order(w.p, w.p.product_id, approve=False)
        w.api.call("POST", f"/orders/{trial}/trial", w.p.operator.token)
        contract = w.api.order(w.p, w.p.product_id)
        events = {trial: provider_view(w, trial, "order.trial_granted"),
                  contract: provider_view(w, contract, "contract.approved")}
        for oid, event in events.items():
            [waiting] = until_settled(node, event)
            assert waiting.status == "error" and not waiting.settled, waiting
            assert "waiting for the data: no dataset" in waiting.detail
            assert [c["state"] for c in w.api.computations(oid)] == ["requested"]

        start = time.monotonic()
        node.clock = lambda: start + DATASET_WAIT_S + 1  # the data never came for 10 minutes
        [failed] = node.handle(events[contract])
        assert failed.status == "failed" and "no dataset" in failed.detail, failed
        assert w.api.event(failed.computation_id, "computation.failed")["payload"][
            "reason"].startswith("DatasetMissingError: no dataset")

        node.clock = time.monotonic
        node.load(w.p.dataset_id, w.tmp / "private.csv", w.tmp / "mock.csv")
        [done] = node.handle(events[trial])
        assert done.status == "delivered" and done.execution == 0, done
        assert result_of(w, done) == served(w, done.computation_id,
                                            expected_scores(pd.read_csv(w.tmp / "mock.csv")))
    finally:
        site.land()
