"""Bearer tokens: how one is made and the hash the ledger keeps of it (never the token).

One definition for the server (``api.auth``) and the clients: a new participant or member
makes its token itself and sends only :func:`hash_token` of it, so the platform never sees it.
"""

from __future__ import annotations

import hashlib
import secrets


def hash_token(token: str) -> str:
    """SHA-256 hex of a token: what is stored and sent instead of it."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh bearer token (256 bits)."""
    return "dl_" + secrets.token_urlsafe(32)
