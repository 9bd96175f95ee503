"""Order and its contract (订单/合约): a demander orders a listed product, the operator
proposes a contract (usage policy, price, revenue split), the demander accepts, the providers
of the inputs and the operator approve. ``contract.approved`` triggers the computation.
The contract id is the order id.

The demander says what it wants computed with a *query* (the product's key column and the
values to look up): the order's own query is execution 1, implied by ``contract.approved``;
while the contract is approved the demander asks for executions 2, 3, … with
``contract.query_submitted`` (``domain.computation.submit_query``: a query beyond the
contract's processing count is refused and not written, by the count the computations keep).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.event import Event
from core.masking import GRADES, column_grades
from domain.base import Aggregate, Context, applies, new_id
from domain.contract_terms import check_terms
from domain.dataset import Dataset, require_text
from domain.errors import Forbidden, InvalidInput, WrongState
from domain.participant import Participant
from domain.permissions import permit
from domain.policy import parse_instant, validate_policy
from domain.privacy_budget import check_contract_budget
from domain.product import Product, require_still_authorized
from domain.signing import Sign, Signed, signature_check
from domain.unit_of_work import UnitOfWork

SPLIT_KEYS = ("developer", "operator", "platform", "provider")
BASIS_POINTS = 10000
OPEN_STATES = ("placed", "proposed", "accepted")
QUERY_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_QUERY_FIELD = 64
MAX_QUERY_VALUES = 10_000
MAX_QUERY_VALUE = 200


@dataclass(frozen=True, kw_only=True)
class OrderPlaced(Event):
    """A demander ordered a listed product for a declared purpose."""

    type_name = "order.placed"
    class_version = 2
    demander_id: str
    product_id: str
    operator_id: str
    purpose: str
    #: what execution 1 computes: {"field": column name, "values": [str, ...]}; or null
    query: dict[str, Any] | None = None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 had no query."""
        state["query"] = None


@dataclass(frozen=True, kw_only=True)
class TrialGranted(Event):
    """The demander may try the product on mock data (试用)."""

    type_name = "order.trial_granted"


@dataclass(frozen=True, kw_only=True)
class ContractProposed(Event):
    """The operator proposed the contract; ``required_approvals`` are participant ids."""

    type_name = "contract.proposed"
    class_version = 2
    usage_policy: dict[str, Any]
    price_fen: int
    revenue_split: dict[str, int]
    required_approvals: list[str]
    #: the deciding member's signature (core.decision); null: unsigned (development mode)
    signature: dict[str, Any] | None = None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 was not signed."""
        state["signature"] = None


@dataclass(frozen=True, kw_only=True)
class ContractAccepted(Event):
    """The demander accepted the proposed contract."""

    type_name = "contract.accepted"
    class_version = 2
    #: the deciding member's signature (core.decision); null: unsigned (development mode)
    signature: dict[str, Any] | None = None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 was not signed."""
        state["signature"] = None


@dataclass(frozen=True, kw_only=True)
class ContractPartyApproved(Event):
    """One required party (an input's provider or the operator) approved the contract."""

    type_name = "contract.party_approved"
    class_version = 2
    party_id: str
    #: the deciding member's signature (core.decision); null: unsigned (development mode)
    signature: dict[str, Any] | None = None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 was not signed."""
        state["signature"] = None


@dataclass(frozen=True, kw_only=True)
class ContractApproved(Event):
    """Every required party approved: the contract is in force and computation may run."""

    type_name = "contract.approved"


@dataclass(frozen=True, kw_only=True)
class ContractQuerySubmitted(Event):
    """The demander asked for one more execution (2, 3, …) of the approved contract, with
    its query: {"field": column name, "values": [str, ...]}."""

    type_name = "contract.query_submitted"
    execution: int
    query: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class ContractTerminated(Event):
    """The contract was ended early; terminal."""

    type_name = "contract.terminated"
    class_version = 2
    reason: str
    #: the deciding member's signature (core.decision); null: unsigned (development mode)
    signature: dict[str, Any] | None = None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 was not signed."""
        state["signature"] = None


@dataclass(frozen=True, kw_only=True)
class OrderCancelled(Event):
    """The demander cancelled the order before the contract was approved; terminal."""

    type_name = "order.cancelled"
    reason: str = ""


