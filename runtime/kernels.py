"""Compute semantics of the interpreter's tile instructions (GEMM, VEC, SELECT, REDUCE,
LAYERNORM, SOFTMAX, SOFTMAX_ONLINE): `KERNELS[name](machine, fields)` performs the whole tile
operation; runtime/interpreter.py's SEMANTICS holds them beside the DMA and cluster instructions.

Each kernel computes exactly what the plain numpy expression in its comment computes: the same
operations on the same dtypes in the same order, so results are bit for bit those of the
expression (tests/test_fast_paths.py checks it, special values included). What differs is where
the intermediate tiles live: a fresh numpy temporary of a BERT-sized tile (hundreds of KB, beyond
malloc's reuse) costs page faults worth more than the arithmetic on it, so kernels write into the
destination (out=) or into scratch arrays the machine keeps per tile shape.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from ctac.runtime import isa
from ctac.runtime.special_functions import erf

if TYPE_CHECKING:
    from ctac.runtime.interpreter import Machine

Fields = Mapping


def scratch(
    machine: Machine, shape: tuple[int, ...], dtype: type = np.float64, slot: int = 0
) -> np.ndarray:
    """A reusable array of `shape` for `machine`; its contents are garbage between calls.
    Kept in the machine's `scratch_arrays` by (shape, dtype, slot): slots are a kernel's
    distinct temporaries, and each lane has its own (Machine.for_second_lane)."""
    arrays = machine.scratch_arrays
    key = (shape, dtype, slot)
    array = arrays.get(key)
    if array is None:
        array = arrays[key] = np.empty(shape, dtype=dtype)
    return array


def gemm(machine: Machine, f: Fields) -> None:
    """dst (+)= a @ b (+ bias): `out = a @ b; out += bias`, or `out += (a @ b) + bias`."""
    m, k, n = f["m"], f["k"], f["n"]
    a = machine.operand("a", f["a"], f["a_addr"], m, k)
    b = (
        machine.operand("b", f["b"], f["b_addr"], n, k).T
        if f["transpose_b"]
        else machine.operand("b", f["b"], f["b_addr"], k, n)
    )
    out = machine.tile(f["dst"], f["dst_addr"], m, n)
    bias = machine.tile(f["bias"], f["bias_addr"], 1, n) if f["has_bias"] else None
    if f["accumulate"]:
        product = scratch(machine, (m, n), np.float32)
        np.matmul(a, b, out=product)
        if bias is not None:
            product += bias
        out += product
        return
    # only a tile of the destination's own buffer can overlap it (a forwarded operand is DRAM)
    if (f["a"] == f["dst"] and np.shares_memory(out, a)) or (
        f["b"] == f["dst"] and np.shares_memory(out, b)
    ):
        out[...] = a @ b  # the product is complete before dst changes
    else:
        np.matmul(a, b, out=out)
    if bias is not None:
        out += bias


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


# special_functions.erf's Chebyshev coefficients, highest power first (Horner order).
_ERFC_POLY = (
    0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807,
    -0.18628806, 0.09678418, 0.37409196, 1.00002368,
)  # fmt: skip


def gelu_into(machine: Machine, a: np.ndarray, out: np.ndarray) -> None:
    """out = _gelu(a in float64): special_functions.erf's operations in its order, on scratch tiles."""
    x, z, t, poly = (scratch(machine, a.shape, np.float64, slot) for slot in range(4))
    np.copyto(x, a)  # a.astype(np.float64)
    np.divide(x, math.sqrt(2.0), out=z)  # u, erf's argument
    positive = np.greater_equal(z, 0, out=scratch(machine, a.shape, np.bool_, 4))
    np.abs(z, out=z)
    np.multiply(z, 0.5, out=t)
    t += 1.0
    np.divide(1.0, t, out=t)  # t = 1 / (1 + z/2)
    np.multiply(t, _ERFC_POLY[0], out=poly)
    for coefficient in _ERFC_POLY[1:]:
        poly += coefficient
        poly *= t
    np.multiply(z, z, out=z)
    np.negative(z, out=z)  # -z * z
    z -= 1.26551223
    z += poly
    np.exp(z, out=z)
    z *= t  # erfc(|u|)
    # where(u >= 0, 1 - erfc, erfc - 1) as (1 - erfc) * +-1: erfc - 1 is exactly -(1 - erfc), a
    # NaN passes a multiplication unchanged, and masked (where=) ufuncs are slow.
    sign = np.multiply(positive, 2.0, out=poly)
    sign -= 1.0
    np.subtract(1.0, z, out=z)
    z *= sign  # erf(u)
    z += 1.0
    x *= 0.5
    x *= z
    out[...] = x


