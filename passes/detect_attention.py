"""detect-attention: `onnx` dialect in, `onnx` + `cta` out.

Every attention subgraph becomes one `cta.attention` (and, where Q/K/V are linear projections of
an input, `cta.project` ops that keep that input and the weights as operands).

Matching is anchored on Softmax over the last axis and tries the alternatives at every step:
- after Softmax: float Casts, the NaN guard Where(IsNaN(p), 0, p), then the P.V MatMul, with
  nothing else reading the probabilities;
- before Softmax, walking from the scores to the Q.K^T MatMul: scalar Mul/Div (scale), Add of bias
  terms on either side, Where(cond, s, -big) masks, float Casts;
- Q and K^T: scalar Mul/Div on either (split scales), K^T as Transpose[0,1,3,2] of K,
  Transpose[0,2,3,1] of (B, S, H, D), or Reshape/Transpose[0,2,1]/Reshape;
- K/V heads repeated for GQA by Unsqueeze/Expand/Reshape;
- projections: MatMul (+ bias) or packed Gemm/MatMul + Split, reshaped and transposed into heads.
The bias terms are classified by evaluating them: a function of an integer (batch, kv_seq) input
that is 0 where the input is 1 and very negative where it is 0 becomes a key-padding mask; a
constant lower-triangular pattern becomes the causal flag; anything else stays an additive mask.

Quantize -> dequantize pairs (static QDQ graphs) on the raw, scaled or masked scores or on the
probabilities become the attention's `fake_quant` stages (passes/attention_quant.py); Q, K and V
are taken as they are after their dequantization, which stays in the graph.

With `verify=true` (the default) every match is proven: the original subgraph and the new ops are
evaluated on the same random inputs and a match that differs by more than 1e-4 is refused. With
quantization stages, up to 1% of the output rows (at least 2) may differ by more than that, by at
most the effect of one quantization step (a value within float error of a half step rounds the
other way); the reference computes them op by op as the graph does, so this is rare.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    f64,
    i64,
)
from xdsl.ir import Attribute, Block, BlockArgument, Operation, SSAValue
from xdsl.passes import ModulePass

from ctac.blas import single_threaded_blas
from ctac.dialects import cta
from ctac.dialects import onnx as ox
from ctac.errors import CtacError
from ctac.passes.attention_quant import (
    DYNAMIC_PROBABILITIES,
    REQUANTIZED,
    QuantStep,
    fake_quant_after,
    fake_quant_of,
    integer_valued,
    judge_proof,
    quant_tolerance,
    quantized_into_integers,
)
from ctac.passes.canonicalize import remove_dead_ops, scalar_of
from ctac.runtime.evaluator import evaluate_values
from ctac.runtime.reference import SEMANTICS

# Bias entries at or below this count as "masked" (HF uses -10000, float min or -inf).
MASKED_BELOW = -1e3
VERIFY_TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def _shape(value: SSAValue) -> tuple[int, ...]:
    return ox.shape_of(value)


def _is_float(value: SSAValue) -> bool:
    return ox.numpy_dtype(ox.element_of(value)).kind == "f"


def _single_use(value: SSAValue) -> bool:
    return value.has_one_use()


def _ints(value: SSAValue) -> list[int] | None:
    owner = value.owner
    if isinstance(owner, ox.ConstantOp):
        return [int(v) for v in owner.to_numpy().reshape(-1)]
    return None


def _is_constant(value: SSAValue) -> bool:
    return isinstance(value.owner, ox.ConstantOp | ox.WeightOp)


def peel_scalars(value: SSAValue) -> tuple[SSAValue, float, list[Operation]]:
    """Strip scalar Mul/Div (either operand order for Mul) and float Casts, stopping at a
    dequantized value (its Mul by the scale belongs to the quantize -> dequantize pair)."""
    factor = 1.0
    absorbed: list[Operation] = []
    while True:
        owner = value.owner
        if isinstance(owner, ox.MulOp) and fake_quant_of(value) is not None:
            return value, factor, absorbed
        if isinstance(owner, ox.MulOp):
            for candidate, other in ((owner.A, owner.B), (owner.B, owner.A)):
                constant = scalar_of(other)
                if constant is not None and _shape(candidate) == _shape(owner.C):
                    factor *= constant
                    absorbed.append(owner)
                    value = candidate
                    break
            else:
                return value, factor, absorbed
            continue
        if isinstance(owner, ox.DivOp):
            constant = scalar_of(owner.B)
            if constant is not None and constant != 0 and _shape(owner.A) == _shape(owner.C):
                factor /= constant
                absorbed.append(owner)
                value = owner.A
                continue
            return value, factor, absorbed
        if isinstance(owner, ox.CastOp) and _is_float(owner.input) and _is_float(owner.output):
            absorbed.append(owner)
            value = owner.input
            continue
        return value, factor, absorbed


# ---------------------------------------------------------------------------------------------
# Heads: how to obtain a (B, H, S, D) tensor
# ---------------------------------------------------------------------------------------------


@dataclass
class Heads:
    """A head tensor: `value` is (B, H, S, D) when `layout == 'bhsd'`, (B, S, H, D) when 'bshd',
    (B, H, D, S) when 'bhds' (a quantized K^T, transposed back by a new op).
    `repeat` > 1 when GQA repeated `value`'s heads that many times."""

    value: SSAValue
    layout: str
    repeat: int = 1
    form: list[str] = field(default_factory=list)
    # A run-time scale (DynamicQuantizeLinear's) that dequantizes `value` by a new Mul.
    times: SSAValue | None = None

    @property
    def heads(self) -> int:
        shape = _shape(self.value)
        return shape[2] if self.layout == "bshd" else shape[1]


