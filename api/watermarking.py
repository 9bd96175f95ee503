"""The watermark put on a result before it is served (水印, docs/PRIVACY.md).

``POST /computations/{id}/result`` calls ``watermark_result`` once the reporter is checked
and before anything is stored: the result is marked for this delivery (the delivery id is
the computation id) under the platform's watermark key, and both the posted bytes and the
marked copy are stored; ``delivery.made`` records the marked copy's SHA-256, the bytes
``/deliveries/{id}/result`` and ``/view`` serve the demander. Any other reader (the
contract's operator, the regulator) is served ``reader_copy``: the posted result marked for
that delivery *and that reader* (``privacy.watermark.reader_mark``), made at each access (it
is deterministic) and named by its SHA-256 on ``delivery.accessed``, so a copy it leaks is
traced to it, not to the demander.

Never marked: the product's key column (a demander joins on it) and the columns the masking
generalised or that hold identifiers (graded L3/L4 or of an identifier kind in the product's
``field_grades``: a mark would show against the rounding, or corrupt an identifier).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Engine, select

from api.deps import Services
from core.masking import column_grades
from delivery import results
from domain.computation import Computation, Delivered
from domain.errors import WrongState
from domain.product import Product
from privacy.watermark import KEY_FILE, key_id, load_or_create_key, mark_rows, reader_mark
from projections.computations import deliveries

#: the grades whose integer columns the masking changes (L3 generalised, L4 withheld)
MASKED_GRADES = ("L3", "L4")


@lru_cache(maxsize=8)
def platform_key(data_dir: Path) -> bytes:
    """The platform's watermark key in ``data_dir`` (made at first use, mode 0600)."""
    return load_or_create_key(data_dir)


class Unmarked(NamedTuple):
    """What the product says is never to be marked, and the output schema's column types."""

    key_column: str | None
    skip: frozenset[str]
    output_schema: Any


def _unmarked(container: Services, computation_id: str) -> Unmarked:
    """The computation's product's key column, masked or identifier columns, output schema."""
    store = container.store
    comp = Computation.replay(computation_id, store.load(computation_id))
    product = Product.replay(comp.product_id, store.load(comp.product_id))
    skip = frozenset(name for name, g in column_grades(product.field_grades).items()
                     if g["grade"] in MASKED_GRADES or g["kind"] != "none")
    return Unmarked(product.key_column, skip, product.output_schema)


def _mark(container: Services, computation_id: str, result: Any,
          reader_id: str | None) -> tuple[Any, Any]:
    key = platform_key(Path(container.settings.data_dir).resolve())
    u = _unmarked(container, computation_id)
    return mark_rows(result, key, reader_mark(computation_id, reader_id),
                     key_column=u.key_column, skip=u.skip, output_schema=u.output_schema)


def watermark_result(container: Services, computation_id: str, result: Any,
                     content: bytes) -> tuple[Delivered, bytes]:
    """What delivery ``computation_id`` serves its demander of ``result`` (posted as
    ``content``): the ``Delivered`` to record and the bytes to store for it (``content``
    itself when nothing is markable, with the reason). Blocking: it reads the store."""
    rows, marking = _mark(container, computation_id, result, None)
    if not marking.cells:
        return Delivered(hashlib.sha256(content).hexdigest(), None, marking.reason), content
    marked, digest = results.encode(rows)
    return Delivered(digest, marking.record()), marked


def reader_copy(container: Services, delivery: dict[str, Any], reader_id: str) -> bytes:
    """The copy of ``delivery`` (its read-model row) served to ``reader_id``, a reader
    other than its demander: the posted result marked for that delivery and that reader
    (the posted bytes when the demander's copy is unmarked). Blocking."""
    if delivery.get("watermark") is None:
        return _stored(container, delivery["id"], delivery["delivered_sha256"])
    posted = _stored(container, delivery["id"], delivery["result_sha256"])
    rows, marking = _mark(container, delivery["id"], json.loads(posted), reader_id)
    return results.encode(rows)[0] if marking.cells else posted


def _stored(container: Services, delivery_id: str, sha256: str) -> bytes:
    content = results.get(container.engine, delivery_id, sha256)
    if content is None:  # only for a delivery recorded before the bytes were stored first
        raise WrongState(f"the result of delivery {delivery_id} is not stored yet")
    return content


def key_mismatch(engine: Engine, data_dir: Path) -> str | None:
    """Why ``serve`` must not start with the watermark key of ``data_dir`` (None: it may):
    watermarked deliveries on the log name key ids (``delivery.made``'s ``watermark``) and
    the key there is absent (serve would make a fresh one) or is none of them (another
    host's): deliveries it marks would trace under a key the others do not hold."""
    with engine.connect() as conn:
        ids = {(w or {}).get("key_id") for (w,) in conn.execute(
            select(deliveries.c.watermark).where(deliveries.c.watermark.is_not(None)))}
    ids.discard(None)
    if not ids:
        return None
    if not (Path(data_dir) / KEY_FILE).exists():
        return (f"no watermark key in {data_dir}, but the log's deliveries were marked under "
                f"key id(s) {', '.join(sorted(ids))}: copy {KEY_FILE} from the host that "
                "marked them (0600) before serving")
    own = key_id(platform_key(Path(data_dir).resolve()))
    if own in ids:
        return None
    return (f"the watermark key in {data_dir} (key id {own}) marked none of the log's "
            f"deliveries (key id(s) {', '.join(sorted(ids))}): copy {KEY_FILE} from the host "
            "that marked them")