class _TableScratch:
    """Owns the scratch tiles gelu_into uses while the GELU table is made."""

    def __init__(self) -> None:
        self.scratch_arrays: dict = {}


# The fp16 GELU table. An fp16 machine's GELU reads tiles its loads widened from fp16, and fp16
# has 63,488 finite values: gelu_into of each, made once, answers a tile in ~6 four-byte passes
# where gelu_into takes ~30 eight-byte ones. Indexed by an fp16 value's code: its float32 bits
# after a multiply by 2**-112 (which brings fp16's exponent range down to float32's bottom,
# subnormals included), shifted right by 13: fp16's bits, with the sign at bit 18. `_FP16_VALUES`
# maps a code back to its value (NaN for codes of no finite fp16 value), which is how a tile is
# checked to hold fp16 values only. None until first used; False where gelu_into's bits depend
# on an element's place in its tile (exp's SIMD and scalar loops differing), checked when made.
_GELU_TABLE: np.ndarray | bool | None = None
_FP16_VALUES: np.ndarray | None = None
_TABLE_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):  # a fork (runtime/lane_worker.py) never copies it held
    os.register_at_fork(
        before=_TABLE_LOCK.acquire,
        after_in_parent=_TABLE_LOCK.release,
        after_in_child=_TABLE_LOCK.release,
    )
_FP16_SCALE = 2.0**-112
GELU_TABLE_MIN_ELEMENTS = 4096  # below, making the codes costs more than gelu_into saves


def _gelu_table() -> np.ndarray | bool:
    global _GELU_TABLE, _FP16_VALUES
    if _GELU_TABLE is not None:  # made: no lock on the hot path
        return _GELU_TABLE
    with _TABLE_LOCK:
        if _GELU_TABLE is None:
            codes = np.arange(1 << 16, dtype=np.uint32)
            halves = codes.astype(np.uint16).view(np.float16)
            finite = np.isfinite(halves)
            values = halves[finite].astype(np.float32)
            owner = _TableScratch()
            results, again = np.empty_like(values), np.empty_like(values)
            gelu_into(owner, values, results)
            gelu_into(owner, values[::-1][1:].copy(), again[1:])  # every element elsewhere
            again[0] = results[-1]
            same = np.array_equal(results.view(np.uint32), again[::-1].view(np.uint32))
            index = (codes[finite] & 0x7FFF) | ((codes[finite] & 0x8000) << 3)
            _FP16_VALUES = np.full(1 << 19, np.nan, np.float32)
            _FP16_VALUES[index] = values
            table = np.zeros(1 << 19, np.float32)
            table[index] = results
            _GELU_TABLE = table if same else False
        return _GELU_TABLE


def gelu_by_table(machine: Machine, a: np.ndarray, out: np.ndarray) -> bool:
    """out = gelu_into's result from the fp16 GELU table, where `a` (float32, C-contiguous)
    holds only finite fp16 values; False, with out untouched, where it does not."""
    if a.size < GELU_TABLE_MIN_ELEMENTS or not a.flags.c_contiguous:
        return False
    table = _gelu_table()
    if table is False:
        return False
    scaled = scratch(machine, a.shape, np.float32, 5)
    np.multiply(a, _FP16_SCALE, out=scaled)
    codes = scratch(machine, a.shape, np.intp, 6)  # np.take's own index type: no conversion
    np.right_shift(scaled.view(np.uint32), 13, out=codes)
    values = scratch(machine, a.shape, np.float32, 7)
    np.take(_FP16_VALUES, codes, out=values)
    if not np.array_equal(values, a):  # a NaN never equals: a tile with one is not fp16
        return False
    np.take(table, codes, out=out)
    return True


