"""Canonical encoding: the exact bytes that the Merkle tree hashes.

Deterministic JSON: keys sorted, no insignificant whitespace, UTF-8 (not ASCII
escapes), integers only (a float has no single canonical text, so it is refused),
strings, booleans, null, lists and objects with string keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: I-JSON (RFC 7493): integers every JSON reader represents exactly
MAX_SAFE_INTEGER = 2**53 - 1


class CanonicalEncodingError(ValueError):
    """A value cannot be encoded canonically; ``path`` names where ($.a.b[0])."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _plainly_canonical(value: Any) -> bool:
    """True if ``value`` is certainly canonical: only exact JSON types (dict, list, tuple,
    str, int, bool, None), no NUL, no lone surrogate, no unsafe integer.

    The fast path of the checks (no path strings built, no recursion); False means
    "ask ``_check``", which names the offending place or, for subclasses of the JSON
    types, accepts them.
    """
    stack = [value]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        v = pop()
        t = type(v)
        if t is str:
            if "\x00" in v:
                return False
            if not v.isascii():
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    return False
        elif t is dict:
            for key, item in v.items():
                if type(key) is not str:
                    return False
                push(item)
        elif t is int:
            if not -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER:
                return False
        elif t is list or t is tuple:
            extend(v)
        elif not (v is None or t is bool):
            return False
    return True


def _check(value: Any, path: str) -> None:
    if path == "$" and _plainly_canonical(value):
        return
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        if "\x00" in value:
            raise CanonicalEncodingError(path, "the NUL character is not allowed in text")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise CanonicalEncodingError(path, "text must be valid Unicode (a lone surrogate "
                                         "has no UTF-8 form)") from None
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise CanonicalEncodingError(path, "integers must lie within ±(2**53 - 1)")
        return
    if isinstance(value, float):
        raise CanonicalEncodingError(path, "floats are not allowed, use an integer or a string")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalEncodingError(path, f"object keys must be strings, got {key!r}")
            _check(item, f"{path}.{key}")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]")
        return
    raise CanonicalEncodingError(path, f"{type(value).__name__} is not a JSON value")


#: one encoder for every call (json.dumps with options builds an encoder each time)
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                            allow_nan=False)


def canonical_bytes(value: Any) -> bytes:
    """Return the canonical JSON bytes of ``value`` (raises CanonicalEncodingError)."""
    _check(value, "$")
    return _ENCODER.encode(value).encode("utf-8")


def _no_float(text: str) -> Any:
    raise CanonicalEncodingError("$", f"float {text} in canonical data")


#: one decoder for every call (json.loads with options builds a decoder and its scanner each time)
_DECODER = json.JSONDecoder(parse_float=_no_float, parse_constant=_no_float)


class _NotPlain(ValueError):
    """Raised inside :func:`decode_exact`'s decoder: a float, a constant or an unsafe integer."""


def _not_plain(text: str) -> Any:
    raise _NotPlain(text)


def _safe_int(text: str) -> int:
    value = int(text)
    if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return value
    raise _NotPlain(text)


_EXACT_DECODER = json.JSONDecoder(parse_float=_not_plain, parse_constant=_not_plain,
                                  parse_int=_safe_int)


def decode_exact(data: bytes) -> Any | None:
    """The value ``data`` encodes if ``data`` is exactly its canonical bytes; None if it is
    not, or may not be (then :func:`decode` and :func:`canonical_bytes` say why).

    The fast check of a record read back (one decode, one encode, a compare): decoding
    refuses floats, constants and unsafe integers, encoding a lone surrogate fails, a NUL
    can only come from the escape ``\\u0000``, and anything else not canonical (spaces,
    key order, escapes, duplicate keys) encodes to other bytes.
    """
    if b"\\u0000" in data:
        return None
    try:
        value = _EXACT_DECODER.decode(data.decode("utf-8"))
        again = _ENCODER.encode(value).encode("utf-8")
    except ValueError:  # JSON, UTF-8 (decode and encode) and _NotPlain errors
        return None
    return value if again == data else None


def decode(data: bytes) -> Any:
    """Decode canonical JSON bytes; anything canonical_bytes would refuse is refused."""
    value = _DECODER.decode(data.decode("utf-8"))
    _check(value, "$")
    return value


def stored_event_bytes(seq: int, originator_id: str, version: int, type_name: str,
                       payload_bytes: bytes) -> bytes:
    """The canonical bytes of one stored event: the Merkle leaf's preimage.

    ``payload_bytes`` must already be canonical (as stored); the envelope is built
    around it byte for byte, so it equals ``canonical_bytes`` of the whole record
    (keys in sorted order: id, payload, seq, type, version).
    """
    quote = json.dumps
    return b"".join((
        b'{"id":', quote(originator_id, ensure_ascii=False).encode("utf-8"),
        b',"payload":', payload_bytes,
        b',"seq":', str(int(seq)).encode("ascii"),
        b',"type":', quote(type_name, ensure_ascii=False).encode("utf-8"),
        b',"version":', str(int(version)).encode("ascii"), b"}"))
