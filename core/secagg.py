"""Secure aggregation by pairwise masking (Bonawitz et al., without dropout recovery).

Each provider's compute node holds an X25519 key pair. For one execution and the ordered
list of its providers, provider ``i`` agrees a seed with every peer ``j`` (X25519, then
HKDF-SHA256 whose ``info`` binds the execution id, both provider ids in list order, the
vector length and the SHA-256 of the layout the vector follows), expands it with ChaCha20 into a mask vector over Z_2^64, and adds the
masks of the peers after it in the list and subtracts those of the peers before it. Every
pair's mask is added once and subtracted once, so the sum of all masked parts is the sum
of the values, while one part alone is uniformly random to whoever lacks its seeds.
Binding the layout means parts laid out over different key lists never cancel: a platform
that shows one provider another layout than its peers recovers nothing from the sum.

Values are fixed-point integers: a real number ``x`` travels as ``round(x * SCALE)`` with
``SCALE = 2**16`` (``to_fixed``/``from_fixed``). Each value must satisfy
``|v| <= VALUE_BOUND = 2**56`` and an execution has at most ``MAX_PROVIDERS = 64``
providers, so ``|sum| <= 2**62 < 2**63``: the sum modulo 2^64 read as a signed 64-bit
integer is the exact sum. In real units each value stays within 2**40 (about 1.1e12).

There is no dropout recovery: a provider whose part is missing makes ``aggregate`` refuse,
and the execution fails. An execution id must be used once: two maskings under the same
id, providers and length reuse the masks (the difference of the two vectors would leak).
docs/SECAGG.md gives the threat model.
"""

from __future__ import annotations

import array
import base64
import hashlib
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from core.canonical import canonical_bytes

FORMAT = "dataledger-secagg-v2"
#: fixed point: a real x is the integer round(x * SCALE)
FRACTION_BITS = 16
SCALE = 1 << FRACTION_BITS
#: the largest |value| a provider may mask, and the most providers of one execution
VALUE_BOUND = 1 << 56
MAX_PROVIDERS = 64
MODULUS = 1 << 64
#: a layout key (a joint table's key column value, the code a hidden query looks up): at
#: most this many bytes of UTF-8; one definition, read by the compute node, the ledger and
#: core.hidden_query (which the compute node never imports)
MAX_CODE_BYTES = 256
#: ChaCha20's 16-byte nonce in cryptography (32-bit counter, 96-bit nonce): all zero, as
#: every key is derived for one (execution, pair, length) and used once
_NONCE = bytes(16)


class AggregationRefused(ValueError):
    """The aggregator refuses the parts; ``reason`` says why in one word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


# -- node keys -----------------------------------------------------------------------------

def new_node_key() -> X25519PrivateKey:
    """A fresh X25519 private key for a provider's compute node."""
    return X25519PrivateKey.generate()


def public_key_text(key: X25519PublicKey) -> str:
    """The public key as registered on the ledger: base64 of its 32 raw bytes."""
    return base64.b64encode(key.public_bytes_raw()).decode("ascii")


def load_public_key(key: X25519PublicKey | bytes | str) -> X25519PublicKey:
    """A peer's public key, from the key itself, its 32 raw bytes or ``public_key_text``."""
    if isinstance(key, X25519PublicKey):
        return key
    raw = base64.b64decode(key, validate=True) if isinstance(key, str) else key
    if len(raw) != 32:
        raise ValueError(f"an X25519 public key is 32 bytes, not {len(raw)}")
    return X25519PublicKey.from_public_bytes(raw)


def node_key_id(key: X25519PublicKey | bytes | str) -> str:
    """The id of a registered node key: ``x25519:`` and the first 32 hex digits of the
    SHA-256 of its 32 raw bytes."""
    raw = load_public_key(key).public_bytes_raw()
    return "x25519:" + hashlib.sha256(raw).hexdigest()[:32]


