"""onnx-canonicalize, first stage: patterns that fold constants and remove ops that do nothing.

- FoldConstants: every value computable from constants and static shapes (Shape, shape
  arithmetic, ConstantOfShape, Range, masks built from constants, Cast of constants...) becomes
  an `onnx.Constant`, computed by the reference semantics (runtime/reference.py). A folded result
  is kept when it is a splat, or has at most FOLD_ELEMENTS elements and is not float data
  computed from an `onnx.Weight`: computations on weights (embedding lookups, transposes) stay
  ops over the weight store, so the printed IR never carries weights.
- ForwardIdentity: Identity and inference-mode Dropout pass their input.
- RemoveNoOp: x + 0, x * 1, Cast or Expand to the operand's own type, identity Transpose, Where
  on a constant condition, chains of Reshape/Unsqueeze/Squeeze/Flatten that return to an earlier
  shape (`simplified_value`); a GatherND whose constant indices pick every row of its data in
  order becomes a Reshape (`gather_nd_as_reshape`).
"""

from __future__ import annotations

import math

import numpy as np
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern

from ctac.dialects import onnx as ox
from ctac.passes.match import replace_value, scalar_of
from ctac.runtime.evaluator import operand_arrays
from ctac.runtime.reference import SEMANTICS, shape_op_result
from ctac.weights import WeightStore, store_for_module

# Folded values up to this many elements are kept inline (splats of any size are).
FOLD_ELEMENTS = 4096
# Do not even try to fold an op that reads or writes more than this many elements.
EVALUATE_ELEMENTS = 1 << 20


def _size(value: SSAValue) -> int:
    return math.prod(ox.shape_of(value))


def _splat(array: np.ndarray) -> bool:
    return array.size > 0 and bool((array == array.flat[0]).all())


class ConstantFolder:
    """Computes an op's results when its operands are constants (or weights of `module`)."""

    def __init__(self, module: ModuleOp) -> None:
        self.module = module
        self.store: WeightStore | None = None
        self.store_loaded = False

    def value_of(self, value: SSAValue) -> np.ndarray | None:
        """The constant array behind a value, or None if it is not a constant."""
        owner = value.owner
        if isinstance(owner, ox.ConstantOp):
            return owner.to_numpy()
        if isinstance(owner, ox.WeightOp):
            if not self.store_loaded:  # opened once, on the first weight an op reads
                self.store, self.store_loaded = store_for_module(self.module), True
            return None if self.store is None else self.store.get(owner.ref.data)
        return None

    def try_fold(self, op: ox.OnnxOp) -> list[np.ndarray] | None:
        """The result arrays of `op` if they are known before any input arrives and are worth
        keeping inline, else None."""
        if isinstance(op, ox.ConstantOp | ox.WeightOp):
            return None
        if isinstance(op, ox.ShapeOp):
            return [shape_op_result(op)]
        if isinstance(op, ox.GatherOp | ox.GatherElementsOp | ox.GatherNDOp):
            # Any element of a splat is the splat value, whatever the (input-dependent) indices.
            data = op.data.owner
            if isinstance(data, ox.ConstantOp):
                array = data.to_numpy()
                if _splat(array):
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
            # Integer and boolean results are indices and masks, not weights: fold them even
            # when they come from the weight store (position-id buffers, tril masks).
            weight_data = reads_weights and array.dtype.kind == "f"
            if not _splat(array) and (array.size > FOLD_ELEMENTS or weight_data):
                return None
            folded.append(array)
        return folded


# Ops folded whatever their operands (Shape reads only the static shape, a Gather from a splat
# only the splat, CastLike only the target's type); any other op needs constant operands.
_FOLDED_FROM_TYPES = (ox.ShapeOp, ox.GatherOp, ox.GatherElementsOp, ox.GatherNDOp, ox.CastLikeOp)
_CONSTANTS = (ox.ConstantOp, ox.WeightOp)


class FoldConstants(RewritePattern):
    """An op whose results are known at compile time becomes one `onnx.Constant` per result."""

    def __init__(self, module: ModuleOp) -> None:
        self.folder = ConstantFolder(module)
        # Ops over constants that were evaluated and not folded (too large, weight data), with
        # the operands they had: the walker's next sweep skips them instead of evaluating again.
        self.refused: dict[Operation, tuple[SSAValue, ...]] = {}
        # Folded values repeat (each layer's reshape targets, masks): one attribute per distinct
        # array, as building and verifying a dense attribute costs more than the lookup.
        self.attributes: dict[tuple[str, tuple[int, ...], bytes], DenseIntOrFPElementsAttr] = {}

    def constant(self, array: np.ndarray) -> ox.ConstantOp:
        key = (array.dtype.str, array.shape, array.tobytes())
        attr = self.attributes.get(key)
        if attr is None:
            attr = self.attributes[key] = ox.dense_from_numpy(array)
        return ox.ConstantOp.build(properties={"value": attr}, result_types=[attr.type])

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        # Exact type tests and dict lookups (op classes are final; isinstance on IRDL classes
        # goes through ABCMeta): this runs on every op of every sweep. An op the reference
        # semantics cannot compute is never folded (func ops included).
        kind = type(op)
        if kind in _CONSTANTS or (kind not in _FOLDED_FROM_TYPES and kind not in SEMANTICS):
            return
        operands = tuple(op.operands)
        if kind not in _FOLDED_FROM_TYPES and not all(
            type(v.owner) in _CONSTANTS for v in operands
        ):
            return
        if self.refused.get(op) == operands:
            return
        folded = self.folder.try_fold(op)
        if folded is None:
            self.refused[op] = operands
            return
        for result, array in zip(op.results, folded, strict=True):
            constant = self.constant(array)
            constant.output.name_hint = result.name_hint
            replace_value(rewriter, result, [constant], constant.output)


