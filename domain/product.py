"""Product (数据产品): an operator's computation over authorized datasets, sold as a dataset,
an API, a model or a verification service (核验); listed (上架) after the platform's review."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from core.event import Event
from core.output_schema import unsafe_keyword
from domain.authorization import Authorization, coverage_breach
from domain.base import Aggregate, Context, applies, new_id
from domain.dataset import Dataset, require_names, require_text, validate_selection
from domain.errors import (
    AuthorizationExpiredError,
    AuthorizationRevokedError,
    Forbidden,
    InvalidInput,
    NoAuthorization,
    ProductDelistedError,
    ProductNotListed,
)
from domain.participant import Participant
from domain.permissions import permit
from domain.privacy_budget import check_dp, require_dp_under_budget
from domain.scenario import Scenario
from domain.signing import Sign, Signed, signature_check
from domain.unit_of_work import UnitOfWork

KINDS = ("dataset", "api", "model", "verification")


@dataclass(frozen=True, kw_only=True)
class ProductRegistered(Event):
    """An operator registered a product: its code and SHA-256, inputs, output schema, price;
    the column a query may name (``key_column``), and the fields of each input dataset
    marked sensitive or personal when it was registered (``sensitive_fields``, filled by
    the domain): the compute node proves this event and refuses outputs carrying them; and
    each input field's grade and kind (``field_grades``, filled by the domain): the node
    masks the result's columns by them (core.masking)."""

    type_name = "product.registered"
    class_version = 4
    operator_id: str
    scenario_id: str
    authorization_ids: list[str]
    name: str
    kind: str
    description: str
    code: str
    code_sha256: str
    inputs: list[dict[str, Any]]
    output_schema: dict[str, Any]
    quality_report: str
    price_fen: int
    developer_id: str | None = None
    #: the output column a query may name (a property of the output schema and an input
    #: field); None: the product takes no query
    key_column: str | None = None
    #: input dataset id -> its fields marked sensitive or personal, sorted
    sensitive_fields: dict[str, list[str]] = field(default_factory=dict)
    #: the joint output (``check_joint``): {"value_columns", "min_providers",
    #: "deadline_seconds"}; None: plain mode, each provider delivers its own result
    joint: dict[str, Any] | None = None
    #: input dataset id -> field -> {"grade", "kind"} of each of its fields at registration
    field_grades: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    #: the differential privacy of an aggregate output (domain/privacy_budget.py); None:
    #: no noise
    dp: dict[str, Any] | None = None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 had no key column and recorded no sensitive fields."""
        state["key_column"] = None
        state["sensitive_fields"] = {}

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        """Version 2 had no joint output: plain mode."""
        state["joint"] = None

    @staticmethod
    def upcast_v3_v4(state: dict[str, Any]) -> None:
        """Version 3 recorded no field grades (nothing masked) and no differential privacy."""
        state["field_grades"] = {}
        state["dp"] = None


@dataclass(frozen=True, kw_only=True)
class ProductListingRequested(Event):
    """The operator asked the platform to list the product."""

    type_name = "product.listing_requested"


@dataclass(frozen=True, kw_only=True)
class ProductListed(Event):
    """The platform reviewed and listed the product (上架)."""

    type_name = "product.listed"
    class_version = 2
    comment: str
    #: the deciding member's signature (core.decision); null: unsigned (development mode)
    signature: dict[str, Any] | None = None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 was not signed."""
        state["signature"] = None


