"""Usage-control policies: known constraints only, normalized, fail closed."""

from __future__ import annotations

from typing import Any

import pytest

from domain.errors import InvalidInput
from domain.policy import CIRCULATION_MODES, validate_policy

FULL: dict[str, Any] = {
    "view_count": 3, "processing_count": 0, "download_count": 1,
    "not_before": "2026-01-01T08:00:00+08:00", "not_after": "2026-12-31T00:00:00Z",
    "designated_users": ["m-2", "m-1", "m-2"], "provider_may_terminate": True,
    "derivatives_need_approval": False, "circulation_modes": ["trusted_exchange", "ciphertext"],
    "allowed_fields": ["b", "a"],
}


def test_normalizes_a_full_policy() -> None:
    out = validate_policy(FULL)
    assert out == {**FULL, "not_before": "2026-01-01T00:00:00Z",
                   "designated_users": ["m-1", "m-2"],
                   "circulation_modes": ["ciphertext", "trusted_exchange"],
                   "allowed_fields": ["a", "b"]}
    assert FULL["designated_users"] == ["m-2", "m-1", "m-2"]  # a copy, input untouched


def test_empty_policy_is_valid() -> None:
    assert validate_policy({}) == {}


def test_circulation_modes_constant() -> None:
    assert CIRCULATION_MODES == ("plaintext", "ciphertext", "trusted_exchange")


@pytest.mark.parametrize(("policy", "field"), [
    ({"max_rows": 10}, "usage_policy.max_rows"),
    ({"view_count": -1}, "usage_policy.view_count"),
    ({"download_count": True}, "usage_policy.download_count"),
    ({"processing_count": "3"}, "usage_policy.processing_count"),
    ({"not_before": "yesterday"}, "usage_policy.not_before"),
    ({"not_after": "2026-12-31T00:00:00"}, "usage_policy.not_after"),
    ({"designated_users": "m-1"}, "usage_policy.designated_users"),
    ({"designated_users": [""]}, "usage_policy.designated_users"),
    ({"provider_may_terminate": 1}, "usage_policy.provider_may_terminate"),
    ({"derivatives_need_approval": None}, "usage_policy.derivatives_need_approval"),
    ({"circulation_modes": []}, "usage_policy.circulation_modes"),
    ({"circulation_modes": ["email"]}, "usage_policy.circulation_modes"),
    ({"allowed_fields": [1]}, "usage_policy.allowed_fields"),
])
def test_refuses_bad_constraint_naming_its_key(policy: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_policy(policy)
    assert info.value.field == field


def test_refuses_unknown_constraint_fail_closed() -> None:
    with pytest.raises(InvalidInput, match="fail closed"):
        validate_policy({"view_count": 1, "region": "beijing"})


def test_refuses_window_that_ends_before_it_starts() -> None:
    with pytest.raises(InvalidInput) as info:
        validate_policy({"not_before": "2026-02-01T00:00:00Z", "not_after": "2026-01-01T00:00:00Z"})
    assert info.value.field == "usage_policy.not_after"


def test_refuses_non_object_naming_the_given_field() -> None:
    with pytest.raises(InvalidInput) as info:
        validate_policy(["view_count"], "contract.usage_policy")
    assert info.value.field == "contract.usage_policy"
