"""The trial (试用): before approval, the operator grants a trial; the input provider's node
runs the listed code on its datasite's mock rows only (no code request, nothing on the
private data) and the demander receives that result. After approval the ledger refuses it.

Runs inside the compute venv only: ``compute_nodes/setup-env test``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from types import SimpleNamespace

import pandas as pd
import pytest

from compute_nodes import datasite
from tests.compute.ledger import (
    USED,
    expected_scores,
    ledger_server,
    provider_view,
    until_settled,
    world,
)
from tests.compute.test_refusals import refused
from tests.compute.test_worker import delivered_once, result_of

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    tmp = tmp_path_factory.mktemp("trial")
    with ledger_server(tmp) as url:
        made = world(tmp, url, site_name="tax-trial")
        try:
            yield made
        finally:
            made.site.land()


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
    assert result == expected_scores(mock)
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
    from tests.compute.test_worker import LEAKY

    product = w.api.product(w.p, LEAKY, [{"dataset_id": w.p.dataset_id, "fields": USED}],
                            name="leaky trial")
    contract = w.api.order(w.p, product, approve=False)
    w.api.call("POST", f"/orders/{contract}/trial", w.p.operator.token)
    [outcome] = until_settled(w.node(), provider_view(w, contract, "order.trial_granted"))
    assert outcome.status == "failed" and outcome.execution == 0, outcome
    top = int(pd.read_csv(w.tmp / "mock.csv")["tax_paid_yuan"].max())
    reason = w.api.event(outcome.computation_id, "computation.failed")["payload"]["reason"]
    assert reason.startswith("code_failed: ValueError: invalid literal") and f"{top}张三" in reason
