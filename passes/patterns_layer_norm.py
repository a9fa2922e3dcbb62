"""onnx-canonicalize, second stage: the decomposed LayerNorm becomes one
`onnx.LayerNormalization`.

Exporters write (x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) [* scale] [+ bias] as
ReduceMean / Sub / Pow (or Mul) / ReduceMean / Add / Sqrt / Div [/ Mul / Add], the means over a
run of trailing axes with keepdims. The pattern starts at the Div.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, f32, i64
from xdsl.ir import Operation, SSAValue
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern

from ctac.dialects import onnx as ox
from ctac.passes.match import (
    close,
    operands_matching,
    other_operand,
    replace_value,
    scalar_of,
    single_user,
)


def _trailing_axes(axes_value: SSAValue | None, rank: int) -> int | None:
    """The first axis if `axes` is a constant run of trailing axes, else None."""
    if axes_value is None or not isinstance(axes_value.owner, ox.ConstantOp):
        return None
    axes = sorted(int(a) % rank for a in axes_value.owner.to_numpy().reshape(-1))
    if not axes or axes != list(range(axes[0], rank)):
        return None
    return axes[0]


@dataclass
class LayerNormMatch:
    x: SSAValue
    axis: int  # negative: counted from the last axis
    epsilon: float
    scale: SSAValue | None
    bias: SSAValue | None
    result: SSAValue


def _is_square_of(square: object, centered: SSAValue) -> bool:
    """Pow(centered, 2) or centered * centered."""
    if isinstance(square, ox.PowOp):
        return square.A is centered and close(scalar_of(square.B), 2.0)
    return isinstance(square, ox.MulOp) and square.A is centered and square.B is centered


def match_layer_norm(div: ox.DivOp) -> LayerNormMatch | None:
    """(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) [* scale] [+ bias]."""
    centered, denominator = div.A, div.B
    sub = centered.owner
    sqrt = denominator.owner
    if not isinstance(sub, ox.SubOp) or not isinstance(sqrt, ox.SqrtOp):
        return None
    x, mean = sub.A, sub.B
    mean_op = mean.owner
    if not isinstance(mean_op, ox.ReduceMeanOp) or mean_op.data is not x:
        return None
    if not mean_op.int_attr("keepdims", 1):
        return None
    rank = len(ox.shape_of(x))
    axis = _trailing_axes(mean_op.axes, rank)
    if axis is None:
        return None
    add = sqrt.X.owner
    if not isinstance(add, ox.AddOp):
        return None
    pair = operands_matching(add, lambda v: scalar_of(v) is not None)
    if pair is None:
        return None
    epsilon = scalar_of(pair[0])
    assert epsilon is not None
    variance = pair[1].owner
    if not isinstance(variance, ox.ReduceMeanOp) or _trailing_axes(variance.axes, rank) != axis:
        return None
    # keepdims on both means, so sqrt(variance) broadcasts along the normalised axes only.
    mean_shape = ox.shape_of(mean)
    if ox.shape_of(variance.reduced) != mean_shape or ox.shape_of(sqrt.Y) != mean_shape:
        return None
    if not _is_square_of(variance.data.owner, centered):
        return None
    result = div.C
    scale = bias = None
    normalized_shape = ox.shape_of(x)[axis:]

    def fits(value: SSAValue) -> bool:
        return isinstance(value.owner, ox.ConstantOp | ox.WeightOp) and (
            ox.broadcast_shapes(normalized_shape, ox.shape_of(value)) == normalized_shape
        )

    user = single_user(result)
    if isinstance(user, ox.MulOp):
        other = other_operand(user, result)
        if other is not None and fits(other):
            scale, result = other, user.C
            user = single_user(result)
    if isinstance(user, ox.AddOp):
        other = other_operand(user, result)
        if other is not None and fits(other):
            bias, result = other, user.C
    if ox.shape_of(result) != ox.shape_of(x):
        return None
    return LayerNormMatch(x, axis - rank, epsilon, scale, bias, result)


class LayerNorm(RewritePattern):
    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        # An exact type test (see patterns_gelu.GeluErf).
        if type(op) is not ox.DivOp:
            return
        match = match_layer_norm(op)
        if match is None:
            return
        new_ops: list[Operation] = []
        scale = match.scale
        if scale is None:
            # LayerNormalization's scale is not optional: a matched form without one scales by 1.
            normalized_shape = ox.shape_of(match.x)[match.axis :]
            dtype = ox.numpy_dtype(ox.element_of(match.x))
            ones = ox.ConstantOp.from_numpy(np.ones(normalized_shape, dtype=dtype))
            new_ops.append(ones)
            scale = ones.output
        layer_norm = ox.LayerNormalizationOp.build(
            operands=[match.x, scale, [match.bias] if match.bias is not None else []],
            result_types=[match.result.type],
            properties={
                "axis": IntegerAttr(match.axis, i64),
                "epsilon": FloatAttr(match.epsilon, f32),
            },
        )
        layer_norm.Y.name_hint = match.result.name_hint
        new_ops.append(layer_norm)
        # The rest of the matched chain loses its last user here and goes with dead-code removal.
        replace_value(rewriter, match.result, new_ops, layer_norm.Y)
