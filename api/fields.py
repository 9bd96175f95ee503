"""Field types shared by the routers' request bodies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainValidator,
    StrictInt,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from core.decision import SignedDecision
from domain.policy import CIRCULATION_MODES
from domain.signing import Signed


def no_nul(value: Any) -> Any:
    """Refuse NUL characters anywhere in ``value``: PostgreSQL text cannot hold them, and an
    event the read models cannot store would stop every projection behind it."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and "\x00" in item:
            raise ValueError("must not contain NUL (\\u0000) characters")
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


NoNul = AfterValidator(no_nul)

#: how deep a free-form JSON value (an output schema, a usage policy, a query value, a
#: result) may nest objects and lists: a stored value must always read back (pydantic's
#: encoder stops at 255 levels), and no real schema or policy comes near 32
MAX_JSON_DEPTH = 32
#: the most bytes of a free-form JSON value stored in an event (its compact JSON text)
MAX_JSON_BYTES = 64 * 1024


def json_depth(value: Any, stop: int) -> int:
    """The nesting of ``value`` (a scalar 0, ``[]`` 1, ``[[]]`` 2, …), counted up to
    ``stop`` + 1 at most: iterative, so any depth is measured without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if deepest > stop:
                return deepest
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict)
                                                  else item))
    return deepest


@dataclass(frozen=True)
class JsonBounds:
    """Field metadata: a free-form JSON value at most ``max_depth`` levels deep and (unless
    None) ``max_bytes`` bytes of compact JSON; otherwise 422 naming the field and the limit.
    The OpenAPI document states both (``x-max-depth``, ``x-max-bytes``)."""

    max_depth: int = MAX_JSON_DEPTH
    max_bytes: int | None = MAX_JSON_BYTES

    def check(self, value: Any) -> Any:
        if json_depth(value, self.max_depth) > self.max_depth:
            raise ValueError(f"nests objects and lists deeper than the depth limit of "
                             f"{self.max_depth} levels")
        if self.max_bytes is not None:
            size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                                  default=str).encode("utf-8", "surrogatepass"))
            if size > self.max_bytes:
                raise ValueError(f"is {size} bytes of JSON, over the limit of "
                                 f"{self.max_bytes} bytes")
        return value

    def __get_pydantic_core_schema__(self, source: Any,
                                     handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler.resolve_ref_schema(handler(schema))
        json_schema["x-max-depth"] = self.max_depth
        if self.max_bytes is not None:
            json_schema["x-max-bytes"] = self.max_bytes
        return json_schema


#: a free-form JSON object stored in an event: bounded, no NUL (bounded first: the NUL
#: check walks the whole value)
JsonObject = Annotated[dict[str, Any], JsonBounds(), NoNul]
#: a free-form JSON value of a request, bounded in depth (its size is the body's limit)
JsonValue = Annotated[Any, JsonBounds(max_bytes=None)]
Id = Annotated[str, Field(min_length=1, max_length=200), NoNul]
Name = Annotated[str, Field(min_length=1, max_length=200), NoNul]
Text = Annotated[str, Field(max_length=5000), NoNul]
Reason = Annotated[str, Field(min_length=1, max_length=5000), NoNul]
#: the largest integer every JSON client reads exactly (2**53 - 1); also fits a BIGINT
MAX_FEN = 2**53 - 1
Money = Annotated[StrictInt, Field(ge=0, le=MAX_FEN,
                                   description="integer fen (分), never a float")]
CirculationMode = Literal["plaintext", "ciphertext", "trusted_exchange"]
assert get_args(CirculationMode) == CIRCULATION_MODES


def _exact_number(value: Any) -> Any:
    """An integer or a text (checked as a decimal by the domain: ``positive_decimal``); a
    float is refused here, naming the field: it has no exact canonical form."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(  # noqa: TRY004 - pydantic reports a ValueError, naming the field
            'must be decimal text such as "0.5" or an integer, never a float')
    return value


#: an amount of privacy loss ε or a sensitivity Δ (domain.policy.positive_decimal): decimal
#: text or an integer, never a float (the log and the signed statements hold none)
Epsilon = Annotated[int | str, PlainValidator(_exact_number), WithJsonSchema({
    "anyOf": [{"type": "integer", "minimum": 1},
              {"type": "string", "pattern": r"^[0-9]{1,15}(\.[0-9]{1,6})?$"}],
    "description": "a number > 0 as decimal text such as \"0.5\" (at most 6 decimal "
                   "places) or an integer; never a float"})]

#: the field of a required name, and of an optional free text
NAME = Field(min_length=1, max_length=200)
TEXT = Field(default="", max_length=5000)


class DecisionSignature(BaseModel):
    """A decision's signature (core.decision): by which registered key, on which version of
    the aggregate decided on, and its value."""

    model_config = ConfigDict(extra="forbid")

    key_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9:_-]+$",
                        description="the id of the member's registered key (ed25519:…)")
    aggregate_version: StrictInt = Field(
        ge=0, le=MAX_FEN, description="the version of the aggregate decided on when signing "
        "(its view's version); 409 stale_decision if it moved on: sign again")
    value: str = Field(min_length=1, max_length=200,
                       description="base64 of the 64-byte Ed25519 signature of the statement")


class SignedBody(BaseModel):
    """A signed decision's body: its own fields and a ``signature`` over the statement of
    the command, the aggregate and its version, the member and the body as sent without the
    signature (core.decision.statement; see docs/SIGNING.md)."""

    signature: DecisionSignature | None = Field(
        default=None, description="required unless the server allows unsigned decisions "
        "(DATALEDGER_ALLOW_UNSIGNED_DECISIONS, development only): 403 signature_required, "
        "signature_invalid or key_revoked otherwise, and nothing is written")

    def signed(self) -> Signed:
        """The signature and the body it signs: the fields as sent, without the signature."""
        sig = self.signature
        return Signed(None if sig is None else SignedDecision(sig.key_id, sig.aggregate_version,
                                                              sig.value),
                      self.model_dump(mode="json", exclude={"signature"}, exclude_unset=True))
