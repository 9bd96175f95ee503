"""The hidden query (隐匿查询): an OPRF-based keyword lookup on ristretto255 (docs/HIDDEN_QUERY.md).

The model is RFC 9497's OPRF(ristretto255, SHA-512) in mode 0 (`modeOPRF`): `hash_to_group`,
`blind`, `evaluate` (the RFC's BlindEvaluate), `finalize`, and `derive_key` (DeriveKeyPair's
secret scalar); the group operations are libsodium's, through `rbcl` (PyNaCl 1.5.0 and 1.6.2
bind none of libsodium's ristretto255 functions). The test checks the RFC's test vector.

Two parties use this module, so it lives in `core/`, the one room both the bank's client and
the server's aggregation node may import:

- the aggregation node holds a secret OPRF key and prepares a table of rows: each row under a
  lookup id and an AEAD key (ChaCha20-Poly1305) that HKDF derives from OPRF(key, code), so
  the published table names no code and opens to no one without the OPRF outputs;
- the bank blinds its credit codes (`blind`), the node evaluates the blinded request
  (`evaluate`), and the bank finalizes, finds and opens its rows (`lookup`).

The node sees only random-looking group elements; the bank learns the OPRF output only of the
codes it asked for. What the ledger records of a query: `request_commitment`, `request_size`
and `answer_hash`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import rbcl  # type: ignore[import-untyped]
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: a code's UTF-8 bytes at most: defined in core.secagg, which the compute node imports
#: (never this module), so its layout keys and the table's codes have one bound
from core.secagg import MAX_CODE_BYTES

CONTEXT = b"OPRFV1-\x00-ristretto255-SHA512"  # RFC 9497 contextString, mode 0
HASH_TO_GROUP_DST = b"HashToGroup-" + CONTEXT
DERIVE_KEY_DST = b"DeriveKeyPair" + CONTEXT
ELEMENT_BYTES = 32
SCALAR_BYTES = 32
OUTPUT_BYTES = 64
REQUEST_TAG = b"dataledger/hidden-query/request/v1\n"
RESPONSE_TAG = b"dataledger/hidden-query/response/v1\n"
TABLE_TAG = b"dataledger/hidden-query/table/v2\n"
MAX_CODES = 100_000  # per request
TABLE_ID_BYTES = 16
MAX_TABLE_ROWS = 2_000_000  # a joint table's keys at most (its layout's bound)
#: a row is padded, before it is sealed, to its table's bucket: a power of two from
#: MIN_ROW_BUCKET to MAX_ROW_BUCKET bytes, so every sealed row of a table has one length and
#: the table tells nothing of any row's length (how many digits its values have)
MIN_ROW_BUCKET = 64
MAX_ROW_BUCKET = 65_536
_TAG_BYTES = 16  # ChaCha20-Poly1305's tag
MAX_SEALED_ROW_BYTES = MAX_ROW_BUCKET + _TAG_BYTES
_ROW_LENGTH_BYTES = 4  # a padded row's length prefix, and a table's sealed-row size
_TABLE_COUNT_BYTES = 8
_ROW_INFO = b"dataledger/hidden-query/row/v2"
_NONCE = bytes(12)  # each row key is used once: unique per (table id, OPRF output)
_COUNT_BYTES = 4
# the group order L of ristretto255, little-endian scalars must be below it
_ORDER = 2**252 + 27742317777372353535851937790883648493


class HiddenQueryError(ValueError):
    """A hidden-query input refused: a malformed request, response, key or code."""


# -- RFC 9380 / 9497 building blocks -------------------------------------------------------


def expand_message_xmd(msg: bytes, dst: bytes, length: int) -> bytes:
    """RFC 9380 section 5.3.1, with SHA-512 (b_in_bytes 64, s_in_bytes 128)."""
    if len(dst) > 255 or length > 255 * 64 or length <= 0:
        raise HiddenQueryError("expand_message_xmd: bad DST or length")
    ell = -(-length // 64)
    dst_prime = dst + bytes([len(dst)])
    msg_prime = bytes(128) + msg + length.to_bytes(2, "big") + b"\x00" + dst_prime
    b0 = hashlib.sha512(msg_prime).digest()
    out = b_prev = hashlib.sha512(b0 + b"\x01" + dst_prime).digest()
    for i in range(2, ell + 1):
        mixed = bytes(x ^ y for x, y in zip(b0, b_prev))
        b_prev = hashlib.sha512(mixed + bytes([i]) + dst_prime).digest()
        out += b_prev
    return out[:length]


def hash_to_group(data: bytes) -> bytes:
    """RFC 9497's HashToGroup for ristretto255: hash_to_ristretto255 of RFC 9380."""
    element = rbcl.crypto_core_ristretto255_from_hash(
        expand_message_xmd(data, HASH_TO_GROUP_DST, 64))
    if element == bytes(ELEMENT_BYTES):
        raise HiddenQueryError("the input hashes to the identity element")
    return bytes(element)