def check_node_key(text: str) -> X25519PublicKey:
    """A node key as registered (``public_key_text``), checked: base64 of 32 bytes, and
    not a point of small order (whose agreed secret is all zero, so its masks would be
    known to anyone). ValueError naming what is wrong."""
    try:
        key = load_public_key(text)
    except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError
        raise ValueError(f"not base64 of a 32-byte X25519 public key ({exc})") from None
    try:
        X25519PrivateKey.generate().exchange(key)
    except ValueError:
        raise ValueError("a point of small order: any peer's secret with it is known; "
                         "make a new node key") from None
    return key


# -- fixed point ---------------------------------------------------------------------------

def to_fixed(values: Iterable[float | int]) -> list[int]:
    """Real numbers to the fixed-point integers that are masked (``round(x * SCALE)``)."""
    out = []
    for x in values:
        if isinstance(x, float) and not math.isfinite(x):
            raise ValueError(f"{x!r} has no fixed-point form")
        out.append(round(x * SCALE))
    _check_bounds(out)
    return out


def from_fixed(values: Iterable[int]) -> list[float]:
    """Fixed-point integers (a sum) back to real numbers."""
    return [v / SCALE for v in values]


def _check_bounds(values: Sequence[int]) -> array.array[int]:
    """The values as signed 64-bit words, each within ``VALUE_BOUND``."""
    try:
        words = array.array("q", values)
    except TypeError as exc:
        raise TypeError(f"a masked value must be a fixed-point int: {exc}") from None
    except OverflowError:
        words = array.array("q")  # beyond 64 bits, so beyond the bound: named below
    if len(words) != len(values) or (
            words and (max(words) > VALUE_BOUND or min(words) < -VALUE_BOUND)):
        k = next(k for k, v in enumerate(values) if abs(v) > VALUE_BOUND)
        raise ValueError(f"value {k} is beyond the bound 2**56 of a masked value")
    return words


# -- the masks -----------------------------------------------------------------------------

def _check_providers(providers: Sequence[str]) -> None:
    if not 2 <= len(providers) <= MAX_PROVIDERS:
        raise ValueError(f"secure aggregation needs 2 to {MAX_PROVIDERS} providers, "
                         f"not {len(providers)}")
    if len(set(providers)) != len(providers):
        raise ValueError("a provider is listed twice")
    if not all(isinstance(p, str) and p for p in providers):
        raise ValueError("a provider id must be a non-empty string")


def pair_info(execution_id: str, first: str, second: str, length: int,
              layout_sha256: str) -> bytes:
    """HKDF's ``info`` for one pair: the format, the execution, the pair in list order,
    the vector length and the layout's SHA-256, as canonical JSON."""
    return canonical_bytes({"format": FORMAT, "execution_id": execution_id,
                            "providers": [first, second], "length": length,
                            "layout_sha256": layout_sha256})


def _check_layout_sha256(layout_sha256: Any) -> str:
    if not isinstance(layout_sha256, str) or len(layout_sha256) != 64 or any(
            c not in "0123456789abcdef" for c in layout_sha256):
        raise ValueError("the layout's SHA-256 must be 64 lowercase hex digits")
    return layout_sha256


def pairwise_seed(key: X25519PrivateKey, peer: X25519PublicKey, info: bytes) -> bytes:
    """The 32-byte seed two providers share: HKDF-SHA256 over their X25519 secret
    (cryptography refuses a peer key of small order, whose secret would be all zero)."""
    shared = key.exchange(peer)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def _keystream(seed: bytes, length: int) -> bytes:
    """ChaCha20's key stream under ``seed``, ``8 * length`` bytes: read as little-endian
    unsigned 64-bit words, the mask vector over Z_2^64."""
    stream = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
    return stream.update(bytes(8 * length)) + stream.finalize()


def _pair_stream(key: X25519PrivateKey, peer: X25519PublicKey | bytes | str,
                 execution_id: str, pair: tuple[str, str], length: int,
                 layout_sha256: str) -> bytes:
    info = pair_info(execution_id, pair[0], pair[1], length, layout_sha256)
    return _keystream(pairwise_seed(key, load_public_key(peer), info), length)


