"""A proposed contract's usage policy against what it rests on, checked at proposal: the
authorizations its product uses bound it (an authorization's own usage policy is the most
any contract using it may allow), its allowed fields cover what the product reads, and its
designated users are members of the demander.
"""

from __future__ import annotations

from typing import Any

from domain.authorization import Authorization
from domain.errors import InvalidInput
from domain.participant import Participant
from domain.policy import looser_than, unknown_keys, validate_policy
from domain.product import Product
from domain.unit_of_work import UnitOfWork
from domain.usage import UsageDenied


def check_terms(uow: UnitOfWork, product: Product, demander_id: str,
                usage_policy: Any) -> dict[str, Any]:
    """The normalized policy, or: InvalidInput naming ``usage_policy.<key>`` for a key it
    does not know, a key on which it is looser than an authorization of the product's
    inputs, allowed fields that leave out a field the product reads, a designated user who
    is not a member of the demander; 409 ``unknown_constraint`` if an authorization holds a
    key this server does not know (its bound cannot be checked)."""
    policy = validate_policy(usage_policy)
    for auth_id in product.authorization_ids:
        auth = uow.get(Authorization, auth_id)
        unknown = unknown_keys(auth.usage_policy)
        if unknown:
            raise UsageDenied("unknown_constraint", f"unknown_constraint: authorization "
                              f"{auth.id} holds constraint(s) {', '.join(unknown)} this "
                              "server does not know; no contract can be bound by it",
                              rule="unknown_constraint", limit=unknown)
        looser = looser_than(policy, auth.usage_policy)
        if looser is not None:
            key, why = looser
            raise InvalidInput(f"usage_policy.{key}", f"looser than authorization {auth.id}, "
                               f"which the product uses: {why.replace('the bound', 'the authorization')}")
    allowed = policy.get("allowed_fields")
    if allowed is not None:
        for item in product.inputs:
            missing = [f for f in item["fields"] if f not in allowed]
            if missing:
                raise InvalidInput("usage_policy.allowed_fields",
                                   f"does not cover the field(s) {missing!r} the product reads "
                                   f"of dataset {item['dataset_id']}")
    users = policy.get("designated_users")
    if users is not None:
        members = uow.get(Participant, demander_id).members
        strangers = [u for u in users if u not in members]
        if strangers:
            raise InvalidInput("usage_policy.designated_users",
                               f"{strangers!r} are not members of the demander {demander_id}")
    return policy
