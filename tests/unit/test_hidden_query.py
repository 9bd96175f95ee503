"""The hidden query's primitive (core/hidden_query.py, docs/HIDDEN_QUERY.md)."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest

from aggregation.service import sealed_rows
from core import hidden_query as hq

# RFC 9497, appendix A.1.1 (OPRF(ristretto255, SHA-512), mode 0)
SEED = bytes([0xA3]) * 32
KEY_INFO = b"test key"
SK_SM = "5ebcea5ee37023ccb9fc2d2019f9d7737be85591ae8652ffa9ef0f4d37063b0e"
BLIND = "64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706"
VECTOR_1 = {
    "input": "00",
    "blinded": "609a0ae68c15a3cf6903766461307e5c8bb2f95e7e6550e1ffa2dc99e412803c",
    "evaluated": "7ec6578ae5120958eb2db1745758ff379e77cb64fe77b0b2d8cc917ea0869c7e",
    "output": "527759c3d9366f277d8c6020418d96bb393ba2afb20ff90df23fb7708264e2f3"
              "ab9135e3bd69955851de4b1f9fe8a0973396719b7912ba9ee8aa7d0b5e24bcf6",
}
VECTOR_2_INPUT = "5a" * 17
VECTOR_2_BLINDED = "da27ef466870f5f15296299850aa088629945a17d1f5b7f5ff043f76b3c06418"

CODES = [f"91110000{i:010d}" for i in range(50)]
ROWS = {code: f'{{"code":"{code}","score":{i}}}'.encode() for i, code in enumerate(CODES)}
OUTSIDERS = ["91310000MA1FL0000X", "92440300MA5EXAMPLE"]


def _elements(wire: bytes, tag: bytes) -> list[bytes]:
    body = wire[len(tag) + 4:]
    return [body[i:i + 32] for i in range(0, len(body), 32)]


def test_rfc9497_vector_mode_0() -> None:
    key = hq.derive_key(SEED, KEY_INFO)
    assert key.hex() == SK_SM
    code = bytes.fromhex(VECTOR_1["input"]).decode()
    state, request = hq.blind([code], blinds=[bytes.fromhex(BLIND)])
    assert _elements(request, hq.REQUEST_TAG) == [bytes.fromhex(VECTOR_1["blinded"])]
    response = hq.evaluate(key, request)
    assert _elements(response, hq.RESPONSE_TAG) == [bytes.fromhex(VECTOR_1["evaluated"])]
    assert hq.finalize(state, response)[code].hex() == VECTOR_1["output"]
    assert hq.oprf_output(key, code).hex() == VECTOR_1["output"]
    _, request_2 = hq.blind([bytes.fromhex(VECTOR_2_INPUT).decode()],
                            blinds=[bytes.fromhex(BLIND)])
    assert _elements(request_2, hq.REQUEST_TAG) == [bytes.fromhex(VECTOR_2_BLINDED)]


def test_expand_message_xmd_longer_than_one_block() -> None:
    out = hq.expand_message_xmd(b"abc", b"DST", 200)
    assert len(out) == 200 and out[:64] != out[64:128]


def test_bank_gets_exactly_its_rows_members_and_non_members() -> None:
    key = hq.generate_key()
    table = hq.prepare_table(key, ROWS)
    query = CODES[3:7] + OUTSIDERS + [CODES[40]]
    state, request = hq.blind(query)
    response = hq.evaluate(key, request)
    got = hq.lookup(table, state, response)
    assert set(got) == set(query)
    for code in query:
        assert got[code] == ROWS.get(code)
    assert hq.request_size(request) == len(query)


def test_another_key_opens_nothing() -> None:
    table = hq.prepare_table(hq.generate_key(), ROWS)
    other = hq.generate_key()
    state, request = hq.blind(CODES[:5])
    assert hq.lookup(table, state, hq.evaluate(other, request)) == dict.fromkeys(CODES[:5])


def test_the_table_names_no_code() -> None:
    table = hq.prepare_table(hq.generate_key(), ROWS)
    published = table.table_id + b"".join(k + v for k, v in table.rows.items())
    for code, row in ROWS.items():
        assert code.encode() not in published
        assert row not in published
        assert hashlib.sha256(code.encode()).digest() not in published


def test_node_view_is_the_blinded_request_only() -> None:
    query = CODES[:10] + OUTSIDERS
    _, request = hq.blind(query)
    elements = _elements(request, hq.REQUEST_TAG)
    assert len(request) == len(hq.REQUEST_TAG) + 4 + 32 * len(query)
    assert len(elements) == len(query)
    for code in query:
        data = code.encode()
        keyless = [
            data, data.hex().encode(), code.encode("utf-16-le"),
            hashlib.sha256(data).digest(), hashlib.sha512(data).digest(),
            hashlib.sha256(data).hexdigest().encode(),
            hq.expand_message_xmd(data, hq.HASH_TO_GROUP_DST, 64),
            hq.hash_to_group(data),
        ]
        for value in keyless:
            assert value not in request
            assert value[:16] not in request


def test_blinding_the_same_code_twice_gives_different_requests() -> None:
    _, first = hq.blind([CODES[0]])
    _, second = hq.blind([CODES[0]])
    assert first != second
    assert hq.request_commitment(first) != hq.request_commitment(second)
    _, both = hq.blind([CODES[0], CODES[0]])
    a, b = _elements(both, hq.REQUEST_TAG)
    assert a != b


def test_a_malformed_element_is_refused() -> None:
    key = hq.generate_key()
    _, request = hq.blind(CODES[:3])
    head = len(hq.REQUEST_TAG) + 4
    # 0xff..ff is not a canonical field element, so no ristretto255 encoding
    bad = request[:head + 32] + b"\xff" * 32 + request[head + 64:]
    with pytest.raises(hq.HiddenQueryError, match="element 1 of the request is not a valid"):
        hq.evaluate(key, bad)
    identity = request[:head] + bytes(32) + request[head + 32:]
    with pytest.raises(hq.HiddenQueryError, match="element 0 of the request is not a valid"):
        hq.evaluate(key, identity)
    with pytest.raises(hq.HiddenQueryError, match="not a valid ristretto255 point"):
        hq.request_commitment(bad)


@pytest.mark.parametrize("mangle", [
    lambda r: r[:-1],
    lambda r: r + b"\x00",
    lambda r: b"x" + r[1:],
    lambda r: hq.REQUEST_TAG + (0).to_bytes(4, "big"),
    lambda r: hq.REQUEST_TAG + (hq.MAX_CODES + 1).to_bytes(4, "big"),
])
def test_a_malformed_request_is_refused(mangle) -> None:  # type: ignore[no-untyped-def]
    _, request = hq.blind(CODES[:2])
    with pytest.raises(hq.HiddenQueryError):
        hq.evaluate(hq.generate_key(), mangle(request))


def test_a_response_is_checked_before_finalize() -> None:
    key = hq.generate_key()
    state, request = hq.blind(CODES[:2])
    response = hq.evaluate(key, request)
    head = len(hq.RESPONSE_TAG) + 4
    with pytest.raises(hq.HiddenQueryError, match="element 0 of the response"):
        hq.finalize(state, response[:head] + b"\xff" * 32 + response[head + 32:])
    with pytest.raises(hq.HiddenQueryError, match="for 2 codes"):
        hq.finalize(state, hq.evaluate(key, hq.blind(CODES[:3])[1]))
    with pytest.raises(hq.HiddenQueryError, match="not a hidden-query response"):
        hq.finalize(state, request)


def test_bad_keys_and_codes_are_refused() -> None:
    _, request = hq.blind(CODES[:1])
    order = hq._ORDER.to_bytes(32, "little")
    for key in (bytes(32), order, b"short"):
        with pytest.raises(hq.HiddenQueryError, match="OPRF key"):
            hq.evaluate(key, request)
    for codes in ([], [""], ["x" * 300], [b"bytes"]):
        with pytest.raises(hq.HiddenQueryError):
            hq.blind(codes)  # type: ignore[arg-type]


def test_a_tampered_row_is_refused() -> None:
    key = hq.generate_key()
    table = hq.prepare_table(key, {CODES[0]: ROWS[CODES[0]]})
    (lookup_id, sealed), = table.rows.items()
    tampered = hq.HiddenTable(table.table_id, {lookup_id: sealed[:-1] + bytes([sealed[-1] ^ 1])})
    state, request = hq.blind([CODES[0]])
    with pytest.raises(hq.HiddenQueryError, match="tampered"):
        hq.lookup(tampered, state, hq.evaluate(key, request))


def test_what_the_ledger_records() -> None:
    key = hq.generate_key()
    _, request = hq.blind(CODES[:4])
    response = hq.evaluate(key, request)
    assert hq.request_commitment(request) == hashlib.sha256(request).hexdigest()
    assert hq.request_size(request) == 4
    assert hq.answer_hash(response) == hashlib.sha256(response).hexdigest()
    with pytest.raises(hq.HiddenQueryError):
        hq.answer_hash(request)


def test_tables_under_two_ids_share_no_lookup_id() -> None:
    key = hq.generate_key()
    first = hq.prepare_table(key, ROWS)
    second = hq.prepare_table(key, ROWS)
    assert first.table_id != second.table_id
    assert not set(first.rows) & set(second.rows)
    assert first.digest() != second.digest()


def _table_bytes() -> tuple[bytes, hq.HiddenTable, bytes]:
    key = hq.generate_key()
    table = hq.prepare_table(key, {code: ROWS[code] for code in CODES[:5]})
    return key, table, table.to_bytes()


def test_a_table_travels_as_canonical_bytes() -> None:
    key, table, data = _table_bytes()
    assert data.startswith(hq.TABLE_TAG + table.table_id)
    back = hq.HiddenTable.from_bytes(data)
    assert back == table and back.digest() == table.digest()
    # insertion order does not change the bytes: rows go in lookup-id order
    reordered = hq.HiddenTable(table.table_id, dict(reversed(list(table.rows.items()))))
    assert reordered.to_bytes() == data
    # the bank looks up in the copy it read back
    state, request = hq.blind([CODES[1], OUTSIDERS[0]])
    found = hq.lookup(back, state, hq.evaluate(key, request))
    assert found == {CODES[1]: ROWS[CODES[1]], OUTSIDERS[0]: None}
    assert hq.HiddenTable.from_bytes(hq.HiddenTable(b"\x01" * 16, {}).to_bytes()).rows == {}


_HEAD = len(hq.TABLE_TAG) + 16 + 8 + 4  # tag, table id, row count, sealed-row length


def _row_at(data: bytes, i: int) -> tuple[int, int]:
    """The offset of row ``i`` of ``data`` and its sealed length (rows of one length)."""
    size = int.from_bytes(data[_HEAD - 4:_HEAD], "big")
    return _HEAD + i * (32 + size), size


def _swap_first_rows(data: bytes) -> bytes:
    first, size = _row_at(data, 0)
    second, _ = _row_at(data, 1)
    end = second + 32 + size
    return data[:first] + data[second:end] + data[first:second] + data[end:]


def _repeat_first_row(data: bytes) -> bytes:
    first, size = _row_at(data, 0)
    second, _ = _row_at(data, 1)
    end = second + 32 + size
    return data[:second] + data[first:second] + data[end:]


def _with_count(data: bytes, count: int) -> bytes:
    at = len(hq.TABLE_TAG) + 16
    return data[:at] + count.to_bytes(8, "big") + data[at + 8:]


def _with_row_length(data: bytes, size: int) -> bytes:
    return data[:_HEAD - 4] + size.to_bytes(4, "big") + data[_HEAD:]


@pytest.mark.parametrize(("mangle", "message"), [
    (lambda d: b"x" + d, "not a hidden-query table"),
    (lambda d: d.replace(hq.TABLE_TAG, hq.REQUEST_TAG, 1), "not a hidden-query table"),
    (lambda d: d.replace(hq.TABLE_TAG, b"dataledger/hidden-query/table/v1\n", 1),
     "not a hidden-query table \\(of this version\\)"),
    (lambda d: d[:len(hq.TABLE_TAG) + 10], "truncated"),
    (lambda d: d[:-1], "length does not match its 5 rows"),
    (lambda d: d + b"\x00", "length does not match its 5 rows"),
    (lambda d: _with_count(d, 4), "length does not match its 4 rows"),
    (lambda d: _with_count(d, 6), "length does not match its 6 rows"),
    (lambda d: _with_count(d, hq.MAX_TABLE_ROWS + 1), "at most 2000000 rows"),
    (lambda d: _with_row_length(d, 3), "rows are 3 bytes, not a bucket"),
    (lambda d: _with_row_length(d, 100), "rows are 100 bytes, not a bucket"),
    (lambda d: _with_row_length(d, hq.MAX_SEALED_ROW_BYTES * 2), "not a bucket"),
    (_swap_first_rows, "row 1 of the table is out of lookup-id order"),
    (_repeat_first_row, "row 1 of the table is out of lookup-id order"),
    (lambda d: "text", "not a hidden-query table"),
])
def test_a_malformed_table_is_refused(mangle, message) -> None:  # type: ignore[no-untyped-def]
    _, _, data = _table_bytes()
    with pytest.raises(hq.HiddenQueryError, match=message):
        hq.HiddenTable.from_bytes(mangle(data))


def test_every_sealed_row_of_a_table_has_one_length() -> None:
    """The table tells the bank nothing of a row's length: rows of 2 to 900 bytes are all
    padded to one power-of-two bucket before sealing, and open to exactly what was sealed."""
    rows = {f"91110000MA0{i:07d}X": b"x" * n for i, n in enumerate([2, 9, 63, 64, 500, 900])}
    key = hq.generate_key()
    table = hq.prepare_table(key, rows)
    assert {len(sealed) for sealed in table.rows.values()} == {1024 + 16}
    data = table.to_bytes()
    assert len(data) == _HEAD + len(rows) * (32 + 1024 + 16)
    state, request = hq.blind(list(rows))
    assert hq.lookup(hq.HiddenTable.from_bytes(data), state, hq.evaluate(key, request)) == rows
    assert hq.row_bucket([b""]) == hq.MIN_ROW_BUCKET and hq.row_bucket([bytes(60)]) == 64
    assert hq.row_bucket([bytes(61)]) == 128


def test_the_joint_table_s_rows_do_not_leak_their_length() -> None:
    """The aggregation node's rows (a key and summed values of 1 to 7 digits) seal alike."""
    table = {f"91110000MA0{i:07d}X": {"score": s, "weight": 0.5}
             for i, s in enumerate([5, 42, 1234567, 9, 88888])}
    joint = SimpleNamespace(key_column="credit_code")
    hidden = hq.prepare_table(hq.generate_key(), sealed_rows(joint, table))  # type: ignore[arg-type]
    assert len({len(v) for v in hidden.rows.values()}) == 1


def test_padding_is_unambiguous_and_bounded() -> None:
    assert hq.unpad_row(hq.pad_row(b"ab\x00", 64)) == b"ab\x00"
    for padded in (bytes(3), (61).to_bytes(4, "big") + bytes(60),
                   (1).to_bytes(4, "big") + b"a" + b"\x01" + bytes(58)):
        with pytest.raises(hq.HiddenQueryError, match="not padded"):
            hq.unpad_row(padded)
    with pytest.raises(hq.HiddenQueryError, match="does not fit"):
        hq.pad_row(bytes(61), 64)
    with pytest.raises(hq.HiddenQueryError, match="power of two"):
        hq.pad_row(b"a", 100)
    with pytest.raises(hq.HiddenQueryError, match="longer than"):
        hq.row_bucket([bytes(hq.MAX_ROW_BUCKET)])
    a_table = hq.prepare_table(hq.generate_key(), {"a": b"1", "b": b"22"})
    uneven = hq.HiddenTable(a_table.table_id, {**a_table.rows, bytes(32): b"x" * 20})
    with pytest.raises(hq.HiddenQueryError, match="all of one length"):
        uneven.to_bytes()