def derive_key(seed: bytes, info: bytes) -> bytes:
    """RFC 9497 DeriveKeyPair's secret scalar skS, from a 32-byte seed and key info."""
    if len(seed) != 32:
        raise HiddenQueryError("the seed must be 32 bytes")
    derive_input = seed + len(info).to_bytes(2, "big") + info
    for counter in range(256):
        uniform = expand_message_xmd(derive_input + bytes([counter]), DERIVE_KEY_DST, 64)
        key = bytes(rbcl.crypto_core_ristretto255_scalar_reduce(uniform))
        if key != bytes(SCALAR_BYTES):
            return key
    raise HiddenQueryError("DeriveKeyPair found no key")  # pragma: no cover


def generate_key() -> bytes:
    """A fresh secret OPRF key: a random non-zero scalar below the group order."""
    return bytes(rbcl.crypto_core_ristretto255_scalar_random())


def check_key(key: bytes) -> bytes:
    """The key, if it is a canonical non-zero scalar; else HiddenQueryError."""
    if not isinstance(key, bytes) or len(key) != SCALAR_BYTES:
        raise HiddenQueryError(f"an OPRF key is {SCALAR_BYTES} bytes")
    value = int.from_bytes(key, "little")
    if value == 0 or value >= _ORDER:
        raise HiddenQueryError("an OPRF key is a non-zero scalar below the group order")
    return key


def check_element(element: bytes, what: str) -> bytes:
    """The element, if it is a valid ristretto255 encoding and not the identity."""
    if (not isinstance(element, bytes) or len(element) != ELEMENT_BYTES
            or element == bytes(ELEMENT_BYTES)
            or not rbcl.crypto_core_ristretto255_is_valid_point(element)):
        raise HiddenQueryError(f"{what} is not a valid ristretto255 point")
    return element


def code_bytes(code: str) -> bytes:
    """A credit code as the OPRF's input: its UTF-8 bytes, 1 to MAX_CODE_BYTES of them."""
    if not isinstance(code, str):
        raise HiddenQueryError("a code is a string")
    data = code.encode("utf-8")
    if not 0 < len(data) <= MAX_CODE_BYTES:
        raise HiddenQueryError(f"a code is 1 to {MAX_CODE_BYTES} bytes of UTF-8")
    return data


def _finalize_one(data: bytes, unblinded: bytes) -> bytes:
    """RFC 9497 Finalize's hash of the input and the unblinded element."""
    return hashlib.sha512(
        len(data).to_bytes(2, "big") + data
        + len(unblinded).to_bytes(2, "big") + unblinded + b"Finalize").digest()


def oprf_output(key: bytes, code: str) -> bytes:
    """The node's direct evaluation of OPRF(key, code): equal to what the bank finalizes."""
    data = code_bytes(code)
    element = rbcl.crypto_scalarmult_ristretto255(check_key(key), hash_to_group(data))
    return _finalize_one(data, bytes(element))


# -- the wire: requests and responses ------------------------------------------------------


def _encode(tag: bytes, elements: Sequence[bytes]) -> bytes:
    return tag + len(elements).to_bytes(_COUNT_BYTES, "big") + b"".join(elements)


