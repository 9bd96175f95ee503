"""What a delivery records (交付): ``delivery.made``, the bytes the demander is served and
their watermark (水印, docs/PRIVACY.md).

The server never serves the bytes the compute node posted: it watermarks the result for the
delivery (``privacy/watermark.py``, keyed by the platform and bound to the delivery id) and
records that copy's SHA-256 (``delivered_sha256``) with what was marked (``watermark``), or
null and why nothing was (``watermark_reason``). ``Computation.succeed`` triggers the event
with a ``Delivered``; this module holds it so that ``domain/computation.py`` stays small.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from core.event import Event
from domain.errors import InvalidInput

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
#: why a version-1 delivery carries no watermark
UNMARKED_V1 = "delivered before watermarks (delivery.made v1)"
#: why a delivery recorded without a ``Delivered`` carries none
UNMARKED = "recorded without the platform's watermark (the result's bytes as posted)"


def require_sha256(value: Any, field: str) -> str:
    """A lower-case hex SHA-256 digest (upper case is folded)."""
    if not isinstance(value, str) or not SHA256_HEX.fullmatch(value.lower()):
        raise InvalidInput(field, "must be a hex SHA-256 digest (64 hex digits)")
    return value.lower()


@dataclass(frozen=True, kw_only=True)
class DeliveryMade(Event):
    """The result (by its SHA-256) was delivered to the demander (交付): the bytes the
    demander is served are ``delivered_sha256``'s, the result watermarked for this delivery
    (``watermark``: ``{"scheme", "cells"}``; null when nothing was marked, and
    ``watermark_reason`` says why; docs/PRIVACY.md)."""

    type_name = "delivery.made"
    class_version = 2
    demander_id: str
    result_sha256: str
    delivered_sha256: str
    watermark: dict[str, Any] | None
    watermark_reason: str | None = None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 delivered the result's bytes as posted: nothing was marked."""
        state["delivered_sha256"] = state["result_sha256"]
        state["watermark"] = None
        state["watermark_reason"] = UNMARKED_V1


class Delivered(NamedTuple):
    """What the demander is handed: the SHA-256 of the bytes served (the watermarked
    copy's), the watermark (None: nothing marked) and, then, why."""

    sha256: str
    watermark: dict[str, Any] | None
    reason: str | None = None

    def fields(self, result_sha256: str) -> dict[str, Any]:
        """The fields of ``delivery.made`` for the result ``result_sha256``."""
        if self.watermark is not None and not isinstance(self.watermark, dict):
            raise InvalidInput("watermark", "must be an object or null")
        return {"result_sha256": result_sha256,
                "delivered_sha256": require_sha256(self.sha256, "delivered_sha256"),
                "watermark": self.watermark,
                "watermark_reason": None if self.watermark else self.reason or UNMARKED}

    @classmethod
    def unmarked(cls, result_sha256: str) -> Delivered:
        """The result's own bytes, served as posted (a caller that did not mark them)."""
        return cls(result_sha256, None, UNMARKED)
