"""Which GEMMs can run in the PE array's integer mode (GEMM int8=1).

Quantized ONNX ops reach the lowering as float ops on integers carried as floats (ctac/quantized.py):
MatMulInteger is MatMul(Cast(a) - Cast(a_zero), Cast(b) - Cast(b_zero)), QLinearMatMul the same
with the scales applied to the product. A GEMM runs in integer mode when both operands are
provably integers in [-256, 255] (9-bit signed: an int8 or uint8 value, or one less its zero
point): `integer_range` follows each operand back through casts, zero-point subtractions and
data movement to values whose element type, or whose constant contents, bound it. Anything it
cannot prove (a dequantized operand (x - zero) * scale, a float activation) stays a float GEMM.
The mode changes the cost model only: the machine model computes in float either way, and the
integer products summed are exact in float32 below 2**24.
"""

from __future__ import annotations

import numpy as np
from xdsl.ir import SSAValue

from ctac.dialects import onnx as ox

# The operand range of the integer mode: 9-bit signed.
INT8_MODE_RANGE = (-256, 255)
# Ops that move data without changing values: the range of their first operand.
_MOVEMENT = (
    ox.ReshapeOp,
    ox.FlattenOp,
    ox.SqueezeOp,
    ox.UnsqueezeOp,
    ox.TransposeOp,
    ox.ExpandOp,
)
# Constants larger than this are not scanned (a quantized model's zero points are scalars or rows).
_SCAN_LIMIT = 1 << 20
_DEPTH_LIMIT = 32

Range = tuple[int, int]


def integer_range(value: SSAValue, depth: int = 0) -> Range | None:
    """Bounds (low, high) of `value` if every element is provably an integer in them; else None."""
    if depth > _DEPTH_LIMIT:
        return None
    try:
        dtype = ox.numpy_dtype(ox.element_of(value))
    except Exception:  # noqa: BLE001 - an element type numpy cannot hold: nothing to prove
        return None
    if dtype == np.bool_:
        return (0, 1)
    owner = value.owner
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        typed = (int(info.min), int(info.max))
        # Tighter through a cast: MatMulInteger's int32 result, cast from the float MatMul
        # that computes it, holds what the sum can reach, not any int32.
        inner = integer_range(owner.input, depth + 1) if isinstance(owner, ox.CastOp) else None
        if inner is None:
            return typed
        return (max(typed[0], inner[0]), min(typed[1], inner[1]))
    if dtype.kind != "f":
        return None
    if isinstance(owner, ox.ConstantOp):
        if int(np.prod(ox.shape_of(value), dtype=np.int64)) > _SCAN_LIMIT:
            return None
        array = owner.to_numpy()
        if array.size == 0 or not np.isfinite(array).all() or (array != np.round(array)).any():
            return None
        return (int(array.min()), int(array.max()))
    if isinstance(owner, ox.CastOp):
        inner = integer_range(owner.input, depth + 1)
        # Integers are exact in the float type below its significand's reach (float16: 2**11).
        reach = 1 << (np.finfo(dtype).nmant + 1)
        if inner is not None and -reach <= inner[0] and inner[1] <= reach:
            return inner
        return None
    if isinstance(owner, _MOVEMENT):
        return integer_range(owner.operands[0], depth + 1)
    if isinstance(owner, ox.NegOp):
        inner = integer_range(owner.operands[0], depth + 1)
        return (-inner[1], -inner[0]) if inner is not None else None
    if isinstance(owner, ox.AddOp | ox.SubOp | ox.MatMulOp):
        # The right operand only when the left one is an integer: a float model's residual
        # chains end at the first float op instead of exploring both sides.
        left = integer_range(owner.operands[0], depth + 1)
        right = integer_range(owner.operands[1], depth + 1) if left is not None else None
        if left is None or right is None:
            return None
        if isinstance(owner, ox.AddOp):
            return (left[0] + right[0], left[1] + right[1])
        if isinstance(owner, ox.SubOp):
            return (left[0] - right[1], left[1] - right[0])
        # An integer product summed over the inner dimension (MatMulInteger's int32 result).
        inner = ox.shape_of(owner.operands[0])[-1]
        bound = inner * max(map(abs, left)) * max(map(abs, right))
        return (-bound, bound)
    return None


def is_int8_operand(value: SSAValue) -> bool:
    """`value` holds integers the integer mode multiplies exactly (within INT8_MODE_RANGE)."""
    bounds = integer_range(value)
    return (
        bounds is not None and INT8_MODE_RANGE[0] <= bounds[0] and bounds[1] <= INT8_MODE_RANGE[1]
    )


def int8_gemm(a: SSAValue, b: SSAValue, bias: SSAValue | None = None) -> bool:
    """A GEMM a @ b (+ bias) runs in integer mode: both operands int8-mode integers, and the
    bias (added in the int32 accumulator) an integer that fits it."""
    if not (is_int8_operand(a) and is_int8_operand(b)):
        return False
    if bias is None:
        return True
    bounds = integer_range(bias)
    return bounds is not None and bounds[0] >= -(1 << 31) and bounds[1] < 1 << 31


def holds_bytes(value: SSAValue, depth: int = 0) -> bool:
    """`value` holds a quantized model's 8-bit integers: an int8, uint8 or bool tensor, or one
    cast to float from such a tensor (through data movement), which a deployment keeps in one
    byte per element. Float tensors that merely hold small integers do not count."""
    if depth > _DEPTH_LIMIT:
        return False
    try:
        dtype = ox.numpy_dtype(ox.element_of(value))
    except Exception:  # noqa: BLE001 - an element type numpy cannot hold
        return False
    if dtype == np.bool_ or dtype in (np.int8, np.uint8):
        return True
    owner = value.owner
    if isinstance(owner, (ox.CastOp, *_MOVEMENT)) and dtype.kind == "f":
        return holds_bytes(owner.operands[0], depth + 1)
    return False
