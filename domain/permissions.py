"""The permission matrix, as data: who may run each command and read each query.

One ``Rule`` per command or query: its name (a signed decision's is its name in
``core.decision.COMMANDS``), its HTTP route, ``who`` may call it (participant role → the
member roles of which the caller needs one), and the conditions on the state, in words.

How it is used:

- A command's use case calls ``permit(ctx.actor, name)`` first, before it loads anything:
  a participant role or member role the row does not name is refused, 403 ``forbidden``
  naming the rule, whatever the ids (so a refusal tells nothing about what exists). The
  conditions are then checked by the aggregates: not the caller's own resource → 403; a
  rule of separation of duties → 403 ``separation_of_duties``; another aggregate's state →
  409 with a code naming it (``domain.errors``); the caller's own participant not admitted
  → 409 ``participant_suspended`` or ``participant_not_admitted`` (``Ledger``).
- A query (``QUERY``) is open to every member with a token, who sees the rows its
  participant may see (``projections``: 404 for a row it may not see, never 403); a
  ``PUBLIC`` route needs no token.
- ``docs/PERMISSIONS.md`` is rendered from this table (``render_markdown``; regenerate it
  with ``dataledger docs permissions > docs/PERMISSIONS.md``): a unit test fails when the
  file is stale, and ``tests/e2e/test_permissions_matrix.py`` calls every route of the app
  as every role, failing for a route without a row.

To add a command: add its ``Rule`` to ``RULES`` (a query: ``kind=QUERY``), call
``permit(ctx.actor, "<name>")`` first in its use case, regenerate docs/PERMISSIONS.md.
The server's own ``system`` actor (first start, never a token) passes every rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from domain.base import MEMBER_ROLES, ROLES, Actor
from domain.errors import Forbidden

COMMAND, QUERY, PUBLIC = "command", "query", "public"
#: the actor of the server itself (creating the platform operator at first start)
SYSTEM = "system"
ADMIN: tuple[str, ...] = ("admin",)
#: any member: admin, expert or member
ANY: tuple[str, ...] = MEMBER_ROLES
#: every participant role, any member (the queries)
EVERYONE: Mapping[str, tuple[str, ...]] = {role: ANY for role in ROLES}
#: who may read a delivered result at all: not the platform operator
RESULT_READERS: Mapping[str, tuple[str, ...]] = {
    role: ANY for role in ROLES if role != "platform"}


@dataclass(frozen=True)
class Rule:
    """One row of the matrix."""

    name: str
    #: "METHOD /path" as the app routes it; "" for a command no route reaches
    route: str
    #: participant role -> the member roles that may (one of them is enough)
    who: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    conditions: str = ""
    kind: str = COMMAND

    def allows(self, role: str, member_roles: tuple[str, ...]) -> bool:
        """Whether a member with ``member_roles`` of a participant in ``role`` may."""
        if self.kind == PUBLIC:
            return True
        return bool(set(self.who.get(role, ())) & set(member_roles))


def _admins(*roles: str) -> dict[str, tuple[str, ...]]:
    return {role: ADMIN for role in roles}


RULES: tuple[Rule, ...] = (
    # -- participants --------------------------------------------------------------------
    Rule("participant.registration", "POST /participants", _admins("platform"),
         "The new participant (any role but platform) starts pending with its first admin "
         "member. That admin's token is made by the new participant, which sends only its "
         "SHA-256 (admin_token_hash): the platform never sees it; without one the server "
         "makes the token and answers it (development: token_seen_by_platform). That first "
         "admin is the only member the platform ever makes for another participant. One "
         "regulator per platform: another, while the first is not rejected, is refused 409 "
         "regulator_exists."),
    Rule("participant.admission", "POST /participants/{participant_id}/admission",
         _admins("platform", "regulator"),
         "The participant is pending. An operator is admitted by the regulator only "
         "(白皮书 5.1.1); any other role by the platform or the regulator. A rejection needs "
         "a reason. Signed."),
    Rule("participant.member_addition", "POST /participants/{participant_id}/members",
         _admins(*ROLES),
         "Only the participant's own admins: anyone else, the platform included, is refused "
         "403 separation_of_duties. The participant is pending or admitted; expert members "
         "only in the regulator."),
    Rule("participant.key_registration", "POST /participants/{participant_id}/keys",
         {role: ANY for role in ROLES},
         "A member registers its own key, in its own participant; the participant is "
         "admitted. With replaces (rotation), that active key of the member's is revoked in "
         "the same command."),
    Rule("participant.key_revocation",
         "POST /participants/{participant_id}/keys/{key_id}/revocation",
         {role: ANY for role in ROLES},
         "The key's own member, or an admin of its participant; the key is active (409 "
         "otherwise); the participant is admitted. Decisions signed with the key are refused "
         "from then on."),
    Rule("participant.token_rotation",
         "POST /participants/{participant_id}/members/{member_id}/token",
         {role: ANY for role in ROLES},
         "A member rotates its own token, its participant's admins those of its members (a "
         "token it made: only its hash is sent); any other participant, the platform "
         "included, is refused 403 separation_of_duties. The participant is pending or "
         "admitted; the old token stops working at once. The server rotates the platform "
         "admin's at start (DATALEDGER_ADMIN_TOKEN)."),
    Rule("participant.node_key", "POST /participants/{participant_id}/node-key",
         {"provider": ("admin", "member")},
         "A member of that provider registers its compute node's X25519 public key (base64 "
         "of 32 bytes, not of small order); the provider is admitted. It replaces the "
         "provider's earlier node key. Signed."),
    Rule("participant.suspension", "POST /participants/{participant_id}/suspension",
         _admins("platform", "regulator"),
         "The participant is admitted; terminal. Nobody suspends the platform operator, nor "
         "the regulator, which supervises the platform (403 regulator_not_suspendable)."),
    # -- datasets ------------------------------------------------------------------------
    Rule("dataset.registration", "POST /datasets", _admins("provider"),
         "The dataset is the caller's; registered, not yet in the catalog."),
    Rule("dataset.publication", "POST /datasets/{dataset_id}/publication", _admins("provider"),
         "The owning provider; the dataset is registered."),
    Rule("dataset.update", "PATCH /datasets/{dataset_id}", _admins("provider"),
         "The owning provider; registered or published (then its fields only grow)."),
    Rule("dataset.withdrawal", "POST /datasets/{dataset_id}/withdrawal", _admins("provider"),
         "The owning provider; registered or published; terminal."),
    Rule("dataset.data_loaded", "POST /datasets/{dataset_id}/data-loaded",
         {"provider": ("admin", "member")},
         "The owning provider (its compute node holds a member token); registered or "
         "published."),
    # -- scenarios -----------------------------------------------------------------------
    Rule("scenario.submission", "POST /scenarios", _admins("operator"),
         "Each requested dataset is published (409 dataset_not_published) and has the "
         "fields; an L4 dataset never circulates as plaintext."),
    Rule("scenario.opinion", "POST /scenarios/{scenario_id}/opinions",
         {"regulator": ("expert",)},
         "The scenario is submitted; one opinion per expert. Signed."),
    Rule("scenario.decision", "POST /scenarios/{scenario_id}/decision", _admins("regulator"),
         "The scenario is submitted; the deciding admin gave no opinion on it (403 "
         "separation_of_duties); an approval needs at least one opinion and a majority of "
         "approving ones. Signed."),
    Rule("scenario.suspension", "POST /scenarios/{scenario_id}/suspension",
         _admins("regulator"), "The scenario is approved; terminal."),
    # -- authorizations ------------------------------------------------------------------
    Rule("authorization.grant", "POST /authorizations", _admins("provider"),
         "The scenario is approved (409 scenario_not_approved, scenario_suspended); each "
         "dataset is the provider's own, published, and requested by the scenario with "
         "those fields. Signed on the scenario."),
    Rule("authorization.revocation", "POST /authorizations/{authorization_id}/revocation",
         _admins("provider"),
         "The granting provider; the authorization is granted; terminal. Signed."),
    Rule("authorization.expiry", "POST /authorizations/{authorization_id}/expiry",
         _admins("platform"), "The authorization is granted and its not_after has passed."),
    # -- products ------------------------------------------------------------------------
    Rule("product.registration", "POST /products", _admins("operator"),
         "The scenario is the operator's own and approved; each input is covered by a live "
         "authorization of it (409 authorization_revoked, authorization_expired, "
         "no_authorization); a developer, if named, is admitted; it declares dp if an "
         "authorization sets a privacy_budget on a dataset it reads (422 dp)."),
    Rule("product.listing_request", "POST /products/{product_id}/listing-request",
         _admins("operator"),
         "The owning operator; the product is registered, its scenario approved and its "
         "inputs authorized."),
    Rule("product.listing_decision", "POST /products/{product_id}/listing-decision",
         _admins("platform"),
         "The product awaits a decision; a listing needs its scenario approved and its "
         "inputs authorized. Signed."),
    Rule("product.delisting", "POST /products/{product_id}/delisting",
         _admins("platform", "operator", "regulator"),
         "An operator delists its own products only; the product is listed; terminal."),
    # -- orders and contracts ------------------------------------------------------------
    Rule("order.placement", "POST /orders", _admins("demander"),
         "The product is listed (409 product_not_listed, product_delisted), its scenario "
         "approved and its inputs authorized; a query names the product's key column."),
    Rule("order.query", "POST /orders/{order_id}/queries", {"demander": ("admin", "member")},
         "The order's demander; the contract is approved and its processing count not used "
         "up (409 count_exhausted)."),
    Rule("order.trial", "POST /orders/{order_id}/trial", _admins("operator", "platform"),
         "The order's operator, or the platform; the order is open (placed, proposed, "
         "accepted); one trial per order."),
    Rule("contract.proposal", "POST /orders/{order_id}/contract", _admins("operator"),
         "The order's operator; the order is placed and its product still usable; a dp "
         "product's contract has a privacy_budget (its own or its authorizations'), a "
         "product without dp none (422 usage_policy.privacy_budget). Signed."),
    Rule("contract.acceptance", "POST /orders/{order_id}/contract/acceptance",
         _admins("demander"), "The order's demander; the contract is proposed. Signed."),
    Rule("contract.approval", "POST /orders/{order_id}/contract/approvals",
         _admins("provider", "operator"),
         "A required party (each input's provider, the operator), once; the contract is "
         "accepted and the product still usable. The last approval puts it in force. Signed."),
    Rule("contract.termination", "POST /orders/{order_id}/contract/termination",
         _admins("operator", "regulator", "provider"),
         "The order's operator, the regulator, or a party provider whose contract says "
         "provider_may_terminate; the contract is approved; terminal. Signed."),
    Rule("order.cancellation", "POST /orders/{order_id}/cancellation", _admins("demander"),
         "The order's demander; the order is open (placed, proposed, accepted); terminal."),
    # -- computations --------------------------------------------------------------------
    Rule("computation.request", "POST /computations", {"provider": ("admin", "member")},
         "A party provider (its compute node) over its own input datasets; execution 0, the "
         "trial, by an owner of an input. A refusal of the policy is recorded "
         "(computation.failed with its code), not answered 403. An execution >= 1 of a dp "
         "product spends its ε on each input dataset (privacy.budget_spent, same command) "
         "or is refused as privacy_budget_exhausted (privacy_budget_missing: no budget "
         "bounds it); one of a product without dp under a budget is refused as "
         "privacy_budget_requires_dp."),
    Rule("computation.result", "POST /computations/{computation_id}/result",
         {"provider": ("admin", "member")},
         "The provider that requested the computation; it is requested (or succeeded with "
         "these very bytes)."),
    Rule("computation.failure", "POST /computations/{computation_id}/failure",
         {"provider": ("admin", "member")},
         "The provider that requested the computation; it is requested."),
    Rule("computation.masked_part", "POST /computations/{computation_id}/masked-part",
         {"provider": ("admin", "member")},
         "The provider that requested a computation of a joint execution; the layout is "
         "published and the joint neither published nor failed (409 wrong_state); the part "
         "is masked for this execution, its providers, this provider and the layout's length, "
         "its body matching its hash (409 part_refused naming the reason); one part per "
         "provider (the same part again: 200). Recorded with computation.succeeded, never "
         "delivered."),
    Rule("joint.layout", "POST /joint/{joint_id}/layout", {"provider": ("admin", "member")},
         "The joint's layout provider (the owner of the product's first input), once: the "
         "same keys again 200, other keys 409; the joint is started."),
    Rule("joint.publication", "",
         conditions="The platform's aggregation node (the server's system actor) once every "
         "part is in: the joint table's hash, the sealed table's digest, its rows."),
    Rule("joint.failure", "",
         conditions="The server's system actor (a deadline passed with parts missing, an "
         "aggregation refused); a provider's computation.failed of the execution fails it "
         "too, in the same command. Terminal."),
    Rule("privacy.erasure", "",
         conditions="The server's system actor only (dataledger privacy erase, on the "
         "platform's host): a member whose name the log holds sealed, once its key is "
         "destroyed (密钥销毁); a second erasure of it records nothing."),
    Rule("joint.hidden_query", "POST /orders/{order_id}/hidden-queries",
         {"demander": ANY},
         "The contract's demander (403 for anyone else) on a published joint execution of "
         "that contract (404 another's, 409 until published), the contract approved, inside "
         "its window, by a designated user if it names any, its grants live, and within its "
         "query_count (409 count_exhausted; each usage control's refusal recorded, "
         "usage.refused). Records the request's commitment and size and the answer's hash "
         "(joint.queried), never the codes."),
    Rule("delivery.release_approval", "POST /deliveries/{delivery_id}/release-approvals",
         _admins("provider"),
         "The provider whose computation made the delivery, once; the contract holds "
         "derivatives (derivatives_need_approval, 409 otherwise). Signed."),
    Rule("forensics.leak_trace", "",
         conditions="The server's system actor only (dataledger forensics trace-leak, on the "
         "platform's host, which holds the watermark key): the trace of a leaked copy, its "
         "match (a delivery of that contract to that demander) or none (溯源)."),
    # -- queries: every member with a token; rows by visibility (404 otherwise) -----------
    Rule("participants.list", "GET /participants", EVERYONE,
         "Admitted participants; every one for an admitted regulator or platform.", QUERY),
    Rule("participants.me", "GET /participants/me", EVERYONE,
         "The caller, also while its participant is pending or suspended.", QUERY),
    Rule("participants.get", "GET /participants/{participant_id}", EVERYONE,
         "Members are listed for the participant itself, the regulator and the platform.",
         QUERY),
    Rule("datasets.list", "GET /datasets", EVERYONE,
         "The catalog (published) and the caller's own datasets.", QUERY),
    Rule("datasets.get", "GET /datasets/{dataset_id}", EVERYONE,
         "A published dataset, or the caller's own.", QUERY),
    Rule("scenarios.list", "GET /scenarios", EVERYONE,
         "The caller's scenarios and those over its datasets.", QUERY),
    Rule("scenarios.get", "GET /scenarios/{scenario_id}", EVERYONE,
         "As the list, with the expert opinions.", QUERY),
    Rule("authorizations.list", "GET /authorizations", EVERYONE,
         "Those the caller granted or received.", QUERY),
    Rule("authorizations.get", "GET /authorizations/{authorization_id}", EVERYONE,
         "For its provider and its operator.", QUERY),
    Rule("products.list", "GET /products", EVERYONE,
         "The storefront (listed, delisted) and the caller's own products.", QUERY),
    Rule("products.get", "GET /products/{product_id}", EVERYONE,
         "Its code only for its operator and developer.", QUERY),
    Rule("orders.list", "GET /orders", EVERYONE,
         "The orders the caller is a party to.", QUERY),
    Rule("orders.get", "GET /orders/{order_id}", EVERYONE,
         "For its parties (the owners of the product's inputs from placement).", QUERY),
    Rule("computations.list", "GET /computations", EVERYONE,
         "The computations of the caller's contracts.", QUERY),
    Rule("computations.get", "GET /computations/{computation_id}", EVERYONE,
         "For its demander, operator and requesting provider.", QUERY),
    Rule("joint.list", "GET /joint", EVERYONE,
         "The joint computations of the caller's contracts (contract_id= narrows).", QUERY),
    Rule("joint.get", "GET /joint/{joint_id}", EVERYONE,
         "For the contract's parties (demander, operator, providers).", QUERY),
    Rule("joint.layout_get", "GET /joint/{joint_id}/layout", EVERYONE,
         "The published layout, for the joint's providers only (403 for the other parties; "
         "409 until it is published).", QUERY),
    Rule("joint.table", "GET /joint/{joint_id}/table", EVERYONE,
         "The published sealed table's bytes, for the contract's demander only (403 for the "
         "other parties; 409 until it is published).", QUERY),
    Rule("deliveries.result", "GET /deliveries/{delivery_id}/result", RESULT_READERS,
         "For the demander and the operator (the regulator: supervision, recorded, never "
         "refused; never the platform, which runs the market but is not a party to its "
         "results); 409 while nothing is delivered. A download: recorded "
         "(delivery.accessed) and decided by the contract's usage controls (409 with the "
         "control's code, 403 not_designated_user; each refusal recorded, usage.refused).",
         QUERY),
    Rule("deliveries.view", "GET /deliveries/{delivery_id}/view", RESULT_READERS,
         "As deliveries.result; a view (the rows for display), counted against view_count.",
         QUERY),
    Rule("ledger.events", "GET /ledger/events", EVERYONE,
         "The events of the aggregates the caller may see.", QUERY),
    Rule("ledger.event", "GET /ledger/events/{seq}", EVERYONE,
         "One event, if the caller may see its aggregate.", QUERY),
    Rule("ledger.export", "GET /ledger/export", {"regulator": ANY},
         "The admitted regulator only: the whole log as a bundle (the files of `dataledger "
         "export`, as a tar made while it is sent); anyone else, a regulator not admitted "
         "too, 403 forbidden before anything is read.", QUERY),
    Rule("forensics.self_proof", "GET /forensics/self-proof", EVERYONE,
         "A self-proof (docs/FORENSICS.md): an admitted participant about itself, the admitted "
         "regulator about any participant; anyone else 403 forbidden (a refusal tells nothing "
         "about what exists). 409 until an anchored checkpoint commits to the index.", QUERY),
    # -- public: no token ----------------------------------------------------------------
    Rule("health", "GET /health", conditions="Liveness and the log's head.", kind=PUBLIC),
    Rule("ledger.latest_checkpoint", "GET /ledger/checkpoints/latest",
         conditions="The chain is public: anyone checks it.", kind=PUBLIC),
    Rule("ledger.checkpoint", "GET /ledger/checkpoints/{size}", kind=PUBLIC),
    Rule("ledger.checkpoints", "GET /ledger/checkpoints",
         conditions="Every stored checkpoint in size order, a page at a time.", kind=PUBLIC),
    Rule("ledger.inclusion_proof", "GET /ledger/proofs/inclusion", kind=PUBLIC),
    Rule("ledger.consistency_proof", "GET /ledger/proofs/consistency", kind=PUBLIC),
    Rule("ledger.witnesses", "GET /ledger/witnesses", kind=PUBLIC),
)

#: the rules by name
TABLE: dict[str, Rule] = {rule.name: rule for rule in RULES}
#: the rules by route ("METHOD /path")
BY_ROUTE: dict[str, Rule] = {rule.route: rule for rule in RULES if rule.route}
assert len(TABLE) == len(RULES) and len(BY_ROUTE) == sum(1 for r in RULES if r.route), \
    "a command name or a route is in the table twice"


def permit(actor: Actor, name: str) -> None:
    """Raise Forbidden (403, naming the rule) unless ``actor``'s participant role and one
    of its member roles may run command ``name`` (a row of ``RULES``; KeyError if none)."""
    rule = TABLE[name]
    if actor.role == SYSTEM or rule.allows(actor.role, actor.member_roles):
        return
    raise Forbidden(f"{name}: needs {_who(rule)}; the caller is a {actor.role} member "
                    f"with role(s) {', '.join(actor.member_roles) or 'none'}",
                    rule=name, needed={r: list(m) for r, m in rule.who.items()})


def _who(rule: Rule) -> str:
    if rule.kind == PUBLIC:
        return "anyone, no token"
    if not rule.who:
        return "the server itself (its system actor), no member"
    if rule.who == EVERYONE:
        return "any member of any participant"
    kinds = set(rule.who.values())
    if set(rule.who) == set(ROLES) and len(kinds) == 1:
        return f"any participant: {' or '.join(kinds.pop())}"
    return "; ".join(f"{role}: {' or '.join(members)}" for role, members in rule.who.items())


_INTRO = """# Permissions

