"""Who may do what, replayed: every event's actor is a member of its participant in that
participant's role, the participant is admitted (never suspended: a suspension is terminal),
the member holds a member role the command needs, and a decision is made by the party it
belongs to (the order's operator proposes, its demander accepts, each required party
approves once, the granting provider revokes, the regulator's experts give opinions and an
admin who gave none decides, ...).

The table is the rule book's own, from the white paper (5.1.1: the six parties; the
operator is selected by the government, so the regulator admits it; 专家组 review; the
provider may terminate only where the contract says so) and docs/PERMISSIONS.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from audit.rules.model import SYSTEM, Ev, Finding, State
from core.secagg import node_key_id

ADMIN = frozenset({"admin"})
WORKER = frozenset({"admin", "member"})
ANY = frozenset({"admin", "expert", "member"})
ROLES = ("provider", "operator", "developer", "demander", "platform", "regulator")


def _admins(*roles: str) -> dict[str, frozenset[str]]:
    return {r: ADMIN for r in roles}


#: event type -> participant role -> the member roles of which the actor needs one
WHO: dict[str, Mapping[str, frozenset[str]]] = {
    "participant.registered": _admins("platform"),
    "participant.regulator_seated": _admins("platform"),
    "participant.admission_approved": _admins("platform", "regulator"),
    "participant.admission_rejected": _admins("platform", "regulator"),
    "participant.member_added": _admins(*ROLES),
    "participant.member_token_rotated": {r: ANY for r in ROLES},
    "participant.key_registered": {r: ANY for r in ROLES},
    "participant.key_revoked": {r: ANY for r in ROLES},
    "participant.suspended": _admins("platform", "regulator"),
    "participant.node_key_registered": {"provider": WORKER},
    "dataset.registered": _admins("provider"),
    "dataset.published": _admins("provider"),
    "dataset.updated": _admins("provider"),
    "dataset.withdrawn": _admins("provider"),
    "dataset.data_loaded": {"provider": WORKER},
    "scenario.submitted": _admins("operator"),
    "scenario.opinion_recorded": {"regulator": frozenset({"expert"})},
    "scenario.approved": _admins("regulator"),
    "scenario.rejected": _admins("regulator"),
    "scenario.suspended": _admins("regulator"),
    "authorization.granted": _admins("provider"),
    "authorization.revoked": _admins("provider"),
    "authorization.expired": _admins("platform"),
    "product.registered": _admins("operator"),
    "product.listing_requested": _admins("operator"),
    "product.listed": _admins("platform"),
    "product.listing_rejected": _admins("platform"),
    "product.delisted": _admins("platform", "operator", "regulator"),
    "order.placed": _admins("demander"),
    "order.trial_granted": _admins("operator", "platform"),
    "order.cancelled": _admins("demander"),
    "contract.proposed": _admins("operator"),
    "contract.accepted": _admins("demander"),
    "contract.party_approved": _admins("provider", "operator"),
    "contract.approved": _admins("provider", "operator"),
    "contract.query_submitted": {"demander": WORKER},
    "contract.terminated": _admins("operator", "regulator", "provider"),
    "computation.requested": {"provider": WORKER},
    "computation.succeeded": {"provider": WORKER},
    "computation.failed": {"provider": WORKER},
    "delivery.made": {"provider": WORKER},
    "delivery.release_approved": _admins("provider"),
    "delivery.accessed": {r: ANY for r in ROLES if r != "platform"},
    "usage.refused": {r: ANY for r in ROLES if r != "platform"},
    # ε of a differentially private product spent by the node's request (差分隐私预算)
    "privacy.budget_spent": {"provider": WORKER},
    # a joint computation (白皮书 6.1): the providers' nodes, the aggregation node (the
    # system actor: joint.published and joint.failed, judged in joint.py), the demander
    "joint.started": {"provider": WORKER},
    "joint.layout_published": {"provider": WORKER},
    "joint.part_received": {"provider": WORKER},
    "joint.failed": {"provider": WORKER},
    "joint.queried": {"demander": ANY},
}

#: what the server's own actor records as the platform's forensics: a leak's trace (溯源,
#: ``dataledger forensics trace-leak``, judged by ``_leak_traced``)
FORENSICS_SYSTEM_EVENTS = frozenset({"forensics.leak_traced"})
#: what the server's own actor does: found the platform operator, rotate its admin's token
SYSTEM_EVENTS = frozenset({"participant.registered", "participant.admission_approved",
                           "participant.member_added", "participant.member_token_rotated"})
#: what the server's own actor does as the platform's aggregation node (joint.py judges)
JOINT_SYSTEM_EVENTS = frozenset({"joint.published", "joint.failed"})
#: what the server's own actor records for the platform's key store: a data subject's key
#: destroyed (密钥销毁, ``dataledger privacy erase``)
ERASURE_SYSTEM_EVENTS = frozenset({"privacy.subject_erased"})
#: what a participant still pending admission may do: complete its own membership
PENDING_EVENTS = frozenset({"participant.member_added", "participant.member_token_rotated"})


def actor_findings(s: State, ev: Ev) -> list[Finding]:
    """The actor is who it says, may act at all at this seq, and holds a role that may."""
    if ev.role == SYSTEM or ev.participant == SYSTEM:
        return [] if ev.type in FORENSICS_SYSTEM_EVENTS else _system(s, ev)
    if ev.type in FORENSICS_SYSTEM_EVENTS:
        return [Finding(ev.seq, "actor_identity", f"{ev.type} by the server's own actor",
                        f"by {ev.participant} ({ev.role})")]
    who = s.participants.get(ev.participant)
    name = f"member {ev.member} of participant {ev.participant} ({ev.role})"
    if who is None or ev.member not in who.members or who.role != ev.role:
        known = ("no such participant" if who is None else
                 f"participant is a {who.role}" if who.role != ev.role else
                 "no such member in that participant")
        return [Finding(ev.seq, "actor_identity", f"{ev.type} by a known member of its "
                        "participant, acting in the participant's role", f"{name}: {known}")]
    if who.state == "suspended":
        return [Finding(ev.seq, "suspended_participant", f"nothing by participant "
                        f"{ev.participant} after its suspension", f"{ev.type} by {name}")]
    if who.state != "admitted" and not (who.state == "pending" and ev.type in PENDING_EVENTS):
        return [Finding(ev.seq, "actor_not_admitted", f"{ev.type} by an admitted participant",
                        f"{name} is {who.state}")]
    allowed = WHO.get(ev.type)
    roles = who.members[ev.member]
    if allowed is not None and not (allowed.get(ev.role, frozenset()) & roles):
        need = "; ".join(f"{r}: {'/'.join(sorted(m))}" for r, m in allowed.items())
        return [Finding(ev.seq, "role", f"{ev.type} by {need}",
                        f"{name} with member roles {', '.join(sorted(roles)) or 'none'}")]
    if ev.role == "regulator" and ev.participant != s.regulator:
        return [Finding(ev.seq, "role", f"{ev.type} by the seated regulator {s.regulator}",
                        f"{name}, not in the regulator seat")]
    return []


def _system(s: State, ev: Ev) -> list[Finding]:
    """The server's own actor founds the platform operator and, as the aggregation node,
    publishes or fails a joint computation; nothing else."""
    if ev.type in JOINT_SYSTEM_EVENTS or ev.type in ERASURE_SYSTEM_EVENTS:
        return []
    platform = s.participants.get(ev.id)
    founding = (ev.type == "participant.registered" and ev.payload.get("role") == "platform"
                and not any(p.role == "platform" for p in s.participants.values()))
    if ev.type in SYSTEM_EVENTS and (founding or (platform is not None
                                                  and platform.role == "platform")):
        return []
    return [Finding(ev.seq, "actor_identity", "the server's own actor only founds the "
                    "platform operator (its registration, admission and admin) and publishes "
                    "or fails joint computations",
                    f"{ev.type} on {ev.id} by the system actor")]


#: the event that creates an aggregate -> where the state keeps that kind
CREATES = {"participant.registered": "participants", "dataset.registered": "datasets",
           "scenario.submitted": "scenarios", "authorization.granted": "authorizations",
           "product.registered": "products", "order.placed": "orders",
           "computation.requested": "computations"}


def creation_findings(s: State, ev: Ev) -> list[Finding]:
    """An aggregate is created once: its first event starts its stream."""
    kind = CREATES.get(ev.type)
    if kind is None or (ev.id not in getattr(s, kind) and ev.version == 1):
        return []
    return [Finding(ev.seq, "lifecycle", f"{ev.type} starting a new aggregate (version 1)",
                    f"{ev.id} at version {ev.version}"
                    + (" exists already" if ev.id in getattr(s, kind) else ""))]


# -- the party a decision belongs to -----------------------------------------------------
Check = Callable[[State, Ev], list[Finding]]


def _party(ev: Ev, expected: str, found: str) -> list[Finding]:
    return [Finding(ev.seq, "party", expected, found)]


def _lifecycle(ev: Ev, what: str, state: str, allowed: str) -> list[Finding]:
    return [Finding(ev.seq, "lifecycle", f"{ev.type} on {what} {ev.id} in state {allowed}",
                    f"it is {state}")]


def _member_added(s: State, ev: Ev) -> list[Finding]:
    """A participant's admins add its members; the platform only the first admin, when it
    onboards the participant (the registration's own command, stream version 2)."""
    if ev.participant == ev.id or ev.role == SYSTEM:
        return []
    if ev.role == "platform" and ev.version == 2 and ev.payload.get("member_roles") == ["admin"]:
        return []
    return _party(ev, f"members of {ev.id} added by its own admins (the platform: its first "
                  "admin only)", f"added by {ev.participant} ({ev.role})")


def _subject_erased(s: State, ev: Ev) -> list[Finding]:
    """A data subject's erasure: by the system actor, of a member of the participant it
    names, once (its stream is the subject's: version 1)."""
    who = s.participants.get(str(ev.get("participant_id")))
    subject = ev.get("subject_id")
    if ev.role != SYSTEM:
        return [Finding(ev.seq, "actor_identity", "an erasure by the server's own actor",
                        f"by {ev.participant} ({ev.role})")]
    if who is None or subject not in who.members or subject != ev.id:
        return _party(ev, "the erasure of a member of the participant it names",
                      f"subject {subject} of participant {ev.get('participant_id')}")
    if ev.version != 1:
        return [Finding(ev.seq, "lifecycle", f"subject {subject} erased once",
                        f"version {ev.version}")]
    return []


def _key_registered(s: State, ev: Ev) -> list[Finding]:
    if ev.participant == ev.id and ev.member == ev.payload.get("member_id"):
        return []
    return _party(ev, "a member registers its own key in its own participant",
                  f"member {ev.member} of {ev.participant} registered a key of member "
                  f"{ev.payload.get('member_id')} of {ev.id}")


def _key_revoked(s: State, ev: Ev) -> list[Finding]:
    who = s.participants.get(ev.id)
    own = ev.member == ev.payload.get("member_id")
    admin = who is not None and "admin" in who.members.get(ev.member, frozenset())
    if ev.participant == ev.id and (own or admin):
        return []
    return _party(ev, "a key revoked by its member or an admin of its participant",
                  f"revoked by member {ev.member} of {ev.participant}")


def _node_key(s: State, ev: Ev) -> list[Finding]:
    """A provider's member registers its own provider's compute-node key; its key id is
    ``x25519:`` and the first 32 hex digits of the SHA-256 of the key's 32 bytes."""
    if ev.participant != ev.id:
        return _party(ev, "a node key registered by a member of its own provider",
                      f"provider {ev.id}'s node key registered by {ev.participant}")
    try:
        wanted: str | None = node_key_id(str(ev.get("public_key")))
    except (ValueError, TypeError):
        wanted = None
    if wanted is None or ev.get("key_id") != wanted:
        return [Finding(ev.seq, "node_key", "an X25519 public key (base64 of 32 bytes) and "
                        f"its key id {wanted or 'x25519:<32 hex of its SHA-256>'}",
                        f"public_key {str(ev.payload.get('public_key'))[:60]!r}, key_id "
                        f"{ev.payload.get('key_id')!r}")]
    return []


def _admission(s: State, ev: Ev) -> list[Finding]:
    target = s.participants.get(ev.id)
    if target is None or target.state != "pending":
        return _lifecycle(ev, "participant", "unknown" if target is None else target.state,
                          "pending")
    if target.role == "operator" and ev.role != "regulator":
        return _party(ev, "an operator admitted by the regulator (白皮书 5.1.1)",
                      f"decided by {ev.participant} ({ev.role})")
    return []


def _suspension(s: State, ev: Ev) -> list[Finding]:
    target = s.participants.get(ev.id)
    if target is None or target.state != "admitted":
        return _lifecycle(ev, "participant", "unknown" if target is None else target.state,
                          "admitted")
    if target.role in ("platform", "regulator"):
        return _party(ev, "neither the platform operator nor the regulator suspended",
                      f"the {target.role} {ev.id} suspended")
    return []


def _opinion(s: State, ev: Ev) -> list[Finding]:
    sc = s.scenarios.get(ev.id)
    if sc is None or sc.state != "submitted":
        return _lifecycle(ev, "scenario", "unknown" if sc is None else sc.state, "submitted")
    if ev.payload.get("expert_id") != ev.member or ev.member in sc.opinions:
        return _party(ev, "one opinion per expert, recorded under the expert's own id",
                      f"expert_id {ev.payload.get('expert_id')} by member {ev.member}")
    return []


def _scenario_decision(s: State, ev: Ev) -> list[Finding]:
    sc = s.scenarios.get(ev.id)
    if sc is None or sc.state != "submitted":
        return _lifecycle(ev, "scenario", "unknown" if sc is None else sc.state, "submitted")
    if ev.member in sc.opinions:
        return [Finding(ev.seq, "separation_of_duties", "the scenario decided by a regulator "
                        "admin who gave no opinion on it", f"member {ev.member} gave one")]
    approvals = sum(v == "approve" for v in sc.opinions.values())
    if ev.type == "scenario.approved" and approvals * 2 <= len(sc.opinions):
        return [Finding(ev.seq, "expert_review", "an approval after at least one expert "
                        "opinion, most of them approving",
                        f"{approvals} of {len(sc.opinions)} opinions approve")]
    return []


def _scenario_suspension(s: State, ev: Ev) -> list[Finding]:
    sc = s.scenarios.get(ev.id)
    if sc is None or sc.state != "approved":
        return _lifecycle(ev, "scenario", "unknown" if sc is None else sc.state, "approved")
    return []


def _grant(s: State, ev: Ev) -> list[Finding]:
    """The provider grants its own datasets' fields that the approved scenario requested."""
    sc = s.scenarios.get(str(ev.payload.get("scenario_id")))
    if ev.payload.get("provider_id") != ev.participant:
        return _party(ev, "an authorization granted by its provider",
                      f"provider_id {ev.payload.get('provider_id')} granted by "
                      f"{ev.participant}")
    if sc is None or sc.state != "approved":
        return [Finding(ev.seq, "scenario_approved", f"authorization {ev.id} granted for an "
                        "approved scenario", f"scenario {ev.payload.get('scenario_id')} is "
                        f"{'unknown' if sc is None else sc.state}")]
    for item in ev.payload.get("datasets") or []:
        dataset = str(item.get("dataset_id")) if isinstance(item, dict) else ""
        owner = s.datasets.get(dataset)
        requested = sc.requested.get(dataset)
        fields = frozenset(item.get("fields") or ()) if isinstance(item, dict) else frozenset()
        if owner != ev.participant:
            return _party(ev, f"dataset {dataset} granted by its owner",
                          f"owned by {owner}, granted by {ev.participant}")
        if requested is None or not fields <= requested:
            return _party(ev, f"only fields scenario {ev.payload.get('scenario_id')} "
                          f"requested of dataset {dataset}",
                          f"granted {sorted(fields)}, requested "
                          f"{sorted(requested or ())}")
    return []


def _revocation(s: State, ev: Ev) -> list[Finding]:
    auth = s.authorizations.get(ev.id)
    if auth is None or auth.state != "granted":
        return _lifecycle(ev, "authorization", "unknown" if auth is None else auth.state,
                          "granted")
    if auth.provider != ev.participant:
        return _party(ev, f"authorization {ev.id} revoked by its provider {auth.provider}",
                      f"revoked by {ev.participant}")
    return []


def _expiry(s: State, ev: Ev) -> list[Finding]:
    auth = s.authorizations.get(ev.id)
    if auth is None or auth.state != "granted":
        return _lifecycle(ev, "authorization", "unknown" if auth is None else auth.state,
                          "granted")
    if ev.at < auth.not_after:
        return [Finding(ev.seq, "lifecycle", f"authorization {ev.id} expired at or after its "
                        f"not_after {auth.not_after.isoformat()}",
                        f"expired at {ev.at.isoformat()}")]
    return []


def _product_state(*allowed: str) -> Check:
    def check(s: State, ev: Ev) -> list[Finding]:
        product = s.products.get(ev.id)
        if product is None or product.state not in allowed:
            return _lifecycle(ev, "product", "unknown" if product is None else product.state,
                              " or ".join(allowed))
        if ev.type != "product.listing_requested" and not (
                ev.type == "product.delisted" and ev.role == "operator"):
            return []
        if product.operator != ev.participant:
            return _party(ev, f"product {ev.id} managed by its operator {product.operator}",
                          f"by {ev.participant}")
        return []
    return check


CHECKS: dict[str, Check] = {
    "participant.member_added": _member_added,
    "privacy.subject_erased": _subject_erased,
    "participant.key_registered": _key_registered,
    "participant.key_revoked": _key_revoked,
    "participant.node_key_registered": _node_key,
    "participant.admission_approved": _admission,
    "participant.admission_rejected": _admission,
    "participant.suspended": _suspension,
    "scenario.opinion_recorded": _opinion,
    "scenario.approved": _scenario_decision,
    "scenario.rejected": _scenario_decision,
    "scenario.suspended": _scenario_suspension,
    "authorization.granted": _grant,
    "authorization.revoked": _revocation,
    "authorization.expired": _expiry,
    "product.listing_requested": _product_state("registered"),
    "product.listing_rejected": _product_state("listing_requested"),
    "product.delisted": _product_state("listed"),
}


def _leak_traced(s: State, ev: Ev) -> list[Finding]:
    """A leak trace names no delivery, or only deliveries that were made: each computation
    delivered, under that contract, to that demander (version 1: ``match``; version 2:
    ``matches``, several for a merged copy)."""
    matches = ev.get("matches")
    if matches is None:
        matches = [] if ev.get("match") is None else [ev.get("match")]
    out = []
    for match in matches if isinstance(matches, list) else [matches]:
        run = s.computations.get(str(match.get("delivery_id"))) \
            if isinstance(match, dict) else None
        if run is not None and run.delivered and (run.contract, run.demander) == (
                match.get("contract_id"), match.get("demander_id")):
            continue
        out.append(Finding(ev.seq, "delivery", "a leak traced to a delivery made: its "
                           "contract and demander", f"{match!r}"))
    return out


CHECKS["forensics.leak_traced"] = _leak_traced
