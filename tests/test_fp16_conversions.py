"""runtime/fp16.py's fast conversions give bit for bit what numpy's float16 casts give."""

from __future__ import annotations

import numpy as np
import pytest

from ctac.runtime import fp16
from ctac.runtime.data_segment import to_storage
from ctac.runtime.fp16 import round_into, split_round, tricks_hold, widen_into


@pytest.fixture(autouse=True)
def tricks_at_every_size(monkeypatch):
    """Small tiles take numpy's cast (faster there): these tests check the tricks at any size."""
    monkeypatch.setattr(fp16, "WIDEN_MIN_ELEMENTS", 1)
    monkeypatch.setattr(fp16, "ROUND_MIN_ELEMENTS", 1)


def bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32).view(np.int32)


def reference_round(values: np.ndarray) -> np.ndarray:
    return to_storage(values, "fp16").astype(np.float32)


def test_tricks_hold_here():
    assert tricks_hold()


def test_every_fp16_value_widens_exactly():
    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(256, 256)
    out = np.empty(every.shape, dtype=np.float32)
    widen_into(every, out)  # holds inf and NaN: the whole tile takes numpy's cast
    assert np.array_equal(bits(out), bits(every.astype(np.float32)))
    finite = every[np.isfinite(every)].reshape(-1, 16)
    out = np.empty(finite.shape, dtype=np.float32)
    widen_into(finite, out)
    assert np.array_equal(bits(out), bits(finite.astype(np.float32)))


def test_widening_a_strided_view():
    rng = np.random.default_rng(0)
    segment = (rng.standard_normal(64 * 48) * 0.1).astype(np.float16)
    segment[::97] = np.float16(2.0**-24)  # subnormals and signed zeros in the tile
    segment[1::89] = -0.0
    view = np.lib.stride_tricks.as_strided(
        segment, shape=(20, 30), strides=(48 * 2, 2), writeable=False
    )
    out = np.empty((20, 30), dtype=np.float32)
    widen_into(view, out)
    assert np.array_equal(bits(out), bits(view.astype(np.float32)))


def test_a_tile_with_inf_or_nan_widens_exactly():
    for special in (np.inf, -np.inf, np.nan):
        half = np.array([[1.0, special], [-2.0, 0.5]], dtype=np.float16)
        out = np.empty(half.shape, dtype=np.float32)
        widen_into(half, out)
        assert np.array_equal(bits(out), bits(half.astype(np.float32)))


def scratch_for(values: np.ndarray) -> np.ndarray:
    """round_into's scratch: three float32 arrays of the tile's shape."""
    return np.empty((3, *values.shape), dtype=np.float32)


def random_floats(rng: np.random.Generator, count: int) -> np.ndarray:
    """float32 values across fp16's whole range and beyond it, on both sides of zero."""
    magnitude = 2.0 ** rng.uniform(-30, 17, count)
    return (magnitude * rng.choice([-1.0, 1.0], count)).astype(np.float32)


def ties(rng: np.random.Generator, count: int) -> np.ndarray:
    """float32 values exactly halfway between two fp16 values: normal (low 13 bits 0x1000) and
    subnormal (odd multiples of 2**-25)."""
    normal = rng.integers(0x38800000, 0x477FE000, count, dtype=np.int64)  # 2**-14 .. 65504
    normal = ((normal & ~0x1FFF) | 0x1000).astype(np.int32).view(np.float32)
    subnormal = (2 * rng.integers(0, 1 << 10, count) + 1) * 2.0**-25
    both = np.concatenate([normal, subnormal.astype(np.float32)])
    return both * rng.choice(np.array([-1.0, 1.0], dtype=np.float32), both.size)


@pytest.mark.parametrize("seed", range(4))
def test_rounding_matches_the_cast(seed):
    rng = np.random.default_rng(seed)
    values = np.concatenate([random_floats(rng, 8000), ties(rng, 4000)])
    values = rng.permutation(values[np.abs(values) <= 65504])[:8000].reshape(-1, 8)
    out = np.empty(values.shape, dtype=np.float32)
    round_into(values, out, scratch_for(values))
    assert np.array_equal(bits(out), bits(reference_round(values)))


@pytest.mark.parametrize("low", [2.0**-14, 1.0, 32768.0])
def test_the_split_rounds_whole_binades_as_the_cast(low: float):
    """Every float32 of a binade, both signs: fp16's smallest normal one, [1, 2), and the top
    one up to 65504 (scripts/check_fp16_rounding.py runs all 30)."""
    first = np.float32(low).view(np.int32)
    top = min(np.float32(2 * low).view(np.int32), np.float32(65504.0).view(np.int32) + 1)
    values = np.arange(first, top, dtype=np.int32).view(np.float32)
    values = np.concatenate([values, -values])
    out = np.empty_like(values)
    split_round(values, out, scratch_for(values))
    assert np.array_equal(bits(out), bits(values.astype(np.float16).astype(np.float32)))