def _unrepeat(value: SSAValue) -> tuple[SSAValue, int]:
    """GQA: Reshape(Expand(Unsqueeze(kv, [2]), (B, Hkv, n, S, D)), (B, Hkv*n, S, D)) -> (kv, n)."""
    reshape = value.owner
    if not isinstance(reshape, ox.ReshapeOp):
        return value, 1
    expand = reshape.data.owner
    if not isinstance(expand, ox.ExpandOp) or len(_shape(expand.output)) != 5:
        return value, 1
    unsqueeze = expand.input.owner
    if not isinstance(unsqueeze, ox.UnsqueezeOp) or _ints(unsqueeze.axes) not in ([2], [-3]):
        return value, 1
    kv = unsqueeze.data
    b, hkv, n, s, d = _shape(expand.output)
    if _shape(kv) != (b, hkv, s, d) or _shape(reshape.reshaped) != (b, hkv * n, s, d):
        return value, 1
    return kv, n


def heads_of(value: SSAValue) -> Heads:
    """Q or V heads (B, H, S, D): see through a head-split Transpose and GQA repeats."""
    value, repeat = _unrepeat(value)
    owner = value.owner
    if isinstance(owner, ox.TransposeOp) and owner.permutation() == (0, 2, 1, 3):
        return Heads(owner.data, "bshd", repeat, ["Transpose[0,2,1,3]"])
    return Heads(value, "bhsd", repeat)


def key_heads_of_transposed(kt: SSAValue) -> tuple[Heads, float] | None:
    """K heads from K^T (B, H, D, S) in one of the transposed forms; also the scalar factor."""
    kt, factor, _ = peel_scalars(kt)
    owner = kt.owner
    if isinstance(owner, ox.TransposeOp) and len(_shape(kt)) == 4:
        perm = owner.permutation()
        inner, inner_factor, _ = peel_scalars(owner.data)
        if perm == (0, 1, 3, 2):
            unrepeated, repeat = _unrepeat(inner)
            heads = heads_of(unrepeated)
            heads.repeat = repeat
            heads.form.append("K^T=Transpose[0,1,3,2]")
            return heads, factor * inner_factor
        if perm == (0, 2, 3, 1):
            return Heads(inner, "bshd", 1, ["K^T=Transpose[0,2,3,1]"]), factor * inner_factor
        return None
    if isinstance(owner, ox.ReshapeOp) and len(_shape(kt)) == 4:
        transpose = owner.data.owner
        if not isinstance(transpose, ox.TransposeOp) or transpose.permutation() != (0, 2, 1):
            return None
        flat = transpose.data.owner
        if not isinstance(flat, ox.ReshapeOp):
            return None
        inner, inner_factor, _ = peel_scalars(flat.data)
        b, h, d, s = _shape(kt)
        if _shape(inner) != (b, h, s, d) or _shape(flat.reshaped) != (b * h, s, d):
            return None
        unrepeated, repeat = _unrepeat(inner)
        heads = heads_of(unrepeated)
        heads.repeat = repeat
        heads.form.append("K^T=Reshape/Transpose[0,2,1]/Reshape")
        return heads, factor * inner_factor
    return None


@dataclass
class Projection:
    input: SSAValue
    weight: SSAValue
    bias: SSAValue | None
    columns: tuple[int, int]
    form: str


def _linear(value: SSAValue) -> tuple[SSAValue, SSAValue, SSAValue | None, str] | None:
    """(x, W, b) for value = x @ W (+ b), x of rank 3, W and b constants."""
    owner = value.owner
    bias = None
    if isinstance(owner, ox.AddOp):
        for product, other in ((owner.A, owner.B), (owner.B, owner.A)):
            if (
                isinstance(product.owner, ox.MatMulOp)
                and _is_constant(other)
                and len(_shape(other)) == 1
            ):
                bias, owner = other, product.owner
                break
        else:
            return None
    if isinstance(owner, ox.MatMulOp):
        x, weight = owner.A, owner.B
        if len(_shape(x)) == 3 and len(_shape(weight)) == 2 and _is_constant(weight):
            return x, weight, bias, "MatMul+Add" if bias is not None else "MatMul"
        return None
    if isinstance(owner, ox.ReshapeOp) and bias is None:
        gemm = owner.data.owner
        if (
            isinstance(gemm, ox.GemmOp)
            and not gemm.int_attr("transA", 0)
            and not gemm.int_attr("transB", 0)
            and gemm.float_attr("alpha", 1.0) == 1.0
            and gemm.float_attr("beta", 1.0) == 1.0
            and _is_constant(gemm.B)
            and (gemm.C is None or (_is_constant(gemm.C) and len(_shape(gemm.C)) == 1))
        ):
            flat = gemm.A.owner
            if isinstance(flat, ox.ReshapeOp) and len(_shape(flat.data)) == 3:
                x = flat.data
                b, s, _ = _shape(x)
                if _shape(owner.reshaped)[:2] == (b, s):
                    return x, gemm.B, gemm.C, "Gemm"
    return None


