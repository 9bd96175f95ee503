"""What both halves of ``dataledger bench joint`` share: the sizes, the providers' synthetic
enterprise tables and the credit codes (the product's registered code is the demo's,
``demo.enterprises.CODE``). Standard library only: the datasites' half
(``bench.joint.datasites``) imports it in the compute venv."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

#: the line the compute-venv half prints its result on
RESULT_MARK = "BENCH_JOINT_RESULT "
KEY_COLUMN = "uscc"
VALUE_COLUMNS = ["points"]
#: of a non-layout provider's rows, this share names an enterprise outside the layout
#: (its rows are dropped from the vector, as the node drops them)
OUTSIDE_SHARE = 0.05


@dataclass(frozen=True)
class Sizes:
    """How much the suite does."""

    rows: int = 100_000         # rows of each provider's private table
    providers: int = 3          # providers of the joint computation
    codes: int = 1_000          # codes of the hidden query (half of them in the table)
    table_rows: int = 1_000_000  # rows of the hidden query's joint table
    repetitions: int = 5        # repetitions of each timed step (the median is reported)
    seed: int = 14


QUICK = Sizes(rows=2_000, providers=3, codes=50, table_rows=2_000, repetitions=2)


def credit_code(n: int) -> str:
    """The n-th enterprise's 18-character code (the bench's own, no check character)."""
    return f"91310115{n:010d}"


def provider_codes(sizes: Sizes, k: int) -> list[int]:
    """The enterprise numbers provider ``k`` holds rows for, in its table's order: the
    layout provider (k = 0) all ``rows`` enterprises; the others most of them and
    ``OUTSIDE_SHARE`` enterprises of their own, shuffled."""
    rng = random.Random(sizes.seed * 1000 + k)
    if k == 0:
        numbers = list(range(sizes.rows))
    else:
        outside = int(sizes.rows * OUTSIDE_SHARE)
        numbers = rng.sample(range(sizes.rows), sizes.rows - outside)
        numbers += [sizes.rows * (k + 1) + j for j in range(outside)]
    rng.shuffle(numbers)
    return numbers


#: each provider's view of an enterprise: columns and how to draw them (as in the finance
#: scenario: market regulation, tax, power use), cycled when there are more providers
VIEWS = ("market", "tax", "power")


def view_of(k: int) -> str:
    return VIEWS[k % len(VIEWS)]


def table_columns(view: str, numbers: list[int], seed: int) -> dict[str, list[Any]]:
    """Provider view ``view``'s table for the enterprises ``numbers``, column by column."""
    rng = random.Random(seed)
    n = len(numbers)
    cols: dict[str, list[Any]] = {KEY_COLUMN: [credit_code(i) for i in numbers]}
    if view == "market":
        cols["years_registered"] = [rng.randint(0, 25) for _ in range(n)]
        cols["abnormal_operation"] = [int(rng.random() < 0.1) for _ in range(n)]
        cols["penalties_3y"] = [rng.choice((0, 0, 0, 1, 2)) for _ in range(n)]
    elif view == "tax":
        cols["tax_rating"] = [rng.choice("ABMCD") for _ in range(n)]
        cols["tax_paid_yuan_12m"] = [int(rng.lognormvariate(12, 1)) for _ in range(n)]
        cols["tax_arrears_yuan"] = [0 if rng.random() < 0.8 else rng.randint(1_000, 200_000)
                                    for _ in range(n)]
    else:
        cols["power_kwh_12m"] = [int(rng.lognormvariate(11, 1)) for _ in range(n)]
        cols["power_growth_pct"] = [rng.randint(-15, 25) for _ in range(n)]
        cols["bill_arrears_months"] = [0 if rng.random() < 0.75 else rng.randint(1, 6)
                                       for _ in range(n)]
    return cols


def points_of(i: int) -> int:
    """The joint table's summed points for enterprise ``i`` (the hidden query's tables)."""
    return i % 257


def query_codes(sizes: Sizes) -> list[str]:
    """The hidden query's codes: half of them rows of the table, half not, interleaved."""
    rng = random.Random(sizes.seed)
    members = rng.sample(range(sizes.table_rows), sizes.codes - sizes.codes // 2)
    others = [sizes.table_rows + j for j in rng.sample(range(10 * sizes.codes),
                                                       sizes.codes // 2)]
    mixed = [credit_code(i) for pair in zip(members, others) for i in pair]
    return mixed + [credit_code(i) for i in members[len(others):]]


def joint_stand_in(providers: list[str]) -> Any:
    """What the aggregation node's ``joint_table`` and ``sealed_rows`` read of a
    ``JointExecution`` (its providers, key and value columns), for the bench's own sums."""
    from types import SimpleNamespace

    return SimpleNamespace(providers=list(providers), key_column=KEY_COLUMN,
                           value_columns=list(VALUE_COLUMNS))
