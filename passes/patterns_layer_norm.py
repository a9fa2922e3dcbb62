"""onnx-canonicalize, second stage: the decomposed LayerNorm becomes one
`onnx.LayerNormalization`, the decomposed RMSNorm one `onnx.RMSNormalization`.

Exporters write (x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) [* scale] [+ bias] as
ReduceMean / Sub / Pow (or Mul) / ReduceMean / Add / Sqrt / Div [/ Mul / Add], the means over a
run of trailing axes with keepdims. The pattern starts at the Div.

RMSNorm (T5, LLaMA-style) is x / sqrt(mean(x^2) + eps) [* scale], no mean subtracted. The
mean square is ReduceMean(x^2) or ReduceSum(x^2) / n (x^2 as Pow(x, 2) or Mul(x, x)); the root
is applied as Div(x, Sqrt(ms + eps)), or x times an inverse root written Div(1, Sqrt(..)),
Reciprocal(Sqrt(..)) or Pow(.., -0.5) (T5 under TorchScript: Mul(x, Div(1, Sqrt)), then
Mul(weight, ..)). The pattern starts at that Div or Mul. The rewritten op computes the same
function on every input: it replaces only chains whose operands are the same x, whose axes are
the trailing run the op normalises over, and whose divisor is exactly that run's size (tests
compare both forms against onnxruntime, tests/test_rms_norm.py).
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
    shifted = plus_epsilon(sqrt.X)
    if shifted is None:
        return None
    variance, epsilon = shifted[0].owner, shifted[1]
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
        _rewrite_as_norm(rewriter, ox.LayerNormalizationOp, match)


# ---------------------------------------------------------------------------------------------
# RMSNorm (T5, LLaMA-style): x / sqrt(mean(x^2) + eps) [* scale] -> onnx.RMSNormalization
# ---------------------------------------------------------------------------------------------


@dataclass
class RMSNormMatch:
    x: SSAValue
    axis: int  # negative: counted from the last axis
    epsilon: float
    scale: SSAValue | None
    result: SSAValue


def _mean_of_squares(value: SSAValue) -> tuple[SSAValue, int] | None:
    """(x, first normalised axis) if `value` is mean(x^2) over a run of trailing axes with
    keepdims: ReduceMean(x^2), or ReduceSum(x^2) / n with n the reduced elements (the form
    ctac/contrib_fused.py writes for SkipSimplifiedLayerNormalization, valid at opset 17)."""
    owner = value.owner
    divisor = None
    if type(owner) is ox.DivOp:
        divisor = scalar_of(owner.B)
        owner = owner.A.owner
        if divisor is None or type(owner) is not ox.ReduceSumOp:
            return None
    elif type(owner) is not ox.ReduceMeanOp:
        return None
    assert isinstance(owner, ox.ReduceOp)
    if not owner.int_attr("keepdims", 1):
        return None
    square = owner.data.owner
    is_pow = isinstance(square, ox.PowOp) and close(scalar_of(square.B), 2.0)
    if not (is_pow or (isinstance(square, ox.MulOp) and square.A is square.B)):
        return None
    assert isinstance(square, ox.BinaryElementwiseOp)
    x = square.A
    shape = ox.shape_of(x)
    axis = _trailing_axes(owner.axes, len(shape))
    if axis is None:
        return None
    if divisor is not None and not close(divisor, float(np.prod(shape[axis:])), 1e-6):
        return None
    return x, axis


def _root_of_shifted(value: SSAValue, inverse: bool) -> tuple[SSAValue, float] | None:
    """(mean square, epsilon) if `value` is sqrt(ms + eps), or with `inverse` 1 / sqrt(ms + eps)
    written as Div(1, Sqrt), Reciprocal(Sqrt) or Pow(ms + eps, -0.5)."""
    owner = value.owner
    if inverse:
        if type(owner) is ox.PowOp and close(scalar_of(owner.B), -0.5):
            shifted = owner.A
        elif type(owner) is ox.DivOp and close(scalar_of(owner.A), 1.0):
            return _root_of_shifted(owner.B, inverse=False)
        elif type(owner) is ox.ReciprocalOp:
            return _root_of_shifted(owner.X, inverse=False)
        else:
            return None
    elif type(owner) is ox.SqrtOp:
        shifted = owner.X
    else:
        return None
    return plus_epsilon(shifted)


def plus_epsilon(value: SSAValue) -> tuple[SSAValue, float] | None:
    """(v, epsilon) for value = v + epsilon (a scalar constant, on either side)."""
    add = value.owner
    if type(add) is not ox.AddOp:
        return None
    pair = operands_matching(add, lambda v: scalar_of(v) is not None)
    if pair is None:
        return None
    epsilon = scalar_of(pair[0])
    assert epsilon is not None
    return pair[1], epsilon


def match_rms_norm(op: Operation) -> RMSNormMatch | None:
    """x / sqrt(mean(x^2) + eps) or x * (1 / sqrt(mean(x^2) + eps)) [* scale], starting at the
    Div or Mul that applies the (inverse) root to x."""
    candidates: list[tuple[SSAValue, SSAValue, bool]] = []
    if type(op) is ox.DivOp:
        candidates.append((op.A, op.B, False))
    elif type(op) is ox.MulOp:
        candidates += [(op.A, op.B, True), (op.B, op.A, True)]
    for x, root, inverse in candidates:
        found = _root_of_shifted(root, inverse)
        if found is None:
            continue
        mean_square, epsilon = found
        squared = _mean_of_squares(mean_square)
        if squared is None or squared[0] is not x:
            continue
        axis = squared[1]
        shape = ox.shape_of(x)
        # The root broadcasts along the normalised axes only (keepdims, no other reduction).
        if ox.shape_of(root) != shape[:axis] + (1,) * (len(shape) - axis):
            continue
        result = op.results[0]
        if ox.shape_of(result) != shape:
            continue
        scale = None
        normalized_shape = shape[axis:]
        user = single_user(result)
        if type(user) is ox.MulOp:
            other = other_operand(user, result)
            if (
                other is not None
                and isinstance(other.owner, ox.ConstantOp | ox.WeightOp)
                and ox.broadcast_shapes(normalized_shape, ox.shape_of(other)) == normalized_shape
            ):
                scale, result = other, user.C
        return RMSNormMatch(x, axis - len(shape), epsilon, scale, result)
    return None


class RMSNorm(RewritePattern):
    """After LayerNorm in the recognition list: a LayerNorm's Div is also x / sqrt(mean(x^2) +
    eps) of the centred x, and the applier takes the first pattern that rewrites an op."""

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        if type(op) is not ox.DivOp and type(op) is not ox.MulOp:
            return
        match = match_rms_norm(op)
        if match is None:
            return
        _rewrite_as_norm(rewriter, ox.RMSNormalizationOp, match)


def _rewrite_as_norm(
    rewriter: PatternRewriter,
    norm: type[ox.LayerNormalizationOp | ox.RMSNormalizationOp],
    match: LayerNormMatch | RMSNormMatch,
) -> None:
    """Replace the matched chain's result with one `norm` op of x, the scale (and LayerNorm's
    optional bias group). The ONNX
    op's scale is not optional: a matched form without one scales by 1. The rest of the chain
    loses its last user here and goes with dead-code removal."""
    new_ops: list[Operation] = []
    scale = match.scale
    if scale is None:
        normalized_shape = ox.shape_of(match.x)[match.axis :]
        dtype = ox.numpy_dtype(ox.element_of(match.x))
        ones = ox.ConstantOp.from_numpy(np.ones(normalized_shape, dtype=dtype))
        new_ops.append(ones)
        scale = ones.output
    operands: list = [match.x, scale]
    if norm is ox.LayerNormalizationOp:
        operands.append([match.bias] if match.bias is not None else [])
    op = norm.build(
        operands=operands,
        result_types=[match.result.type],
        properties={
            "axis": IntegerAttr(match.axis, i64),
            "epsilon": FloatAttr(match.epsilon, f32),
        },
    )
    op.Y.name_hint = match.result.name_hint
    new_ops.append(op)
    replace_value(rewriter, match.result, new_ops, op.Y)
