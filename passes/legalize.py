"""legalize-for-isa: rewrite ops the accelerator has no lowering for into ops it has.

The vector unit reduces along a tile's rows and its ALU has max and min, so:
- Clip(x, lo, hi) becomes Min(Max(x, lo), hi) (either bound may be absent);
- a transpose that moves the input's last axis away from the output's last two becomes two
  transposes the DMA and the vector unit can do;
- a reduction over axes other than just the last (a sentence-transformers mean-pooling head sums
  over the sequence axis) becomes Transpose (reduced axes last) -> Reshape (them flattened into
  one) -> the same reduction over the last axis -> Reshape (keepdims); a row longer than
  SPLIT_ROW is reduced in two stages.
Both are exact rewrites (the same numbers in the same order per output element, up to the float
summation order of the reduction). lower-to-isa runs this on its own copy of the module, so the
module a user prints or evaluates is left as imported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, ModuleOp, TensorType, i64
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from ctac.dialects import onnx as ox

REDUCTIONS = (ox.ReduceSumOp, ox.ReduceMeanOp, ox.ReduceMaxOp, ox.ReduceMinOp)


class ClipToMinMax(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: ox.ClipOp, rewriter: PatternRewriter) -> None:
        value: SSAValue = op.input
        new_ops: list[Operation] = []
        for bound, variadic in ((op.min, ox.MaxOp), (op.max, ox.MinOp)):
            if bound is None:
                continue
            new = variadic.build(operands=[[value, bound]], result_types=[op.output.type])
            new_ops.append(new)
            value = new.results[0]
        if not new_ops:  # Clip without bounds is the identity
            new_ops.append(ox.IdentityOp.build(operands=[value], result_types=[op.output.type]))
        rewriter.replace(op, new_ops)


def _constant(values: list[int]) -> ox.ConstantOp:
    return ox.ConstantOp.from_numpy(np.array(values, dtype=np.int64))


def _reshape(value: SSAValue, shape: list[int], new_ops: list[Operation]) -> SSAValue:
    shape_op = _constant(shape)
    reshape = ox.ReshapeOp.build(
        operands=[value, shape_op.results[0]],
        result_types=[TensorType(ox.element_of(value), shape)],
    )
    new_ops += [shape_op, reshape]
    return reshape.results[0]


def reduced_axes(op: ox.ReduceOp) -> list[int] | None:
    """The axes `op` reduces (sorted, non-negative), or None when they are not constants."""
    rank = len(ox.shape_of(op.data))
    if op.axes is None:
        return list(range(rank))
    owner = op.axes.owner
    if not isinstance(owner, ox.ConstantOp):
        return None
    axes = sorted({int(a) % rank for a in owner.to_numpy().reshape(-1)})
    return axes or list(range(rank))


# Rows longer than this are reduced in two stages: they may not fit a buffer half (the
# dynamic-int8 quantizer takes the min and max of a whole (1, 128, 1536) activation).
SPLIT_ROW = 4096


def _split(length: int) -> int:
    """The largest divisor of `length` up to SPLIT_ROW when `length` is longer than that and
    the split leaves reasonably long rows (else 0: one stage)."""
    if length <= SPLIT_ROW:
        return 0
    divisor = next(d for d in range(SPLIT_ROW, 0, -1) if length % d == 0)
    return divisor if divisor >= 64 else 0


class ReduceOverLastAxis(RewritePattern):
    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        if not isinstance(op, REDUCTIONS):
            return
        shape = list(ox.shape_of(op.data))
        rank = len(shape)
        axes = reduced_axes(op)
        if axes is None or rank == 0 or (axes == [rank - 1] and shape[-1] <= SPLIT_ROW):
            return
        if op.axes is not None and op.int_attr("noop_with_empty_axes", 0):
            owner = op.axes.owner
            if isinstance(owner, ox.ConstantOp) and owner.to_numpy().size == 0:
                return  # the identity; left to the lowering to refuse or copy
        kept = [a for a in range(rank) if a not in axes]
        perm = kept + axes
        new_ops: list[Operation] = []
        value: SSAValue = op.data
        if perm != list(range(rank)):
            transpose = ox.TransposeOp.build(
                operands=[value],
                result_types=[TensorType(ox.element_of(value), [shape[p] for p in perm])],
                properties={"perm": DenseArrayBase.from_list(i64, perm)},
            )
            new_ops.append(transpose)
            value = transpose.results[0]
        kept_shape = [shape[a] for a in kept]
        flat = int(np.prod([shape[a] for a in axes]))
        # A reduction to a scalar keeps one row to reduce: (1, N) -> (1,).
        rows = kept_shape or [1]
        # A long row is reduced in two stages, (rows, a, b) -> (rows, a) -> rows, each row
        # short enough for a buffer (exact for sum, max, min; mean of equal-sized means).
        split = _split(flat)
        stages = (
            [[*rows, flat // split, split], [*rows, flat // split]] if split else [[*rows, flat]]
        )
        if list(ox.shape_of(value)) != stages[0]:
            value = _reshape(value, stages[0], new_ops)
        for stage in stages:
            last = _constant([-1])
            reduce = type(op).build(
                operands=[value, [last.results[0]]],
                result_types=[TensorType(ox.element_of(value), stage[:-1])],
                properties={"keepdims": IntegerAttr(0, i64)},
            )
            new_ops += [last, reduce]
            value = reduce.results[0]
        out_shape = list(ox.shape_of(op.reduced))
        if out_shape != rows:
            value = _reshape(value, out_shape, new_ops)
        rewriter.replace(op, new_ops, [value])


def _needs_two_transposes(op: Operation) -> bool:
    """A transpose the DMA cannot do in one pass: the input's last (contiguous) axis is
    neither of the output's last two."""
    if not isinstance(op, ox.TransposeOp):
        return False
    perm = list(op.permutation())
    return len(perm) >= 3 and len(perm) - 1 not in perm[-2:]