_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "max": np.maximum,
    "min": np.minimum,
    "pow": np.power,
    "eq": lambda a, b: (a == b).astype(np.float32),
    "lt": lambda a, b: (a < b).astype(np.float32),
    "le": lambda a, b: (a <= b).astype(np.float32),
    "gt": lambda a, b: (a > b).astype(np.float32),
    "ge": lambda a, b: (a >= b).astype(np.float32),
    "and": lambda a, b: ((a != 0) & (b != 0)).astype(np.float32),
    "or": lambda a, b: ((a != 0) | (b != 0)).astype(np.float32),
}
_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "not": lambda a: (a == 0).astype(np.float32),
    "neg": np.negative,
    "abs": np.abs,
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "rsqrt": lambda a: 1.0 / np.sqrt(a),
    "recip": lambda a: 1.0 / a,
    "erf": lambda a: erf(a),
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "tanh": np.tanh,
    "sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a)),
    "relu": lambda a: np.maximum(a, 0),
    "trunc": np.trunc,
    "round": np.round,  # halves to even (ONNX Round, QuantizeLinear)
    "nonzero": lambda a: (a != 0).astype(np.float32),
    "cumsum": lambda a: np.cumsum(a, axis=1),
}
# Correctly rounded float32 ufuncs: written straight into dst (out=), identical by IEEE 754.
# The others (exp, tanh, ...) keep numpy's own temporary, whatever loop numpy picks for it.
_EXACT_UFUNCS = {"add", "sub", "mul", "div", "max", "min", "neg", "abs", "sqrt", "trunc"}


def vec(machine: Machine, f: Fields) -> None:
    """dst = a OP b elementwise (warnings off: inf and NaN are values here)."""
    rows, cols, op = f["rows"], f["cols"], f["op"]
    a = machine.tile(f["a"], f["a_addr"], rows, cols)
    with np.errstate(all="ignore"):
        if op == "copy":
            b = machine.broadcast(f["b"], f["b_addr"], rows, cols, f["bcast"], f["imm"])
            machine.tile(f["dst"], f["dst_addr"], rows, cols)[...] = b
            return
        if op == "transpose":
            result = a.T.copy()  # a copy first: dst may overlap a
            machine.tile(f["dst"], f["dst_addr"], cols, rows)[...] = result
            return
        if op in _UNARY:
            dst = machine.tile(f["dst"], f["dst_addr"], rows, cols)
            if op == "gelu":
                # only an fp16 machine's tiles can be fp16 values: an fp32 one skips the check
                fp16_tile = machine.element_type == "fp16" and gelu_by_table(machine, a, dst)
                if not fp16_tile:
                    gelu_into(machine, a, dst)
            elif op in _EXACT_UFUNCS:
                _UNARY[op](a, out=dst)
            else:
                dst[...] = _UNARY[op](a.astype(np.float64) if op == "erf" else a)
            return
        b = machine.broadcast(f["b"], f["b_addr"], rows, cols, f["bcast"], f["imm"])
        dst = machine.tile(f["dst"], f["dst_addr"], rows, cols)
        if op in _EXACT_UFUNCS:
            _BINARY[op](a, b, out=dst)
        else:
            dst[...] = _BINARY[op](a, b)


def select(machine: Machine, f: Fields) -> None:
    rows, cols = f["rows"], f["cols"]
    condition = machine.broadcast(f["cond"], f["cond_addr"], rows, cols, f["cond_bcast"])
    a = machine.broadcast(f["a"], f["a_addr"], rows, cols, f["a_bcast"])
    b = machine.broadcast(f["b"], f["b_addr"], rows, cols, f["b_bcast"])
    machine.tile(f["dst"], f["dst_addr"], rows, cols)[...] = np.where(condition != 0, a, b)


_REDUCTIONS = {"sum": np.sum, "max": np.max, "mean": np.mean, "min": np.min}


def reduce(machine: Machine, f: Fields) -> None:
    source = machine.tile(f["src"], f["src_addr"], f["rows"], f["cols"])
    function = _REDUCTIONS[f["op"]]
    machine.tile(f["dst"], f["dst_addr"], f["rows"], 1)[:, 0] = function(source, axis=1)


def layernorm(machine: Machine, f: Fields) -> None:
    """x = src in float64; (x - mean) / sqrt(mean((x - mean) ** 2) + eps) * gamma (+ beta);
    with `rms` no mean is subtracted (RMSNorm)."""
    rows, cols = f["rows"], f["cols"]
    source = machine.tile(f["src"], f["src_addr"], rows, cols)
    x = scratch(machine, (rows, cols), np.float64, 0)
    np.copyto(x, source)
    if not f["rms"]:
        x -= x.mean(axis=1, keepdims=True)
    squares = np.multiply(x, x, out=scratch(machine, (rows, cols), np.float64, 1))  # numpy's ** 2
    variance = squares.mean(axis=1, keepdims=True)
    x /= np.sqrt(variance + f["eps"])
    x *= machine.tile(f["gamma"], f["gamma_addr"], 1, cols)
    if f["has_beta"]:
        x += machine.tile(f["beta"], f["beta_addr"], 1, cols)
    machine.tile(f["dst"], f["dst_addr"], rows, cols)[...] = x


