"""Synthetic enterprises for the inclusive-finance demo (white paper 6.1, table 1).

Each enterprise is keyed by a unified social credit code (统一社会信用代码, GB 32100-2015:
18 characters, the last a check character). Three providers hold three views of them:
market regulation (工商: registration, capital, abnormal-operation list, penalties), tax
(纳税: rating, tax paid, arrears) and the power utility (供电: consumption, arrears, breaches).
The data is random but deterministic for a seed; the mock tables hold other, invented
enterprises with the same columns (what a trial may see).
"""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: GB 32100-2015's 31 code characters (no I, O, S, V, Z) and position weights
CODE_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
INDUSTRIES = ("manufacturing", "retail", "catering", "logistics", "software", "agriculture",
              "construction")
RATINGS = ("A", "B", "M", "C", "D")


def check_char(first17: str) -> str:
    """The 18th character of a unified social credit code."""
    total = sum(CODE_CHARS.index(c) * w for c, w in zip(first17, WEIGHTS, strict=True))
    return CODE_CHARS[(31 - total % 31) % 31]


def credit_code(rng: random.Random, region: str = "310115") -> str:
    """A well-formed code: 9 (registered by market regulation), 1 (enterprise), region,
    a 9-character organization code, the check character."""
    body = "91" + region + "".join(rng.choice(CODE_CHARS[:10] + "ABCDEFGH") for _ in range(9))
    return body + check_char(body)


def valid_code(code: str) -> bool:
    return (len(code) == 18 and all(c in CODE_CHARS for c in code)
            and check_char(code[:17]) == code[17])


MARKET_FIELDS = [
    {"name": "uscc", "type": "string", "sensitivity": "public"},
    {"name": "industry", "type": "string", "sensitivity": "public"},
    {"name": "years_registered", "type": "integer", "sensitivity": "public"},
    {"name": "registered_capital_wan", "type": "integer", "sensitivity": "internal"},
    {"name": "abnormal_operation", "type": "integer", "sensitivity": "internal"},
    {"name": "penalties_3y", "type": "integer", "sensitivity": "sensitive"},
]
TAX_FIELDS = [
    {"name": "uscc", "type": "string", "sensitivity": "public"},
    {"name": "tax_rating", "type": "string", "sensitivity": "sensitive"},
    {"name": "tax_paid_yuan_12m", "type": "integer", "sensitivity": "sensitive"},
    {"name": "tax_arrears_yuan", "type": "integer", "sensitivity": "sensitive"},
]
POWER_FIELDS = [
    {"name": "uscc", "type": "string", "sensitivity": "public"},
    {"name": "power_kwh_12m", "type": "integer", "sensitivity": "internal"},
    {"name": "power_growth_pct", "type": "integer", "sensitivity": "internal"},
    {"name": "bill_arrears_months", "type": "integer", "sensitivity": "sensitive"},
]


#: the bank's credit model (信贷征信模型), the product's registered code: each provider's node
#: runs it on its own view; one row of partial points per enterprise (the joint output sums
#: them over the providers). The demo and ``dataledger bench joint`` both register it.
CODE = '''def credit_points(data):
    cols = set(data.columns)
    points = data["uscc"].str.len() * 0
    if "tax_rating" in cols:
        rating = data["tax_rating"].map({"A": 40, "B": 30, "M": 20, "C": 10, "D": 0})
        points = points + rating.fillna(0).astype("int64")
        points = points + (data["tax_paid_yuan_12m"] // 50000).clip(upper=20)
        points = points - (data["tax_arrears_yuan"] > 0).astype("int64") * 15
    if "power_kwh_12m" in cols:
        points = points + (data["power_kwh_12m"] // 20000).clip(upper=20)
        points = points + data["power_growth_pct"].clip(lower=-10, upper=10)
        points = points - data["bill_arrears_months"] * 3
    if "abnormal_operation" in cols:
        points = points + data["years_registered"].clip(upper=10) * 2
        points = points - data["abnormal_operation"] * 20 - data["penalties_3y"] * 5
    return [{"uscc": str(u), "points": int(p)} for u, p in zip(data["uscc"], points)]
'''
#: the function CODE defines, the one a node calls
FUNCTION = "credit_points"

#: what CODE returns: one row of partial points per enterprise, by its credit code
OUTPUT_SCHEMA = {"type": "array", "items": {
    "type": "object", "required": ["uscc", "points"], "additionalProperties": False,
    "properties": {"uscc": {"type": "string"}, "points": {"type": "integer"}}}}


