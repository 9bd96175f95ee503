"""The witness over HTTP (c2sp.org/tlog-witness ``add-checkpoint``) and its command line.

``POST /add-checkpoint`` takes the raw request body of the spec (see
:mod:`anchoring.witness`) and answers:

- 200, ``text/plain; charset=utf-8``: the witness's co-signature line,
  ``— <witness name> <base64(key ID || BLS signature)>\\n``;
- 400 malformed body or checkpoint, or old size > checkpoint size;
- 403 no known key of the origin signed the checkpoint (or a known key's
  signature is bad);
- 404 unknown origin;
- 409 old size is not the size last co-signed: body ``<that size>\\n``,
  ``Content-Type: text/x.tlog.size`` exactly;
- 409 same size as the last co-signed checkpoint, different root (plain text);
- 413 body larger than MAX_BODY_BYTES;
- 422 the consistency proof does not verify (or is not empty when it must be).

Every error body is one line of plain text (``text/plain; charset=utf-8``).
``GET /`` returns the witness's public descriptor as JSON: ``name``,
``public_key`` and ``pop`` (base64), ``key_id`` (hex) and ``vkey`` (the
:meth:`chain.bls.WitnessPublicKey.encode` form), plus the ``origins`` it knows.
"""

import argparse
import base64
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from anchoring.witness import (
    BadSignature,
    Malformed,
    OldSizeMismatch,
    ProofFailed,
    RootConflict,
    UnknownOrigin,
    Witness,
    WitnessError,
    parse_add_checkpoint,
)
from anchoring.witness_state import WitnessState, load_or_create_key
from chain.note import NoteVerifier, Verifier

MAX_BODY_BYTES: Final = 64 * 1024
"""Largest accepted request body; a checkpoint with 100 signature lines fits easily."""

SIZE_CONTENT_TYPE: Final = "text/x.tlog.size"
"""Content-Type of the 409 body carrying the witness's size."""

KEY_FILE: Final = "witness.key"
"""The witness's secret key, in its state directory."""

STATE_FILE: Final = "witness.db"
"""The witness's SQLite state, in its state directory."""

_TEXT: Final = "text/plain; charset=utf-8"


def create_witness_app(witness: Witness) -> FastAPI:
    """Return the witness's HTTP app: ``POST /add-checkpoint`` and ``GET /``."""
    app = FastAPI(title="dataledger witness", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/")
    def describe() -> dict[str, Any]:
        """The witness's public descriptor, for the platform to trust it."""
        published = witness.published()
        return {
            "name": published.name,
            "public_key": base64.b64encode(published.public_key).decode("ascii"),
            "pop": base64.b64encode(published.pop).decode("ascii"),
            "key_id": f"{published.key_id:08x}",
            "vkey": published.encode(),
            "origins": witness.origins,
        }

    @app.post("/add-checkpoint")
    async def add_checkpoint(request: Request) -> Response:
        """Co-sign a checkpoint that consistently extends the last one co-signed."""
        # 1. Read at most MAX_BODY_BYTES of UTF-8.
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                return _text(413, f"request body larger than {MAX_BODY_BYTES} bytes")
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            return _text(400, "request body is not UTF-8")
        # 2. Parse, check, persist and co-sign (blocking: SQLite fsync, BLS).
        try:
            old_size, proof, note_text = parse_add_checkpoint(body)
            line = await run_in_threadpool(witness.add_checkpoint, old_size, proof, note_text)
        except WitnessError as exc:
            return _refusal(exc)
        return Response(line.encode("utf-8"), 200, headers={"Content-Type": _TEXT})

    return app


def _refusal(exc: WitnessError) -> Response:
    """Map a refusal to the spec's status and body."""
    if isinstance(exc, OldSizeMismatch):
        # Set the header directly: Starlette would append "; charset=utf-8" to a text/* media type.
        return Response(
            f"{exc.current_size}\n".encode("ascii"),
            409,
            headers={"Content-Type": SIZE_CONTENT_TYPE},
        )
    status = 500
    if isinstance(exc, Malformed):
        status = 400
    elif isinstance(exc, UnknownOrigin):
        status = 404
    elif isinstance(exc, BadSignature):
        status = 403
    elif isinstance(exc, RootConflict):
        status = 409
    elif isinstance(exc, ProofFailed):
        status = 422
    return _text(status, str(exc))


def _text(status: int, message: str) -> Response:
    """A one-line plain-text response."""
    line = " ".join(message.split())  # One line, whatever the message.
    return Response(f"{line}\n".encode(), status, headers={"Content-Type": _TEXT})


def parser() -> argparse.ArgumentParser:
    """The arguments of ``dataledger witness``."""
    p = argparse.ArgumentParser(
        prog="dataledger witness",
        description="Run a checkpoint witness: co-sign (BLS) only consistent growth of known logs.",
    )
    p.add_argument("--name", required=True, help="the witness's key name, e.g. witness.example/w1")
    p.add_argument(
        "--state-dir",
        required=True,
        type=Path,
        help=f"directory of its secret key ({KEY_FILE}, created 0600) and state ({STATE_FILE})",
    )
    p.add_argument(
        "--log-key",
        action="append",
        required=True,
        metavar="VKEY",
        help="a log's Ed25519 note verifier key <origin>+<key ID>+<key>; repeatable",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7380)
    return p


def logs_from_vkeys(vkeys: Sequence[str]) -> dict[str, list[NoteVerifier]]:
    """Group note verifier keys by their name, which is the log's origin.

    Raises ValueError for a malformed key.
    """
    logs: dict[str, list[NoteVerifier]] = {}
    for vkey in vkeys:
        verifier = Verifier.from_vkey(vkey)
        logs.setdefault(verifier.name, []).append(verifier)
    return logs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the witness until interrupted: ``dataledger witness --name N --state-dir D --log-key K ...``.

    Prints the witness's descriptor (``vkey``) on stdout at start. Returns 2
    for bad arguments or keys.
    """
    import uvicorn

    args = parser().parse_args(argv)
    try:
        logs = logs_from_vkeys(args.log_key)
        key = load_or_create_key(args.state_dir / KEY_FILE, args.name)
    except ValueError as exc:
        print(f"dataledger witness: {exc}", file=sys.stderr)
        return 2
    state = WitnessState(args.state_dir / STATE_FILE)
    witness = Witness(key, logs, state)
    print(f"witness {witness.published().encode()}", flush=True)
    for origin in witness.origins:
        print(f"  log {origin}", flush=True)
    try:
        uvicorn.run(
            create_witness_app(witness), host=args.host, port=args.port, log_level="warning"
        )
    finally:
        state.close()
    return 0
