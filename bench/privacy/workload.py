"""What the privacy suite measures on: its sizes, and a synthetic result table such as a
product delivers in plaintext (people's identifiers of every kind the masking knows, and
integer columns the watermark marks), each column with the grade and kind its input field
would carry."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

#: the join key of the result (not marked by the watermark, left clear by the masking)
KEY_COLUMN = "customer_no"

#: column -> {"grade", "kind"}: as the product's field_grades give them to the node
GRADES: dict[str, dict[str, str]] = {
    KEY_COLUMN: {"grade": "L2", "kind": "none"},
    "id_number": {"grade": "L3", "kind": "id_number"},
    "phone": {"grade": "L3", "kind": "phone"},
    "name": {"grade": "L3", "kind": "name"},
    "address": {"grade": "L3", "kind": "address"},
    "email": {"grade": "L3", "kind": "email"},
    "account": {"grade": "L4", "kind": "account"},
    "income": {"grade": "L3", "kind": "none"},
    "loans": {"grade": "L2", "kind": "none"},
    "overdue_days": {"grade": "L2", "kind": "none"},
    "deposits": {"grade": "L2", "kind": "none"},
    "credit_limit": {"grade": "L1", "kind": "none"},
    "transactions": {"grade": "L1", "kind": "none"},
}


def unmarked_columns() -> frozenset[str]:
    """The columns the platform never watermarks (``api.watermarking``'s rule: graded L3 or
    L4, or of an identifier kind: the masking changed them, or they identify someone)."""
    from api.watermarking import MASKED_GRADES

    return frozenset(c for c, g in GRADES.items()
                     if g["grade"] in MASKED_GRADES or g["kind"] != "none")

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚"
_STREETS = ("浦东新区张江路", "徐汇区漕溪北路", "黄浦区南京东路", "杨浦区国定路", "闵行区虹梅路")


@dataclass(frozen=True)
class Sizes:
    """How much the suite does."""

    rows: int = 100_000        # rows of the delivered result (measurement 1)
    deliveries: int = 1_000    # deliveries the leak trace compares a file against (2)
    trace_rows: int = 2_000    # rows of each delivered table the trace reads a leak of (2)
    seconds: float = 1.0       # length of each timed append round (3), 3 per repetition
    repetitions: int = 5       # repetitions of each timed step (the median is reported)
    seed: int = 15


QUICK = Sizes(rows=2_000, deliveries=20, trace_rows=400, seconds=0.3, repetitions=2)


def result_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` rows of the synthetic result, the same for the same seed."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        birth = f"{1950 + rng.randrange(55)}{1 + rng.randrange(12):02d}{1 + rng.randrange(28):02d}"
        rows.append({
            KEY_COLUMN: f"C{i:09d}",
            "id_number": f"310115{birth}{rng.randrange(1000):03d}{rng.choice('0123456789X')}",
            "phone": f"1{rng.choice('3589')}{rng.randrange(10**9):09d}",
            "name": rng.choice(_SURNAMES) + "".join(rng.choices(_GIVEN, k=rng.choice((1, 2)))),
            "address": f"上海市{rng.choice(_STREETS)}{rng.randrange(1, 2000)}号",
            "email": f"user{rng.randrange(10**7)}@example.cn",
            "account": f"6222{rng.randrange(10**15):015d}",
            "income": rng.randrange(20_000, 2_000_000),
            "loans": rng.randrange(0, 12),
            "overdue_days": rng.randrange(0, 400),
            "deposits": rng.randrange(0, 1_000_000),
            "credit_limit": rng.randrange(1_000, 500_000),
            "transactions": rng.randrange(0, 5_000),
        })
    return rows
