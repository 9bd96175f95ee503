"""Usage-control policies (使用控制策略, white paper 6.2; IDS usage-control patterns).

A policy is a JSON object of known constraints. It is checked when a contract or an
authorization is made and evaluated, fail closed, when data is used: a key that is
not known here is refused rather than ignored.

| key | meaning |
|---|---|
| ``view_count``, ``processing_count``, ``download_count`` | 查看/处理/下载次数: at most that many |
| ``query_count`` | 隐匿查询: at most that many codes looked up by hidden queries in the contract, summed over request sizes |
| ``not_before``, ``not_after`` | 指定时间控制: the usage window (ISO-8601 with offset) |
| ``designated_users`` | 指定用户控制: member ids that may receive the data |
| ``provider_may_terminate`` | 数据终止控制: a provider may end the contract early |
| ``derivatives_need_approval`` | 数据审批控制: derived outputs need the provider's approval |
| ``circulation_modes`` | allowed circulation modes (plaintext / ciphertext / trusted exchange) |
| ``allowed_fields`` | column restriction |
| ``privacy_budget`` | 差分隐私预算: the total privacy loss ε the executions of differentially private products may spend per input dataset (decimal text such as ``"2.5"``, or an integer; ``domain.privacy_budget``); it binds every product: one without ``dp`` is refused where a budget applies, and a dp product's contract must have one |
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from domain.errors import InvalidInput

CIRCULATION_MODES = ("plaintext", "ciphertext", "trusted_exchange")
COUNT_KEYS = ("view_count", "processing_count", "download_count", "query_count")
FLAG_KEYS = ("provider_may_terminate", "derivatives_need_approval")
TIME_KEYS = ("not_before", "not_after")
LIST_KEYS = ("designated_users", "allowed_fields")
#: the amounts of privacy loss (ε): exact decimals kept as text, since the log holds no float
AMOUNT_KEYS = ("privacy_budget",)
#: the bounds of an amount of ε: above 0, at most MAX_EPSILON, at most 6 decimal places
MAX_EPSILON = Decimal(1000)
EPSILON_PLACES = 6
_DIGITS = frozenset("0123456789")


def parse_instant(value: Any, field: str) -> datetime:
    """An ISO-8601 date-time with a UTC offset, or InvalidInput naming ``field``."""
    if not isinstance(value, str):
        raise InvalidInput(field, "must be an ISO-8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(field, f"{value!r} is not an ISO-8601 date-time") from None
    if parsed.tzinfo is None:
        raise InvalidInput(field, "must carry a UTC offset (e.g. 'Z' or '+08:00')")
    return parsed


def normalize_instant(value: Any, field: str) -> str:
    """The instant as UTC ISO-8601 text ending in ``Z`` (one spelling per instant)."""
    text = parse_instant(value, field).astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def require_window(not_before: str, not_after: str, field: str) -> None:
    """Raise InvalidInput naming ``field`` unless ``not_before`` < ``not_after``."""
    if parse_instant(not_before, field) >= parse_instant(not_after, field):
        raise InvalidInput(field, "not_before must be earlier than not_after")


def _count(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(field, "must be an integer >= 0")
    return value


def _flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(field, "must be true or false")
    return value


def _strings(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidInput(field, "must be a list of non-empty strings")
    return sorted(set(value))


def _modes(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise InvalidInput(field, f"must be a non-empty list of {', '.join(CIRCULATION_MODES)}")
    bad = [v for v in value if v not in CIRCULATION_MODES]
    if bad:
        raise InvalidInput(field, f"unknown circulation modes {bad!r}; "
                                  f"allowed: {', '.join(CIRCULATION_MODES)}")
    return [m for m in CIRCULATION_MODES if m in value]


def positive_decimal(value: Any, field: str, maximum: Decimal = MAX_EPSILON) -> str:
    """A number above 0 and at most ``maximum`` as its one decimal text (``"0.5"``, ``"2"``),
    or InvalidInput naming ``field``. Given as decimal text or an integer: never a float,
    which has no exact canonical form (the log and the signed statements hold none)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    whole, _, places = value.partition(".") if isinstance(value, str) else ("", "", "")
    if (not whole or not set(whole) <= _DIGITS or not set(places) <= _DIGITS
            or value.endswith(".") or len(places) > EPSILON_PLACES or len(whole) > 15):
        raise InvalidInput(field, "must be a number > 0 given as decimal text (e.g. \"0.5\", "
                                  f"at most {EPSILON_PLACES} decimal places) or an integer")
    amount = Decimal(value)
    if not 0 < amount <= maximum:
        raise InvalidInput(field, f"must be above 0 and at most {maximum}")
    return format(amount.normalize(), "f")