@dataclass(frozen=True, kw_only=True)
class ProductListingRejected(Event):
    """The platform refused the listing; the product is back to registered."""

    type_name = "product.listing_rejected"
    class_version = 2
    reason: str
    #: the deciding member's signature (core.decision); null: unsigned (development mode)
    signature: dict[str, Any] | None = None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 was not signed."""
        state["signature"] = None


@dataclass(frozen=True, kw_only=True)
class ProductDelisted(Event):
    """The product was taken off the market (下架); terminal."""

    type_name = "product.delisted"
    reason: str


def code_digest(code: str) -> str:
    """The hex SHA-256 of the UTF-8 code: what the compute node checks before running it."""
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def _price(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput("price_fen", "must be an integer number of fen >= 0")
    return value


def output_columns(schema: dict[str, Any]) -> list[str]:
    """The columns an output schema declares: its ``properties``, or those of its ``items``
    (the rows of an array output)."""
    for where in (schema, schema.get("items")):
        if isinstance(where, dict) and isinstance(where.get("properties"), dict):
            return [str(name) for name in where["properties"]]
    return []


def _check_key_column(key_column: Any, output_schema: dict[str, Any],
                      inputs: list[dict[str, Any]]) -> None:
    """A key column, if any, is a column of the output and a field the product reads: the
    compute node filters the output by it, and a query may name it only."""
    if key_column is None:
        return
    if not isinstance(key_column, str) or not key_column:
        raise InvalidInput("key_column", "must be a column name or null")
    columns = output_columns(output_schema)
    if key_column not in columns:
        raise InvalidInput("key_column", f"{key_column!r} is not a property of output_schema "
                                         f"(it declares: {', '.join(columns) or 'none'})")
    if not any(key_column in item["fields"] for item in inputs):
        raise InvalidInput("key_column", f"{key_column!r} is not one of the product's input "
                                         "fields")


#: a joint output's bounds: value columns, providers (core.secagg.MAX_PROVIDERS), deadline
MAX_VALUE_COLUMNS = 8
JOINT_PROVIDERS = (2, 64)
JOINT_DEADLINE_S = (10, 86400)
JOINT_KEYS = ("value_columns", "min_providers", "deadline_seconds")


def column_type(schema: dict[str, Any], name: str) -> Any:
    """The declared ``type`` of output column ``name`` (of ``properties`` or ``items``)."""
    for where in (schema, schema.get("items")):
        if isinstance(where, dict) and isinstance(where.get("properties"), dict):
            column = where["properties"].get(name)
            return column.get("type") if isinstance(column, dict) else None
    return None


def _bounded_int(value: Any, field: str, bounds: tuple[int, int]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (
            bounds[0] <= value <= bounds[1]):
        raise InvalidInput(field, f"must be an integer from {bounds[0]} to {bounds[1]}")
    return value


def check_joint(joint: Any, key_column: Any,
                output_schema: dict[str, Any]) -> dict[str, Any] | None:
    """A joint output declaration, with its defaults: ``value_columns`` 1 to 8 distinct
    output columns of type integer or number (summed over the providers, key by key),
    ``min_providers`` (>= 2, default 2), ``deadline_seconds`` (10 to 86400, default 600);
    the product needs a ``key_column`` of type string (the rows' key). None: plain mode."""
    if joint is None:
        return None
    if (not isinstance(joint, dict) or "value_columns" not in joint
            or set(joint) - set(JOINT_KEYS)):
        raise InvalidInput("joint", "must be null or an object with value_columns (and "
                                    "optionally min_providers, deadline_seconds)")
    if key_column is None or column_type(output_schema, key_column) != "string":
        raise InvalidInput("key_column", "a joint product needs a key column of type string "
                                         "in output_schema: the key its rows are summed by")
    columns = joint["value_columns"]
    if not isinstance(columns, list) or not 1 <= len(columns) <= MAX_VALUE_COLUMNS:
        raise InvalidInput("joint.value_columns", f"must be a list of 1 to {MAX_VALUE_COLUMNS} "
                                                  "output columns")
    for i, name in enumerate(columns):
        where = f"joint.value_columns[{i}]"
        if not isinstance(name, str) or column_type(output_schema, name) not in (
                "integer", "number"):
            raise InvalidInput(where, f"{name!r} is not an output column of type integer or "
                                      "number")
        if name == key_column or columns.index(name) != i:
            raise InvalidInput(where, f"{name!r} is the key column or listed twice")
    return {"value_columns": list(columns),
            "min_providers": _bounded_int(joint.get("min_providers", 2),
                                          "joint.min_providers", JOINT_PROVIDERS),
            "deadline_seconds": _bounded_int(joint.get("deadline_seconds", 600),
                                             "joint.deadline_seconds", JOINT_DEADLINE_S)}


class Product(Aggregate):
    """registered → listing_requested → listed → delisted; listing_requested → registered."""

    kind = "product"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.state = "new"
        self.operator_id = ""
        self.scenario_id = ""
        self.authorization_ids: list[str] = []
        self.name = ""
        self.product_kind = ""
        self.code_sha256 = ""
        self.inputs: list[dict[str, Any]] = []
        self.price_fen = 0
        self.developer_id: str | None = None
        self.key_column: str | None = None
        self.sensitive_fields: dict[str, list[str]] = {}
        #: input dataset id -> field -> {"grade", "kind"} (what the node masks by)
        self.field_grades: dict[str, dict[str, dict[str, str]]] = {}
        #: the differential privacy declaration, or None
        self.dp: dict[str, Any] | None = None
        #: the joint output (``check_joint``), or None: plain mode
        self.joint: dict[str, Any] | None = None
        #: the output's JSON schema (the value columns' types of a joint output)
        self.output_schema: dict[str, Any] = {}

    def dataset_ids(self) -> list[str]:
        """The input datasets, in input order."""
        return [i["dataset_id"] for i in self.inputs]

    # -- decide -----------------------------------------------------------------
    @classmethod
    def register(cls, id: str, ctx: Context, *, details: dict[str, Any]) -> Product:
        """Register; ``details`` are the event's fields, cross-checked by the caller."""
        if details["kind"] not in KINDS:
            raise InvalidInput("kind", f"must be one of {', '.join(KINDS)}")
        if not isinstance(details["output_schema"], dict):
            raise InvalidInput("output_schema", "must be an object")
        unsafe = unsafe_keyword(details["output_schema"])
        if unsafe is not None:
            raise InvalidInput("output_schema", f"the keyword {unsafe!r} is not allowed (each "
                               "output is checked against the schema on the datasite)")
        require_text(details["name"], "name")
        _price(details["price_fen"])
        _check_key_column(details.get("key_column"), details["output_schema"],
                          details["inputs"])
        details["joint"] = check_joint(details.get("joint"), details.get("key_column"),
                                       details["output_schema"])
        details["dp"] = check_dp(details.get("dp"), details["output_schema"],
                                 details.get("key_column"), details["joint"])
        agg = cls(id)
        agg.trigger(ProductRegistered, ctx, operator_id=ctx.actor.participant_id, **details)
        return agg

    def request_listing(self, ctx: Context,
                        still_authorized: Callable[[], None] = lambda: None) -> None:
        """The owner asks for listing (``still_authorized`` raises if the scenario or the
        grants no longer allow it: checked after this product's own rules)."""
        self._require_owner(ctx)
        self.require_state(["registered"], "request listing")
        still_authorized()
        self.trigger(ProductListingRequested, ctx)

    def decide_listing(self, ctx: Context, *, approve: bool, comment: str,
                       still_authorized: Callable[[], None] = lambda: None,
                       sign: Sign = lambda: None) -> None:
        self.require_state(["listing_requested"], "decide listing")
        if approve:
            still_authorized()
            self.trigger(ProductListed, ctx, comment=comment, signature=sign())
        else:
            self.trigger(ProductListingRejected, ctx, reason=require_text(comment, "comment"),
                         signature=sign())

    def delist(self, ctx: Context, *, reason: str) -> None:
        if ctx.actor.role == "operator":
            self._require_owner(ctx)
        self.require_state(["listed"], "delist")
        self.trigger(ProductDelisted, ctx, reason=require_text(reason, "reason"))

    def require_listed(self) -> None:
        """Raise (409 ``product_delisted`` or ``product_not_listed``) unless the product is
        on the market: what rests on it is refused by its state."""
        if self.state != "listed":
            error = ProductDelistedError if self.state == "delisted" else ProductNotListed
            raise error(f"product {self.id} is {self.state}, not listed", state=self.state)

    def _require_owner(self, ctx: Context) -> None:
        if ctx.actor.participant_id != self.operator_id:
            raise Forbidden(f"only the owning operator manages product {self.id}")

    # -- evolve -----------------------------------------------------------------
    @applies(ProductRegistered)
    def _registered(self, e: ProductRegistered) -> None:
        self.state, self.operator_id, self.scenario_id = "registered", e.operator_id, e.scenario_id
        self.authorization_ids, self.name = list(e.authorization_ids), e.name
        self.product_kind, self.code_sha256 = e.kind, e.code_sha256
        self.inputs = [{"dataset_id": i["dataset_id"], "fields": list(i["fields"])}
                       for i in e.inputs]
        self.price_fen, self.developer_id = e.price_fen, e.developer_id
        self.key_column = e.key_column
        self.sensitive_fields = {d: list(names) for d, names in e.sensitive_fields.items()}
        self.joint = None if e.joint is None else dict(e.joint)
        self.output_schema = e.output_schema
        self.field_grades = {d: {n: dict(g) for n, g in fs.items()}
                             for d, fs in e.field_grades.items()}
        self.dp = None if e.dp is None else dict(e.dp)

    @applies(ProductListingRequested)
    def _requested(self, e: ProductListingRequested) -> None:
        self.state = "listing_requested"

    @applies(ProductListed)
    def _listed(self, e: ProductListed) -> None:
        self.state = "listed"

    @applies(ProductListingRejected)
    def _listing_rejected(self, e: ProductListingRejected) -> None:
        self.state = "registered"

    @applies(ProductDelisted)
    def _delisted(self, e: ProductDelisted) -> None:
        self.state = "delisted"


# -- cross-aggregate checks -------------------------------------------------------
def _own_approved_scenario(uow: UnitOfWork, ctx: Context, scenario_id: str) -> Scenario:
    scenario = uow.get(Scenario, scenario_id)
    if scenario.operator_id != ctx.actor.participant_id:
        raise Forbidden(f"scenario {scenario.id} belongs to another operator")
    scenario.require_approved()
    return scenario


def _live_authorizations(uow: UnitOfWork, scenario_id: str,
                         authorization_ids: Any) -> list[Authorization]:
    ids = require_names(authorization_ids, "authorization_ids")
    auths = [uow.get(Authorization, a) for a in ids]
    for i, auth in enumerate(auths):
        if auth.scenario_id != scenario_id:
            raise InvalidInput(f"authorization_ids[{i}]",
                               f"authorization {auth.id} is for another scenario")
        auth.require_granted("use it for a product")
    return auths


#: the 409 of each code ``coverage_breach`` gives
_COVERAGE_ERRORS: dict[str, type[NoAuthorization]] = {
    "authorization_revoked": AuthorizationRevokedError,
    "authorization_expired": AuthorizationExpiredError, "no_authorization": NoAuthorization}


def check_inputs_covered(inputs: list[dict[str, Any]], auths: list[Authorization],
                         at: str, of: str = "the product") -> None:
    """Raise (409 ``authorization_revoked``, ``authorization_expired``, ``no_authorization``)
    unless each input's dataset and fields are covered by a live authorization."""
    breach = coverage_breach(auths, inputs, at, of)
    if breach is not None:
        raise _COVERAGE_ERRORS[breach[0]](breach[1])


def require_still_authorized(uow: UnitOfWork, product: Product, at: str) -> None:
    """Raise (409) unless the product's scenario is still approved (``scenario_suspended``)
    and its inputs are still covered by live authorizations (``authorization_revoked``,
    ``authorization_expired``); checked again at each step that puts the product to use,
    not only at its registration."""
    uow.get(Scenario, product.scenario_id).require_approved()
    auths = [uow.get(Authorization, a) for a in product.authorization_ids]
    check_inputs_covered(product.inputs, auths, at, f"product {product.id}")


def _check_allowed_fields(items: list[dict[str, Any]], auths: list[Authorization]) -> None:
    """An authorization's usage policy may restrict the columns (``allowed_fields``): a
    product reading another field of one of its datasets is refused, 422 naming the input."""
    for i, item in enumerate(items):
        for auth in auths:
            allowed = auth.usage_policy.get("allowed_fields")
            if allowed is None or auth.granted_fields(item["dataset_id"]) is None:
                continue
            extra = [f for f in item["fields"] if f not in allowed]
            if extra:
                raise InvalidInput(f"inputs[{i}].fields", f"{extra!r} are not among the "
                                   f"allowed_fields of authorization {auth.id}")


def _check_developer(uow: UnitOfWork, developer_id: str | None) -> None:
    if developer_id is None:
        return
    developer = uow.get(Participant, developer_id)
    if developer.role != "developer":
        raise InvalidInput("developer_id", f"participant {developer_id} is not a developer")
    developer.require_admitted()


def _checked_digest(code: Any, code_sha256: str | None) -> str:
    digest = code_digest(require_text(code, "code"))
    if code_sha256 is not None and code_sha256.lower() != digest:
        raise InvalidInput("code_sha256", f"does not match the code (its SHA-256 is {digest})")
    return digest


# -- use cases ------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ProductDraft:
    """What an operator registers: the product's scenario, authorizations, code and terms."""

    scenario_id: str
    authorization_ids: list[str]
    name: str
    kind: str
    description: str
    code: str
    inputs: list[dict[str, Any]]
    output_schema: dict[str, Any]
    quality_report: str
    price_fen: int
    developer_id: str | None = None
    code_sha256: str | None = None
    #: the output column a query may name (None: the product takes no query)
    key_column: str | None = None
    #: the joint output (``check_joint``); None: plain mode
    joint: dict[str, Any] | None = None
    #: the differential privacy of an aggregate output; None: no noise
    dp: dict[str, Any] | None = None


def joint_providers(uow: UnitOfWork, product: Product | list[dict[str, Any]]) -> list[str]:
    """The providers of a joint computation of ``product`` (or of those inputs): the
    distinct owners of its input datasets, in input order (first appearance); the first is
    the layout provider."""
    inputs = product.inputs if isinstance(product, Product) else product
    owners = [uow.get(Dataset, i["dataset_id"]).owner_id for i in inputs]
    return list(dict.fromkeys(owners))


def _sensitive_fields(uow: UnitOfWork, inputs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each input dataset's current fields marked sensitive or personal, sorted."""
    return {i["dataset_id"]: uow.get(Dataset, i["dataset_id"]).protected_field_names()
            for i in inputs}


def _field_grades(uow: UnitOfWork,
                  inputs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, str]]]:
    """Each input dataset's current fields with their grade and kind."""
    return {i["dataset_id"]: uow.get(Dataset, i["dataset_id"]).field_grades() for i in inputs}


