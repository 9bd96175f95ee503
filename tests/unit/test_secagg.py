"""Secure aggregation by pairwise masking (core/secagg.py, docs/SECAGG.md).

Every input is drawn from ``random.Random`` with a fixed seed and the node keys are made
from those bytes, so every masked part, and every statistic computed over them, is the
same on each run: the tests are deterministic and cannot be flaky. The module runs in both
environments (cryptography 48 in .venv, 50 in .venv-compute); run this file in each.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from core import secagg as s

#: chi-square critical values at p = 0.001 (Wilson-Hilferty; tables give 330.5 and 104.7)
CHI2_BYTES_255 = 330.5  # 256 byte values, 255 degrees of freedom
CHI2_BITS_64 = 104.7  # 64 bit positions, each a 1-degree test, summed


def keys_for(providers: Sequence[str], seed: int) -> dict[str, X25519PrivateKey]:
    rng = random.Random(seed)
    return {p: X25519PrivateKey.from_private_bytes(rng.randbytes(32)) for p in providers}


def publics(keys: dict[str, X25519PrivateKey]) -> dict[str, str]:
    return {p: s.public_key_text(k.public_key()) for p, k in keys.items()}


def run(providers: Sequence[str], values: dict[str, list[int]], execution: str = "ex-1",
        seed: int = 7) -> list[s.MaskedPart]:
    keys = keys_for(providers, seed)
    pubs = publics(keys)
    return [s.mask(keys[p], execution, p, providers, pubs, values[p], layout_sha256=LAYOUT)
            for p in providers]


def plain_sum(values: dict[str, list[int]]) -> list[int]:
    return [sum(col) for col in zip(*values.values())]


def vectors(providers: Sequence[str], length: int, seed: int) -> dict[str, list[int]]:
    rng = random.Random(seed)
    return {p: [rng.randrange(-s.VALUE_BOUND, s.VALUE_BOUND + 1) for _ in range(length)]
            for p in providers}


PROVIDERS = ["market", "tax", "power", "water", "telecom"]
#: the SHA-256 of the layout the vectors follow (bound into every mask)
LAYOUT = "ab" * 32


# -- correctness ---------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_aggregate_is_the_plain_sum(n: int, seed: int) -> None:
    providers = PROVIDERS[:n]
    values = vectors(providers, 257, seed)
    values[providers[0]][:3] = [-s.VALUE_BOUND, s.VALUE_BOUND, -1]
    assert any(v < 0 for v in values[providers[-1]])
    assert s.aggregate(run(providers, values), "ex-1", providers) == plain_sum(values)


def test_the_sum_at_the_bounds_is_exact_with_the_most_providers() -> None:
    providers = [f"p{k:02}" for k in range(s.MAX_PROVIDERS)]
    for sign in (1, -1):
        values = {p: [sign * s.VALUE_BOUND, 0] for p in providers}
        total = s.aggregate(run(providers, values, "ex-max"), "ex-max", providers)
        assert total == [sign * s.VALUE_BOUND * s.MAX_PROVIDERS, 0]


def test_the_parts_may_arrive_in_any_order() -> None:
    providers = PROVIDERS[:4]
    values = vectors(providers, 16, 5)
    parts = run(providers, values)
    assert s.aggregate(parts[::-1], "ex-1", providers) == plain_sum(values)


def test_fixed_point_scale_and_bounds() -> None:
    providers = PROVIDERS[:3]
    reals = {"market": [1.5, -2.25, 1e-5], "tax": [0.0, 3.0, 1e12], "power": [-0.5, 1, 0]}
    values = {p: s.to_fixed(v) for p, v in reals.items()}
    assert values["market"][:2] == [3 * 2**15, -9 * 2**14]
    total = s.from_fixed(s.aggregate(run(providers, values), "ex-1", providers))
    assert total[:2] == [1.0, 1.75]
    assert total[2] == pytest.approx(1e12, abs=1 / s.SCALE)
    with pytest.raises(ValueError, match="bound"):
        s.to_fixed([2.0**41])
    with pytest.raises(ValueError, match="fixed-point"):
        s.to_fixed([float("nan")])


def test_a_known_answer_pins_the_construction_across_cryptography_versions() -> None:
    """The same digest under cryptography 48 (.venv) and 50 (.venv-compute): a node in
    one environment and the aggregator in the other agree on every mask."""
    providers = ["market", "tax", "power"]
    values = {p: list(range(-4, 4)) for p in providers}
    part = run(providers, values, execution="kat", seed=2026)[1]
    assert part.header["body_sha256"] == (
        "c2ed66f25d39c91477651a7b76c16ab0478fbeee297cbfb725516a8821c9b589")


# -- one part alone looks uniform ----------------------------------------------------------

def byte_chi2(data: bytes) -> float:
    counts = [0] * 256
    for b in data:
        counts[b] += 1
    expected = len(data) / 256
    return sum((c - expected) ** 2 / expected for c in counts)


def bit_chi2(words: list[int]) -> float:
    n = len(words)
    total = 0.0
    for bit in range(64):
        ones = sum((w >> bit) & 1 for w in words)
        total += (ones - n / 2) ** 2 / (n / 4)
    return total


def masked_bodies(runs: int, length: int) -> tuple[bytes, bytes]:
    """The middle provider's masked bodies over ``runs`` executions of small, skewed
    inputs (it adds one mask and subtracts the other), and those inputs unmasked."""
    providers = ["market", "tax", "power"]
    keys = keys_for(providers, 11)
    pubs = publics(keys)
    rng = random.Random(12)
    masked, plain = bytearray(), bytearray()
    for r in range(runs):
        values = [rng.randrange(0, 100) for _ in range(length)]
        part = s.mask(keys["tax"], f"ex-{r}", "tax", providers, pubs, values, layout_sha256=LAYOUT)
        masked += part.body
        plain += s._body(values)
    return bytes(masked), bytes(plain)


def test_a_masked_part_alone_is_indistinguishable_from_uniform() -> None:
    """400 masked parts of 32 values (102,400 bytes, 12,800 words) of inputs in [0, 100):
    the byte histogram and the 64 bit positions pass a chi-square test at p = 0.001,
    while the same inputs unmasked fail it by far (the test can tell)."""
    masked, plain = masked_bodies(400, 32)
    words = s._words(masked)
    assert byte_chi2(masked) < CHI2_BYTES_255
    assert bit_chi2(words) < CHI2_BITS_64
    assert byte_chi2(plain) > 100 * CHI2_BYTES_255
    assert bit_chi2(s._words(plain)) > 100 * CHI2_BITS_64


# -- refusals ------------------------------------------------------------------------------

def refused(parts: list[s.MaskedPart], providers: Sequence[str], execution: str = "ex-1"
            ) -> str:
    with pytest.raises(s.AggregationRefused) as err:
        s.aggregate(parts, execution, providers)
    return err.value.reason


def test_a_part_replayed_from_another_execution_is_refused() -> None:
    providers = PROVIDERS[:3]
    values = vectors(providers, 8, 4)
    parts = run(providers, values, execution="ex-1")
    old = run(providers, values, execution="ex-0")
    assert refused([parts[0], parts[1], old[2]], providers) == "execution"
    with pytest.raises(s.AggregationRefused, match="'power' is from execution 'ex-0'"):
        s.aggregate([parts[0], parts[1], old[2]], "ex-1", providers)


def test_a_replayed_body_under_a_rewritten_header_does_not_sum() -> None:
    """The masks bind the execution: an old body relabelled as this execution's passes
    the header checks (so issue 14 checks each part's digest against its ledger event),
    but the masks no longer cancel."""
    providers = PROVIDERS[:3]
    values = vectors(providers, 8, 4)
    parts = run(providers, values, execution="ex-1")
    old = run(providers, values, execution="ex-0")[2]
    forged = s.MaskedPart({**old.header, "execution_id": "ex-1"}, old.body)
    assert s.aggregate([parts[0], parts[1], forged], "ex-1", providers) != plain_sum(values)


def test_a_dropped_provider_fails_the_execution() -> None:
    providers = PROVIDERS[:3]
    values = vectors(providers, 8, 6)
    parts = run(providers, values)
    with pytest.raises(s.AggregationRefused, match="no part from 'power'"):
        s.aggregate(parts[:2], "ex-1", providers)
    # nor can the survivors' parts be summed as an execution of two
    assert refused(parts[:2], providers[:2]) == "providers"
    survivors = [sum(c) & (2**64 - 1) for c in zip(parts[0].words(), parts[1].words())]
    plain = [(a + b) & (2**64 - 1) for a, b in zip(values["market"], values["tax"])]
    assert survivors != plain


def test_a_duplicate_an_unknown_provider_a_wrong_length_or_body_is_refused() -> None:
    providers = PROVIDERS[:3]
    values = vectors(providers, 8, 8)
    parts = run(providers, values)
    assert refused([parts[0], parts[0], parts[1], parts[2]], providers) == "duplicate"
    longer = run(providers, {p: v + [0] for p, v in values.items()})
    assert refused([parts[0], parts[1], longer[2]], providers) == "length"
    cut = s.MaskedPart(parts[2].header, parts[2].body[:-8])
    assert refused([parts[0], parts[1], cut], providers) == "length"
    flipped = s.MaskedPart(parts[2].header, bytes([parts[2].body[0] ^ 1]) + parts[2].body[1:])
    assert refused([parts[0], parts[1], flipped], providers) == "body"
    stranger = s.MaskedPart({**parts[2].header, "provider_id": "mallory"}, parts[2].body)
    assert refused([parts[0], parts[1], stranger], providers) == "unknown"
    other = s.MaskedPart({**parts[2].header, "format": "v0"}, parts[2].body)
    assert refused([parts[0], parts[1], other], providers) == "format"
    assert refused(parts, providers[::-1]) == "providers"
    # a part masked over another layout than the others' (or than the one recorded)
    keys, pubs = keys_for(providers, 7), publics(keys_for(providers, 7))
    elsewhere = s.mask(keys[providers[2]], "ex-1", providers[2], providers, pubs,
                       values[providers[2]], layout_sha256="cd" * 32)
    assert refused([parts[0], parts[1], elsewhere], providers) == "layout"
    with pytest.raises(s.AggregationRefused) as info:
        s.aggregate(parts, "ex-1", providers, "cd" * 32)
    assert info.value.reason == "layout"


def test_mask_refuses_what_it_cannot_mask_safely() -> None:
    providers = PROVIDERS[:3]
    keys = keys_for(providers, 9)
    pubs = publics(keys)
    k = keys["market"]
    with pytest.raises(ValueError, match="2 to 64 providers"):
        s.mask(k, "ex", "market", ["market"], pubs, [1], layout_sha256=LAYOUT)
    with pytest.raises(ValueError, match="twice"):
        s.mask(k, "ex", "market", ["market", "tax", "tax"], pubs, [1], layout_sha256=LAYOUT)
    with pytest.raises(ValueError, match="not among"):
        s.mask(k, "ex", "bank", providers, pubs, [1], layout_sha256=LAYOUT)
    with pytest.raises(ValueError, match="bound"):
        s.mask(k, "ex", "market", providers, pubs, [s.VALUE_BOUND + 1], layout_sha256=LAYOUT)
    with pytest.raises(TypeError):
        s.mask(k, "ex", "market", providers, pubs, [1.5],  # type: ignore[list-item]
               layout_sha256=LAYOUT)
    with pytest.raises(ValueError, match="no public key"):
        s.mask(k, "ex", "market", providers, {"tax": pubs["tax"]}, [1], layout_sha256=LAYOUT)
    with pytest.raises(ValueError, match="empty"):
        s.mask(k, "ex", "market", providers, pubs, [], layout_sha256=LAYOUT)
    with pytest.raises(ValueError, match="not the one registered for 'tax'"):
        s.mask(k, "ex", "tax", providers, pubs, [1], layout_sha256=LAYOUT)


# -- the pairwise masks --------------------------------------------------------------------

def test_both_ends_of_a_pair_derive_the_same_mask_bound_to_its_context() -> None:
    keys = keys_for(["a", "b", "c"], 10)
    a, b, c = keys["a"], keys["b"], keys["c"]
    lay = {"layout_sha256": LAYOUT}
    m = s.pairwise_mask(a, b.public_key(), "ex", ("a", "b"), 6, **lay)
    assert m == s.pairwise_mask(b, s.public_key_text(a.public_key()), "ex", ("a", "b"), 6,
                                **lay)
    assert m != s.pairwise_mask(a, b.public_key(), "ex2", ("a", "b"), 6, **lay)
    assert m != s.pairwise_mask(a, b.public_key(), "ex", ("b", "a"), 6, **lay)
    assert m != s.pairwise_mask(a, c.public_key(), "ex", ("a", "b"), 6, **lay)
    # the length is bound too: a shorter vector's mask is not a prefix of a longer one's
    assert s.pairwise_mask(a, b.public_key(), "ex", ("a", "b"), 7, **lay)[:6] != m
    # and the layout: a pair masking over two different layouts never cancels
    assert m != s.pairwise_mask(a, b.public_key(), "ex", ("a", "b"), 6, layout_sha256="cd" * 32)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        s.pairwise_mask(a, b.public_key(), "ex", ("a", "b"), 6, layout_sha256="AB" * 32)


def test_a_colluding_pair_learns_only_the_sum_of_the_others() -> None:
    """Providers ``market`` and ``tax`` collude, and even see every masked part (as if
    the aggregator joined them). Stripping every mask they know from an honest part leaves
    it masked by the honest pair's mask; what they learn is the sum of the honest
    providers' values, which the joint result and their own values give anyway."""
    providers = PROVIDERS[:4]
    keys = keys_for(providers, 13)
    values = vectors(providers, 32, 14)
    parts = run(providers, values, seed=13)
    stripped = {}
    for k, honest in ((2, "power"), (3, "water")):
        words = parts[k].words()
        for bad in ("market", "tax"):  # before the honest ones: they added, it subtracted
            m = s.pairwise_mask(keys[bad], keys[honest].public_key(), "ex-1",
                                (bad, honest), 32, layout_sha256=LAYOUT)
            words = [(w + x) & (2**64 - 1) for w, x in zip(words, m)]
        stripped[honest] = words
        assert words != [v & (2**64 - 1) for v in values[honest]]
        assert byte_chi2(s._body(words)) < 5 * CHI2_BYTES_255  # 256 bytes: still noise
    both = [(a + b) & (2**64 - 1) for a, b in zip(stripped["power"], stripped["water"])]
    assert both == [(a + b) & (2**64 - 1) for a, b in zip(values["power"], values["water"])]


def test_with_one_honest_provider_left_the_colluders_learn_its_values() -> None:
    """Inherent to any sum: n - 1 colluders who learn the sum learn the last value. The
    doc says so; issue 14 must require enough providers for the result to hide one."""
    providers = PROVIDERS[:3]
    values = vectors(providers, 8, 15)
    total = s.aggregate(run(providers, values), "ex-1", providers)
    assert [t - a - b for t, a, b in zip(total, values["market"], values["tax"])] == \
        values["power"]


def test_a_part_digest_commits_to_header_and_body_and_keys_travel_as_text() -> None:
    providers = PROVIDERS[:2]
    values = vectors(providers, 4, 16)
    part = run(providers, values)[0]
    assert len(part.digest()) == 64
    other = s.MaskedPart({**part.header, "length": 5}, part.body)
    assert other.digest() != part.digest()
    key = s.new_node_key()
    text = s.public_key_text(key.public_key())
    assert s.load_public_key(text).public_bytes_raw() == key.public_key().public_bytes_raw()
    with pytest.raises(ValueError, match="32 bytes"):
        s.load_public_key(b"short")
