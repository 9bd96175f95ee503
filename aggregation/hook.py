"""What the masked-part route tells the aggregation node: a joint's parts are all in.

The route (``api/routes/joint.py``) calls ``on_parts_complete`` once the post of a joint's
last part has committed, if the app holds an aggregator (``runtime/build.py`` wires
``aggregation/service.py``'s). Without one the parts wait, stored; the aggregator's own
sweep finishes such joints when it runs.
"""

from __future__ import annotations

from typing import Protocol


class PartsComplete(Protocol):
    """The aggregation node, as the masked-part route sees it."""

    def on_parts_complete(self, joint_id: str) -> None:
        """Every part of joint ``joint_id`` is recorded: aggregate it. Called on the event
        loop: it must return at once (the work runs off the loop)."""