@pytest.mark.parametrize("low", [2.0**-26, 2.0**-15])
def test_round_into_rounds_whole_subnormal_binades_as_the_cast(low: float):
    """Every float32 of a binade below 2**-14 (fp16's subnormal steps: 2**-24, ties to even,
    rounding to zero below 2**-25), both signs, in tiles that also hold normal values, so each
    tile takes both the split and the scaled multiply (scripts/check_fp16_rounding.py runs every
    float32 from 0 to 65504)."""
    first = np.float32(low).view(np.int32)
    values = np.arange(first, np.float32(2 * low).view(np.int32), dtype=np.int32).view(np.float32)
    values = np.concatenate([values, -values, np.float32(1.0) + values])
    out = np.empty_like(values)
    round_into(values, out, scratch_for(values))
    assert np.array_equal(bits(out), bits(values.astype(np.float16).astype(np.float32)))


def test_rounding_edges():
    edges = np.array(
        [0.0, -0.0, 2.0**-25, -(2.0**-25), 3 * 2.0**-26, 2.0**-26, 2.0**-14, 2.0**-14 - 2.0**-26,
         2.0**-15 + 2.0**-25, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 2047.5, 2049.0, 65504.0,
         -65504.0, 65519.0, 2.0**-40, -(2.0**-40), 1e-30],
        dtype=np.float32,
    )  # fmt: skip
    inside = edges[np.abs(edges) <= 65504]
    out = np.empty(inside.shape, dtype=np.float32)
    round_into(inside, out, scratch_for(inside))
    assert np.array_equal(bits(out), bits(reference_round(inside)))
    # beyond the range, inf and NaN: the cast's saturation, inf stays inf, NaN stays NaN
    # 65530 rounds to fp16 inf, which the integer tricks would leave as 65536: a tile beyond
    # 65504 must take the saturating cast
    for special in (65519.0, 65520.0, 65530.0, 1e9, -1e38, np.inf, -np.inf, np.nan):
        tile = np.array([[1.0, special], [3.0, -2.0]], dtype=np.float32)
        out = np.empty(tile.shape, dtype=np.float32)
        round_into(tile, out, scratch_for(tile))
        assert np.array_equal(bits(out), bits(reference_round(tile)))
    assert reference_round(np.array([1e9], dtype=np.float32))[0] == 65504.0


def test_rounding_into_a_strided_target():
    rng = np.random.default_rng(7)
    heap = np.zeros(40 * 50, dtype=np.float32)
    target = np.lib.stride_tricks.as_strided(heap, shape=(40, 30), strides=(50 * 4, 4))
    values = random_floats(rng, 1200).clip(-60000, 60000).reshape(40, 30)
    round_into(values, target, scratch_for(values))
    assert np.array_equal(bits(target), bits(reference_round(values)))
    assert not heap.reshape(40, 50)[:, 30:].any()  # nothing written between the rows


def test_without_scratch_a_tile_takes_the_cast():
    values = random_floats(np.random.default_rng(4), 600).clip(-60000, 60000).reshape(20, 30)
    out = np.empty_like(values)
    round_into(values, out, None)
    assert np.array_equal(bits(out), bits(reference_round(values)))


@pytest.mark.parametrize("special", [65504.0, 65519.0, 65520.0, 1e9, -np.inf, np.nan, 2.0**-25])
def test_without_scratch_edges_take_the_saturating_cast(special: float):
    """The cast path casts a tile within +-65504 directly; beyond it (65520 casts to inf), inf
    or NaN it saturates as to_storage does."""
    tile = np.array([[1.0, special], [-3.0, 2.0**-20]], dtype=np.float32)
    out = np.empty_like(tile)
    round_into(tile, out, None)
    assert np.array_equal(bits(out), bits(reference_round(tile)))
    empty = np.zeros((0, 4), dtype=np.float32)
    round_into(empty, empty.copy(), None)


def test_without_the_tricks_the_casts_give_the_same():
    rng = np.random.default_rng(3)
    values = random_floats(rng, 600).clip(-60000, 60000).reshape(20, 30)
    fast, slow = np.empty_like(values), np.empty_like(values)
    round_into(values, fast, scratch_for(values))
    round_into(values, slow, scratch_for(values), exact_tricks=False)
    assert np.array_equal(bits(fast), bits(slow))
    half = values.astype(np.float16)
    widen_into(half, fast)
    widen_into(half, slow, exact_tricks=False)
    assert np.array_equal(bits(fast), bits(slow))