def _decode(tag: bytes, wire: bytes, what: str) -> list[bytes]:
    """The elements of a request or response, each checked; HiddenQueryError if malformed."""
    if not isinstance(wire, bytes) or not wire.startswith(tag):
        raise HiddenQueryError(f"not a hidden-query {what}")
    head = len(tag) + _COUNT_BYTES
    if len(wire) < head:
        raise HiddenQueryError(f"the {what} is truncated")
    count = int.from_bytes(wire[len(tag):head], "big")
    if not 0 < count <= MAX_CODES:
        raise HiddenQueryError(f"a {what} holds 1 to {MAX_CODES} elements, not {count}")
    if len(wire) != head + count * ELEMENT_BYTES:
        raise HiddenQueryError(f"the {what}'s length does not match its {count} elements")
    elements = [wire[head + i * ELEMENT_BYTES: head + (i + 1) * ELEMENT_BYTES]
                for i in range(count)]
    for i, element in enumerate(elements):
        check_element(element, f"element {i} of the {what}")
    return elements


def request_commitment(request: bytes) -> str:
    """What the ledger records of a request: SHA-256 of its canonical bytes, in hex."""
    _decode(REQUEST_TAG, request, "request")
    return hashlib.sha256(request).hexdigest()


def request_size(request: bytes) -> int:
    """What the ledger records as the query's size: how many codes it asks about."""
    return len(_decode(REQUEST_TAG, request, "request"))


def answer_hash(response: bytes) -> str:
    """What the ledger records of an answer: SHA-256 of the response's bytes, in hex."""
    _decode(RESPONSE_TAG, response, "response")
    return hashlib.sha256(response).hexdigest()


# -- the bank's side -----------------------------------------------------------------------


@dataclass(frozen=True)
class BlindState:
    """What the bank keeps between `blind` and `finalize`: never sent anywhere."""

    codes: tuple[str, ...]
    blinds: tuple[bytes, ...] = field(repr=False)


def blind(codes: Sequence[str], *, blinds: Sequence[bytes] | None = None,
          ) -> tuple[BlindState, bytes]:
    """Blind the bank's codes: the state to keep, and the request for the node.

    Each code gets a fresh random scalar (`blinds` fixes them, for the RFC's test vector only),
    so the request is a list of uniformly random group elements.
    """
    codes = tuple(codes)
    if not 0 < len(codes) <= MAX_CODES:
        raise HiddenQueryError(f"a query holds 1 to {MAX_CODES} codes")
    if blinds is None:
        scalars = tuple(generate_key() for _ in codes)
    else:
        scalars = tuple(check_key(bytes(b)) for b in blinds)
        if len(scalars) != len(codes):
            raise HiddenQueryError("one blind per code")
    elements = [bytes(rbcl.crypto_scalarmult_ristretto255(r, hash_to_group(code_bytes(c))))
                for c, r in zip(codes, scalars)]
    return BlindState(codes, scalars), _encode(REQUEST_TAG, elements)


def finalize(state: BlindState, response: bytes) -> dict[str, bytes]:
    """Each code's OPRF output, from the node's response to the bank's request."""
    evaluated = _decode(RESPONSE_TAG, response, "response")
    if len(evaluated) != len(state.codes):
        raise HiddenQueryError(
            f"the response holds {len(evaluated)} elements for {len(state.codes)} codes")
    outputs: dict[str, bytes] = {}
    for code, r, element in zip(state.codes, state.blinds, evaluated):
        inverse = rbcl.crypto_core_ristretto255_scalar_invert(r)
        unblinded = bytes(rbcl.crypto_scalarmult_ristretto255(inverse, element))
        outputs[code] = _finalize_one(code_bytes(code), unblinded)
    return outputs


# -- the node's side -----------------------------------------------------------------------


def evaluate(key: bytes, request: bytes) -> bytes:
    """The node's answer: each blinded element times its key (RFC 9497 BlindEvaluate).

    A request whose any element is not a valid ristretto255 point is refused whole.
    """
    check_key(key)
    elements = _decode(REQUEST_TAG, request, "request")
    return _encode(RESPONSE_TAG,
                   [bytes(rbcl.crypto_scalarmult_ristretto255(key, e)) for e in elements])


def row_bucket(rows: Iterable[bytes]) -> int:
    """The size every row of a table is padded to: the smallest power of two, at least
    ``MIN_ROW_BUCKET``, that holds the longest row and its 4-byte length prefix."""
    longest = max((len(row) for row in rows), default=0) + _ROW_LENGTH_BYTES
    bucket = MIN_ROW_BUCKET
    while bucket < longest:
        bucket *= 2
    if bucket > MAX_ROW_BUCKET:
        raise HiddenQueryError(f"a row of {longest - _ROW_LENGTH_BYTES} bytes is longer than "
                               f"a table's rows may be ({MAX_ROW_BUCKET - _ROW_LENGTH_BYTES})")
    return bucket