def _rows(codes: Sequence[str], rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    market, tax, power = [], [], []
    for code in codes:
        health = rng.random()  # one hidden trait drives all three views
        market.append({
            "uscc": code, "industry": rng.choice(INDUSTRIES),
            "years_registered": rng.randint(0, 25),
            "registered_capital_wan": rng.choice((10, 50, 100, 300, 500, 1000, 5000)),
            "abnormal_operation": int(rng.random() < 0.15 * (1 - health)),
            "penalties_3y": max(0, int(rng.gauss(1.5 * (1 - health), 1))),
        })
        tax.append({
            "uscc": code, "tax_rating": RATINGS[min(4, int((1 - health) * 5))],
            "tax_paid_yuan_12m": int(rng.lognormvariate(11 + 2 * health, 1)),
            "tax_arrears_yuan": 0 if rng.random() < health else rng.randint(1_000, 200_000),
        })
        power.append({
            "uscc": code, "power_kwh_12m": int(rng.lognormvariate(10 + 2 * health, 1)),
            "power_growth_pct": int(rng.gauss(20 * health - 5, 10)),
            "bill_arrears_months": 0 if rng.random() < 0.5 + health / 2 else rng.randint(1, 6),
        })
    return {"market": market, "tax": tax, "power": power}


def write_tables(directory: Path, enterprises: int, seed: int = 61) -> dict[str, Any]:
    """Write ``<view>.private.csv`` and ``<view>.mock.csv`` for the three views; return the
    codes of the real enterprises and the paths."""
    rng = random.Random(seed)
    codes: list[str] = []
    seen: set[str] = set()
    while len(codes) < enterprises:
        code = credit_code(rng)
        if code not in seen:
            seen.add(code)
            codes.append(code)
    mock_codes: list[str] = []
    while len(mock_codes) < max(20, enterprises // 50):
        code = credit_code(rng, region="999999")  # no such region: obviously invented
        if code not in seen:
            seen.add(code)
            mock_codes.append(code)
    private, mock = _rows(codes, rng), _rows(mock_codes, rng)
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, dict[str, Path]] = {}
    for view in ("market", "tax", "power"):
        paths[view] = {}
        for kind, table in (("private", private[view]), ("mock", mock[view])):
            path = directory / f"{view}.{kind}.csv"
            with path.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(table[0]))
                writer.writeheader()
                writer.writerows(table)
            paths[view][kind] = path
    return {"codes": codes, "paths": paths, "private": private}


_RATING_POINTS = {"A": 40, "B": 30, "M": 20, "C": 10, "D": 0}


def partial_points(view: str, row: dict[str, Any]) -> int:
    """What the product's credit model (``demo/finance.py``'s CODE, in pandas on the node)
    gives one enterprise from one provider's view, computed here in plain Python: the demo's
    own reference for the joint result."""
    if view == "tax":
        return (_RATING_POINTS.get(row["tax_rating"], 0)
                + min(int(row["tax_paid_yuan_12m"]) // 50000, 20)
                - 15 * (int(row["tax_arrears_yuan"]) > 0))
    if view == "power":
        return (min(int(row["power_kwh_12m"]) // 20000, 20)
                + max(-10, min(int(row["power_growth_pct"]), 10))
                - 3 * int(row["bill_arrears_months"]))
    return (min(int(row["years_registered"]), 10) * 2
            - 20 * int(row["abnormal_operation"]) - 5 * int(row["penalties_3y"]))


def plain_points(private: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, int]]:
    """Each enterprise's partial points by view (``{code: {view: points}}``), from the
    tables ``write_tables`` made: the plain per-provider values the joint sum must equal."""
    out: dict[str, dict[str, int]] = {}
    for view, rows in private.items():
        for row in rows:
            out.setdefault(row["uscc"], {})[view] = partial_points(view, row)
    return out


def bank_queries(codes: Sequence[str], asked: int,
                 seed: int = 614) -> tuple[list[str], list[str]]:
    """The codes the demo's bank looks up: ``asked`` enterprises of the table (members) and
    a third as many (at least 3) well-formed codes no provider knows (outsiders: region
    320106, Nanjing). Deterministic, so a test can name exactly what the bank asked."""
    rng = random.Random(seed)
    members = rng.sample(list(codes), asked)
    known = set(codes)
    outsiders: list[str] = []
    while len(outsiders) < max(3, asked // 3):
        code = credit_code(rng, region="320106")
        if code not in known and code not in outsiders:
            outsiders.append(code)
    return members, outsiders
