"""The permission matrix as data: well formed, used by the domain, rendered to the docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from domain.base import MEMBER_ROLES, ROLES, Actor
from domain.errors import Forbidden
from domain.permissions import (
    COMMAND,
    PUBLIC,
    QUERY,
    RULES,
    TABLE,
    Rule,
    permit,
    render_markdown,
)

ROOT = Path(__file__).resolve().parents[3]
ROUTE = re.compile(r"(GET|POST|PATCH|PUT|DELETE) /[^ ]*")


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_each_row_is_well_formed(rule: Rule) -> None:
    assert rule.kind in (COMMAND, QUERY, PUBLIC)
    assert rule.route == "" or ROUTE.fullmatch(rule.route), rule.route
    for role, members in rule.who.items():
        assert role in ROLES and members and set(members) <= set(MEMBER_ROLES)
    if rule.kind == PUBLIC:
        assert not rule.who


def test_every_command_is_checked_by_its_use_case_and_every_check_has_a_row() -> None:
    """The table drives the checks: each command row is ``permit``-ed in the domain, and
    nothing is ``permit``-ed that the table does not have."""
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "domain").glob("*.py"))
    used = set(re.findall(r'permit\(ctx\.actor, "([a-z_.]+)"\)', source))
    assert used <= set(TABLE), sorted(used - set(TABLE))
    commands = {r.name for r in RULES if r.kind == COMMAND}
    assert commands <= used, sorted(commands - used)


def actor(role: str, *members: str) -> Actor:
    return Actor(f"p-{role}", "m-1", role, members)


@pytest.mark.parametrize("rule", [r for r in RULES if r.kind == COMMAND], ids=lambda r: r.name)
def test_permit_follows_the_row_for_every_role_and_member_role(rule: Rule) -> None:
    for role in ROLES:
        for member in MEMBER_ROLES:
            allowed = member in rule.who.get(role, ())
            if allowed:
                permit(actor(role, member), rule.name)
                continue
            with pytest.raises(Forbidden) as info:
                permit(actor(role, member), rule.name)
            assert info.value.code == "forbidden"
            assert info.value.context["rule"] == rule.name
            assert str(info.value).startswith(f"{rule.name}: ")


def test_the_member_roles_the_issue_names_are_refused() -> None:
    """A regulator member with only ``expert`` or ``member`` admits, suspends and delists
    nothing; a provider ``member`` (the compute node's token) grants and revokes nothing;
    the platform neither gives opinions nor decides scenarios."""
    for members in (("expert",), ("member",)):
        for name in ("participant.admission", "participant.suspension", "scenario.suspension",
                     "scenario.decision", "product.delisting"):
            with pytest.raises(Forbidden):
                permit(actor("regulator", *members), name)
    for name in ("authorization.grant", "authorization.revocation", "contract.approval",
                 "dataset.registration", "dataset.publication"):
        with pytest.raises(Forbidden):
            permit(actor("provider", "member"), name)
    for name in ("computation.request", "computation.result", "computation.failure",
                 "dataset.data_loaded"):
        permit(actor("provider", "member"), name)
    for name in ("scenario.opinion", "scenario.decision", "authorization.grant"):
        with pytest.raises(Forbidden):
            permit(actor("platform", "admin", "expert"), name)
    permit(actor("regulator", "expert"), "scenario.opinion")
    with pytest.raises(Forbidden):
        permit(actor("regulator", "admin"), "scenario.opinion")


def test_the_system_actor_passes_and_an_unknown_name_is_an_error() -> None:
    permit(Actor("system", "system", "system"), "participant.registration")
    with pytest.raises(KeyError):
        permit(actor("platform", "admin"), "no.such.command")


def test_docs_permissions_md_is_the_rendered_table() -> None:
    """docs/PERMISSIONS.md is generated: regenerate it with
    ``dataledger docs permissions > docs/PERMISSIONS.md``."""
    path = ROOT / "docs" / "PERMISSIONS.md"
    assert path.read_text(encoding="utf-8") == render_markdown(), (
        "docs/PERMISSIONS.md is stale: run `dataledger docs permissions > docs/PERMISSIONS.md`")
