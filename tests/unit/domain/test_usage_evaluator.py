"""The usage-control evaluator, per control: allowed up to its limit, refused past it; the
stricter of two policies; a policy looser than its bound; unknown keys fail closed."""

from __future__ import annotations

from typing import Any

import pytest

from domain.policy import looser_than, strictest, unknown_keys, validate_policy
from domain.usage import (
    Access,
    Meter,
    Usage,
    access_refusal,
    circulation_refusal,
    unknown_refusal,
    usage_id,
    window_refusal,
)
from tests.unit.fakes import ctx

AT = "2026-06-01T00:00:00Z"
DEMANDER = Access("download", "m-1", True, AT)


def view(**changes: Any) -> Access:
    return Access(**{"kind": "view", "member_id": "m-1", "demander": True, "at": AT,
                     **changes})


@pytest.mark.parametrize(("kind", "key"), [("view", "view_count"),
                                           ("download", "download_count")])
def test_a_count_allows_up_to_its_limit_and_refuses_past_it(kind: str, key: str) -> None:
    policy = {key: 3}
    for used in range(3):
        meter = Meter(used, views=used, downloads=used)
        assert access_refusal(policy, meter, view(kind=kind)) is None
    refused = access_refusal(policy, Meter(3, 3, 3), view(kind=kind))
    assert refused is not None
    assert (refused.code, refused.rule, refused.limit, refused.used) == (
        f"{key}_exhausted", key, 3, 3)
    assert not refused.forbidden and refused.error().code == f"{key}_exhausted"


def test_a_count_of_zero_refuses_the_first_access() -> None:
    assert access_refusal({"view_count": 0}, Meter(), view()) is not None


def test_counts_bind_the_demander_only() -> None:
    assert access_refusal({"view_count": 0}, Meter(), view(demander=False)) is None


def test_the_usage_window() -> None:
    policy = {"not_before": "2026-01-01T00:00:00Z", "not_after": "2026-07-01T00:00:00Z"}
    assert window_refusal(policy, AT) is None
    early = window_refusal(policy, "2025-12-31T23:59:59Z")
    late = window_refusal(policy, "2026-07-01T00:00:00Z")
    assert early is not None and late is not None
    assert (early.code, early.rule) == ("outside_contract_window", "usage_window")
    assert late.limit == policy
    assert access_refusal(policy, Meter(), view(at="2026-07-02T00:00:00Z")) is not None


def test_designated_users_name_the_demanders_members() -> None:
    policy = {"designated_users": ["m-1"]}
    assert access_refusal(policy, Meter(), view(member_id="m-1")) is None
    refused = access_refusal(policy, Meter(), view(member_id="m-2"))
    assert refused is not None and refused.forbidden
    assert (refused.code, refused.error().code) == ("not_designated_user",
                                                    "not_designated_user")
    assert access_refusal(policy, Meter(), view(member_id="m-9", demander=False)) is None


def test_circulation_modes_without_plaintext_get_no_plaintext_result() -> None:
    assert circulation_refusal({"circulation_modes": ["plaintext", "ciphertext"]}) is None
    assert circulation_refusal({}) is None
    refused = access_refusal({"circulation_modes": ["ciphertext"]}, Meter(), view())
    assert refused is not None
    assert (refused.code, refused.limit) == ("circulation_mode_not_allowed", ["ciphertext"])


def test_a_held_derivative_waits_for_every_provider() -> None:
    policy = {"derivatives_need_approval": True}
    refused = access_refusal(policy, Meter(), view(pending_releases=("p-2",)))
    assert refused is not None and (refused.code, refused.limit) == ("release_pending",
                                                                     ["p-2"])
    assert access_refusal(policy, Meter(), view()) is None
    assert access_refusal({}, Meter(), view(pending_releases=("p-2",))) is None


def test_unknown_keys_refuse_use() -> None:
    assert unknown_keys({"view_count": 1, "max_rows": 3, "geo_fence": "cn"}) == [
        "geo_fence", "max_rows"]
    refused = unknown_refusal(["max_rows"])
    assert refused is not None and (refused.code, refused.limit) == ("unknown_constraint",
                                                                     ["max_rows"])
    assert unknown_refusal([]) is None