def capture_projection(heads_value: SSAValue) -> Projection | None:
    """For a (B, S, H, D) head tensor: the input and weights of the projection it reshapes."""
    reshape = heads_value.owner
    if not isinstance(reshape, ox.ReshapeOp):
        return None
    projected = reshape.data
    if len(_shape(projected)) != 3:
        return None
    start, width = 0, _shape(projected)[2]
    owner = projected.owner
    if isinstance(owner, ox.SplitOp):
        axis = owner.int_attr("axis", 0) % 3
        if axis != 2:
            return None
        sizes = [_shape(r)[2] for r in owner.outputs]
        index = list(owner.outputs).index(projected)
        start = sum(sizes[:index])
        projected = owner.input
    linear = _linear(projected)
    if linear is None:
        return None
    x, weight, bias, form = linear
    if _shape(weight)[1] != _shape(projected)[2]:
        return None
    if isinstance(owner, ox.SplitOp):
        form += "+Split"
    return Projection(x, weight, bias, (start, start + width), form)


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------


@dataclass
class WhereMask:
    condition: SSAValue
    keep_when: bool
    fill: float


@dataclass
class Scores:
    matmul: ox.MatMulOp
    scale: float
    bias_terms: list[SSAValue]
    where_masks: list[WhereMask]
    form: list[str]
    softcap: float = 0.0
    # Integer Q.K^T (MatMulInteger of DynamicQuantizeLinear'd Q and K): the run-time scales
    # of Q and of K^T (None: all of it in the first) that dequantize them.
    dequantize: tuple[SSAValue, SSAValue | None] | None = None
    # One factor per bias term: a scale applied above the Add that added it scales it too.
    bias_factors: list[float] = field(default_factory=list)
    # Quantize -> dequantize pairs by cta.QUANT_STAGES name; `stage` is how far they reach
    # (1 raw scores, 2 scaled, 3 masked): a scale or a bias may not come after its stage.
    quant: dict[str, QuantStep] = field(default_factory=dict)
    stage: int = 0


def _close_to(value: float | None, target: float) -> bool:
    return value is not None and abs(value - target) <= 1e-6 * max(1.0, abs(target))


def _softcap_input(value: SSAValue) -> tuple[SSAValue, float] | None:
    """c * tanh(s / c) (or tanh(s * (1/c)) * c) -> (s, c)."""
    owner = value.owner
    if not isinstance(owner, ox.MulOp):
        return None
    for tanh_value, other in ((owner.A, owner.B), (owner.B, owner.A)):
        cap = scalar_of(other)
        tanh = tanh_value.owner
        if cap is None or cap <= 0 or not isinstance(tanh, ox.TanhOp):
            continue
        # Only the 1/c factor belongs to the softcap; a scale inside the tanh stays for
        # walk_scores to find.
        divide = tanh.X.owner
        inner = None
        if isinstance(divide, ox.DivOp) and _close_to(scalar_of(divide.B), cap):
            inner = divide.A
        elif isinstance(divide, ox.MulOp):
            for candidate, other in ((divide.A, divide.B), (divide.B, divide.A)):
                factor = scalar_of(other)
                if factor is not None and _close_to(factor * cap, 1.0):
                    inner = candidate
                    break
        if inner is not None and _shape(inner) == _shape(value):
            return inner, cap
    return None


def _very_negative(value: SSAValue) -> float | None:
    constant = scalar_of(value)
    return constant if constant is not None and constant <= MASKED_BELOW else None


def _scalar_shaped(value: SSAValue) -> bool:
    return all(d == 1 for d in _shape(value)) and _is_float(value)


def _integer_scores(value: SSAValue) -> Scores | None:
    """Cast(Cast(MatMul(a, b), int32), float) * s with s a run-time scalar: MatMulInteger of
    DynamicQuantizeLinear'd Q and K^T (a, b their centred integers) times their scales."""
    owner = value.owner
    if not isinstance(owner, ox.MulOp):
        return None
    for product, scale in ((owner.A, owner.B), (owner.B, owner.A)):
        widen = product.owner
        if not (_scalar_shaped(scale) and not _is_constant(scale) and isinstance(widen, ox.CastOp)):
            continue
        narrow = widen.input.owner
        if not _is_float(product) or not isinstance(narrow, ox.CastOp) or _is_float(narrow.output):
            continue
        matmul = narrow.input.owner
        if isinstance(matmul, ox.MatMulOp) and len(_shape(matmul.Y)) == 4:
            halves = scale.owner
            if isinstance(halves, ox.MulOp) and all(map(_scalar_shaped, (halves.A, halves.B))):
                split = (halves.A, halves.B)
            else:
                split = (scale, None)
            return Scores(matmul, 1.0, [], [], ["integer Q.K^T (MatMulInteger)"], dequantize=split)
    return None


