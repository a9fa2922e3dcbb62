"""onnx-canonicalize: `onnx` dialect in, `onnx` dialect out (named apart from xDSL's generic
`canonicalize`, which ctac-opt also offers).

- Folds every value computable from constants and static shapes (Shape, shape arithmetic,
  ConstantOfShape, Range, masks built from constants, Cast of constants...) into `onnx.Constant`.
  A folded result is kept when it is a splat, or has at most FOLD_ELEMENTS elements and is not
  float data computed from an `onnx.Weight`: computations on weights (embedding lookups,
  transposes) stay ops over the weight store, so the printed IR never carries weights.
- Removes Identity and inference-mode Dropout, and ops that do nothing: x + 0, x * 1, Cast or
  Expand to the operand's own type, identity Transpose, Where on a constant condition, chains
  of Reshape/Unsqueeze/Squeeze/Flatten that return to an earlier shape.
- Recognises the decomposed LayerNorm (ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div[/Mul/Add]) and
  GELU (Erf form and Tanh form) and replaces each with one `onnx.LayerNormalization` / `onnx.Gelu`.
- Removes ops whose results are unused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, ModuleOp, StringAttr, f32, i64
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from ctac.dialects import onnx as ox
from ctac.runtime.evaluator import operand_arrays
from ctac.runtime.reference import SEMANTICS, shape_op_result
from ctac.weights import store_for_module

# Folded values up to this many elements are kept inline (splats of any size are).
FOLD_ELEMENTS = 4096
# Do not even try to fold an op that reads or writes more than this many elements.
EVALUATE_ELEMENTS = 1 << 20


def _size(value: SSAValue) -> int:
    return int(np.prod(ox.shape_of(value)))


class _Folder:
    def __init__(self, module: ModuleOp) -> None:
        self.module = module
        self.store = None

    def value_of(self, value: SSAValue) -> np.ndarray | None:
        """The constant array behind a value, or None if it is not a constant."""
        owner = value.owner
        if isinstance(owner, ox.ConstantOp):
            return owner.to_numpy()
        if isinstance(owner, ox.WeightOp):
            if self.store is None:
                self.store = store_for_module(self.module)
            return None if self.store is None else self.store.get(owner.ref.data)
        return None

    def try_fold(self, op: ox.OnnxOp) -> list[np.ndarray] | None:
        if isinstance(op, ox.ConstantOp | ox.WeightOp):
            return None
        if isinstance(op, ox.ShapeOp):
            return [shape_op_result(op)]
        if isinstance(op, ox.GatherOp | ox.GatherElementsOp | ox.GatherNDOp):
            # Any element of a splat is the splat value, whatever the (input-dependent) indices.
            data = op.data.owner
            if isinstance(data, ox.ConstantOp):
                array = data.to_numpy()
                if array.size and (array == array.flat[0]).all():
                    result = op.results[0]
                    dtype = ox.numpy_dtype(ox.element_of(result))
                    return [np.full(ox.shape_of(result), array.flat[0], dtype=dtype)]
        if isinstance(op, ox.CastLikeOp) and isinstance(op.input.owner, ox.ConstantOp):
            # Only the target's element type matters, not its values.
            target = ox.numpy_dtype(ox.element_of(op.output))
            return [op.input.owner.to_numpy().astype(target)]
        if not all(isinstance(v.owner, ox.ConstantOp | ox.WeightOp) for v in op.operands):
            return None
        touched = sum(_size(v) for v in op.operands) + sum(_size(r) for r in op.results)
        if touched > EVALUATE_ELEMENTS or type(op) not in SEMANTICS:
            return None
        reads_weights = any(isinstance(v.owner, ox.WeightOp) for v in op.operands)
        arrays = {v: self.value_of(v) for v in op.operands}
        # Folding computes what the program would: inf/nan results are values, not warnings.
        with np.errstate(all="ignore"):
            results = SEMANTICS[type(op)](op, *operand_arrays(op, arrays))
        folded = []
        for result, array in zip(op.results, results, strict=True):
            array = np.asarray(array).astype(ox.numpy_dtype(ox.element_of(result)))
            if array.shape != ox.shape_of(result):
                return None
            splat = array.size > 0 and bool((array == array.flat[0]).all())
            # Integer and boolean results are indices and masks, not weights: fold them even
            # when they come from the weight store (position-id buffers, tril masks).
            weight_data = reads_weights and array.dtype.kind == "f"
            if not splat and (array.size > FOLD_ELEMENTS or weight_data):
                return None
            folded.append(array)
        return folded


def _erase(op: Operation) -> None:
    block = op.parent_block()
    assert block is not None
    block.erase_op(op)


def _replace_with_constants(op: Operation, arrays: list[np.ndarray]) -> None:
    block = op.parent_block()
    assert block is not None
    for result, array in zip(op.results, arrays, strict=True):
        constant = ox.ConstantOp.from_numpy(array)
        constant.output.name_hint = result.name_hint
        block.insert_op_before(constant, op)
        result.replace_all_uses_with(constant.output)
    _erase(op)


def _forward_operand(op: Operation, value: SSAValue) -> None:
    op.results[0].replace_all_uses_with(value)
    _erase(op)


def remove_dead_ops(function: func.FuncOp) -> None:
    for op in reversed(list(function.body.block.ops)):
        if isinstance(op, ox.OnnxOp) and all(not r.uses for r in op.results):
            _erase(op)


# ---------------------------------------------------------------------------------------------
# Pattern helpers
# ---------------------------------------------------------------------------------------------


def scalar_of(value: SSAValue) -> float | None:
    owner = value.owner
    if isinstance(owner, ox.ConstantOp):
        array = owner.to_numpy()
        if array.size >= 1 and (array == array.flat[0]).all():
            return float(array.flat[0])
    return None


def _close(value: float | None, target: float, tolerance: float = 1e-3) -> bool:
    return value is not None and abs(value - target) <= tolerance * max(1.0, abs(target))


def _other_operand(op: Operation, value: SSAValue) -> SSAValue | None:
    if len(op.operands) != 2:
        return None
    a, b = op.operands
    if a is value:
        return b
    if b is value:
        return a
    return None


def _operands_matching(op: Operation, predicate) -> tuple[SSAValue, SSAValue] | None:
    """For a commutative binary op: (operand satisfying predicate, the other one)."""
    a, b = op.operands
    if predicate(a):
        return a, b
    if predicate(b):
        return b, a
    return None


def _single_user(value: SSAValue) -> Operation | None:
    return value.get_user_of_unique_use()


@dataclass
class _Product:
    """`result = 0.5 * x * inner`, matched from `inner` upwards."""

    result: SSAValue


def _match_half_x_times(inner: SSAValue, x: SSAValue) -> _Product | None:
    """Find 0.5 * x * inner in any grouping, starting from inner's single user."""
    user = _single_user(inner)
    if not isinstance(user, ox.MulOp):
        return None
    other = _other_operand(user, inner)
    if other is None:
        return None
    if other is x:
        after = _single_user(user.C)
        if isinstance(after, ox.MulOp) and _close(scalar_of(_other_operand(after, user.C)), 0.5):
            return _Product(after.C)
        return None
    half = other.owner
    if isinstance(half, ox.MulOp):
        pair = _operands_matching(half, lambda v: v is x)
        if pair is not None and _close(scalar_of(pair[1]), 0.5):
            return _Product(user.C)
    if _close(scalar_of(other), 0.5):
        # (0.5 * inner) * x
        after = _single_user(user.C)
        if isinstance(after, ox.MulOp) and _other_operand(after, user.C) is x:
            return _Product(after.C)
    return None