def test_the_stricter_of_two_policies_applies() -> None:
    contract = validate_policy({
        "view_count": 5, "download_count": 1, "not_before": "2026-01-01T00:00:00Z",
        "not_after": "2026-12-01T00:00:00Z", "designated_users": ["m-1", "m-2"],
        "circulation_modes": ["plaintext", "ciphertext"], "allowed_fields": ["a", "b"],
        "provider_may_terminate": False})
    auth = validate_policy({
        "view_count": 3, "processing_count": 9, "not_before": "2026-02-01T00:00:00Z",
        "not_after": "2027-01-01T00:00:00Z", "designated_users": ["m-2", "m-3"],
        "circulation_modes": ["plaintext"], "allowed_fields": ["b", "c"],
        "provider_may_terminate": True, "derivatives_need_approval": True})
    assert strictest(contract, auth) == {
        "view_count": 3, "download_count": 1, "processing_count": 9,
        "not_before": "2026-02-01T00:00:00Z", "not_after": "2026-12-01T00:00:00Z",
        "designated_users": ["m-2"], "circulation_modes": ["plaintext"],
        "allowed_fields": ["b"], "provider_may_terminate": True,
        "derivatives_need_approval": True}
    assert strictest() == {} and strictest(contract) == contract


@pytest.mark.parametrize(("policy", "key"), [
    ({"processing_count": 11}, "processing_count"),
    ({}, "view_count"),  # the first key the bound sets, in KNOWN_KEYS order
    ({"processing_count": 10, "view_count": 4}, "view_count"),
    ({"processing_count": 10, "not_before": "2025-12-31T00:00:00Z"}, "not_before"),
    ({"processing_count": 10, "not_after": "2027-02-01T00:00:00Z"}, "not_after"),
    ({"processing_count": 10, "circulation_modes": ["plaintext", "ciphertext"]},
     "circulation_modes"),
    ({"processing_count": 10, "designated_users": ["m-1", "m-9"]}, "designated_users"),
    ({"processing_count": 10, "allowed_fields": ["a", "z"]}, "allowed_fields"),
    ({"processing_count": 10, "provider_may_terminate": False}, "provider_may_terminate"),
])
def test_a_policy_looser_than_its_bound_names_the_key(policy: dict[str, Any],
                                                      key: str) -> None:
    bound = validate_policy({
        "processing_count": 10, "view_count": 3, "not_before": "2026-01-01T00:00:00Z",
        "not_after": "2027-01-01T00:00:00Z", "circulation_modes": ["plaintext"],
        "designated_users": ["m-1", "m-2"], "allowed_fields": ["a", "b"],
        "provider_may_terminate": True})
    strict = {"processing_count": 10, "view_count": 3, "not_before": "2026-01-01T00:00:00Z",
              "not_after": "2027-01-01T00:00:00Z", "circulation_modes": ["plaintext"],
              "designated_users": ["m-1"], "allowed_fields": ["a", "b"],
              "provider_may_terminate": True}
    assert looser_than(strict, bound) is None
    looser = looser_than({**strict, **policy} if policy else {}, bound)
    assert looser is not None and looser[0] == key


def test_a_bound_with_false_flags_binds_nothing() -> None:
    assert looser_than({}, {"derivatives_need_approval": False}) is None


def test_the_usage_stream_counts_without_a_replay() -> None:
    usage = Usage.at("c-1", Meter(version=10_000, views=4_000, downloads=5_999))
    assert usage.id == usage_id("c-1") and usage.version == 10_000
    demander = ctx("demander")
    usage.access(demander, computation_id="k", kind="download", counted=True)
    usage.access(demander, computation_id="k", kind="view", counted=False)
    assert usage.meter() == Meter(10_002, 4_000, 6_000)
    assert [e.originator_version for e in usage.collect()] == [10_001, 10_002]
