"""onnx-canonicalize, second stage: the decomposed GELU becomes one `onnx.Gelu`.

Exporters write GELU out as elementwise ops, in two forms and in any grouping of the product:
- Erf form: 0.5 * x * (1 + erf(x / sqrt 2)) (`approximate` none);
- Tanh form: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))) (`approximate = "tanh"`).
Each pattern starts at the Erf / Tanh and follows single users down to the product.
"""

from __future__ import annotations

import math

from xdsl.dialects.builtin import StringAttr
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


def _half_x_times(inner: SSAValue, x: SSAValue) -> SSAValue | None:
    """The result of 0.5 * x * inner in any grouping, found from inner's single user."""
    user = single_user(inner)
    if not isinstance(user, ox.MulOp):
        return None
    other = other_operand(user, inner)
    if other is None:
        return None
    if other is x:
        after = single_user(user.C)
        if isinstance(after, ox.MulOp) and close(scalar_of(other_operand(after, user.C)), 0.5):
            return after.C
        return None
    half = other.owner
    if isinstance(half, ox.MulOp):
        pair = operands_matching(half, lambda v: v is x)
        if pair is not None and close(scalar_of(pair[1]), 0.5):
            return user.C
    if close(scalar_of(other), 0.5):
        # (0.5 * inner) * x
        after = single_user(user.C)
        if isinstance(after, ox.MulOp) and other_operand(after, user.C) is x:
            return after.C
    return None


def _plus_one(value: SSAValue) -> SSAValue | None:
    user = single_user(value)
    if isinstance(user, ox.AddOp) and close(scalar_of(other_operand(user, value)), 1.0):
        return user.C
    return None


def _gelu_result(x: SSAValue, inner: SSAValue) -> tuple[SSAValue, SSAValue] | None:
    result = _half_x_times(inner, x)
    # Shapes only grow through broadcasting: equal end shapes mean no constant broadcast x.
    if result is None or ox.shape_of(result) != ox.shape_of(x):
        return None
    return x, result


def match_gelu_erf(erf: ox.ErfOp) -> tuple[SSAValue, SSAValue] | None:
    """Erf form: 0.5 * x * (1 + erf(x / sqrt 2)). Returns (x, result)."""
    scaled = erf.X.owner
    x = None
    if isinstance(scaled, ox.DivOp) and close(scalar_of(scaled.B), math.sqrt(2.0)):
        x = scaled.A
    elif isinstance(scaled, ox.MulOp):
        pair = operands_matching(scaled, lambda v: close(scalar_of(v), 1 / math.sqrt(2.0)))
        if pair is not None:
            x = pair[1]
    if x is None:
        return None
    inner = _plus_one(erf.Y)
    if inner is None:
        return None
    return _gelu_result(x, inner)


def _is_cube(power: object, x: SSAValue) -> bool:
    """Pow(x, 3) or (x * x) * x."""
    if isinstance(power, ox.PowOp):
        return power.A is x and close(scalar_of(power.B), 3.0)
    return (
        isinstance(power, ox.MulOp)
        and isinstance(power.A.owner, ox.MulOp)
        and power.B is x
        and power.A.owner.A is x
        and power.A.owner.B is x
    )


def match_gelu_tanh(tanh: ox.TanhOp) -> tuple[SSAValue, SSAValue] | None:
    """Tanh form: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))). Returns (x, result)."""
    scaled = tanh.X.owner
    if not isinstance(scaled, ox.MulOp):
        return None
    pair = operands_matching(scaled, lambda v: close(scalar_of(v), math.sqrt(2 / math.pi)))
    if pair is None or not isinstance(pair[1].owner, ox.AddOp):
        return None
    add = pair[1].owner
    for x, cubic in (add.operands, reversed(add.operands)):
        cubic_op = cubic.owner
        if not isinstance(cubic_op, ox.MulOp):
            continue
        cube = operands_matching(cubic_op, lambda v: close(scalar_of(v), 0.044715))
        if cube is None or not _is_cube(cube[1].owner, x):
            continue
        inner = _plus_one(tanh.Y)
        if inner is None:
            return None
        return _gelu_result(x, inner)
    return None


def _rewrite_gelu(
    rewriter: PatternRewriter, x: SSAValue, result: SSAValue, approximate: str
) -> None:
    properties = {"approximate": StringAttr(approximate)} if approximate != "none" else {}
    gelu = ox.GeluOp.build(operands=[x], result_types=[result.type], properties=properties)
    gelu.Y.name_hint = result.name_hint
    # The rest of the matched chain loses its last user here and goes with dead-code removal.
    replace_value(rewriter, result, [gelu], gelu.Y)


class GeluErf(RewritePattern):
    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        # Exact type tests, not op_type_rewrite_pattern's isinstance (ABCMeta): every op of
        # every sweep comes here.
        if type(op) is ox.ErfOp:
            match = match_gelu_erf(op)
            if match is not None:
                _rewrite_gelu(rewriter, *match, "none")


class GeluTanh(RewritePattern):
    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        if type(op) is ox.TanhOp:
            match = match_gelu_tanh(op)
            if match is not None:
                _rewrite_gelu(rewriter, *match, "tanh")