def _plus_one(value: SSAValue) -> SSAValue | None:
    user = _single_user(value)
    if isinstance(user, ox.AddOp) and _close(scalar_of(_other_operand(user, value)), 1.0):
        return user.C
    return None


def _gelu_result(x: SSAValue, inner: SSAValue) -> tuple[SSAValue, SSAValue] | None:
    product = _match_half_x_times(inner, x)
    # Shapes only grow through broadcasting: equal end shapes mean no constant broadcast x.
    if product is None or ox.shape_of(product.result) != ox.shape_of(x):
        return None
    return x, product.result


def match_gelu_erf(erf: ox.ErfOp) -> tuple[SSAValue, SSAValue] | None:
    """Erf form: 0.5 * x * (1 + erf(x / sqrt 2)). Returns (x, result)."""
    scaled = erf.X.owner
    x = None
    if isinstance(scaled, ox.DivOp) and _close(scalar_of(scaled.B), math.sqrt(2.0)):
        x = scaled.A
    elif isinstance(scaled, ox.MulOp):
        pair = _operands_matching(scaled, lambda v: _close(scalar_of(v), 1 / math.sqrt(2.0)))
        if pair is not None:
            x = pair[1]
    if x is None:
        return None
    inner = _plus_one(erf.Y)
    if inner is None:
        return None
    return _gelu_result(x, inner)