def register_product(uow: UnitOfWork, ctx: Context, d: ProductDraft) -> dict[str, str]:
    """An operator registers a product over inputs covered by live authorizations; the
    domain records which of their datasets' fields are sensitive (never the client)."""
    permit(ctx.actor, "product.registration")
    _own_approved_scenario(uow, ctx, d.scenario_id)
    auths = _live_authorizations(uow, d.scenario_id, d.authorization_ids)
    items = validate_selection(d.inputs, "inputs")
    check_inputs_covered(items, auths, ctx.at)
    _check_allowed_fields(items, auths)
    require_dp_under_budget(d.dp, auths, [i["dataset_id"] for i in items])
    _check_developer(uow, d.developer_id)
    details = {**asdict(d), "code_sha256": _checked_digest(d.code, d.code_sha256),
               "inputs": items, "sensitive_fields": _sensitive_fields(uow, items),
               "field_grades": _field_grades(uow, items)}
    agg = Product.register(new_id(), ctx, details=details)
    if agg.joint is not None and len(joint_providers(uow, items)) < agg.joint["min_providers"]:
        raise InvalidInput("joint.min_providers", f"the inputs belong to "
                           f"{len(joint_providers(uow, items))} provider(s), fewer than "
                           f"min_providers {agg.joint['min_providers']}")
    uow.add(agg)
    return {"product_id": agg.id, "state": agg.state, "code_sha256": agg.code_sha256}


