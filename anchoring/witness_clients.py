"""How the platform reaches its witnesses: in-process (embedded default) or over HTTP."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx

from anchoring.checkpointer import WitnessConflict, WitnessRefused
from anchoring.witness import OldSizeMismatch, Witness, WitnessError, format_add_checkpoint
from chain.bls import WitnessPublicKey


class LocalWitness:
    """A witness running in this process (its own key and state file)."""

    def __init__(self, witness: Witness) -> None:
        self.witness = witness

    @property
    def name(self) -> str:
        return self.witness.key.name

    def published(self) -> WitnessPublicKey:
        return self.witness.published()

    def add_checkpoint(self, old_size: int, proof: list[bytes], note: str) -> str:
        try:
            return self.witness.add_checkpoint(old_size, proof, note)
        except OldSizeMismatch as exc:
            raise WitnessConflict(exc.current_size) from exc
        except WitnessError as exc:
            raise WitnessRefused(str(exc)) from exc


class WitnessUnreachable(RuntimeError):
    """A configured witness did not answer with its name and keys (names the URL)."""


class HttpWitness:
    """A witness in another process, reached by C2SP tlog-witness ``add-checkpoint``."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.client = httpx.Client(timeout=timeout)
        try:
            described = self.client.get(self.url + "/").json()
            self._published = WitnessPublicKey(described["name"],
                                               base64.b64decode(described["public_key"]),
                                               base64.b64decode(described["pop"]))
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            self.client.close()
            raise WitnessUnreachable(f"witness {self.url} (DATALEDGER_WITNESS_URLS) did not "
                                     f"describe itself: {type(exc).__name__}: {exc}") from None

    @property
    def name(self) -> str:
        return self._published.name

    @property
    def on_this_host(self) -> bool:
        """Whether the URL names this machine (a loopback name or address): a witness
        there is as much in the operator's hands as an in-process one."""
        host = (urlsplit(self.url).hostname or "").lower()
        if host in ("localhost", "") or host.endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def published(self) -> WitnessPublicKey:
        return self._published

    def add_checkpoint(self, old_size: int, proof: list[bytes], note: str) -> str:
        body = format_add_checkpoint(old_size, proof, note)
        try:
            response = self.client.post(self.url + "/add-checkpoint", content=body.encode())
        except httpx.HTTPError as exc:
            raise WitnessRefused(f"witness {self.url} unreachable: {exc}") from exc
        if response.status_code == 200:
            return response.text
        if response.status_code == 409 and response.text.strip().isdigit():
            raise WitnessConflict(int(response.text.strip()))
        raise WitnessRefused(f"witness {self.url} answered {response.status_code}: "
                             f"{response.text.strip()}")


def http_witnesses(urls: Sequence[str]) -> list[HttpWitness]:
    """Clients for the witnesses at ``urls``."""
    return [HttpWitness(u) for u in urls if u.strip()]