class TransposeInTwo(RewritePattern):
    """Transpose(x, P) with the input's last axis moved elsewhere than the output's last two
    (a T5 position bias: (q, k, heads) -> (heads, q, k)) = Transpose(Transpose(x, Q), R): Q is P
    with that axis moved to second-to-last (a row swap the vector unit does), R puts the rest in
    place keeping the last axis last (strided rows)."""

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        if not _needs_two_transposes(op):
            return
        assert isinstance(op, ox.TransposeOp)
        perm = list(op.permutation())
        last = len(perm) - 1
        first = [a for a in perm if a != last]
        first.insert(len(first) - 1, last)
        second = [first.index(a) for a in perm]
        shape = ox.shape_of(op.data)
        step = ox.TransposeOp.build(
            operands=[op.data],
            result_types=[TensorType(ox.element_of(op.data), [shape[a] for a in first])],
            properties={"perm": DenseArrayBase.from_list(i64, first)},
        )
        final = ox.TransposeOp.build(
            operands=[step.results[0]],
            result_types=[op.transposed.type],
            properties={"perm": DenseArrayBase.from_list(i64, second)},
        )
        rewriter.replace(op, [step, final])


@dataclass(frozen=True)
class LegalizeForIsaPass(ModulePass):
    """Clip -> Max/Min; reductions over any axes -> a reduction over the last axis."""

    name = "legalize-for-isa"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        legalize(op)


def legalize(module: ModuleOp) -> None:
    PatternRewriteWalker(
        GreedyRewritePatternApplier([ClipToMinMax(), ReduceOverLastAxis(), TransposeInTwo()]),
        apply_recursively=True,
    ).rewrite_module(module)


def needs_legalizing(module: ModuleOp) -> bool:
    for op in module.walk():
        if isinstance(op, ox.ClipOp) or _needs_two_transposes(op):
            return True
        if isinstance(op, REDUCTIONS):
            axes, shape = reduced_axes(op), ox.shape_of(op.data)
            if axes is not None and (axes != [len(shape) - 1] or shape[-1] > SPLIT_ROW):
                return True
    return False
