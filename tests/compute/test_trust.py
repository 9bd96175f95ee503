"""The node's trust (``compute_nodes/trust.py``): only the keys of its trust file count.

A checkpoint re-signed with a log key the file does not hold (the operator's attack of
issue 12), or co-signed by witnesses it does not hold, is refused; a node without a trust
file does not start. Runs inside the compute venv only (no PySyft is imported here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chain.bls import WitnessKey, cosign
from chain.checkpoint import Checkpoint, sign_checkpoint, time_extension
from chain.note import Signer, generate_ed25519
from chain.trust import trust_document
from compute_nodes.trust import Trust, TrustError, Verifier

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "dataledger.local/log"


class _Platform:
    """Serves one checkpoint view, as ``GET /ledger/checkpoints/latest?anchored=true``."""

    def __init__(self, view: dict[str, Any]) -> None:
        self.view = view

    def anchored_checkpoint(self) -> dict[str, Any]:
        return self.view


def _checkpoint(log: Signer, witnesses: list[WitnessKey], size: int = 10) -> dict[str, Any]:
    checkpoint = Checkpoint(ORIGIN, size, bytes(range(32)),
                            (time_extension(datetime(2026, 1, 1, tzinfo=UTC)),))
    note = sign_checkpoint(checkpoint, [log])
    cosigned = note + "".join(cosign(checkpoint.marshal(), w) for w in witnesses)
    return {"size": size, "cosigned": cosigned}


@pytest.fixture
def keys() -> tuple[Signer, list[WitnessKey], Trust]:
    skey, vkey = generate_ed25519(ORIGIN)
    witnesses = [WitnessKey.generate(f"dataledger.local/{n}") for n in ("regulator", "consortium")]
    trust = Trust.from_json(trust_document(ORIGIN, vkey, 2,
                                           [w.published() for w in witnesses]))
    return Signer.from_key(skey), witnesses, trust


def test_a_checkpoint_of_the_trusted_keys_is_anchored(
        keys: tuple[Signer, list[WitnessKey], Trust]) -> None:
    log, witnesses, trust = keys
    verifier = Verifier(trust, _Platform(_checkpoint(log, witnesses)))  # type: ignore[arg-type]
    anchored = verifier.anchored(7)
    assert anchored is not None and anchored.size == 10


def test_a_checkpoint_re_signed_with_a_new_log_key_is_refused(
        keys: tuple[Signer, list[WitnessKey], Trust]) -> None:
    _, witnesses, trust = keys
    new_log = Signer.from_key(generate_ed25519(ORIGIN)[0])  # the same origin, another key
    verifier = Verifier(trust, _Platform(_checkpoint(new_log, witnesses)))  # type: ignore[arg-type]
    with pytest.raises(TrustError, match="checkpoint refused"):
        verifier.anchored(7)


def test_a_checkpoint_co_signed_by_witnesses_not_in_the_trust_file_is_refused(
        keys: tuple[Signer, list[WitnessKey], Trust]) -> None:
    log, witnesses, trust = keys
    others = [WitnessKey.generate(w.name) for w in witnesses]  # the witnesses' state remade
    verifier = Verifier(trust, _Platform(_checkpoint(log, others)))  # type: ignore[arg-type]
    with pytest.raises(TrustError, match="0 trusted co-signature"):
        verifier.anchored(7)


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("DATALEDGER_NODE_")}
    full.update(PYTHONPATH=str(ROOT), DATALEDGER_NODE_PLATFORM_URL="http://127.0.0.1:9",
                DATALEDGER_NODE_TOKEN="dl_not_used", **env)
    return subprocess.run([sys.executable, "-m", "compute_nodes.cli", *args], env=full,
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_a_standalone_node_without_a_trust_file_is_a_usage_error(tmp_path: Path) -> None:
    out = _cli("run", "--once", DATALEDGER_NODE_DATA_DIR=str(tmp_path))
    assert out.returncode == 2 and "--trust FILE" in out.stderr, out.stderr
    bad = tmp_path / "trust.json"
    bad.write_text(json.dumps({"origin": ORIGIN, "quorum": 0, "witnesses": []}))
    out = _cli("run", "--once", "--trust", str(bad), DATALEDGER_NODE_DATA_DIR=str(tmp_path))
    assert out.returncode == 2 and "log_vkey" in out.stderr, out.stderr