def match_gelu_tanh(tanh: ox.TanhOp) -> tuple[SSAValue, SSAValue] | None:
    """Tanh form: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))."""
    scaled = tanh.X.owner
    if not isinstance(scaled, ox.MulOp):
        return None
    pair = _operands_matching(scaled, lambda v: _close(scalar_of(v), math.sqrt(2 / math.pi)))
    if pair is None or not isinstance(pair[1].owner, ox.AddOp):
        return None
    add = pair[1].owner
    for x, cubic in (add.operands, reversed(add.operands)):
        cubic_op = cubic.owner
        if not isinstance(cubic_op, ox.MulOp):
            continue
        cube = _operands_matching(cubic_op, lambda v: _close(scalar_of(v), 0.044715))
        if cube is None:
            continue
        power = cube[1].owner
        is_cube = (
            isinstance(power, ox.PowOp) and power.A is x and _close(scalar_of(power.B), 3.0)
        ) or (
            isinstance(power, ox.MulOp)
            and isinstance(power.A.owner, ox.MulOp)
            and power.B is x
            and power.A.owner.A is x
            and power.A.owner.B is x
        )
        if not is_cube:
            continue
        inner = _plus_one(tanh.Y)
        if inner is None:
            return None
        return _gelu_result(x, inner)
    return None


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
    axis: int
    epsilon: float
    scale: SSAValue | None
    bias: SSAValue | None
    result: SSAValue


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
    pair = _operands_matching(add, lambda v: scalar_of(v) is not None)
    if pair is None:
        return None
    epsilon = scalar_of(pair[0])
    variance = pair[1].owner
    if not isinstance(variance, ox.ReduceMeanOp) or _trailing_axes(variance.axes, rank) != axis:
        return None
    # keepdims on both means, so sqrt(variance) broadcasts along the normalised axes only.
    if ox.shape_of(variance.reduced) != ox.shape_of(mean) or ox.shape_of(sqrt.Y) != ox.shape_of(
        mean
    ):
        return None
    square = variance.data.owner
    is_square = (
        isinstance(square, ox.PowOp) and square.A is centered and _close(scalar_of(square.B), 2.0)
    ) or (isinstance(square, ox.MulOp) and square.A is centered and square.B is centered)
    if not is_square:
        return None
    result = div.C
    scale = bias = None
    normalized_shape = ox.shape_of(x)[axis:]

    def fits(value: SSAValue) -> bool:
        return isinstance(value.owner, ox.ConstantOp | ox.WeightOp) and (
            ox.broadcast_shapes(normalized_shape, ox.shape_of(value)) == normalized_shape
        )

    user = _single_user(result)
    if isinstance(user, ox.MulOp):
        other = _other_operand(user, result)
        if other is not None and fits(other):
            scale, result = other, user.C
            user = _single_user(result)
    if isinstance(user, ox.AddOp):
        other = _other_operand(user, result)
        if other is not None and fits(other):
            bias, result = other, user.C
    if ox.shape_of(result) != ox.shape_of(x):
        return None
    return LayerNormMatch(x, axis - rank, epsilon, scale, bias, result)


def _insert_before_use(new_ops: list[Operation], anchor: Operation) -> None:
    block = anchor.parent_block()
    assert block is not None
    block.insert_ops_before(new_ops, anchor)


def _owner_op(value: SSAValue) -> Operation:
    owner = value.owner
    assert isinstance(owner, Operation)
    return owner


def rewrite_layer_norm(match: LayerNormMatch) -> None:
    anchor = _owner_op(match.result)
    new_ops: list[Operation] = []
    element = ox.element_of(match.x)
    normalized_shape = ox.shape_of(match.x)[match.axis :]
    scale = match.scale
    if scale is None:
        ones = ox.ConstantOp.from_numpy(np.ones(normalized_shape, dtype=ox.numpy_dtype(element)))
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
    new_ops.append(layer_norm)
    layer_norm.Y.name_hint = match.result.name_hint
    _insert_before_use(new_ops, anchor)
    match.result.replace_all_uses_with(layer_norm.Y)


def rewrite_gelu(x: SSAValue, result: SSAValue, approximate: str) -> None:
    anchor = _owner_op(result)
    properties = {"approximate": StringAttr(approximate)} if approximate != "none" else {}
    gelu = ox.GeluOp.build(operands=[x], result_types=[result.type], properties=properties)
    gelu.Y.name_hint = result.name_hint
    _insert_before_use([gelu], anchor)
    result.replace_all_uses_with(gelu.Y)


