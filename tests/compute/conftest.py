"""The compute tests' shared fixture: one ledger server and one datasite per module."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from tests.compute.ledger import running_world


@pytest.fixture(scope="module")
def w(request: pytest.FixtureRequest,
      tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """A ledger server and :func:`tests.compute.ledger.world` on it, for one module's tests;
    its datasite is named by the module's ``SITE`` (``tax-bureau-node`` if it sets none)."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    site = getattr(request.module, "SITE", "tax-bureau-node")
    with running_world(tmp_path_factory.mktemp(module), site) as made:
        yield made