def request_listing(uow: UnitOfWork, ctx: Context, product_id: str) -> dict[str, str]:
    """The owning operator asks for the product to be listed (its scenario still approved,
    its inputs still authorized)."""
    permit(ctx.actor, "product.listing_request")
    agg = uow.get(Product, product_id)
    agg.request_listing(ctx, lambda: require_still_authorized(uow, agg, ctx.at))
    return {"product_id": agg.id, "state": agg.state}


def decide_listing(uow: UnitOfWork, ctx: Context, product_id: str, *, approve: bool,
                   comment: str, signed: Signed | None = None) -> dict[str, str]:
    """The platform lists the product (上架: its scenario still approved, its inputs still
    authorized) or sends it back to registered (a signed decision)."""
    permit(ctx.actor, "product.listing_decision")
    agg = uow.get(Product, product_id)
    sign = signature_check(uow, ctx, "product.listing_decision", agg, signed)
    agg.decide_listing(ctx, approve=approve, comment=comment,
                       still_authorized=lambda: require_still_authorized(uow, agg, ctx.at),
                       sign=sign)
    return {"product_id": agg.id, "state": agg.state}


def delist_product(uow: UnitOfWork, ctx: Context, product_id: str, *,
                   reason: str) -> dict[str, str]:
    """The platform, the owning operator or the regulator delists the product (下架, terminal)."""
    permit(ctx.actor, "product.delisting")
    agg = uow.get(Product, product_id)
    agg.delist(ctx, reason=reason)
    return {"product_id": agg.id, "state": agg.state}