def pairwise_mask(key: X25519PrivateKey, peer: X25519PublicKey | bytes | str,
                  execution_id: str, pair: tuple[str, str], length: int, *,
                  layout_sha256: str) -> list[int]:
    """The mask vector a pair shares (``pair`` in the order of the providers' list):
    the first adds it, the second subtracts it."""
    return _words(_pair_stream(key, peer, execution_id, pair, length,
                               _check_layout_sha256(layout_sha256)))


# Vectors are added lane by lane inside one Python int: each 64-bit word gets a 72-bit lane
# (a ninth, zero byte above it), so up to 255 vectors add without a carry reaching the next
# lane (an execution adds at most 64); reading back 8 bytes of each lane reduces modulo 2^64. All of it runs in C
# (slice assignment, int.from_bytes, big-int addition), not word by word in Python.

def _spread(body: bytes) -> int:
    """Little-endian 64-bit words to one int of 72-bit lanes."""
    lanes = bytearray(len(body) // 8 * 9)
    for k in range(8):
        lanes[k::9] = body[k::8]
    return int.from_bytes(lanes, "little")


def _gather(lanes: int, length: int) -> bytes:
    """One int of 72-bit lanes back to little-endian words, each lane modulo 2^64."""
    raw = lanes.to_bytes(9 * length, "little")
    body = bytearray(8 * length)
    for k in range(8):
        body[k::8] = raw[k::9]
    return bytes(body)


def _lane_modulus(length: int) -> int:
    """2^64 in every lane: ``_lane_modulus(n) - x`` negates each lane of ``x`` mod 2^64."""
    return int.from_bytes((bytes(8) + b"\x01") * length, "little")


def _body(words: Sequence[int], code: str = "Q") -> bytes:
    """Words as little-endian bytes (``code`` "Q": unsigned, "q": signed)."""
    out = array.array(code, words)
    if sys.byteorder != "little":
        out.byteswap()
    return out.tobytes()


def _words(body: bytes, code: str = "Q") -> list[int]:
    out = array.array(code)
    out.frombytes(body)
    if sys.byteorder != "little":
        out.byteswap()
    return out.tolist()


@dataclass(frozen=True)
class MaskedPart:
    """One provider's masked vector: the header the aggregator checks, and the body
    (``length`` little-endian unsigned 64-bit words)."""

    header: Mapping[str, Any]
    body: bytes

    @property
    def provider_id(self) -> str:
        return str(self.header["provider_id"])

    def digest(self) -> str:
        """sha256 (hex) of the canonical header; the header holds the body's sha256, so
        this one hash commits to the whole part (the hash a ledger event records)."""
        return hashlib.sha256(canonical_bytes(dict(self.header))).hexdigest()

    def words(self) -> list[int]:
        return _words(self.body)


def mask(key: X25519PrivateKey, execution_id: str, provider_id: str,
         providers: Sequence[str], public_keys: Mapping[str, X25519PublicKey | bytes | str],
         values: Sequence[int], *, layout_sha256: str) -> MaskedPart:
    """Provider ``provider_id``'s masked part of ``values`` (fixed-point ints) for one
    execution, laid out over the layout whose SHA-256 is ``layout_sha256`` (bound into
    every pair's mask and the header). ``public_keys`` holds every peer's registered
    public key."""
    if not isinstance(execution_id, str) or not execution_id:
        raise ValueError("the execution id must be a non-empty string")
    _check_layout_sha256(layout_sha256)
    providers = list(providers)
    _check_providers(providers)
    if provider_id not in providers:
        raise ValueError(f"{provider_id!r} is not among the execution's providers")
    if not values:
        raise ValueError("nothing to mask: the vector is empty")
    own = public_keys.get(provider_id)
    if own is not None and load_public_key(own).public_bytes_raw() != (
            key.public_key().public_bytes_raw()):
        raise ValueError(f"the key is not the one registered for {provider_id!r}")
    me, length = providers.index(provider_id), len(values)
    acc = _spread(_body(_check_bounds(values), "q"))
    for j, peer in enumerate(providers):
        if j == me:
            continue
        if peer not in public_keys:
            raise ValueError(f"no public key for the peer {peer!r}")
        pair = (provider_id, peer) if me < j else (peer, provider_id)
        m = _spread(_pair_stream(key, public_keys[peer], execution_id, pair, length,
                                 layout_sha256))
        acc += m if me < j else _lane_modulus(length) - m
    body = _gather(acc, length)
    header = {"format": FORMAT, "execution_id": execution_id, "provider_id": provider_id,
              "providers": providers, "length": length, "layout_sha256": layout_sha256,
              "body_sha256": hashlib.sha256(body).hexdigest()}
    return MaskedPart(header=header, body=body)


# -- the aggregator ------------------------------------------------------------------------

def _check_part(part: MaskedPart, execution_id: str, providers: list[str],
                layout_sha256: str | None) -> None:
    h = part.header
    if h.get("format") != FORMAT:
        raise AggregationRefused("format", f"a part of format {h.get('format')!r}, "
                                           f"not {FORMAT!r}")
    who = h.get("provider_id")
    if h.get("execution_id") != execution_id:
        raise AggregationRefused(
            "execution", f"the part of {who!r} is from execution {h.get('execution_id')!r}, "
                         f"not {execution_id!r}")
    if list(h.get("providers", ())) != providers:
        raise AggregationRefused(
            "providers", f"the part of {who!r} was masked for the providers "
                         f"{h.get('providers')!r}, not {providers!r}")
    if who not in providers:
        raise AggregationRefused("unknown", f"{who!r} is not a provider of the execution")
    said = h.get("layout_sha256")
    if not isinstance(said, str) or (layout_sha256 is not None and said != layout_sha256):
        raise AggregationRefused(
            "layout", f"the part of {who!r} was laid out over the layout {said!r}, not "
                      f"{layout_sha256!r}")
    length = h.get("length")
    if not isinstance(length, int) or length < 1 or len(part.body) != 8 * length:
        raise AggregationRefused(
            "length", f"the part of {who!r} has {len(part.body)} body bytes for the length "
                      f"{length!r}")
    if hashlib.sha256(part.body).hexdigest() != h.get("body_sha256"):
        raise AggregationRefused("body", f"the body of {who!r}'s part does not match "
                                         "its header's sha256")


def aggregate(parts: Iterable[MaskedPart], execution_id: str,
              providers: Sequence[str], layout_sha256: str | None = None) -> list[int]:
    """The exact sum of the providers' values, from exactly one checked part of each.

    Refuses (``AggregationRefused``) a part of another format or execution, one masked
    for another list of providers or another layout (``layout_sha256``; None: the first
    part's, which every other must share), an unknown or duplicate provider, a wrong
    length or a body that does not match its hash, and a missing provider (no dropout
    recovery).
    """
    providers = list(providers)
    _check_providers(providers)
    seen: dict[str, MaskedPart] = {}
    length: int | None = None
    for part in parts:
        _check_part(part, execution_id, providers, layout_sha256)
        layout_sha256 = str(part.header["layout_sha256"])
        who = part.provider_id
        if who in seen:
            raise AggregationRefused("duplicate", f"two parts from {who!r}")
        if length is not None and part.header["length"] != length:
            raise AggregationRefused(
                "length", f"the part of {who!r} has length {part.header['length']}, "
                          f"the others {length}")
        length = part.header["length"]
        seen[who] = part
    missing = [p for p in providers if p not in seen]
    if missing:
        raise AggregationRefused(
            "missing", f"no part from {', '.join(map(repr, missing))}: without dropout "
                       "recovery the execution fails")
    total = sum(_spread(seen[who].body) for who in providers)
    return _words(_gather(total, length or 0), "q")
