"""numpy semantics of the IR's ops: the golden model that tests compare everything against.

`SEMANTICS[op class](op, operand arrays)` returns the op's result arrays. Optional operands that
are absent arrive as None. The evaluator, canonicalize's constant folding and (later) the ISA
interpreter's checks all use this one table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ctac.dialects import cta
from ctac.dialects import onnx as ox
from ctac.errors import CtacError
from ctac.runtime.special_functions import erf

Array = np.ndarray
Semantics = Callable[..., list[Array]]
SEMANTICS: dict[type, Semantics] = {}


def semantics(*op_classes: type) -> Callable[[Semantics], Semantics]:
    def register(function: Semantics) -> Semantics:
        for op_class in op_classes:
            SEMANTICS[op_class] = function
        return function

    return register


def gelu(x: Array, approximate: str = "none") -> Array:
    x64 = np.asarray(x, dtype=np.float64)
    if approximate == "tanh":
        inner = math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64**3)
        return 0.5 * x64 * (1.0 + np.tanh(inner))
    return 0.5 * x64 * (1.0 + erf(x64 / math.sqrt(2.0)))


def softmax(x: Array, axis: int = -1) -> Array:
    # exp(x - max) / sum, computed in the one new array (in place: the same values, and a long
    # sequence's L x L scores are not copied three times)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= np.sum(shifted, axis=axis, keepdims=True)
    return shifted


def layer_norm(x: Array, scale: Array, bias: Array | None, axis: int, epsilon: float) -> Array:
    axes = tuple(range(axis % x.ndim, x.ndim))
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    variance = ((x64 - mean) ** 2).mean(axis=axes, keepdims=True)
    normalized = (x64 - mean) / np.sqrt(variance + epsilon) * scale
    return normalized if bias is None else normalized + bias


def _axis_list(axes: Array | None) -> list[int]:
    return [] if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]


# ---------------------------------------------------------------------------------------------
# Elementwise
# ---------------------------------------------------------------------------------------------

_UNARY: dict[type, Callable[[Array], Array]] = {
    ox.AbsOp: np.abs,
    ox.CeilOp: np.ceil,
    ox.ErfOp: erf,
    ox.ExpOp: np.exp,
    ox.FloorOp: np.floor,
    ox.IdentityOp: lambda x: x,
    ox.IsNaNOp: np.isnan,
    ox.LogOp: np.log,
    ox.NegOp: np.negative,
    ox.NotOp: np.logical_not,
    ox.ReciprocalOp: np.reciprocal,
    ox.ReluOp: lambda x: np.maximum(x, 0),
    ox.RoundOp: np.round,  # halves to even, as ONNX Round
    ox.SigmoidOp: lambda x: 1.0 / (1.0 + np.exp(-x)),
    ox.SignOp: np.sign,
    ox.SqrtOp: np.sqrt,
    ox.TanhOp: np.tanh,
}


def _integer_divide(a: Array, b: Array) -> Array:
    # ONNX integer Div truncates toward zero, numpy's // floors.
    quotient = np.abs(a) // np.abs(b)
    return np.where((a < 0) ^ (b < 0), -quotient, quotient)


def _divide(a: Array, b: Array) -> Array:
    if np.issubdtype(a.dtype, np.integer):
        return _integer_divide(a, b)
    return a / b


_BINARY: dict[type, Callable[[Array, Array], Array]] = {
    ox.AddOp: np.add,
    ox.SubOp: np.subtract,
    ox.MulOp: np.multiply,
    ox.DivOp: _divide,
    ox.PowOp: lambda a, b: np.power(a, b.astype(a.dtype) if a.dtype.kind == "f" else b),
    ox.EqualOp: np.equal,
    ox.GreaterOp: np.greater,
    ox.GreaterOrEqualOp: np.greater_equal,
    ox.LessOp: np.less,
    ox.LessOrEqualOp: np.less_equal,
    ox.AndOp: np.logical_and,
    ox.OrOp: np.logical_or,
    ox.XorOp: np.logical_xor,
}


for _op_class, _function in _UNARY.items():
    SEMANTICS[_op_class] = lambda op, x, _f=_function: [_f(x)]
for _op_class, _function in _BINARY.items():
    SEMANTICS[_op_class] = lambda op, a, b, _f=_function: [_f(a, b)]


@semantics(ox.ModOp)
def _mod(op: ox.ModOp, a: Array, b: Array) -> list[Array]:
    return [np.fmod(a, b) if op.int_attr("fmod", 0) else np.mod(a, b)]


@semantics(ox.MaxOp, ox.MinOp, ox.SumOp)
def _variadic(op: ox.OnnxOp, *inputs: Array) -> list[Array]:
    function = {ox.MaxOp: np.maximum, ox.MinOp: np.minimum, ox.SumOp: np.add}[type(op)]
    result = inputs[0]
    for value in inputs[1:]:
        result = function(result, value)
    return [result]


@semantics(ox.ClipOp)
def _clip(op: ox.ClipOp, x: Array, low: Array | None, high: Array | None) -> list[Array]:
    result = x
    if low is not None:
        result = np.maximum(result, low)
    if high is not None:
        result = np.minimum(result, high)
    return [result]


@semantics(ox.WhereOp)
def _where(op: ox.WhereOp, condition: Array, x: Array, y: Array) -> list[Array]:
    return [np.where(condition, x, y)]


@semantics(ox.CastOp)
def _cast(op: ox.CastOp, x: Array) -> list[Array]:
    return [x.astype(ox.numpy_dtype(op.to))]


@semantics(ox.CastLikeOp)
def _cast_like(op: ox.CastLikeOp, x: Array, target: Array) -> list[Array]:
    return [x.astype(target.dtype)]


@semantics(ox.DropoutOp)
def _dropout(
    op: ox.DropoutOp, x: Array, ratio: Array | None, training: Array | None
) -> list[Array]:
    if training is not None and bool(np.asarray(training)):
        raise CtacError("onnx.Dropout in training mode cannot be evaluated; export for inference")
    return [x]


# ---------------------------------------------------------------------------------------------
# Reductions, normalisation, linear algebra
# ---------------------------------------------------------------------------------------------


@semantics(ox.ReduceMeanOp, ox.ReduceSumOp, ox.ReduceMaxOp, ox.ReduceMinOp)
def _reduce(op: ox.ReduceOp, data: Array, axes: Array | None) -> list[Array]:
    function = {
        ox.ReduceMeanOp: np.mean,
        ox.ReduceSumOp: np.sum,
        ox.ReduceMaxOp: np.max,
        ox.ReduceMinOp: np.min,
    }[type(op)]
    axis_list = _axis_list(axes)
    if not axis_list:
        if op.int_attr("noop_with_empty_axes", 0):
            return [data]
        axis_list = list(range(data.ndim))
    keepdims = bool(op.int_attr("keepdims", 1))
    return [function(data, axis=tuple(a % data.ndim for a in axis_list), keepdims=keepdims)]


@semantics(ox.SoftmaxOp)
def _softmax(op: ox.SoftmaxOp, x: Array) -> list[Array]:
    return [softmax(x, op.int_attr("axis", -1))]


@semantics(ox.LayerNormalizationOp)
def _layer_norm(
    op: ox.LayerNormalizationOp, x: Array, scale: Array, bias: Array | None
) -> list[Array]:
    return [layer_norm(x, scale, bias, op.int_attr("axis", -1), op.float_attr("epsilon", 1e-5))]


@semantics(ox.GeluOp)
def _gelu(op: ox.GeluOp, x: Array) -> list[Array]:
    return [gelu(x, op.str_attr("approximate", "none"))]


@semantics(ox.MatMulOp)
def _matmul(op: ox.MatMulOp, a: Array, b: Array) -> list[Array]:
    return [np.matmul(a, b)]


@semantics(ox.GemmOp)
def _gemm(op: ox.GemmOp, a: Array, b: Array, c: Array | None) -> list[Array]:
    a = a.T if op.int_attr("transA", 0) else a
    b = b.T if op.int_attr("transB", 0) else b
    result = op.float_attr("alpha", 1.0) * (a @ b)
    if c is not None:
        result = result + op.float_attr("beta", 1.0) * c
    return [result]


# ---------------------------------------------------------------------------------------------
# Shapes and data movement
# ---------------------------------------------------------------------------------------------


@semantics(ox.TransposeOp)
def _transpose(op: ox.TransposeOp, x: Array) -> list[Array]:
    return [np.transpose(x, op.permutation())]


def reshape_target(data_shape: Sequence[int], target: Sequence[int], allowzero: bool) -> list[int]:
    """ONNX Reshape's target shape with 0 (copy) and -1 (infer) resolved."""
    result = list(int(t) for t in target)
    for i, size in enumerate(result):
        if size == 0 and not allowzero:
            result[i] = data_shape[i]
    if -1 in result:
        known = int(np.prod([s for s in result if s != -1]))
        total = int(np.prod(data_shape))
        result[result.index(-1)] = total // known if known else 0
    return result