def validate_query(value: Any, field: str = "query") -> dict[str, Any]:
    """A query: ``field`` a column name (1–64 chars, ``[A-Za-z_][A-Za-z0-9_]*``) and
    ``values`` 1–10,000 distinct non-empty strings of at most 200 characters."""
    if not isinstance(value, dict) or set(value) != {"field", "values"}:
        raise InvalidInput(field, "must be an object with exactly field and values")
    name, values = value["field"], value["values"]
    if (not isinstance(name, str) or not 1 <= len(name) <= MAX_QUERY_FIELD
            or not QUERY_FIELD.fullmatch(name)):
        raise InvalidInput(f"{field}.field", f"must be a column name of 1 to {MAX_QUERY_FIELD} "
                                             "characters matching [A-Za-z_][A-Za-z0-9_]*")
    if not isinstance(values, list) or not 1 <= len(values) <= MAX_QUERY_VALUES:
        raise InvalidInput(f"{field}.values", f"must be a list of 1 to {MAX_QUERY_VALUES} "
                                              "strings")
    first: dict[str, int] = {}
    for i, item in enumerate(values):
        where = f"{field}.values[{i}]"
        if not isinstance(item, str) or not 1 <= len(item) <= MAX_QUERY_VALUE:
            raise InvalidInput(where, f"must be a non-empty string of at most "
                                      f"{MAX_QUERY_VALUE} characters")
        if "\x00" in item:
            raise InvalidInput(where, "must not contain NUL")
        if item in first:
            raise InvalidInput(where, f"duplicates {field}.values[{first[item]}]")
        first[item] = i
    return {"field": name, "values": list(values)}


def require_key_column(query: dict[str, Any], key_column: str | None) -> None:
    """A query may name only the product's key column: it selects rows, it is not a filter
    on any column (one on a score could bring back every row without knowing a key)."""
    if key_column is None:
        raise InvalidInput("query.field", "the product declares no key column: it takes "
                                          "no query")
    if query["field"] != key_column:
        raise InvalidInput("query.field", f"must be the product's key column {key_column!r}")


def require_plain_query(product: Product, query: Any) -> None:
    """A joint product's rows are looked up by hidden queries only (the bank's codes never
    in clear on the log): its orders carry no query and ask for no execution by one. Nor
    does a product whose key column identifies people (:func:`require_unnamed_key`)."""
    if product.joint is not None and query is not None:
        raise InvalidInput("query", "a joint product takes hidden queries only")
    if query is not None:
        require_unnamed_key(product)


def require_unnamed_key(product: Product) -> None:
    """Refuse a query when the product's key column is, in any input dataset, a field of an
    identifier kind (``core.masking.KINDS`` but "none": ID number, phone, name, address,
    account, email) or graded L4: a query's values are recorded in clear on the log
    (``order.placed``, ``contract.query_submitted``: the compute node proves and reads them
    there), where no erasure reaches them (docs/PRIVACY.md, Erasure)."""
    graded = column_grades(product.field_grades).get(product.key_column or "")
    if graded is not None and (graded["kind"] != "none" or graded["grade"] == GRADES[-1]):
        raise InvalidInput("query.field", f"the key column {product.key_column!r} is a field "
                           f"of grade {graded['grade']} and kind {graded['kind']}: its values "
                           "identify people, and a query is recorded in clear on the log, "
                           "where no erasure reaches it; this product takes no query")


