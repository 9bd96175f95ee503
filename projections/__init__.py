"""Read models built from the log; queries read these only, never aggregates."""

from __future__ import annotations

from projections.base import Projection


def all_projections() -> list[Projection]:
    """Every read model, in the order they are applied."""
    from projections.participants import ParticipantsProjection

    return [ParticipantsProjection()]