@semantics(ox.ReshapeOp)
def _reshape(op: ox.ReshapeOp, x: Array, shape: Array) -> list[Array]:
    return [x.reshape(reshape_target(x.shape, shape.tolist(), bool(op.int_attr("allowzero", 0))))]


@semantics(ox.FlattenOp)
def _flatten(op: ox.FlattenOp, x: Array) -> list[Array]:
    # ONNX: axis in [-r, r], a negative axis counts from the back (-1 on rank 4 is 3).
    axis = op.int_attr("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    outer = int(np.prod(x.shape[:axis]))
    return [x.reshape(outer, -1) if x.size else x.reshape(outer, int(np.prod(x.shape[axis:])))]


@semantics(ox.SqueezeOp)
def _squeeze(op: ox.SqueezeOp, x: Array, axes: Array | None) -> list[Array]:
    axis_list = _axis_list(axes)
    if not axis_list:
        return [np.squeeze(x)]
    return [np.squeeze(x, axis=tuple(a % x.ndim for a in axis_list))]


@semantics(ox.UnsqueezeOp)
def _unsqueeze(op: ox.UnsqueezeOp, x: Array, axes: Array) -> list[Array]:
    rank = x.ndim + len(_axis_list(axes))
    result = x
    for axis in sorted(a % rank for a in _axis_list(axes)):
        result = np.expand_dims(result, axis)
    return [result]


@semantics(ox.ConcatOp)
def _concat(op: ox.ConcatOp, *inputs: Array) -> list[Array]:
    return [np.concatenate(inputs, axis=op.int_attr("axis"))]


def slice_bounds(size: int, start: int, end: int, step: int) -> slice:
    """ONNX Slice's clamping of one axis, as a Python slice."""
    if step == 0:
        raise CtacError("onnx.Slice: a step of 0 is invalid")
    start = start + size if start < 0 else start
    end = end + size if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), size), min(max(end, 0), size)
        return slice(start, end, step)
    start, end = min(max(start, -1), size - 1), min(max(end, -1), size - 1)
    return slice(start, None if end < 0 else end, step)