def validate_split(split: Any, *, has_developer: bool) -> dict[str, int]:
    """Shares in basis points, each >= 0, summing to exactly 10000."""
    if not isinstance(split, dict) or set(split) != set(SPLIT_KEYS):
        raise InvalidInput("revenue_split", f"must have exactly the shares {', '.join(SPLIT_KEYS)}")
    for key in SPLIT_KEYS:
        value = split[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput(f"revenue_split.{key}", "must be an integer of basis points >= 0")
    total = sum(split[k] for k in SPLIT_KEYS)
    if total != BASIS_POINTS:
        raise InvalidInput("revenue_split", f"shares must sum to {BASIS_POINTS} basis points, "
                                            f"not {total}")
    if split["developer"] and not has_developer:
        raise InvalidInput("revenue_split.developer", "the product has no developer; "
                                                      "its share must be 0")
    return {k: split[k] for k in SPLIT_KEYS}


class Order(Aggregate):
    """placed → proposed → accepted → approved → terminated; placed/proposed/accepted → cancelled."""

    kind = "order"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.state = "new"
        self.demander_id = ""
        self.product_id = ""
        self.operator_id = ""
        self.purpose = ""
        self.trial_granted = False
        self.usage_policy: dict[str, Any] = {}
        self.price_fen = 0
        self.revenue_split: dict[str, int] = {}
        self.required_approvals: list[str] = []
        self.approvals: list[str] = []
        self.query: dict[str, Any] | None = None
        #: executions asked for: 1 once approved (the order's query), +1 per submitted query
        self.executions = 0

    def pending_approvals(self) -> list[str]:
        """Required parties that have not approved yet."""
        return [p for p in self.required_approvals if p not in self.approvals]

    # -- decide -----------------------------------------------------------------
    @classmethod
    def place(cls, id: str, ctx: Context, *, product: Product, purpose: str,
              query: Any = None) -> Order:
        """Place; the caller checked that the demander is admitted."""
        product.require_listed()
        require_plain_query(product, query)
        checked = None if query is None else validate_query(query)
        if checked is not None:
            require_key_column(checked, product.key_column)
        agg = cls(id)
        agg.trigger(OrderPlaced, ctx, demander_id=ctx.actor.participant_id,
                    product_id=product.id, operator_id=product.operator_id,
                    purpose=require_text(purpose, "purpose"), query=checked)
        return agg

    def grant_trial(self, ctx: Context) -> None:
        if ctx.actor.role == "operator":
            self._require_operator(ctx)
        self.require_state(OPEN_STATES, "grant a trial")
        if self.trial_granted:
            raise WrongState(f"order {self.id} already has a trial; one trial per order")
        self.trigger(TrialGranted, ctx)

    def propose(self, ctx: Context, *, usage_policy: Any, price_fen: Any, revenue_split: Any,
                required_approvals: list[str], has_developer: bool,
                sign: Sign = lambda: None) -> None:
        self.check_can_propose(ctx)
        if isinstance(price_fen, bool) or not isinstance(price_fen, int) or price_fen < 0:
            raise InvalidInput("price_fen", "must be an integer number of fen >= 0")
        policy = validate_policy(usage_policy)
        if "not_after" in policy and parse_instant(policy["not_after"], "usage_policy.not_after"
                                                   ) <= parse_instant(ctx.at, "at"):
            raise InvalidInput("usage_policy.not_after", f"{policy['not_after']} is already "
                               "past: the contract could never be used")
        self.trigger(ContractProposed, ctx, usage_policy=policy,
                     price_fen=price_fen,
                     revenue_split=validate_split(revenue_split, has_developer=has_developer),
                     required_approvals=list(required_approvals), signature=sign())

    def check_can_propose(self, ctx: Context) -> None:
        """Raise unless ``ctx`` is the order's operator and the order awaits a proposal."""
        self._require_operator(ctx)
        self.require_state(["placed"], "propose a contract")

    def accept(self, ctx: Context, sign: Sign = lambda: None) -> None:
        self._require_demander(ctx)
        self.require_state(["proposed"], "accept the contract")
        self.trigger(ContractAccepted, ctx, signature=sign())

    def approve(self, ctx: Context, product_usable: Callable[[], None] = lambda: None,
                sign: Sign = lambda: None) -> None:
        """A required party approves (``product_usable`` raises if the product may no longer
        be put to use: checked after this contract's own rules, before anything is decided)."""
        party = ctx.actor.participant_id
        self.require_state(["accepted"], "approve the contract")
        if party not in self.required_approvals:
            raise Forbidden(f"participant {party} is not a required approver of contract {self.id}")
        if party in self.approvals:
            raise WrongState(f"participant {party} already approved contract {self.id}; "
                             "each party approves once")
        product_usable()
        self.trigger(ContractPartyApproved, ctx, party_id=party, signature=sign())
        if not self.pending_approvals():
            self.trigger(ContractApproved, ctx)

    def submit_query(self, ctx: Context, *, query: Any, key_column: str | None,
                     count_refusal: Callable[[int], str | None] = lambda n: None) -> int:
        """The demander asks for the next execution with ``query`` (on the product's
        ``key_column``); its number. ``count_refusal(n)`` says why execution ``n`` would
        exceed the contract's processing count (then WrongState, nothing written)."""
        self._require_demander(ctx)
        checked = validate_query(query)
        require_key_column(checked, key_column)
        self.require_state(["approved"], "submit a query")
        execution = self.executions + 1
        refusal = count_refusal(execution)
        if refusal is not None:
            raise WrongState(refusal, processing_count=self.usage_policy.get("processing_count"))
        self.trigger(ContractQuerySubmitted, ctx, execution=execution, query=checked)
        return execution

    def terminate(self, ctx: Context, *, reason: str,
                  sign: Sign = lambda: None) -> None:
        self._require_terminator(ctx)
        self.require_state(["approved"], "terminate the contract")
        self.trigger(ContractTerminated, ctx, reason=require_text(reason, "reason"),
                     signature=sign())

    def cancel(self, ctx: Context, *, reason: str) -> None:
        self._require_demander(ctx)
        self.require_state(OPEN_STATES, "cancel the order")
        self.trigger(OrderCancelled, ctx, reason=reason)

    def _require_operator(self, ctx: Context) -> None:
        if ctx.actor.participant_id != self.operator_id:
            raise Forbidden(f"only the operator of order {self.id} does this")

    def _require_demander(self, ctx: Context) -> None:
        if ctx.actor.participant_id != self.demander_id:
            raise Forbidden(f"only the demander of order {self.id} does this")

    def _require_terminator(self, ctx: Context) -> None:
        if ctx.actor.role == "operator":
            self._require_operator(ctx)
        if ctx.actor.role != "provider":
            return
        if ctx.actor.participant_id not in self.required_approvals:
            raise Forbidden(f"provider {ctx.actor.participant_id} is not a party "
                            f"to contract {self.id}")
        if self.usage_policy.get("provider_may_terminate") is not True:
            raise Forbidden(f"the usage policy of contract {self.id} does not let "
                            "providers terminate it (provider_may_terminate)")

    # -- evolve -----------------------------------------------------------------
    @applies(OrderPlaced)
    def _placed(self, e: OrderPlaced) -> None:
        self.state, self.demander_id, self.product_id = "placed", e.demander_id, e.product_id
        self.operator_id, self.purpose = e.operator_id, e.purpose
        self.query = None if e.query is None else dict(e.query)

    @applies(TrialGranted)
    def _trial(self, e: TrialGranted) -> None:
        self.trial_granted = True

    @applies(ContractProposed)
    def _proposed(self, e: ContractProposed) -> None:
        self.state, self.usage_policy, self.price_fen = "proposed", dict(e.usage_policy), e.price_fen
        self.revenue_split = dict(e.revenue_split)
        self.required_approvals = list(e.required_approvals)

    @applies(ContractAccepted)
    def _accepted(self, e: ContractAccepted) -> None:
        self.state = "accepted"

    @applies(ContractPartyApproved)
    def _party_approved(self, e: ContractPartyApproved) -> None:
        self.approvals.append(e.party_id)

    @applies(ContractApproved)
    def _approved(self, e: ContractApproved) -> None:
        self.state, self.executions = "approved", 1

    @applies(ContractQuerySubmitted)
    def _query_submitted(self, e: ContractQuerySubmitted) -> None:
        self.executions = e.execution

    @applies(ContractTerminated)
    def _terminated(self, e: ContractTerminated) -> None:
        self.state = "terminated"

    @applies(OrderCancelled)
    def _cancelled(self, e: OrderCancelled) -> None:
        self.state = "cancelled"


def _required_approvals(uow: UnitOfWork, product: Product) -> list[str]:
    """The providers owning the product's input datasets, and the operator."""
    providers = {uow.get(Dataset, d).owner_id for d in product.dataset_ids()}
    return sorted(providers | {product.operator_id})


def _require_product_usable(uow: UnitOfWork, product: Product, at: str) -> None:
    """The product is still listed, its scenario still approved and its inputs still covered
    by live authorizations."""
    product.require_listed()
    require_still_authorized(uow, product, at)


def _order_view(order: Order) -> dict[str, Any]:
    return {"order_id": order.id, "contract_id": order.id, "state": order.state}


# -- use cases ------------------------------------------------------------------
def place_order(uow: UnitOfWork, ctx: Context, *, product_id: str, purpose: str,
                query: Any = None) -> dict[str, Any]:
    """An admitted demander orders a listed product for a declared purpose, optionally with
    the query of execution 1."""
    permit(ctx.actor, "order.placement")
    uow.get(Participant, ctx.actor.participant_id).require_admitted()
    product = uow.get(Product, product_id)
    agg = Order.place(new_id(), ctx, product=product, purpose=purpose, query=query)
    _require_product_usable(uow, product, ctx.at)
    uow.add(agg)
    return _order_view(agg)


def grant_trial(uow: UnitOfWork, ctx: Context, order_id: str) -> dict[str, Any]:
    """The order's operator or the platform lets the demander try the product on mock data."""
    permit(ctx.actor, "order.trial")
    agg = uow.get(Order, order_id)
    agg.grant_trial(ctx)
    return {**_order_view(agg), "trial_granted": agg.trial_granted}


def propose_contract(uow: UnitOfWork, ctx: Context, order_id: str, *,
                     usage_policy: dict[str, Any], price_fen: int,
                     revenue_split: dict[str, int],
                     signed: Signed | None = None) -> dict[str, Any]:
    """The order's operator proposes the contract (signed); the required approvers are
    computed here."""
    permit(ctx.actor, "contract.proposal")
    agg = uow.get(Order, order_id)
    sign = signature_check(uow, ctx, "contract.proposal", agg, signed)
    agg.check_can_propose(ctx)
    product = uow.get(Product, agg.product_id)
    _require_product_usable(uow, product, ctx.at)
    check_contract_budget(uow, product, validate_policy(usage_policy))  # dp's, and only dp's
    agg.propose(ctx, usage_policy=usage_policy, price_fen=price_fen,
                revenue_split=revenue_split,
                required_approvals=_required_approvals(uow, product),
                has_developer=product.developer_id is not None, sign=sign)
    check_terms(uow, product, agg.demander_id, usage_policy)  # bound by its authorizations
    return {**_order_view(agg), "required_approvals": list(agg.required_approvals)}


def accept_contract(uow: UnitOfWork, ctx: Context, order_id: str, *,
                    signed: Signed | None = None) -> dict[str, Any]:
    """The order's demander accepts the proposed contract (signed)."""
    permit(ctx.actor, "contract.acceptance")
    agg = uow.get(Order, order_id)
    agg.accept(ctx, signature_check(uow, ctx, "contract.acceptance", agg, signed))
    return _order_view(agg)


def approve_contract(uow: UnitOfWork, ctx: Context, order_id: str, *,
                     signed: Signed | None = None) -> dict[str, Any]:
    """A required party approves (signed); the last approval puts the contract in force
    (only while the product is listed, its scenario approved and its inputs authorized)."""
    permit(ctx.actor, "contract.approval")
    agg = uow.get(Order, order_id)
    sign = signature_check(uow, ctx, "contract.approval", agg, signed)
    agg.approve(ctx, lambda: _require_product_usable(uow, uow.get(Product, agg.product_id),
                                                     ctx.at), sign)
    return {**_order_view(agg), "pending_approvals": agg.pending_approvals()}


def terminate_contract(uow: UnitOfWork, ctx: Context, order_id: str, *,
                       reason: str, signed: Signed | None = None) -> dict[str, Any]:
    """The operator, the regulator, or a party provider (if the policy allows) ends it
    (signed)."""
    permit(ctx.actor, "contract.termination")
    agg = uow.get(Order, order_id)
    sign = signature_check(uow, ctx, "contract.termination", agg, signed)
    agg.terminate(ctx, reason=reason, sign=sign)
    return _order_view(agg)


def cancel_order(uow: UnitOfWork, ctx: Context, order_id: str, *,
                 reason: str = "") -> dict[str, Any]:
    """The demander cancels before the contract is approved (terminal)."""
    permit(ctx.actor, "order.cancellation")
    agg = uow.get(Order, order_id)
    agg.cancel(ctx, reason=reason)
    return _order_view(agg)
