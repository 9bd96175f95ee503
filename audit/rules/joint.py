"""Joint computations (联合计算) and hidden queries (隐匿查询), replayed: white paper 6.1's
five steps under 图 19 and the event catalogue, never ``domain/``.

A product may declare a joint output (``product.registered``'s ``joint``): each of its input
providers computes on its own data and posts a part masked so that only the sum over the
providers can be recovered; the platform's aggregation node sums them and publishes the
joint table to the consortium; the demander then looks codes up in it by hidden queries.
At its seq:

- ``joint.started`` is the execution (>= 1) of an approved contract on a joint product,
  with that execution's first ``computation.requested`` in the same commit; its id is
  ``uuid5(uuid5(URL, "dataledger:joint"), "<contract>#<execution>#joint")``; it waits for
  the product's input owners in input order (the first the layout provider), by the
  product's key and value columns, until its ``at`` plus the declared deadline;
- ``joint.layout_published``: by the layout provider, once, before any part;
- ``joint.part_received``: by a provider of the list, once, for its own computation of that
  execution, with that computation's ``computation.succeeded`` in the same commit (its
  ``result_sha256`` the part's digest, ``result_rows`` the layout's length), of layout
  length x value columns words; a joint computation's success is its part and nothing else;
- ``joint.published``: by the system actor (the aggregation node), once every provider's
  part is in; ``joint.failed``: by the system actor or with a provider's
  ``computation.failed`` of that execution in the same commit, ``code: sentence``
  (``missing`` only once the deadline passed); both terminal, and a joint computation's
  failure fails its open joint in the same commit;
- a joint computation is never delivered (no ``delivery.made``), and a joint product's
  order carries no clear query (no ``query``, no ``contract.query_submitted``);
- ``joint.queried``: by the contract's demander, on a published joint of that contract,
  inside its usage window, the contract in force and its grants live, the codes looked up
  over the contract (the sum of ``request_size``) within the lowest ``query_count`` of the
  contract's and its authorizations' policies.

A *commit* here is what one command wrote: consecutive seqs by one member at one ``at``
(every event of a command carries the instant it started). What must happen in the same
commit is judged when the commit ends (the next event starts another, or the log ends), so
a finding on a request may come with a later event.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from audit.rules.execution import effective_window, grounds
from audit.rules.model import SYSTEM, Ev, Finding, Malformed, Order, State, instant

#: the namespace of joint ids (docs: the shared spec's "Ids")
NS = uuid.uuid5(uuid.NAMESPACE_URL, "dataledger:joint")
#: the codes a ``joint.failed`` reason starts with (``code: sentence``)
FAILURE_CODES = ("missing", "provider_failed", "refused", "policy_lapsed")
TERMINAL = ("published", "failed")


def joint_id(contract_id: str, execution: int) -> str:
    """The id of joint execution ``execution`` of contract ``contract_id``."""
    return str(uuid.uuid5(NS, f"{contract_id}#{execution}#joint"))


@dataclass
class Declaration:
    """A joint product's declaration, and its input datasets in input order."""

    key_column: Any
    value_columns: list[Any]
    min_providers: int
    deadline_seconds: int
    inputs: list[str]


@dataclass
class Joint:
    contract: str
    execution: int
    product: str
    providers: list[str]
    value_columns: int
    deadline: Any
    state: str = "started"
    length: int = 0
    #: provider -> the computation its part came with
    parts: dict[str, str] = field(default_factory=dict)


