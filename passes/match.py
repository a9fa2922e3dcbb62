"""Small helpers the pattern-matching passes share: read a constant scalar, find the other
operand of a binary op, follow a value to its single user, and rewrite a matched value inside
an xDSL PatternRewriter without renaming anything."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from xdsl.ir import Operation, SSAValue
from xdsl.pattern_rewriter import PatternRewriter
from xdsl.rewriter import InsertPoint

from ctac.dialects import onnx as ox


def scalar_of(value: SSAValue | None) -> float | None:
    """The value of a constant whose elements are all equal (a scalar or a splat), else None.
    The one way passes read a constant operand such as an epsilon, a scale or a 0/1 identity."""
    owner = value.owner if value is not None else None
    if isinstance(owner, ox.ConstantOp):
        array = owner.to_numpy()
        if array.size and (array == array.flat[0]).all():
            return float(array.flat[0])
    return None


def close(value: float | None, target: float, tolerance: float = 1e-3) -> bool:
    """`value` is within `tolerance` (relative, absolute below 1) of `target`; None is not."""
    return value is not None and abs(value - target) <= tolerance * max(1.0, abs(target))


def other_operand(op: Operation, value: SSAValue) -> SSAValue | None:
    """The operand of binary `op` that is not `value` (None if `value` is not an operand)."""
    if len(op.operands) != 2:
        return None
    a, b = op.operands
    if a is value:
        return b
    if b is value:
        return a
    return None


def operands_matching(
    op: Operation, predicate: Callable[[SSAValue], bool]
) -> tuple[SSAValue, SSAValue] | None:
    """For a commutative binary op: (operand satisfying predicate, the other one)."""
    a, b = op.operands
    if predicate(a):
        return a, b
    if predicate(b):
        return b, a
    return None


def single_user(value: SSAValue) -> Operation | None:
    """The op using `value` if it has exactly one use (a matched chain must not be shared)."""
    return value.get_user_of_unique_use()


def owner_op(value: SSAValue) -> Operation:
    owner = value.owner
    assert isinstance(owner, Operation)
    return owner


def replace_value(
    rewriter: PatternRewriter, old: SSAValue, new_ops: Sequence[Operation], new: SSAValue
) -> None:
    """Insert `new_ops` before `old`'s owner, make every use of `old` use `new`, and erase the
    owner once nothing uses it. Unlike `rewriter.replace`, it copies no name hints: printed IR
    keeps the names the importer gave (the new value's own, or none)."""
    anchor = owner_op(old)
    if new_ops:
        rewriter.insert(new_ops, InsertPoint.before(anchor))
    rewriter.replace_all_uses_with(old, new)
    if all(not result.uses for result in anchor.results):
        rewriter.erase(anchor)