def walk_scores(value: SSAValue, depth: int = 0) -> list[Scores]:
    """All ways of reading `value` as scale * (Q K^T) + bias terms, most direct first."""
    if depth > 12:
        return []
    owner = value.owner
    found: list[Scores] = []
    if isinstance(owner, ox.MatMulOp) and len(_shape(owner.Y)) == 4:
        found.append(Scores(owner, 1.0, [], [], []))
    if (integer := _integer_scores(value)) is not None:
        found.append(integer)
    softcapped = _softcap_input(value)
    if softcapped is not None:
        inner, cap = softcapped
        for scores in walk_scores(inner, depth + 1):
            # Masks inside the tanh are not expressible; the scale is.
            if (
                not scores.bias_terms
                and not scores.where_masks
                and not scores.softcap
                and not scores.quant
            ):
                scores.softcap = cap
                scores.form.append("softcap")
                found.append(scores)
    if isinstance(owner, ox.MulOp | ox.DivOp) or (
        isinstance(owner, ox.CastOp) and _is_float(owner.input)
    ):
        inner, factor, _ = peel_scalars(value)
        if inner is not value:
            for scores in walk_scores(inner, depth + 1):
                if scores.stage >= 2:  # scaling a quantized scaled score is not the op's order
                    continue
                scores.scale *= factor
                # A scale applied after a bias was added scales that bias too.
                scores.bias_factors = [f * factor for f in scores.bias_factors]
                scores.form.append(f"scale {type(owner).__name__.removesuffix('Op')} after QK^T")
                found.append(scores)
    if isinstance(owner, ox.AddOp):
        for score_side, term in ((owner.A, owner.B), (owner.B, owner.A)):
            if _shape(score_side) != _shape(owner.C) or not _is_float(term):
                continue
            for scores in walk_scores(score_side, depth + 1):
                if scores.stage >= 3:
                    continue
                scores.bias_terms.append(term)
                scores.bias_factors.append(1.0)
                found.append(scores)
    if isinstance(owner, ox.WhereOp) and _shape(owner.output) in (_shape(owner.X), _shape(owner.Y)):
        fill_y, fill_x = _very_negative(owner.Y), _very_negative(owner.X)
        if fill_y is not None and _shape(owner.X) == _shape(owner.output):
            for scores in walk_scores(owner.X, depth + 1):
                if scores.stage >= 3:
                    continue
                scores.where_masks.append(WhereMask(owner.condition, True, fill_y))
                found.append(scores)
        if fill_x is not None and _shape(owner.Y) == _shape(owner.output):
            for scores in walk_scores(owner.Y, depth + 1):
                if scores.stage >= 3:
                    continue
                scores.where_masks.append(WhereMask(owner.condition, False, fill_x))
                found.append(scores)
    quantized = fake_quant_of(value)
    if quantized is not None:
        inner, quant = quantized
        for scores in walk_scores(inner, depth + 1):
            if scores.bias_terms or scores.where_masks:
                stage, name = 3, "masked"
            elif scores.scale != 1.0:
                stage, name = 2, "scaled"
            else:
                stage, name = 1, "scores"
            if scores.stage >= stage or scores.softcap:
                continue
            scores.quant[name] = quant
            scores.stage = stage
            scores.form.append(f"QDQ on {'raw' if name == 'scores' else name} scores")
            found.append(scores)
    return found


def _row_guard_source(condition: SSAValue) -> SSAValue | None:
    """For the fully-masked-row guard Equal(ReduceMax(bias, [-1]), -inf): the bias it reads."""
    equal = condition.owner
    if not isinstance(equal, ox.EqualOp):
        return None
    for reduced, other in ((equal.A, equal.B), (equal.B, equal.A)):
        constant = scalar_of(other)
        owner = reduced.owner
        if (
            constant == -math.inf
            and isinstance(owner, ox.ReduceMaxOp)
            and owner.int_attr("keepdims", 1)
            and _ints(owner.axes) in ([-1], [len(_shape(owner.data)) - 1])
        ):
            return owner.data
    return None


@dataclass
class AfterSoftmax:
    pv: ox.MatMulOp
    form: list[str]
    # Biases whose fully -inf rows are zeroed by a guard (must be bias terms of the scores).
    guarded_biases: list[SSAValue]
    probs_quant: QuantStep | None = None


def after_softmax(softmax: ox.SoftmaxOp) -> AfterSoftmax | str | None:
    """Follow the probabilities through Casts, guards and a quantize -> dequantize pair to the
    P.V MatMul (a reason instead when they are quantized in a form cta.attention cannot hold)."""
    value = softmax.output
    form: list[str] = []
    guarded: list[SSAValue] = []
    probs_quant = None
    for _ in range(8):
        if probs_quant is None and (pair := fake_quant_after(value)) is not None:
            value, probs_quant = pair
            form.append("QDQ on probabilities")
            continue
        if probs_quant is None and quantized_into_integers(value):
            return REQUANTIZED
        if not _single_use(value):
            # The NaN guard reads p twice (IsNaN and Where).
            users = {use.operation for use in value.uses}
            if any(isinstance(u, ox.ReduceMinOp | ox.ReduceMaxOp) for u in users):
                return DYNAMIC_PROBABILITIES
            isnan = [u for u in users if isinstance(u, ox.IsNaNOp)]
            where = [u for u in users if isinstance(u, ox.WhereOp)]
            if len(users) == 2 and len(isnan) == 1 and len(where) == 1:
                guard = where[0]
                if guard.condition is isnan[0].Y and guard.Y is value and scalar_of(guard.X) == 0.0:
                    form.append("NaN guard")
                    value = guard.output
                    continue
            return None
        user = value.get_user_of_unique_use()
        if isinstance(user, ox.MatMulOp) and user.A is value:
            return AfterSoftmax(user, form, guarded, probs_quant)
        if isinstance(user, ox.WhereOp) and user.Y is value and scalar_of(user.X) == 0.0:
            # Rows whose bias is -inf everywhere give zeros, as cta.attention's do.
            source = _row_guard_source(user.condition)
            if source is not None and _shape(user.output) == _shape(value):
                form.append("masked-row guard")
                guarded.append(source)
                value = user.output
                continue
            return None
        if isinstance(user, ox.CastOp) and _is_float(user.output):
            value = user.output
            continue
        if isinstance(user, ox.DropoutOp | ox.IdentityOp):
            value = user.results[0]
            continue
        return None
    return None