_LAYOUT_OPS = (ox.ReshapeOp, ox.UnsqueezeOp, ox.SqueezeOp, ox.FlattenOp)
_NO_OP_WHEN_SAME_TYPE = (ox.CastOp, ox.CastLikeOp, ox.ExpandOp, *_LAYOUT_OPS)


def _constant_splat(value: SSAValue) -> float | None:
    owner = value.owner
    if isinstance(owner, ox.ConstantOp):
        array = owner.to_numpy()
        if array.size and (array == array.flat[0]).all():
            return float(array.flat[0])
    return None


def simplified_value(op: Operation) -> SSAValue | None:
    """A value that `op`'s single result always equals, if `op` does nothing (x + 0, x * 1,
    Cast to its own type, Where on a constant condition, Reshape back to an earlier shape...)."""
    if len(op.results) != 1:
        return None
    result = op.results[0]
    if isinstance(op, _NO_OP_WHEN_SAME_TYPE) and op.operands[0].type == result.type:
        return op.operands[0]
    if isinstance(op, ox.TransposeOp) and op.permutation() == tuple(
        range(len(ox.shape_of(op.data)))
    ):
        return op.data
    if isinstance(op, _LAYOUT_OPS):
        # Row-major reshapes compose: Reshape(Unsqueeze(x)) with x's shape is x.
        source = op.operands[0]
        while isinstance(source.owner, _LAYOUT_OPS):
            source = source.owner.operands[0]
            if source.type == result.type:
                return source
    identity = {ox.AddOp: 0.0, ox.SubOp: 0.0, ox.MulOp: 1.0, ox.DivOp: 1.0}.get(type(op))
    if identity is not None:
        candidates = [(op.operands[0], op.operands[1])]
        if isinstance(op, ox.AddOp | ox.MulOp):
            candidates.append((op.operands[1], op.operands[0]))
        for kept, other in candidates:
            if kept.type == result.type and _constant_splat(other) == identity:
                return kept
    if isinstance(op, ox.PadOp) and op.data.type == result.type:
        return op.data
    if isinstance(op, ox.SliceOp) and op.data.type == result.type:
        # Same shape with forward steps: every axis is cut from 0 to its end (a T5 encoder's
        # position-bias slices); a negative step would reverse it.
        steps = op.steps.owner if op.steps is not None else None
        if op.steps is None or (isinstance(steps, ox.ConstantOp) and (steps.to_numpy() > 0).all()):
            return op.data
    if isinstance(op, ox.WhereOp):
        condition = op.condition.owner
        if isinstance(condition, ox.ConstantOp):
            mask = condition.to_numpy()
            if mask.all() and op.X.type == result.type:
                return op.X
            if not mask.any() and op.Y.type == result.type:
                return op.Y
    return None


def canonicalize_function(module: ModuleOp, function: func.FuncOp) -> None:
    folder = _Folder(module)
    for op in list(function.body.block.ops):
        if isinstance(op, ox.IdentityOp):
            _forward_operand(op, op.X)
            continue
        if isinstance(op, ox.DropoutOp):
            training = op.training_mode
            if training is None or scalar_of(training) == 0.0:
                _forward_operand(op, op.data)
                continue
        if isinstance(op, ox.OnnxOp):
            folded = folder.try_fold(op)
            if folded is not None:
                _replace_with_constants(op, folded)
                continue
            same = simplified_value(op)
            if same is not None:
                _forward_operand(op, same)
    remove_dead_ops(function)
    for op in list(function.body.block.ops):
        if op.parent_block() is None:
            continue
        if isinstance(op, ox.DivOp):
            match = match_layer_norm(op)
            if match is not None:
                rewrite_layer_norm(match)
        elif isinstance(op, ox.ErfOp):
            gelu = match_gelu_erf(op)
            if gelu is not None:
                rewrite_gelu(*gelu, "none")
        elif isinstance(op, ox.TanhOp):
            gelu = match_gelu_tanh(op)
            if gelu is not None:
                rewrite_gelu(*gelu, "tanh")
    remove_dead_ops(function)


@dataclass(frozen=True)
class CanonicalizePass(ModulePass):
    """Fold shapes and constants, drop Identity/Dropout, recognise LayerNorm and GELU."""

    name = "onnx-canonicalize"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for function in op.ops:
            if isinstance(function, func.FuncOp):
                canonicalize_function(op, function)
