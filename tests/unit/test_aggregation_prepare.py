"""Preparing a hidden table on several processes (aggregation/prepare.py)."""

from __future__ import annotations

import pytest

from aggregation import prepare as prep
from core import hidden_query as hq

CODES = [f"91110000{i:010d}" for i in range(300)]
ROWS = {code: f'{{"code":"{code}","score":{i}}}'.encode() for i, code in enumerate(CODES)}


@pytest.mark.parametrize("workers", [0, 2, 3])
def test_the_table_opens_the_same_on_any_number_of_workers(workers: int) -> None:
    key = hq.generate_key()
    table = prep.prepare(key, ROWS, workers=workers)
    assert len(table.rows) == len(ROWS)
    assert hq.HiddenTable.from_bytes(table.to_bytes()) == table
    wanted = [CODES[0], CODES[150], CODES[-1], "92440300MA5EXAMPLE"]
    state, request = hq.blind(wanted)
    found = hq.lookup(table, state, hq.evaluate(key, request))
    assert found == {CODES[0]: ROWS[CODES[0]], CODES[150]: ROWS[CODES[150]],
                     CODES[-1]: ROWS[CODES[-1]], "92440300MA5EXAMPLE": None}
    # the same rows under the same key and table id: the very table one process makes
    assert table == hq.prepare_table(key, ROWS, table.table_id)


def test_a_small_table_is_prepared_here_and_a_large_one_shared() -> None:
    assert prep.workers_for(prep.PARALLEL_FROM - 1) == 0
    many = prep.workers_for(prep.PARALLEL_FROM)
    assert many == 0 if prep.cores() < 2 else 2 <= many <= prep.MAX_WORKERS


def test_a_bad_key_is_refused_before_any_work() -> None:
    with pytest.raises(hq.HiddenQueryError, match="OPRF key"):
        prep.prepare(bytes(32), ROWS, workers=2)