# ---------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------


def _arguments_reached(values: list[SSAValue], limit: int = 5000) -> set[BlockArgument] | None:
    """Block arguments the values depend on (None if the cone is too large to inspect)."""
    found: set[BlockArgument] = set()
    seen: set[SSAValue] = set()
    stack = list(values)
    while stack:
        value = stack.pop()
        if value in seen:
            continue
        seen.add(value)
        if len(seen) > limit:
            return None
        if isinstance(value, BlockArgument):
            found.add(value)
        elif isinstance(value.owner, Operation):
            stack.extend(value.owner.operands)
    return found


def _bias_of(scores: Scores, bindings: dict[SSAValue, np.ndarray], module: ModuleOp) -> np.ndarray:
    terms = [*scores.bias_terms, *(m.condition for m in scores.where_masks)]
    arrays = evaluate_values(terms, bindings, module) if terms else []
    total = np.zeros((), dtype=np.float64)
    for array, factor in zip(arrays[: len(scores.bias_terms)], scores.bias_factors, strict=True):
        total = total + array.astype(np.float64) * factor
    for mask, condition in zip(scores.where_masks, arrays[len(scores.bias_terms) :], strict=True):
        keep = condition if mask.keep_when else np.logical_not(condition)
        total = total + np.where(keep, 0.0, -np.inf)
    return total


def _visible_pattern(
    batch_mask: np.ndarray | None, q_len: int, k_len: int, causal_offset: int | None
) -> np.ndarray:
    visible = np.ones((1, 1, q_len, k_len), dtype=bool)
    if batch_mask is not None:
        visible = visible & (batch_mask != 0)[:, None, None, :]
    if causal_offset is not None:
        rows = np.arange(q_len)[:, None] + causal_offset
        visible = visible & (np.arange(k_len)[None, :] <= rows)
    return visible


def _matches(bias: np.ndarray, visible: np.ndarray) -> bool:
    bias, visible = np.broadcast_arrays(bias, visible)
    return bool(np.all(np.where(visible, np.abs(bias) <= 1e-6, bias <= MASKED_BELOW)))