Generated from `domain/permissions.py` (the one table the checks use); do not edit by hand.
Regenerate with `dataledger docs permissions > docs/PERMISSIONS.md` (a test fails when this
file is stale).

A command is refused 403 `forbidden` (naming its rule) to a caller whose participant role, or
whose member role in it, the row does not name, before anything is read. The conditions are
checked next: not the caller's own resource, 403; separation of duties, 403
`separation_of_duties`; another aggregate's state, 409 with a code naming it
(`scenario_suspended`, `authorization_revoked`, `product_delisted`, …); the caller's own
participant not admitted, 409 `participant_suspended` or `participant_not_admitted`; a
concurrent change, 409 with `Retry-After`. Invalid input is 422 with
`fields: [{field, reason}]`, whoever found it.

Queries are open to any member with a token, who sees the rows its participant may see (404
for the others); an admitted regulator or platform sees every row. Public routes need no
token. A member's roles: `admin`, `expert` (the regulator's expert group, 专家组), `member`
(e.g. a provider's compute node).
"""


def render_markdown() -> str:
    """docs/PERMISSIONS.md: the table as a reader wants it."""
    lines = [_INTRO]
    for kind, title in ((COMMAND, "Commands"), (QUERY, "Queries"), (PUBLIC, "Public")):
        lines += [f"## {title}", "",
                  "| name | route | who (participant: member roles) | conditions |",
                  "|---|---|---|---|"]
        for rule in RULES:
            if rule.kind == kind:
                route = f"`{rule.route}`" if rule.route else "(no route)"
                lines.append(f"| `{rule.name}` | {route} | {_who(rule)} | "
                             f"{rule.conditions.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)