@semantics(ox.SliceOp)
def _slice(
    op: ox.SliceOp, x: Array, starts: Array, ends: Array, axes: Array | None, steps: Array | None
) -> list[Array]:
    starts_list, ends_list = starts.tolist(), ends.tolist()
    axis_list = _axis_list(axes) or list(range(len(starts_list)))
    step_list = _axis_list(steps) or [1] * len(starts_list)
    index = [slice(None)] * x.ndim
    for axis, start, end, step in zip(axis_list, starts_list, ends_list, step_list, strict=True):
        axis %= x.ndim
        index[axis] = slice_bounds(x.shape[axis], int(start), int(end), int(step))
    return [x[tuple(index)]]


@semantics(ox.SplitOp)
def _split(op: ox.SplitOp, x: Array, split: Array | None) -> list[Array]:
    axis = op.int_attr("axis", 0) % x.ndim
    count = len(op.results)
    if split is not None:
        sizes = [int(s) for s in split.reshape(-1)]
    else:
        chunk = -(-x.shape[axis] // count)
        sizes = [min(chunk, x.shape[axis] - i * chunk) for i in range(count)]
    return list(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


@semantics(ox.ShapeOp)
def _shape(op: ox.ShapeOp, x: Array) -> list[Array]:
    shape = np.array(x.shape, dtype=np.int64)
    return [
        shape[slice_bounds(len(shape), op.int_attr("start", 0), op.int_attr("end", len(shape)), 1)]
    ]


def shape_op_result(op: ox.ShapeOp) -> Array:
    """Shape's result from the static type alone (its operand's values are never needed)."""
    shape = np.array(ox.shape_of(op.data), dtype=np.int64)
    return shape[
        slice_bounds(len(shape), op.int_attr("start", 0), op.int_attr("end", len(shape)), 1)
    ]


@semantics(ox.ExpandOp)
def _expand(op: ox.ExpandOp, x: Array, shape: Array) -> list[Array]:
    target = np.broadcast_shapes(x.shape, tuple(int(s) for s in shape.reshape(-1)))
    return [np.broadcast_to(x, target)]


@semantics(ox.GatherOp)
def _gather(op: ox.GatherOp, data: Array, indices: Array) -> list[Array]:
    axis = op.int_attr("axis", 0) % data.ndim
    size = data.shape[axis]
    if indices.size and (indices.min() < -size or indices.max() >= size):
        raise CtacError(f"onnx.Gather: an index is outside [-{size}, {size})")
    return [np.take(data, np.where(indices < 0, indices + size, indices), axis=axis)]


@semantics(ox.GatherElementsOp)
def _gather_elements(op: ox.GatherElementsOp, data: Array, indices: Array) -> list[Array]:
    axis = op.int_attr("axis", 0) % data.ndim
    size = data.shape[axis]
    return [np.take_along_axis(data, np.where(indices < 0, indices + size, indices), axis=axis)]


@semantics(ox.GatherNDOp)
def _gather_nd(op: ox.GatherNDOp, data: Array, indices: Array) -> list[Array]:
    batch_dims = op.int_attr("batch_dims", 0)
    batch_shape = data.shape[:batch_dims]
    batch = int(np.prod(batch_shape))
    flat_data = data.reshape((batch, *data.shape[batch_dims:]))
    flat_indices = indices.reshape((batch, -1, indices.shape[-1]))
    depth = indices.shape[-1]
    gathered = []
    for b in range(batch):
        index = tuple(flat_indices[b, :, k] for k in range(depth))
        gathered.append(flat_data[b][index])
    result = np.stack(gathered)
    return [result.reshape(indices.shape[:-1] + data.shape[batch_dims + depth :])]


@semantics(ox.ConstantOp)
def _constant(op: ox.ConstantOp) -> list[Array]:
    return [op.to_numpy()]


@semantics(ox.PadOp)
def _pad(
    op: ox.PadOp, x: Array, pads: Array, value: Array | None, axes: Array | None
) -> list[Array]:
    axis_list = [a % x.ndim for a in _axis_list(axes)] or list(range(x.ndim))
    amounts = [int(p) for p in pads.reshape(-1)]
    widths = [(0, 0)] * x.ndim
    for index, axis in enumerate(axis_list):
        widths[axis] = (amounts[index], amounts[index + len(axis_list)])
    if any(b < 0 or a < 0 for b, a in widths):
        # Negative pads crop.
        slices = tuple(
            slice(max(-b, 0), x.shape[i] - max(-a, 0)) for i, (b, a) in enumerate(widths)
        )
        x = x[slices]
        widths = [(max(b, 0), max(a, 0)) for b, a in widths]
    mode = op.str_attr("mode", "constant")
    if mode == "constant":
        fill = np.asarray(value).reshape(-1)[0] if value is not None and value.size else 0
        return [np.pad(x, widths, mode="constant", constant_values=fill)]
    return [np.pad(x, widths, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])]


@semantics(ox.ConstantOfShapeOp)
def _constant_of_shape(op: ox.ConstantOfShapeOp, shape: Array) -> list[Array]:
    value = (
        ox.numpy_from_dense(op.value).reshape(-1)[0] if op.value is not None else np.float32(0.0)
    )
    return [np.full([int(s) for s in shape.reshape(-1)], value, dtype=np.asarray(value).dtype)]


@semantics(ox.RangeOp)
def _range(op: ox.RangeOp, start: Array, limit: Array, delta: Array) -> list[Array]:
    count = max(int(np.ceil((limit - start) / delta)), 0)
    return [(start + np.arange(count) * delta).astype(start.dtype)]


@semantics(ox.TriluOp)
def _trilu(op: ox.TriluOp, x: Array, k: Array | None) -> list[Array]:
    diagonal = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    return [np.triu(x, diagonal) if op.int_attr("upper", 1) else np.tril(x, diagonal)]


@semantics(ox.CumSumOp)
def _cumsum(op: ox.CumSumOp, x: Array, axis: Array) -> list[Array]:
    axis_value = int(np.asarray(axis).reshape(-1)[0]) % x.ndim
    data = np.flip(x, axis_value) if op.int_attr("reverse", 0) else x
    result = np.cumsum(data, axis=axis_value)
    if op.int_attr("exclusive", 0):
        result = result - data
    if op.int_attr("reverse", 0):
        result = np.flip(result, axis_value)
    return [result]


def missing_semantics() -> list[str]:
    """Ops of the dialect that have no numpy semantics yet (must be empty; a test checks)."""
    ops = [
        *ox.ALL_OPS,
        cta.ProjectOp,
        cta.AttentionOp,
        cta.ClusterOp,
        cta.KeepTopOp,
        cta.PoolOp,
        cta.RecoverOp,
        cta.CompressedAttentionOp,
    ]
    return [op.name for op in ops if op not in SEMANTICS and op is not ox.WeightOp]


# Semantics kept in modules of their own register into SEMANTICS on import; importing them here
# (after `semantics` exists) means every reader of SEMANTICS sees them.
from ctac.runtime import norms as _norms  # noqa: E402, F401
from ctac.runtime import reference_conv as _conv  # noqa: E402, F401
from ctac.runtime import reference_cta as _cta  # noqa: E402, F401
from ctac.runtime import reference_indexing as _indexing  # noqa: E402, F401