def probe_mask(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A random 0/1 padding mask whose first position is always valid (no empty rows)."""
    mask = rng.integers(0, 2, size=shape)
    mask[..., 0] = 1
    return mask.astype(dtype)


@dataclass
class MaskDecision:
    kind: str  # none | key_padding | additive
    causal_offset: int | None  # None: not causal; else query i sees keys j <= i + offset
    operand: SSAValue | None
    form: str


def classify_mask(
    scores: Scores, batch: int, q_len: int, k_len: int, module: ModuleOp, rng: np.random.Generator
) -> MaskDecision | None:
    if not scores.bias_terms and not scores.where_masks:
        return MaskDecision("none", None, None, "no mask")
    leaves = [*scores.bias_terms, *(m.condition for m in scores.where_masks)]
    arguments = _arguments_reached(leaves)
    if arguments is None:
        return None
    # Bottom-right aligned causal (decoders, KV caches) first, then top-left (ONNX Attention).
    causal_offsets = [None, k_len - q_len] + ([0] if k_len != q_len else [])
    if not arguments:
        bias = _bias_of(scores, {}, module)
        for offset in causal_offsets:
            if _matches(bias, _visible_pattern(None, q_len, k_len, offset)):
                form = "constant zero mask" if offset is None else "constant causal mask"
                return MaskDecision("none", offset, None, form)
    if len(arguments) == 1:
        (argument,) = arguments
        dtype = ox.numpy_dtype(ox.element_of(argument))
        if _shape(argument) == (batch, k_len) and dtype.kind in "iub":
            for offset in causal_offsets:
                probes = [probe_mask(rng, (batch, k_len), dtype) for _ in range(4)]
                if all(
                    _matches(
                        _bias_of(scores, {argument: mask}, module),
                        _visible_pattern(mask, q_len, k_len, offset),
                    )
                    for mask in probes
                ):
                    form = "padding mask" + ("" if offset is None else " + causal")
                    return MaskDecision("key_padding", offset, argument, form)
    return MaskDecision("additive", None, None, "additive bias")


# ---------------------------------------------------------------------------------------------
# The rewrite
# ---------------------------------------------------------------------------------------------


@dataclass
class Match:
    softmax: ox.SoftmaxOp
    pv: ox.MatMulOp
    scores: Scores
    query: Heads
    key: Heads
    value: Heads
    scale: float
    form: list[str]
    quant: dict[str, QuantStep] = field(default_factory=dict)


def match_attention(softmax: ox.SoftmaxOp) -> Match | str | None:
    """The attention around `softmax`, None when it is not one, a reason when it is one that
    cannot be represented."""
    rank = len(_shape(softmax.input))
    if rank != 4 or softmax.int_attr("axis", -1) % rank != rank - 1:
        return None
    followed = after_softmax(softmax)
    if followed is None or isinstance(followed, str):
        return followed
    pv, post_form = followed.pv, followed.form
    for scores in walk_scores(softmax.input):
        if any(bias not in scores.bias_terms for bias in followed.guarded_biases):
            continue
        qk = scores.matmul
        quant = dict(scores.quant)
        if followed.probs_quant is not None:
            quant["probs"] = followed.probs_quant
        q_value, q_factor, _ = peel_scalars(qk.A)
        key = key_heads_of_transposed(qk.B)
        if "scores" in quant or scores.dequantize:
            # The raw scores are rounded (or dequantized) before any scale: Q and K keep
            # their factors.
            q_value, q_factor = qk.A, 1.0
            if key is not None and key[1] != 1.0:
                key = None
        if scores.dequantize:
            key = None  # K^T's centred integers: dequantized by a new Mul, then transposed
        if key is None and (quant or scores.dequantize) and len(_shape(qk.B)) == 4:
            # A dequantized K^T (the QDQ pair sits between the head transpose and the MatMul).
            key = Heads(qk.B, "bhds", 1, ["K^T dequantized"]), 1.0
        if key is None:
            continue
        key_heads, k_factor = key
        query = heads_of(q_value)
        if scores.dequantize:
            query = Heads(q_value, "bhsd", 1, [], scores.dequantize[0])
            key_heads.times = scores.dequantize[1]
        value = heads_of(pv.B)
        b, h, sq, d = _shape(qk.A)
        sk = _shape(qk.B)[3]
        if _shape(pv.B)[:3] != (b, h, sk) or query.repeat != 1:
            continue
        if key_heads.heads * key_heads.repeat != h or value.heads * value.repeat != h:
            continue
        if key_heads.heads != value.heads:
            continue
        form = [*scores.form, *key_heads.form, *post_form]
        if q_factor != 1.0 or k_factor != 1.0:
            form.append("scale on Q/K")
        if key_heads.repeat > 1:
            form.append(f"GQA x{key_heads.repeat}")
        return Match(
            softmax,
            pv,
            scores,
            query,
            key_heads,
            value,
            scores.scale * q_factor * k_factor,
            form,
            quant,
        )
    return None


def _materialize(
    heads: Heads, block: Block, anchor: Operation, new_ops: list[Operation], captured: list[str]
) -> SSAValue:
    element = ox.element_of(heads.value)
    if heads.times is not None:
        scaled = ox.MulOp.build(
            operands=[heads.value, heads.times], result_types=[heads.value.type]
        )
        new_ops.append(scaled)
        heads = Heads(scaled.C, heads.layout, heads.repeat, heads.form)
    if heads.layout == "bhsd":
        return heads.value
    if heads.layout == "bhds":
        b, h, d, s = _shape(heads.value)
        op = _transpose(heads.value, element, [b, h, s, d], [0, 1, 3, 2])
        new_ops.append(op)
        return op.results[0]
    b, s, h, d = _shape(heads.value)
    projection = capture_projection(heads.value)
    if projection is not None:
        properties = {
            "heads": IntegerAttr(h, i64),
            "head_dim": IntegerAttr(d, i64),
            "columns": DenseArrayBase.from_list(i64, list(projection.columns)),
        }
        op = cta.ProjectOp.build(
            operands=[
                projection.input,
                projection.weight,
                [projection.bias] if projection.bias else [],
            ],
            result_types=[TensorType(element, [b, h, s, d])],
            properties=properties,
        )
        captured.append(projection.form)
    else:
        op = _transpose(heads.value, element, [b, h, s, d], [0, 2, 1, 3])
    new_ops.append(op)
    return op.results[0]


def _transpose(
    value: SSAValue, element: Attribute, shape: list[int], perm: list[int]
) -> ox.TransposeOp:
    """A Transpose of `value` by `perm` into a [shape] tensor of `element`."""
    return ox.TransposeOp.build(
        operands=[value],
        result_types=[TensorType(element, shape)],
        properties={"perm": DenseArrayBase.from_list(i64, perm)},
    )


def _random_like(value: SSAValue, rng: np.random.Generator) -> np.ndarray:
    dtype = ox.numpy_dtype(ox.element_of(value))
    shape = _shape(value)
    if dtype.kind == "f" and integer_valued(value):
        # An integer product (MatMulInteger) stays exact, as it is on integers.
        return rng.integers(-20, 21, size=shape).astype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    return (
        probe_mask(rng, shape, dtype)
        if len(shape) == 2
        else rng.integers(0, 2, size=shape).astype(dtype)
    )


def _verify(
    match_output: SSAValue,
    new_ops: list[Operation],
    new_output: SSAValue,
    module: ModuleOp,
    rng: np.random.Generator,
    match: Match,
) -> tuple[np.ndarray, float]:
    """The abs difference between the original subgraph and the new ops on random inputs
    (relative to the largest output above 1) and, with quantization stages, the bound on one
    step's effect on an output (on the same scale)."""
    produced = {r for op in new_ops for r in op.results}
    leaves: list[SSAValue] = []
    for op in new_ops:
        for operand in op.operands:
            if operand not in produced and not _is_constant(operand) and operand not in leaves:
                leaves.append(operand)
    bindings = {leaf: _random_like(leaf, rng) for leaf in leaves}
    (expected,) = evaluate_values([match_output], bindings, module)
    values = dict(bindings)
    constants = [v for op in new_ops for v in op.operands if _is_constant(v) and v not in values]
    for constant, array in zip(constants, evaluate_values(constants, {}, module), strict=True):
        values[constant] = array
    from ctac.runtime.evaluator import operand_arrays

    for op in new_ops:
        results = SEMANTICS[type(op)](op, *operand_arrays(op, values))
        for result, array in zip(op.results, results, strict=True):
            values[result] = np.asarray(array)
    got = values[new_output]
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    value_max = float(np.abs(values[new_ops[-1].operands[2]]).max(initial=0.0))
    bound = quant_tolerance(match.quant, match.scale, value_max) / scale if match.quant else 0.0
    return np.abs(got.astype(np.float64) - expected) / scale, bound


@dataclass
class DetectionReport:
    layer: str
    form: str
    num_heads: int
    kv_heads: int
    head_dim: int
    q_len: int
    kv_len: int
    mask_kind: str
    causal: bool
    projections: str
    verified: str


def _discard(new_ops: list[Operation]) -> None:
    """Drop ops that were built but never inserted, so they leave no uses behind."""
    for op in reversed(new_ops):
        op.erase()


def rewrite(
    match: Match, module: ModuleOp, verify: bool, rng: np.random.Generator
) -> DetectionReport | str:
    pv = match.pv
    block = pv.parent_block()
    assert block is not None
    b, h, sq, _ = _shape(match.scores.matmul.A)
    sk = _shape(match.scores.matmul.B)[3]
    decision = classify_mask(match.scores, b, sq, sk, module, rng)
    if decision is None:
        return "mask too complex to inspect"
    if "masked" in match.quant and decision.kind != "additive" and decision.form != "no mask":
        # The graph rounds and clips the masked scores, so a masked key keeps a finite score:
        # only the additive form (the bias itself, quantized with the scores) says that.
        decision = MaskDecision("additive", None, None, f"{decision.form}, quantized as a bias")
    new_ops: list[Operation] = []
    captured: list[str] = []
    prefix = re.sub(r"_?[Ss]oftmax(\.\d+)?$", "", match.softmax.output.name_hint or "")
    prefix = prefix or pv.Y.name_hint or "attention"
    query = _materialize(match.query, block, pv, new_ops, captured)
    key = _materialize(match.key, block, pv, new_ops, captured)
    value = _materialize(match.value, block, pv, new_ops, captured)
    for role, head_value in (("q", query), ("k", key), ("v", value)):
        if head_value.owner in new_ops:
            head_value.name_hint = f"{prefix}_{role}"
    mask_operand = decision.operand
    if decision.kind == "additive":
        mask_operand = _additive_mask(match.scores, new_ops)
    properties = {
        "num_heads": IntegerAttr(h, i64),
        "kv_heads": IntegerAttr(_shape(key)[1], i64),
        "head_dim": IntegerAttr(_shape(query)[3], i64),
        "scale": FloatAttr(match.scale, f64),
    }
    if match.scores.softcap:
        properties["softcap"] = FloatAttr(match.scores.softcap, f64)
    if match.quant:
        stages = [
            value
            for stage in cta.QUANT_STAGES
            for value in (match.quant[stage].as_list() if stage in match.quant else [0.0] * 4)
        ]
        properties["fake_quant"] = DenseArrayBase.from_list(f64, stages)
    if decision.causal_offset is not None:
        properties["causal"] = IntegerAttr(1, i64)
        if decision.causal_offset != sk - sq:
            properties["causal_offset"] = IntegerAttr(decision.causal_offset, i64)
    if decision.kind != "none":
        properties["mask_kind"] = StringAttr(decision.kind)
    layer = match.softmax.output.name_hint or "attention"
    attention = cta.AttentionOp.build(
        operands=[query, key, value, [mask_operand] if mask_operand is not None else []],
        result_types=[pv.Y.type],
        properties=properties,
        attributes={"ctac.source": StringAttr(layer)},
    )
    new_ops.append(attention)
    try:
        attention.verify()
    except Exception as exc:  # a malformed match is refused, not an error
        _discard(new_ops)
        return f"the matched op does not verify: {exc}"
    form = ", ".join([*match.form, decision.form])
    if verify:
        try:
            difference, step_bound = _verify(pv.Y, new_ops, attention.output, module, rng, match)
        except CtacError as exc:
            _discard(new_ops)
            return f"could not be verified: {exc}"
        tolerance = (
            VERIFY_TOLERANCE if ox.element_of(pv.Y) != ox.element_type_of(np.float16) else 5e-3
        )
        judged = judge_proof(difference, tolerance, step_bound)
        if judged is None:
            _discard(new_ops)
            return f"differs from the original subgraph by {float(difference.max()):.3g}"
        verified = judged
    else:
        verified = "not checked"
    attention.attributes["ctac.form"] = StringAttr(form)
    block.insert_ops_before(new_ops, pv)
    attention.output.name_hint = pv.Y.name_hint
    pv.Y.replace_all_uses_with(attention.output)
    return DetectionReport(
        layer=layer,
        form=form,
        num_heads=h,
        kv_heads=_shape(key)[1],
        head_dim=_shape(query)[3],
        q_len=sq,
        kv_len=sk,
        mask_kind=decision.kind,
        causal=decision.causal_offset is not None,
        projections=" / ".join(captured)
        if len(captured) == 3
        else ("partial" if captured else "no"),
        verified=verified,
    )


def _additive_mask(scores: Scores, new_ops: list[Operation]) -> SSAValue:
    """One float tensor summing the bias terms and the Where masks (as 0 / -big)."""
    terms = []
    for term, factor in zip(scores.bias_terms, scores.bias_factors, strict=True):
        if factor != 1.0:
            constant = ox.ConstantOp.from_numpy(
                np.array(factor, dtype=ox.numpy_dtype(ox.element_of(term)))
            )
            scaled = ox.MulOp.build(operands=[term, constant.output], result_types=[term.type])
            new_ops.extend([constant, scaled])
            term = scaled.C
        terms.append(term)
    for mask in scores.where_masks:
        zero = ox.ConstantOp.from_numpy(np.zeros((), dtype=np.float32))
        fill = ox.ConstantOp.from_numpy(np.array(mask.fill, dtype=np.float32))
        kept, dropped = (zero, fill) if mask.keep_when else (fill, zero)
        where = ox.WhereOp.build(
            operands=[mask.condition, kept.output, dropped.output],
            result_types=[TensorType(ox.element_of(fill.output), list(_shape(mask.condition)))],
        )
        new_ops.extend([zero, fill, where])
        terms.append(where.output)
    total = terms[0]
    for term in terms[1:]:
        shape = ox.broadcast_shapes(_shape(total), _shape(term))
        add = ox.AddOp.build(
            operands=[total, term], result_types=[TensorType(ox.element_of(total), list(shape))]
        )
        new_ops.append(add)
        total = add.C
    return total


FUSED_BY_ONNXRUNTIME = "com.microsoft."  # ctac.form of attention imported from a fused op


def imported_report(attention: cta.AttentionOp) -> DetectionReport | None:
    """The report of an attention the importer built from onnxruntime's fused Attention or
    MultiHeadAttention (ctac/contrib.py): nothing to detect or prove, but a layer all the same."""
    form = attention.attributes.get("ctac.form")
    if not isinstance(form, StringAttr) or not form.data.startswith(FUSED_BY_ONNXRUNTIME):
        return None
    source = attention.attributes.get("ctac.source")
    q_shape, k_shape = _shape(attention.query), _shape(attention.key)
    return DetectionReport(
        layer=source.data if isinstance(source, StringAttr) else "attention",
        form=f"{form.data} (fused by onnxruntime)",
        num_heads=attention.int_attr("num_heads"),
        kv_heads=attention.int_attr("kv_heads"),
        head_dim=attention.int_attr("head_dim"),
        q_len=q_shape[2],
        kv_len=k_shape[2],
        mask_kind=attention.str_attr("mask_kind", "none"),
        causal=bool(attention.int_attr("causal", 0)),
        projections="imported",
        verified="not needed (imported from the fused op)",
    )


def detect_in_function(
    module: ModuleOp, function: func.FuncOp, verify: bool, seed: int
) -> tuple[list[DetectionReport], list[str]]:
    with single_threaded_blas():
        return _detect_in_function(module, function, verify, seed)


def _detect_in_function(
    module: ModuleOp, function: func.FuncOp, verify: bool, seed: int
) -> tuple[list[DetectionReport], list[str]]:
    rng = np.random.default_rng(seed)
    reports: list[DetectionReport] = []
    refused: list[str] = []
    for op in list(function.body.block.ops):
        if isinstance(op, cta.AttentionOp) and (imported := imported_report(op)):
            reports.append(imported)
            continue
        if not isinstance(op, ox.SoftmaxOp) or op.parent_block() is None:
            continue
        match = match_attention(op)
        if match is None:
            continue
        if isinstance(match, str):
            refused.append(f"{op.output.name_hint or 'softmax'}: {match}")
            continue
        outcome = rewrite(match, module, verify, rng)
        if isinstance(outcome, str):
            refused.append(f"{op.output.name_hint or 'softmax'}: {outcome}")
        else:
            reports.append(outcome)
    remove_dead_ops(function)
    return reports, refused


@dataclass(frozen=True)
class DetectAttentionPass(ModulePass):
    """Rewrite attention subgraphs into cta.attention (+ cta.project), each match proven."""

    name = "detect-attention"

    verify: bool = True
    seed: int = 0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for function in op.ops:
            if isinstance(function, func.FuncOp):
                _, refused = detect_in_function(op, function, self.verify, self.seed)
                warn_refused(refused)


def warn_refused(refused: list[str], stream: TextIO | None = None) -> None:
    """Each refused match as a `warning:` line on stderr, as `ctac compile` prints them, so
    `ctac-opt -p detect-attention` does not drop them (xDSL has no warning diagnostics)."""
    for line in refused:
        print(f"warning: attention match refused at {line}", file=stream or sys.stderr)


def detect_attention(
    module: ModuleOp, verify: bool = True, seed: int = 0
) -> tuple[list[DetectionReport], list[str]]:
    """Run detection and return what was found (for `ctac inspect`) and what was refused."""
    reports: list[DetectionReport] = []
    refused: list[str] = []
    for function in module.ops:
        if isinstance(function, func.FuncOp):
            found, rejected = detect_in_function(module, function, verify, seed)
            reports.extend(found)
            refused.extend(rejected)
    return reports, refused