def _int(value: Any, name: str, low: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise Malformed(f"{name} is not an integer >= {low}: {value!r}")
    return value


def _finding(ev: Ev, rule: str, expected: str, found: str) -> list[Finding]:
    return [Finding(ev.seq, rule, expected, found)]


def _lifecycle(ev: Ev, joint: Joint | None, allowed: str) -> list[Finding]:
    return _finding(ev, "lifecycle", f"{ev.type} on joint {ev.id} in state {allowed}",
                    f"it is {'unknown' if joint is None else joint.state}")


class JointRules:
    """The joint rules, with their own picture: the joint products' declarations, the
    joints, the codes each contract's hidden queries looked up, and the commit under way."""

    def __init__(self) -> None:
        self.products: dict[str, Declaration] = {}
        self.joints: dict[str, Joint] = {}
        self.queried: dict[str, int] = {}
        self.commit: list[Ev] = []

    def ended_by(self, s: State, ev: Ev) -> list[Finding]:
        """The findings of the commit under way if ``ev`` starts another (call before
        :meth:`findings`, with ``s`` as it stood before ``ev``)."""
        last = self.commit[-1] if self.commit else None
        if last is not None and last.seq + 1 == ev.seq and last.at == ev.at and (
                last.participant, last.member) == (ev.participant, ev.member):
            return []
        return self.finish(s)

    def findings(self, s: State, ev: Ev) -> list[Finding]:
        """The findings on ``ev``, judged on ``s`` as it stood before it; moves this
        picture past ``ev``."""
        check = CHECKS.get(ev.type)
        out = [] if check is None else check(self, s, ev)
        self.commit.append(ev)
        return out

    def finish(self, s: State) -> list[Finding]:
        """The findings of the commit under way, ended (call at the log's end too)."""
        out: list[Finding] = []
        for ev in self.commit:
            run = s.computations.get(ev.id)
            if run is None or run.execution < 1 or self.joint_product(s, run.contract) is None:
                continue
            jid = joint_id(run.contract, run.execution)
            joint = self.joints.get(jid)
            if ev.type == "computation.requested" and joint is None:
                out += _finding(ev, "joint_commit", f"execution {run.execution} of joint "
                                f"contract {run.contract} started (joint.started) with its "
                                "first request, in the same commit", "no joint.started")
            elif ev.type == "computation.succeeded" and (
                    joint is None or joint.parts.get(run.provider) != ev.id):
                out += _finding(ev, "joint_commit", f"computation {ev.id} of a joint "
                                "execution succeeds with its masked part (joint.part_received "
                                "in the same commit)", "no part received with it")
            elif ev.type == "computation.failed" and joint is not None \
                    and joint.state not in TERMINAL:
                out += _finding(ev, "joint_commit", f"joint {jid} failed with its provider's "
                                "computation, in the same commit", f"it is {joint.state}")
        self.commit = []
        return out

    def joint_product(self, s: State, contract: str) -> Declaration | None:
        """The joint declaration of contract ``contract``'s product (None: plain)."""
        order = s.orders.get(contract)
        return None if order is None else self.products.get(order.product)

    def in_commit(self, type_name: str, test: Callable[[Ev], bool]) -> bool:
        return any(e.type == type_name and test(e) for e in self.commit)


# -- the product, the order, the delivery --------------------------------------------------
def _product(r: JointRules, s: State, ev: Ev) -> list[Finding]:
    joint = ev.payload.get("joint")
    if joint is None:
        return []
    if not isinstance(joint, dict):
        raise Malformed(f"joint is not an object or null: {joint!r}")
    inputs = ev.get("inputs")
    datasets = [str(i.get("dataset_id")) for i in inputs if isinstance(i, dict)] \
        if isinstance(inputs, list) else []
    columns = joint.get("value_columns")
    decl = Declaration(ev.payload.get("key_column"),
                       list(columns) if isinstance(columns, list) else [],
                       _int(joint.get("min_providers", 2), "joint.min_providers"),
                       _int(joint.get("deadline_seconds", 600), "joint.deadline_seconds"),
                       datasets)
    r.products[ev.id] = decl
    owners = _owners(s, decl)
    if not isinstance(decl.key_column, str) or not 1 <= len(decl.value_columns) <= 8 \
            or decl.min_providers < 2 or len(owners) < decl.min_providers:
        return _finding(ev, "joint", "a joint product with a key column, 1 to 8 value "
                        "columns and inputs of at least min_providers (>= 2) providers",
                        f"key_column {decl.key_column!r}, value_columns "
                        f"{decl.value_columns}, min_providers {decl.min_providers}, "
                        f"providers {owners}")
    return []


def _owners(s: State, decl: Declaration) -> list[str]:
    """The joint's providers: the input datasets' distinct owners, in input order."""
    out: list[str] = []
    for dataset in decl.inputs:
        owner = s.datasets.get(dataset, f"owner of {dataset}?")
        if owner not in out:
            out.append(owner)
    return out


def _clear_query(r: JointRules, s: State, ev: Ev) -> list[Finding]:
    """A joint product's order carries no clear query: its codes go by hidden query."""
    if ev.type == "order.placed":
        product = str(ev.payload.get("product_id"))
        clear = ev.payload.get("query") is not None
    else:
        order = s.orders.get(ev.id)
        product, clear = ("" if order is None else order.product), True
    if clear and product in r.products:
        return _finding(ev, "hidden_query", f"no clear query on joint product {product}'s "
                        "order (隐匿查询 only)", f"{ev.type} with a query")
    return []


def _delivery(r: JointRules, s: State, ev: Ev) -> list[Finding]:
    run = s.computations.get(ev.id)
    if run is not None and run.execution >= 1 and r.joint_product(s, run.contract):
        return _finding(ev, "delivery", f"no delivery of computation {ev.id}: a joint "
                        "execution's part is never delivered", "delivery.made")
    return []


# -- the joint execution ----------------------------------------------------------------------
def _started(r: JointRules, s: State, ev: Ev) -> list[Finding]:
    contract, execution = str(ev.get("contract_id")), _int(ev.get("execution"), "execution")
    if ev.id in r.joints:
        return _finding(ev, "lifecycle", f"joint {ev.id} started once", "it exists already")
    order, decl = s.orders.get(contract), r.joint_product(s, contract)
    product = str(ev.get("product_id"))
    if order is None or decl is None or order.product != product or execution < 1:
        why = ("no such contract" if order is None else "a plain product" if decl is None
               else f"the contract is on product {order.product}")
        return _finding(ev, "joint", "a joint execution (>= 1) of a contract on a joint "
                        "product", f"execution {execution} of contract {contract} of product "
                        f"{product}: {why}")
    providers = ev.get("providers")
    if not isinstance(providers, list) or not providers:
        raise Malformed(f"providers is not a list of provider ids: {providers!r}")
    r.joints[ev.id] = Joint(contract, execution, product, [str(p) for p in providers],
                            len(decl.value_columns), instant(ev.get("deadline"), "deadline"))
    out = _declared(s, ev, order, decl)
    request = [e for e in r.commit if e.type == "computation.requested"
               and e.payload.get("contract_id") == contract
               and e.payload.get("execution") == execution]
    if not request:
        out += _finding(ev, "joint_commit", f"joint {ev.id} started with the first "
                        f"computation.requested of execution {execution}, in the same commit",
                        "no such request in it")
    elif order.state != "approved" and s.computations[request[0].id].state != "failed":
        out += _finding(ev, "contract_live", f"joint {ev.id} started under contract "
                        f"{contract} in force (approved, not terminated)",
                        f"it is {order.state}")
    return out


def _declared(s: State, ev: Ev, order: Order, decl: Declaration) -> list[Finding]:
    """A joint.started says what the contract and the product's declaration say."""
    providers = _owners(s, decl)
    wanted = {"joint id": joint_id(str(ev.get("contract_id")), ev.get("execution")),
              "demander_id": order.demander, "providers": providers,
              "layout_provider": providers[0] if providers else None,
              "key_column": decl.key_column, "value_columns": decl.value_columns,
              "deadline": ev.at + timedelta(seconds=decl.deadline_seconds)}
    found = {"joint id": ev.id, "demander_id": ev.get("demander_id"),
             "providers": ev.get("providers"), "layout_provider": ev.get("layout_provider"),
             "key_column": ev.get("key_column"), "value_columns": ev.get("value_columns"),
             "deadline": instant(ev.get("deadline"), "deadline")}
    off = [f"{k} {found[k]!r} (expected {v!r})" for k, v in wanted.items() if found[k] != v]
    if off:
        return _finding(ev, "joint", f"joint {ev.id} as its contract and its product's "
                        "declaration say (the input owners in input order, the first laying "
                        "out; the declared columns and deadline)", "; ".join(off))
    return []


def _layout(r: JointRules, s: State, ev: Ev) -> list[Finding]:
    joint = r.joints.get(ev.id)
    if joint is None or joint.state != "started":
        return _lifecycle(ev, joint, "started (a layout is published once)")
    length = _int(ev.get("length"), "length", 1)
    if not isinstance(ev.get("layout_sha256"), str):
        raise Malformed("layout_sha256 is not a string")
    out: list[Finding] = []
    if ev.role != "provider" or ev.participant != joint.providers[0]:
        out = _finding(ev, "party", f"joint {ev.id}'s layout published by its layout "
                       f"provider {joint.providers[0]}", f"by {ev.participant} ({ev.role})")
    joint.state, joint.length = "layout_published", length
    return out


def _part(r: JointRules, s: State, ev: Ev) -> list[Finding]:
    joint = r.joints.get(ev.id)
    if joint is None or joint.state != "layout_published":
        return _lifecycle(ev, joint, "layout_published")
    provider, cid = str(ev.get("provider_id")), str(ev.get("computation_id"))
    digest, length = ev.get("digest"), _int(ev.get("length"), "length")
    if provider != ev.participant or ev.role != "provider" or provider not in joint.providers \
            or provider in joint.parts:
        return _finding(ev, "party", f"one part from each provider of joint {ev.id} "
                        f"({', '.join(joint.providers)}), in its own name",
                        f"provider_id {provider} by {ev.participant} (parts so far: "
                        f"{', '.join(joint.parts) or 'none'})")
    joint.parts[provider] = cid
    run = s.computations.get(cid)
    out: list[Finding] = []
    if run is None or (run.contract, run.execution, run.provider) != (
            joint.contract, joint.execution, provider):
        out += _finding(ev, "joint", f"the part of provider {provider}'s computation of "
                        f"execution {joint.execution} of contract {joint.contract}",
                        f"computation {cid}" + ("" if run else " (unknown)"))
    if not r.in_commit("computation.succeeded", lambda e: e.id == cid and e.payload.get(
            "result_sha256") == digest and e.payload.get("result_rows") == joint.length):
        out += _finding(ev, "joint_commit", f"the part comes with computation {cid}'s "
                        f"computation.succeeded (result_sha256 {digest}, result_rows "
                        f"{joint.length}) in the same commit", "no such success in it")
    if length != joint.length * joint.value_columns:
        out += _finding(ev, "joint", f"a part of {joint.length} keys x {joint.value_columns} "
                        f"value columns = {joint.length * joint.value_columns} words",
                        f"{length} words")
    return out


def _published(r: JointRules, s: State, ev: Ev) -> list[Finding]:
    joint = r.joints.get(ev.id)
    if joint is None or joint.state != "layout_published":
        return _lifecycle(ev, joint, "layout_published")
    _int(ev.get("rows"), "rows")
    joint.state = "published"
    if ev.participant != SYSTEM:
        return _finding(ev, "party", f"joint {ev.id} published by the platform's aggregation "
                        "node (the system actor)", f"by {ev.participant} ({ev.role})")
    missing = [p for p in joint.providers if p not in joint.parts]
    if missing:
        return _finding(ev, "joint", f"joint {ev.id} published once every provider's part "
                        "is in", f"no part of {', '.join(missing)}")
    return []


def _failed(r: JointRules, s: State, ev: Ev) -> list[Finding]:
    joint = r.joints.get(ev.id)
    if joint is None or joint.state in TERMINAL:
        return _lifecycle(ev, joint, "started or layout_published (terminal once failed)")
    joint.state = "failed"
    reason = ev.get("reason")
    code = reason.split(":", 1)[0] if isinstance(reason, str) else None
    if code not in FAILURE_CODES:
        return _finding(ev, "joint", f"a reason 'code: sentence', the code one of "
                        f"{', '.join(FAILURE_CODES)}", f"{str(reason)[:200]!r}")
    if ev.participant == SYSTEM:
        if code == "missing" and ev.at < joint.deadline:
            return _finding(ev, "joint", f"joint {ev.id} failed for a missing part once its "
                            f"deadline {joint.deadline.isoformat()} passed",
                            f"at {ev.at.isoformat()}")
        return []
    if not r.in_commit("computation.failed", lambda e: _of(s, e, joint)):
        return _finding(ev, "joint_commit", f"joint {ev.id} failed by the system actor, or "
                        "with a computation.failed of that execution by the same provider in "
                        "the same commit", f"by {ev.participant} ({ev.role}), alone")
    return []


def _of(s: State, ev: Ev, joint: Joint) -> bool:
    """Whether ``ev`` is on a computation of ``joint``'s execution."""
    run = s.computations.get(ev.id)
    return run is not None and (run.contract, run.execution) == (joint.contract,
                                                                 joint.execution)


def _queried(r: JointRules, s: State, ev: Ev) -> list[Finding]:
    joint = r.joints.get(ev.id)
    if joint is None or joint.state != "published":
        return _lifecycle(ev, joint, "published")
    size = _int(ev.get("request_size"), "request_size", 1)
    order, product = s.orders.get(joint.contract), s.products.get(joint.product)
    if order is None or product is None:
        raise Malformed(f"joint {ev.id} of no known contract")
    if (ev.participant, ev.role) != (order.demander, "demander") or ev.get(
            "demander_id") != order.demander or ev.get("contract_id") != joint.contract:
        return _finding(ev, "party", f"a hidden query on joint {ev.id} by contract "
                        f"{joint.contract}'s demander {order.demander}", f"by {ev.participant}"
                        f" ({ev.role}) for demander {ev.payload.get('demander_id')} under "
                        f"contract {ev.payload.get('contract_id')}")
    what = f"hidden query on joint {ev.id}"
    out: list[Finding] = []
    if order.state != "approved":
        out += _finding(ev, "contract_live", f"{what}: contract {joint.contract} in force "
                        "(approved, not terminated)", f"it is {order.state}")
    start, end = effective_window(s, order, product)
    if (start is not None and ev.at < start) or (end is not None and ev.at >= end):
        out += _finding(ev, "usage_window", f"{what}: inside the usage window "
                        f"[{start and start.isoformat()}, {end and end.isoformat()})",
                        f"at {ev.at.isoformat()}")
    out += grounds(s, ev, product, product.inputs, what)
    used = r.queried.get(joint.contract, 0) + size
    r.queried[joint.contract] = used
    limit = _query_limit(s, order, product.authorizations)
    if limit is not None and used > limit:
        out += _finding(ev, "query_count", f"{what}: at most {limit} codes looked up by the "
                        f"contract's hidden queries (query_count)", f"{used} codes")
    return out


def _query_limit(s: State, order: Order, authorizations: list[str]) -> int | None:
    """The lowest ``query_count`` of the contract's and its authorizations' policies."""
    policies = [order.policy, *(s.authorizations[a].policy for a in authorizations
                                if a in s.authorizations)]
    counts = [p["query_count"] for p in policies if isinstance(p.get("query_count"), int)]
    return min(counts) if counts else None


Check = Callable[[JointRules, State, Ev], list[Finding]]

CHECKS: dict[str, Check] = {
    "product.registered": _product,
    "order.placed": _clear_query,
    "contract.query_submitted": _clear_query,
    "delivery.made": _delivery,
    "joint.started": _started,
    "joint.layout_published": _layout,
    "joint.part_received": _part,
    "joint.published": _published,
    "joint.failed": _failed,
    "joint.queried": _queried,
}
