"""What the demander is served of a posted result: the result watermarked for its delivery
(privacy/watermark.py): the same rows and strings, each integer moved by at most 1 (its
lowest bit), and only one of magnitude >= 16; the digests the log records for it."""

from __future__ import annotations

from typing import Any

from privacy.watermark import HIGH_HI, LOW_HI
from tests.e2e.conftest import World


def _cell(served: Any, posted: Any) -> bool:
    if type(posted) is int and type(served) is int:
        hi = posted >> 1
        return served >> 1 == hi and (served == posted or hi >= HIGH_HI or hi < LOW_HI)
    return served == posted


def watermarked(served: Any, posted: Any) -> bool:
    """Whether ``served`` is ``posted`` up to the watermark (rows of the same columns)."""
    if isinstance(posted, list) and isinstance(served, list):
        return len(served) == len(posted) and all(
            watermarked(s, p) for s, p in zip(served, posted, strict=True))
    if isinstance(posted, dict) and isinstance(served, dict):
        return set(served) == set(posted) and all(_cell(served[k], posted[k]) for k in posted)
    return _cell(served, posted)


def delivery_made(world: World, cid: str) -> dict[str, Any]:
    """The payload of delivery ``cid``'s ``delivery.made`` (read as the regulator)."""
    page = world.call("GET", "/ledger/events?limit=1000", world.regulator)["events"]
    made = [e["payload"] for e in page
            if e["originator_id"] == cid and e["type"] == "delivery.made"]
    assert len(made) == 1, made
    return dict(made[0])


def kept_digests(world: World, cid: str) -> list[str]:
    """The digests the results store keeps for a delivery: the posted result's and the
    watermarked copy's (one, when nothing was markable), sorted."""
    made = delivery_made(world, cid)
    return sorted({made["result_sha256"], made["delivered_sha256"]})