def _checker(key: str) -> Callable[[Any, str], Any]:
    if key in AMOUNT_KEYS:
        return positive_decimal
    if key in COUNT_KEYS:
        return _count
    if key in FLAG_KEYS:
        return _flag
    if key in TIME_KEYS:
        return normalize_instant
    if key in LIST_KEYS:
        return _strings
    return _modes


KNOWN_KEYS = (*COUNT_KEYS, *TIME_KEYS, "designated_users", *FLAG_KEYS,
              "circulation_modes", "allowed_fields", *AMOUNT_KEYS)


def validate_policy(policy: Any, field: str = "usage_policy") -> dict[str, Any]:
    """A normalized copy of ``policy``, or InvalidInput naming ``<field>.<key>``.

    Fails closed: an unknown constraint is refused. Times become UTC ``...Z`` text,
    lists of ids and fields are sorted and deduplicated, circulation modes keep
    their canonical order.
    """
    if not isinstance(policy, dict):
        raise InvalidInput(field, "must be an object of usage constraints")
    out: dict[str, Any] = {}
    for key in sorted(policy, key=str):
        if key not in KNOWN_KEYS:
            raise InvalidInput(f"{field}.{key}", "unknown constraint; policies fail closed "
                                                 f"(known: {', '.join(KNOWN_KEYS)})")
        out[key] = _checker(key)(policy[key], f"{field}.{key}")
    if "not_before" in out and "not_after" in out:
        require_window(out["not_before"], out["not_after"], f"{field}.not_after")
    return out


def unknown_keys(policy: Mapping[str, Any]) -> list[str]:
    """The keys of a stored ``policy`` this evaluator does not know (from a newer writer,
    say): a policy holding one refuses every use, since its meaning cannot be checked."""
    return sorted(str(k) for k in policy if k not in KNOWN_KEYS)


def _instant(value: str) -> datetime:
    return parse_instant(value, "instant")


def strictest(*policies: Mapping[str, Any]) -> dict[str, Any]:
    """The one policy that holds when each of ``policies`` must (the stricter of a contract
    and the authorizations it uses, at use): the lowest count, the latest ``not_before``,
    the earliest ``not_after``, the common designated users, circulation modes and allowed
    fields, the smallest privacy budget, and a flag set when any sets it. Known keys only: the caller refuses a policy
    with an unknown key (``unknown_keys``) before it merges."""
    out: dict[str, Any] = {}
    for policy in policies:
        for key in KNOWN_KEYS:
            if key not in policy:
                continue
            value, have = policy[key], out.get(key)
            if have is None:
                out[key] = list(value) if isinstance(value, list) else value
            elif key in COUNT_KEYS:
                out[key] = min(have, value)
            elif key in AMOUNT_KEYS:
                out[key] = min(have, value, key=Decimal)
            elif key in FLAG_KEYS:
                out[key] = bool(have or value)
            elif key == "not_before":
                out[key] = max(have, value, key=_instant)
            elif key == "not_after":
                out[key] = min(have, value, key=_instant)
            else:  # a list: what both allow
                out[key] = [v for v in have if v in value]
    return out


def looser_than(policy: Mapping[str, Any], bound: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first key (in ``KNOWN_KEYS`` order) on which ``policy`` allows more than
    ``bound`` does, with why; None when ``policy`` is at least as strict on every key
    ``bound`` sets. A key ``bound`` sets and ``policy`` leaves out is looser (no limit)."""
    for key in KNOWN_KEYS:
        if key not in bound:
            continue
        limit, value = bound[key], policy.get(key)
        if value is None:
            if key in FLAG_KEYS and not limit:
                continue
            return key, f"the bound sets {limit!r} and this policy sets nothing"
        if key in COUNT_KEYS and value > limit:
            return key, f"{value} is more than the bound's {limit}"
        if key in AMOUNT_KEYS and Decimal(value) > Decimal(limit):
            return key, f"{value} is more than the bound's {limit}"
        if key in FLAG_KEYS and limit and not value:
            return key, "the bound sets true"
        if key == "not_before" and _instant(value) < _instant(limit):
            return key, f"{value} is before the bound's {limit}"
        if key == "not_after" and _instant(value) > _instant(limit):
            return key, f"{value} is after the bound's {limit}"
        if key in LIST_KEYS or key == "circulation_modes":
            extra = [v for v in value if v not in limit]
            if extra:
                return key, f"{extra!r} are not among the bound's {limit!r}"
    return None