class ForwardIdentity(RewritePattern):
    """Identity, and Dropout without a training flag or with a constant false one, pass their
    input (a Dropout's mask result has no users in inference graphs; the op goes once its
    output does)."""

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        kind = type(op)  # exact type: see FoldConstants
        if kind is ox.IdentityOp:
            replace_value(rewriter, op.results[0], [], op.operands[0])
        elif kind is ox.DropoutOp:
            assert isinstance(op, ox.DropoutOp)
            training = op.training_mode
            if training is None or scalar_of(training) == 0.0:
                replace_value(rewriter, op.results[0], [], op.data)


_LAYOUT_OPS = (ox.ReshapeOp, ox.UnsqueezeOp, ox.SqueezeOp, ox.FlattenOp)
_NO_OP_WHEN_SAME_TYPE = (ox.CastOp, ox.CastLikeOp, ox.ExpandOp, *_LAYOUT_OPS)
_IDENTITY_OPERAND = {ox.AddOp: 0.0, ox.SubOp: 0.0, ox.MulOp: 1.0, ox.DivOp: 1.0}
# Every op type simplified_value can forward (a set: the test runs on every op of every sweep).
_SIMPLIFIABLE = frozenset(
    {*_NO_OP_WHEN_SAME_TYPE, ox.TransposeOp, *_IDENTITY_OPERAND, ox.PadOp, ox.SliceOp, ox.WhereOp}
)


def simplified_value(op: Operation) -> SSAValue | None:
    """A value that `op`'s single result always equals, if `op` does nothing (x + 0, x * 1,
    Cast to its own type, Where on a constant condition, Reshape back to an earlier shape...)."""
    if type(op) not in _SIMPLIFIABLE or len(op.results) != 1:
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
    identity = _IDENTITY_OPERAND.get(type(op))
    if identity is not None:
        candidates = [(op.operands[0], op.operands[1])]
        if isinstance(op, ox.AddOp | ox.MulOp):
            candidates.append((op.operands[1], op.operands[0]))
        for kept, other in candidates:
            if kept.type == result.type and scalar_of(other) == identity:
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


def gather_nd_as_reshape(op: Operation) -> ox.ReshapeOp | None:
    """A Reshape equal to `op` if it is a GatherND (batch_dims 0) whose constant index tuples
    are every row of its data in row-major order, else None.

    torch's dynamo exporter writes transformers' padding-mask lookup
    `mask[arange(batch)[:, None, None, None], arange(seq)[None, None, None, :]]` (aten.index)
    as such a GatherND: at fixed shapes its indices fold to that identity grid and it only
    re-lays the mask out as (batch, 1, 1, seq). The TorchScript exporter writes the same lookup
    as Gather + Reshape. Where no attention op absorbs the mask (T5 adds it to its position
    bias: an additive mask) the GatherND would otherwise be left for the lowering."""
    if type(op) is not ox.GatherNDOp:
        return None
    assert isinstance(op, ox.GatherNDOp)
    indices = op.indices.owner
    if op.int_attr("batch_dims", 0) != 0 or not isinstance(indices, ox.ConstantOp):
        return None
    tuples = indices.to_numpy()
    data_shape = ox.shape_of(op.data)
    depth = tuples.shape[-1] if tuples.ndim else 0
    if depth == 0 or depth > len(data_shape):
        return None
    rows = data_shape[:depth]
    tuples = tuples.reshape(-1, depth)
    if len(tuples) != math.prod(rows) or ((tuples < -np.array(rows)) | (tuples >= rows)).any():
        return None
    wrapped = np.where(tuples < 0, tuples + np.array(rows), tuples)
    if not (np.ravel_multi_index(tuple(wrapped.T), rows) == np.arange(len(tuples))).all():
        return None
    shape = ox.ConstantOp.from_numpy(np.array(ox.shape_of(op.output), dtype=np.int64))
    reshape = ox.ReshapeOp.build(operands=[op.data, shape.output], result_types=[op.output.type])
    reshape.reshaped.name_hint = op.output.name_hint
    return reshape


class RemoveNoOp(RewritePattern):
    """An op that returns (a value equal to) one of its operands is replaced by that value; an
    identity-index GatherND by a Reshape."""

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        same = simplified_value(op)
        if same is not None:
            replace_value(rewriter, op.results[0], [], same)
            return
        reshape = gather_nd_as_reshape(op)
        if reshape is not None:
            shape = reshape.operands[1].owner
            assert isinstance(shape, Operation)
            replace_value(rewriter, op.results[0], [shape, reshape], reshape.results[0])
