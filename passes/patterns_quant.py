"""onnx-canonicalize, recognition: a MatMul of two dequantized operands as a MatMul of the
integers, scaled after.

A QDQ model (QuantizeLinear / DequantizeLinear pairs around float ops) multiplies dequantized
values: (a - za) * sa @ (b - zb) * sb, where ctac/quantized.py imports each DequantizeLinear as
Mul(Cast(q) - zero, scale). With sa a scalar and sb a scalar or one scale per column of b, the
scales factor out of the sum:

    ((a - za) @ (b - zb)) * (sa * sb)

which is what onnxruntime's QDQ fusion runs (an integer MatMul, then the scales) and what an
int8 accelerator does: the product of the centred integers runs in the PE array's int8 mode
(passes/lower_to_isa/precision.py), the int8 weights move one byte per element, and one Mul
applies the combined scale. Float rounding differs from the dequantized product only in the
order of exact integer sums and one float multiply (the sum of integers is exact in float32
below 2**24).
"""

from __future__ import annotations

import numpy as np
from xdsl.ir import Operation, SSAValue
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern

from ctac.dialects import onnx as ox
from ctac.passes.lower_to_isa.precision import is_int8_operand
from ctac.passes.match import replace_value


def _constant(value: SSAValue) -> np.ndarray | None:
    owner = value.owner
    return owner.to_numpy() if isinstance(owner, ox.ConstantOp) else None


def _dequantized(value: SSAValue, columns: int | None) -> tuple[SSAValue, np.ndarray] | None:
    """(integers, scale) for value = integers * scale (either order), the integers within the
    int8 mode's range and the scale a float constant: a scalar, or with `columns` one per column
    (shape (columns,) or (1, columns))."""
    owner = value.owner
    if type(owner) is not ox.MulOp:
        return None
    for integers, scale in ((owner.A, owner.B), (owner.B, owner.A)):
        array = _constant(scale)
        if array is None or array.dtype.kind != "f":
            continue
        shaped = array.size == 1 or (
            columns is not None and array.shape in ((columns,), (1, columns)) and columns > 1
        )
        # The cheap shape test first: is_int8_operand follows the graph for an integer range.
        if shaped and is_int8_operand(integers):
            return integers, array
    return None


def match_dequantized_matmul(
    op: ox.MatMulOp,
) -> tuple[SSAValue, SSAValue, np.ndarray] | None:
    """(a integers, b integers, combined scale) for MatMul(a * sa, b * sb), else None."""
    b_shape = ox.shape_of(op.B)
    if len(b_shape) != 2 or len(ox.shape_of(op.A)) < 2:
        return None
    left = _dequantized(op.A, None)
    right = _dequantized(op.B, b_shape[1])
    if left is None or right is None:
        return None
    scale = left[1].reshape(()).astype(np.float64) * right[1].reshape(-1).astype(np.float64)
    dtype = ox.numpy_dtype(ox.element_of(op.Y))
    return left[0], right[0], scale.astype(dtype).reshape(() if scale.size == 1 else (-1,))


class FactorDequantizedMatMul(RewritePattern):
    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        if type(op) is not ox.MatMulOp:
            return
        match = match_dequantized_matmul(op)
        if match is None:
            return
        a, b, scale = match
        product = ox.MatMulOp.build(operands=[a, b], result_types=[op.Y.type])
        factor = ox.ConstantOp.from_numpy(scale)
        scaled = ox.MulOp.build(operands=[product.Y, factor.output], result_types=[op.Y.type])
        scaled.C.name_hint = op.Y.name_hint
        replace_value(rewriter, op.Y, [product, factor, scaled], scaled.C)