def _visible_scores(machine: Machine, f: Fields) -> tuple[np.ndarray, np.ndarray | None]:
    """SOFTMAX's scaled, softcapped, masked scores (-inf where a key is not visible) in float64,
    in a scratch tile, and the per-column count weights of compressed keys. SOFTMAX_ONLINE keeps
    its mask and counts in vec and folds the tile's first query into its causal offset."""
    rows, cols = f["rows"], f["cols"]
    if "state_addr" in f:
        f = {**f, "mask_buf": isa.VEC_BUFFER, "counts": isa.VEC_BUFFER, "row0": 0}
    scores = scratch(machine, (rows, cols), np.float64, 0)
    np.copyto(scores, machine.tile(f["src"], f["src_addr"], rows, cols))
    scores *= f["scale"]
    if f["softcap"] > 0:  # softcap * tanh(scores / softcap)
        scores /= f["softcap"]
        np.tanh(scores, out=scores)
        scores *= f["softcap"]
    visible = None
    if f["mask"] == "keys":
        visible = machine.tile(f["mask_buf"], f["mask_addr"], 1, cols) != 0
    elif f["mask"] == "additive":
        scores += machine.tile(f["mask_buf"], f["mask_addr"], rows, cols)
    if f["causal"]:
        frontier = np.arange(rows)[:, None] + f["row0"] + f["causal_offset"]
        causal = np.arange(cols)[None, :] <= frontier
        visible = causal if visible is None else visible & causal
    weights_per_column = None
    if f["has_counts"]:
        counts = machine.tile(f["counts"], f["counts_addr"], 1, cols)
        visible = counts > 0 if visible is None else visible & (counts > 0)
        weights_per_column = counts
    if visible is not None:  # where(visible, scores, -inf); everything visible: no change
        np.copyto(scores, -np.inf, where=~np.broadcast_to(visible, (rows, cols)))
    return scores, weights_per_column


def softmax(machine: Machine, f: Fields) -> None:
    rows, cols = f["rows"], f["cols"]
    weights, weights_per_column = _visible_scores(machine, f)
    peak = weights.max(axis=1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    weights -= peak
    np.exp(weights, out=weights)  # exp(scores - peak)
    if weights_per_column is not None:
        weights *= weights_per_column
    total = weights.sum(axis=1, keepdims=True)
    out = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    machine.tile(f["dst"], f["dst_addr"], rows, cols)[...] = out


def softmax_online(machine: Machine, f: Fields) -> None:
    rows, cols = f["rows"], f["cols"]
    weights, weights_per_column = _visible_scores(machine, f)
    state = machine.tile(isa.VEC_BUFFER, f["state_addr"], 3, rows)  # max, sum, rescale columns
    if f["first"]:
        old_max, old_sum = np.full(rows, -np.inf), np.zeros(rows)
    else:
        old_max, old_sum = state[0].astype(np.float64), state[1].astype(np.float64)
    new_max = np.maximum(old_max, weights.max(axis=1, initial=-np.inf))
    pivot = np.where(np.isfinite(new_max), new_max, 0.0)
    weights -= pivot[:, None]
    np.exp(weights, out=weights)  # exp(scores - pivot)
    if weights_per_column is not None:
        weights *= weights_per_column
    rescale = np.where(np.isfinite(old_max), np.exp(old_max - pivot), 0.0)
    new_sum = old_sum * rescale + weights.sum(axis=1)
    if f["last"]:
        inverse = np.divide(1.0, new_sum, out=np.zeros_like(new_sum), where=new_sum > 0)
        weights *= inverse[:, None]
        rescale = rescale * inverse
    machine.tile(f["dst"], f["dst_addr"], rows, cols)[...] = weights
    state[0], state[1], state[2] = new_max, new_sum, rescale


KERNELS: dict[str, Callable[[Machine, Fields], None]] = {
    "GEMM": gemm,
    "VEC": vec,
    "SELECT": select,
    "REDUCE": reduce,
    "LAYERNORM": layernorm,
    "SOFTMAX": softmax,
    "SOFTMAX_ONLINE": softmax_online,
}