def _check_bucket(bucket: int) -> int:
    if (not isinstance(bucket, int) or not MIN_ROW_BUCKET <= bucket <= MAX_ROW_BUCKET
            or bucket & (bucket - 1)):
        raise HiddenQueryError(f"a row bucket is a power of two from {MIN_ROW_BUCKET} to "
                               f"{MAX_ROW_BUCKET}, not {bucket!r}")
    return bucket


def pad_row(row: bytes, bucket: int) -> bytes:
    """``row`` as it is sealed: its length (4 bytes, big-endian), the row, zeros up to
    ``bucket`` bytes."""
    if len(row) + _ROW_LENGTH_BYTES > _check_bucket(bucket):
        raise HiddenQueryError(f"a row of {len(row)} bytes does not fit a {bucket}-byte bucket")
    return (len(row).to_bytes(_ROW_LENGTH_BYTES, "big") + row
            + bytes(bucket - _ROW_LENGTH_BYTES - len(row)))


def unpad_row(padded: bytes) -> bytes:
    """The row ``pad_row`` padded; HiddenQueryError for a length past the end or padding
    that is not all zeros."""
    size = int.from_bytes(padded[:_ROW_LENGTH_BYTES], "big")
    end = _ROW_LENGTH_BYTES + size
    if len(padded) < _ROW_LENGTH_BYTES or end > len(padded) or any(padded[end:]):
        raise HiddenQueryError("a row of the table is not padded as a table's rows are")
    return padded[_ROW_LENGTH_BYTES:end]


@dataclass(frozen=True)
class HiddenTable:
    """A published table: lookup id -> sealed row, under a random table id (the HKDF salt).

    It names no code: a lookup id and a row key come only from an OPRF output. Every sealed
    row has one length (its rows padded to one bucket before sealing).
    """

    table_id: bytes
    rows: Mapping[bytes, bytes] = field(repr=False)

    def digest(self) -> str:
        """SHA-256 over the table id and its rows in lookup-id order, in hex."""
        h = hashlib.sha256(self.table_id)
        for lookup_id in sorted(self.rows):
            sealed = self.rows[lookup_id]
            h.update(lookup_id + len(sealed).to_bytes(8, "big") + sealed)
        return h.hexdigest()

    def row_size(self) -> int:
        """The length of every sealed row (0 for a table of none); HiddenQueryError if its
        rows differ in length (no table ``seal_rows`` made)."""
        sizes = {len(sealed) for sealed in self.rows.values()}
        if len(sizes) > 1:
            raise HiddenQueryError("the rows of a table are all of one length")
        return sizes.pop() if sizes else 0

    def to_bytes(self) -> bytes:
        """The table as published: canonical, so one table has one byte string.

        ``TABLE_TAG``, the 16-byte table id, an 8-byte big-endian row count, the 4-byte
        big-endian length of every sealed row, then each row in lookup-id order: its 32-byte
        lookup id and the sealed row.
        """
        parts = [TABLE_TAG, self.table_id, len(self.rows).to_bytes(_TABLE_COUNT_BYTES, "big"),
                 self.row_size().to_bytes(_ROW_LENGTH_BYTES, "big")]
        for lookup_id in sorted(self.rows):
            parts += (lookup_id, self.rows[lookup_id])
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> HiddenTable:
        """The table ``to_bytes`` wrote; HiddenQueryError for anything else (another tag or
        version, a count or a row length out of bounds, rows out of lookup-id order or
        repeated, bytes missing or left over), so a bank never looks up in a table it
        misread."""
        if not isinstance(data, bytes) or not data.startswith(TABLE_TAG):
            raise HiddenQueryError("not a hidden-query table (of this version)")
        at = len(TABLE_TAG) + TABLE_ID_BYTES + _TABLE_COUNT_BYTES + _ROW_LENGTH_BYTES
        if len(data) < at:
            raise HiddenQueryError("the table is truncated")
        table_id = data[len(TABLE_TAG):len(TABLE_TAG) + TABLE_ID_BYTES]
        count = int.from_bytes(data[at - 12:at - _ROW_LENGTH_BYTES], "big")
        size = int.from_bytes(data[at - _ROW_LENGTH_BYTES:at], "big")
        if count > MAX_TABLE_ROWS:
            raise HiddenQueryError(f"a table holds at most {MAX_TABLE_ROWS} rows, not {count}")
        if count and _bucket_of(size) is None:
            raise HiddenQueryError(f"the table's rows are {size} bytes, not a bucket of "
                                   f"{MIN_ROW_BUCKET} to {MAX_ROW_BUCKET} bytes and its tag")
        if len(data) != at + count * (ELEMENT_BYTES + size):
            raise HiddenQueryError(f"the table's length does not match its {count} rows of "
                                   f"{size} bytes")
        rows: dict[bytes, bytes] = {}
        previous = b""
        for i in range(count):
            lookup_id = data[at:at + ELEMENT_BYTES]
            if lookup_id <= previous:
                raise HiddenQueryError(f"row {i} of the table is out of lookup-id order")
            rows[lookup_id] = data[at + ELEMENT_BYTES:at + ELEMENT_BYTES + size]
            previous, at = lookup_id, at + ELEMENT_BYTES + size
        return cls(table_id, rows)


