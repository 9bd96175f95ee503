"""The compute-venv half of ``dataledger bench joint``: each provider's work at its datasite.

``.venv-compute/bin/python -m bench.joint.datasites CONFIG.json`` (started by
``bench.joint.suite``; pandas is imported here only). For each provider it builds its
synthetic private table (``bench.joint.workload``) and loads the product's registered code;
then, ``repetitions`` times (after one warm-up), for each provider, both modes, in
alternating order:

* **clear**: the product's function on the provider's table (pandas), its output as the
  ledger takes it (``compute_nodes.result_rows.to_json_result``) and the bytes a result
  post carries (canonical JSON);
* **joint**: the same function, then what the compute node does with its output, with the
  node's own functions (``compute_nodes.joint``): its rows (``joint_rows``), the layout
  (``layout_of`` at the layout provider; ``check_layout`` at the others, as fetched; its
  sha256), the vector over the layout (``vector``), ``core.secagg.to_fixed``,
  ``core.secagg.mask`` with the provider's X25519 key and its peers' public keys, the part
  stored (``PartStore.save``, 0600, before its post) and the post's body (base64, digest).

Each step is timed on its own. The last repetition's clear outputs, masked parts and layout
are written to the work directory, for the aggregation half (server venv) and the check
that the joint sum equals the clear sum. The result is one JSON line after ``RESULT_MARK``.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.joint.workload import (
    KEY_COLUMN,
    RESULT_MARK,
    VALUE_COLUMNS,
    Sizes,
    provider_codes,
    table_columns,
    view_of,
)
from core import secagg
from core.canonical import canonical_bytes
from demo.enterprises import CODE, FUNCTION


class Provider:
    """One provider's datasite as the bench runs it: its table, key and the product."""

    def __init__(self, k: int, sizes: Sizes, function: Callable[[Any], Any],
                 work: Path) -> None:
        import pandas as pd  # type: ignore[import-untyped]

        from compute_nodes.joint import PartStore

        self.id = f"provider-{k}"
        self.k = k
        self.view = view_of(k)
        self.table = pd.DataFrame(table_columns(self.view, provider_codes(sizes, k),
                                                sizes.seed + k))
        self.key = secagg.new_node_key()
        self.function = function
        self.parts = PartStore(work / "parts" / self.id)

    def output(self) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """The product run and its output as the ledger takes it, timed."""
        from compute_nodes.result_rows import to_json_result

        t0 = time.perf_counter()
        produced = self.function(self.table)
        t1 = time.perf_counter()
        value, _rows = to_json_result(produced)
        return value, {"product_s": t1 - t0, "output_s": time.perf_counter() - t1}

    def clear(self) -> tuple[dict[str, float], bytes]:
        """Clear mode: the output and the bytes of its result post."""
        value, steps = self.output()
        t0 = time.perf_counter()
        body = canonical_bytes(value)
        steps["bytes_s"] = time.perf_counter() - t0
        return steps, body

    def joint(self, execution_id: str, providers: list[str], public: dict[str, str],
              layout: list[str] | None) -> tuple[dict[str, float], secagg.MaskedPart,
                                                  list[str]]:
        """Joint mode, with the compute node's own functions (``compute_nodes.joint``): the
        product, its rows, the layout (made by the layout provider; checked, as fetched, by
        the others), the vector, fixed point, the mask, the part stored (0600) before its
        post and the post's body."""
        from compute_nodes import joint as node

        t0 = time.perf_counter()
        produced = self.function(self.table)
        t1 = time.perf_counter()
        rows = node.joint_rows(produced)
        t2 = time.perf_counter()
        if layout is None:  # the layout provider makes it from its own output
            layout, _unusable = node.layout_of(rows, KEY_COLUMN)
        else:
            node.check_layout(layout)
        layout_sha256 = node.layout_sha256(layout)
        t3 = time.perf_counter()
        laid = node.vector(rows, layout, KEY_COLUMN, VALUE_COLUMNS)
        t4 = time.perf_counter()
        fixed = secagg.to_fixed(laid.values)
        t5 = time.perf_counter()
        part = secagg.mask(self.key, execution_id, self.id, providers, public, fixed,
                           layout_sha256=layout_sha256)
        t6 = time.perf_counter()
        self.parts.save(part)
        post = {"header": dict(part.header), "body": base64.b64encode(part.body).decode(),
                "digest": part.digest()}
        t7 = time.perf_counter()
        del post
        return ({"product_s": t1 - t0, "output_s": t2 - t1, "layout_s": t3 - t2,
                 "vector_s": t4 - t3, "to_fixed_s": t5 - t4, "mask_s": t6 - t5,
                 "bytes_s": t7 - t6}, part, layout)


def repetition(sites: list[Provider], public: dict[str, str],
               joint_first: bool) -> dict[str, Any]:
    """Both modes once for every provider; their timings, outputs, parts and layout."""
    execution_id = str(uuid.uuid4())  # one execution per masking: masks never reused
    providers = [p.id for p in sites]
    times: dict[str, dict[str, dict[str, float]]] = {}
    bodies: dict[str, bytes] = {}
    parts: dict[str, secagg.MaskedPart] = {}
    layout: list[str] | None = None
    for site in sites:
        runs: dict[str, dict[str, float]] = {}
        for mode in (("joint", "clear") if joint_first else ("clear", "joint")):
            if mode == "clear":
                runs["clear"], bodies[site.id] = site.clear()
            else:
                runs["joint"], parts[site.id], layout = site.joint(
                    execution_id, providers, public, layout)
        times[site.id] = runs
    assert layout is not None
    return {"times": times, "bodies": bodies, "parts": parts, "layout": layout,
            "execution_id": execution_id}


def main(config_path: str) -> int:
    cfg = json.loads(Path(config_path).read_text())
    sizes = Sizes(**cfg["sizes"])
    work = Path(cfg["work"])
    namespace: dict[str, Any] = {}
    exec(compile(CODE, "<product code>", "exec"), namespace)  # noqa: S102 - the bench's code
    t0 = time.perf_counter()
    sites = [Provider(k, sizes, namespace[FUNCTION], work) for k in range(sizes.providers)]
    made_s = time.perf_counter() - t0
    public = {p.id: secagg.public_key_text(p.key.public_key()) for p in sites}
    repetition(sites, public, joint_first=True)  # warm-up, not counted
    reps = []
    last: dict[str, Any] = {}
    for r in range(sizes.repetitions):
        last = repetition(sites, public, joint_first=r % 2 == 0)
        reps.append(last["times"])
    for site in sites:
        (work / f"{site.id}.clear.json").write_bytes(last["bodies"][site.id])
        part = last["parts"][site.id]
        (work / f"{site.id}.part.json").write_text(json.dumps(dict(part.header)))
        (work / f"{site.id}.part.body").write_bytes(part.body)
    (work / "layout.json").write_text(json.dumps(last["layout"]))
    result = {"providers": [p.id for p in sites], "views": [p.view for p in sites],
              "rows": {p.id: len(p.table) for p in sites}, "layout_length": len(last["layout"]),
              "execution_id": last["execution_id"], "tables_made_s": made_s,
              "repetitions": reps, "part_bytes": len(last["parts"][sites[0].id].body),
              "clear_bytes": {p.id: len(last["bodies"][p.id]) for p in sites}}
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
