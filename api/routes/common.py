"""Shapes shared by every router: command answers and not-found."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from domain.application import CommandResult
from domain.errors import NotFound


class CommandAnswer(BaseModel):
    """What every command returns: the ids it touched and the seqs it wrote."""

    model_config = {"extra": "allow"}

    seqs: list[int] = Field(description="global sequence numbers of the events written")


def answer(result: CommandResult, status: int = 200, **extra: Any) -> JSONResponse:
    """The JSON answer of a command; a replayed Idempotency-Key says so in a header."""
    headers = {"Idempotent-Replayed": "true"} if result.replayed else {}
    return JSONResponse({**result.body, **extra}, status_code=status, headers=headers)


def found(row: dict[str, Any] | None, kind: str, id: str) -> dict[str, Any]:
    """The row, or 404 (also for rows the caller may not see: never the data)."""
    if row is None:
        raise NotFound(f"no {kind} {id}", kind=kind, id=id)
    return row


NAME = Field(min_length=1, max_length=200)
TEXT = Field(default="", max_length=5000)
