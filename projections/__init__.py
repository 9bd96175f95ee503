"""Read models built from the log; queries read these only, never aggregates."""

from __future__ import annotations

from projections.base import Projection


def all_projections() -> list[Projection]:
    """Every read model, in the order they are applied (scenarios read datasets' owners)."""
    from projections.authorizations import AuthorizationsProjection
    from projections.computations import ComputationsProjection
    from projections.datasets import DatasetsProjection
    from projections.forensics import ForensicsProjection
    from projections.joint import JointProjection
    from projections.orders import OrdersProjection
    from projections.participants import ParticipantsProjection
    from projections.privacy_budget import PrivacyBudgetProjection
    from projections.products import ProductsProjection
    from projections.scenarios import ScenariosProjection
    from projections.usage import UsageProjection

    return [ParticipantsProjection(), DatasetsProjection(), ScenariosProjection(),
            AuthorizationsProjection(), ProductsProjection(), OrdersProjection(),
            ComputationsProjection(), UsageProjection(), JointProjection(), ForensicsProjection(),
            PrivacyBudgetProjection()]
