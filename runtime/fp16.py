"""Exact, fast conversions between an fp16 machine's DRAM and its float32 buffers.

An fp16 program widens every weight it loads (fp16 -> float32) and rounds every value it stores
(float32 -> fp16, kept in the float32 heap). numpy's float16 casts convert one element at a time:
about 1.7 ns per element to widen and 3 ns to narrow on this project's machines (numpy 2.4), which
made loads and stores 60% of an exact BERT-base run. The functions here do the same conversions
with a handful of vectorised passes over a tile (integer tricks to widen, Veltkamp's float split
to round), 2-4x faster, and give bit for bit what numpy's casts give
(tests/test_fp16_conversions.py checks all 65,536 fp16 values, whole binades of float32, rounding
ties, subnormals, signed zeros, saturation, inf and NaN). Tiles holding what the tricks do not cover
(fp16 inf or NaN when widening; NaN, inf or anything beyond +-65504 when rounding) take numpy's
cast.
"""

from __future__ import annotations

import numpy as np

from ctac.runtime.data_segment import FP16_MAX, to_storage

# An fp16 bit pattern shifted left by 13 is a float32 whose exponent is 112 too small (127 - 15),
# for normal and subnormal values alike: multiplying by 2**112 rebias it exactly.
_REBIAS = np.float32(2.0**112)
_SIGN_AND_MAGNITUDE = np.int32(-0x70002000)  # 0x8FFFE000: bit 31 and fp16's 15 bits, shifted
_WIDENED_INF = np.float32(65536.0)  # fp16 inf / NaN (exponent 31) come out at >= 2**16
_SMALLEST_NORMAL = np.float32(2.0**-14)
_TO_SUBNORMALS, _FROM_SUBNORMALS = np.float32(2.0**-125), np.float32(2.0**125)
# Below these sizes a tile converts faster with numpy's cast: the tricks' dozen numpy calls cost
# ~5-7 us whatever the size (measured on this project's machine, numpy 2.4; rounding: the cast
# path, to_storage, 7.8 / 8.6 / 11.7 us at 1024 / 1280 / 2048 elements, the tricks 7.7 / 8.3 at
# 1280 / 2048).
WIDEN_MIN_ELEMENTS = 4096
ROUND_MIN_ELEMENTS = 1280
_DROPPED_BITS = 13  # float32 has 23 fraction bits, fp16 10
_SPLITTER = np.float32((1 << _DROPPED_BITS) + 1)


def tricks_hold() -> bool:
    """Whether widen_into / round_into may use their tricks in this process now: not with
    denormals-are-zero or flush-to-zero set (some libraries set them), where the widening
    multiply would flush fp16 subnormals to zero, or rounding's scaled subnormals would."""
    half = np.array([2.0**-24, -(2.0**-20), 1.5, -0.0], dtype=np.float16)
    widened = np.empty(half.shape, dtype=np.float32)
    _widen_bits(half, widened)
    scaled = np.multiply(widened, _TO_SUBNORMALS)  # float32 subnormals, unless flushed
    return bool(
        np.array_equal(widened.view(np.int32), half.astype(np.float32).view(np.int32))
        and np.array_equal(np.multiply(scaled, _FROM_SUBNORMALS), widened)
    )


def _widen_bits(half: np.ndarray, out: np.ndarray) -> None:
    bits = out.view(np.int32)
    np.copyto(bits, half.view(np.int16))  # sign-extends: bit 31 becomes the sign
    np.left_shift(bits, _DROPPED_BITS, out=bits)
    np.bitwise_and(bits, _SIGN_AND_MAGNITUDE, out=bits)
    np.multiply(out, _REBIAS, out=out)


def widen_into(half: np.ndarray, out: np.ndarray, exact_tricks: bool = True) -> None:
    """out[...] = half, float16 -> float32. `out` a C-contiguous float32 array of half's shape
    (which may be strided); `exact_tricks` False (tricks_hold) takes numpy's cast."""
    if not (
        exact_tricks
        and out.size >= WIDEN_MIN_ELEMENTS
        and out.flags.c_contiguous
        and out.dtype == np.float32
    ):
        out[...] = half
        return
    _widen_bits(half, out)
    if out.max() >= _WIDENED_INF or out.min() <= -_WIDENED_INF:
        out[...] = half  # the tile holds an fp16 inf or NaN


def rounds_with_tricks(values: np.ndarray, exact_tricks: bool = True) -> bool:
    """Whether round_into rounds `values` with its tricks (and so needs scratch arrays): a
    float32 tile of at least ROUND_MIN_ELEMENTS, where the tricks hold."""
    return (
        exact_tricks
        and values.size >= ROUND_MIN_ELEMENTS
        and values.ndim >= 1
        and values.dtype == np.float32
    )


def split_round(values: np.ndarray, out: np.ndarray, scratch: np.ndarray) -> None:
    """out = values rounded to 11 significant bits, fp16's, to nearest even, by Veltkamp's split:
    t = x * (2**13 + 1); t - (t - x). Bit for bit numpy's cast for every float32 in fp16's
    normal range [2**-14, 65504], both signs (scripts/check_fp16_rounding.py checks all
    503,300,098), in three float passes, half the time of the integer tricks it replaced; not
    below (fp16 subnormals keep fewer bits) or beyond it. `scratch`: float32 (2 or more, *shape), dense,
    so that a strided DRAM target is written once."""
    split, difference = scratch[0], scratch[1]
    np.multiply(values, _SPLITTER, out=split)
    np.subtract(split, values, out=difference)
    np.subtract(split, difference, out=out)


def round_into(
    values: np.ndarray,
    out: np.ndarray,
    scratch: np.ndarray | None,
    exact_tricks: bool = True,
    mask: np.ndarray | None = None,
) -> None:
    """out[...] = values rounded to fp16 and widened back: values.astype(float16) with finite
    values beyond fp16's range saturated to +-65504 (runtime.data_segment.to_storage), as float32.
    `scratch` a C-contiguous float32 array of shape (3, *values.shape), overwritten; None where
    rounds_with_tricks says no (numpy's cast). `mask`: a bool array of values' shape to
    overwrite (else one is made where needed)."""
    if not (
        scratch is not None
        and scratch.flags.c_contiguous
        and scratch.shape == (3, *values.shape)
        and rounds_with_tricks(values, exact_tricks)
    ):
        out[...] = to_storage(values, "fp16")
        return
    magnitude = np.abs(values, out=scratch[0])
    if not magnitude.max() <= FP16_MAX:  # also True for a NaN
        out[...] = to_storage(values, "fp16")  # saturating
        return
    # Below 2**-14 fp16 keeps multiples of 2**-24 (its subnormals), fewer bits than the split
    # keeps. Scaled by 2**-125 those multiples are float32's subnormal steps (2**-149), so one
    # float32 multiply rounds them, to nearest even, and scaling back is exact (every float32
    # below 2**-14, both signs: scripts/check_fp16_rounding.py). Computed for the whole tile,
    # kept where |x| < 2**-14: four numpy calls, where picking the few elements out took ten.
    small = None
    if magnitude.min() < _SMALLEST_NORMAL:
        small = np.less(magnitude, _SMALLEST_NORMAL, out=mask)
        low = np.multiply(values, _TO_SUBNORMALS, out=scratch[2])
        np.multiply(low, _FROM_SUBNORMALS, out=low)
    split_round(values, out, scratch)
    if small is not None:
        np.copyto(out, low, where=small)
