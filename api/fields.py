"""Field types shared by the routers' request bodies."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, Field, StrictInt

from domain.policy import CIRCULATION_MODES


def no_nul(value: Any) -> Any:
    """Refuse NUL characters anywhere in ``value``: PostgreSQL text cannot hold them, and an
    event the read models cannot store would stop every projection behind it."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    if isinstance(value, dict):
        for key, item in value.items():
            no_nul(key)
            no_nul(item)
    elif isinstance(value, list):
        for item in value:
            no_nul(item)
    return value


NoNul = AfterValidator(no_nul)
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

#: the field of a required name, and of an optional free text
NAME = Field(min_length=1, max_length=200)
TEXT = Field(default="", max_length=5000)