def _bucket_of(sealed_size: int) -> int | None:
    """The bucket a sealed row of ``sealed_size`` bytes was padded to, or None."""
    try:
        return _check_bucket(sealed_size - _TAG_BYTES)
    except HiddenQueryError:
        return None


def _row_keys(table_id: bytes, output: bytes) -> tuple[bytes, bytes]:
    """The lookup id and the row's AEAD key, both from HKDF-SHA-256 of an OPRF output."""
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=table_id,
               info=_ROW_INFO).derive(output)
    return okm[:32], okm[32:]


def seal_rows(table_id: bytes, sealed: Iterable[tuple[bytes, bytes]],
              bucket: int) -> HiddenTable:
    """A table from (OPRF output, row bytes) pairs, each row padded to ``bucket`` bytes
    (``row_bucket``) and sealed: the node's preparation, without codes.

    A table id seals one table once: each row key is used with a fixed nonce, so reusing an id
    for other rows under the same OPRF key would reuse a (key, nonce) pair. Leave it random.
    """
    if len(table_id) != TABLE_ID_BYTES:
        raise HiddenQueryError(f"a table id is {TABLE_ID_BYTES} bytes")
    _check_bucket(bucket)
    rows: dict[bytes, bytes] = {}
    for output, row in sealed:
        lookup_id, row_key = _row_keys(table_id, output)
        if lookup_id in rows:
            raise HiddenQueryError("two rows under one code")
        rows[lookup_id] = ChaCha20Poly1305(row_key).encrypt(_NONCE, pad_row(row, bucket),
                                                            table_id + lookup_id)
    return HiddenTable(table_id, rows)


def prepare_table(key: bytes, rows: Mapping[str, bytes], table_id: bytes | None = None,
                  bucket: int | None = None) -> HiddenTable:
    """The node's table of ``rows`` (code -> row bytes), each padded to ``bucket`` (default
    ``row_bucket`` of these rows; a table prepared in shares passes the whole table's) and
    sealed under OPRF(key, code)."""
    check_key(key)
    tid = os.urandom(TABLE_ID_BYTES) if table_id is None else table_id
    size = row_bucket(rows.values()) if bucket is None else bucket
    return seal_rows(tid, ((oprf_output(key, code), row) for code, row in rows.items()), size)


def open_row(table: HiddenTable, output: bytes) -> bytes | None:
    """The row sealed under this OPRF output (its padding removed), or None if the table
    holds none."""
    lookup_id, row_key = _row_keys(table.table_id, output)
    sealed = table.rows.get(lookup_id)
    if sealed is None:
        return None
    try:
        padded = ChaCha20Poly1305(row_key).decrypt(_NONCE, sealed, table.table_id + lookup_id)
    except InvalidTag as exc:
        raise HiddenQueryError("a row of the table does not open: tampered") from exc
    return unpad_row(padded)


def lookup(table: HiddenTable, state: BlindState, response: bytes) -> dict[str, bytes | None]:
    """The bank's result: each queried code's row, or None for a code not in the table."""
    return {code: open_row(table, output)
            for code, output in finalize(state, response).items()}
