"""The watermark put on a result before it is stored for its delivery (水印, docs/PRIVACY.md).

``POST /computations/{id}/result`` calls ``watermark_result`` once the reporter is checked
and before anything is stored: the result is marked for this delivery (the delivery id is
the computation id) under the platform's watermark key, its product's key column left
alone, and both the posted bytes and the marked copy are stored; ``delivery.made`` records
the marked copy's SHA-256, the only bytes ``/deliveries/{id}/result`` and ``/view`` serve.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from api.deps import Services
from delivery import results
from domain.computation import Computation, Delivered
from domain.product import Product
from privacy.watermark import load_or_create_key, mark_rows


@lru_cache(maxsize=8)
def platform_key(data_dir: Path) -> bytes:
    """The platform's watermark key in ``data_dir`` (made at first use, mode 0600)."""
    return load_or_create_key(data_dir)


def _key_column(container: Services, computation_id: str) -> str | None:
    """The key column of the computation's product (a demander joins on it: never marked)."""
    store = container.store
    comp = Computation.replay(computation_id, store.load(computation_id))
    return Product.replay(comp.product_id, store.load(comp.product_id)).key_column


def watermark_result(container: Services, computation_id: str, result: Any,
                     content: bytes) -> tuple[Delivered, bytes]:
    """What delivery ``computation_id`` serves of ``result`` (posted as ``content``): the
    ``Delivered`` to record and the bytes to store for it (``content`` itself when nothing
    is markable, with the reason). Blocking: it reads the store."""
    key = platform_key(Path(container.settings.data_dir).resolve())
    rows, marking = mark_rows(result, key, computation_id,
                              key_column=_key_column(container, computation_id))
    if not marking.cells:
        return Delivered(hashlib.sha256(content).hexdigest(), None, marking.reason), content
    marked, digest = results.encode(rows)
    return Delivered(digest, marking.record()), marked
