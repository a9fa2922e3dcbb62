"""The walk from a Softmax back to its Q.K^T: scale, softcap, bias terms, Where masks, and what
follows the Softmax up to P.V (passes/detect_attention.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from xdsl.ir import SSAValue

from ctac.dialects import onnx as ox
from ctac.passes.attention_graph import (
    constant_ints,
    is_constant,
    is_float,
    peel_scalars,
    single_use,
    static_shape,
)
from ctac.passes.attention_quant import (
    DYNAMIC_PROBABILITIES,
    REQUANTIZED,
    QuantStep,
    fake_quant_after,
    fake_quant_of,
    quantized_into_integers,
)
from ctac.passes.canonicalize import scalar_of

# Bias entries at or below this count as "masked" (HF uses -10000, float min or -inf).
MASKED_BELOW = -1e3


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
        if inner is not None and static_shape(inner) == static_shape(value):
            return inner, cap
    return None


def _very_negative(value: SSAValue) -> float | None:
    constant = scalar_of(value)
    return constant if constant is not None and constant <= MASKED_BELOW else None


def _scalar_shaped(value: SSAValue) -> bool:
    return all(d == 1 for d in static_shape(value)) and is_float(value)


def _integer_scores(value: SSAValue) -> Scores | None:
    """Cast(Cast(MatMul(a, b), int32), float) * s with s a run-time scalar: MatMulInteger of
    DynamicQuantizeLinear'd Q and K^T (a, b their centred integers) times their scales."""
    owner = value.owner
    if not isinstance(owner, ox.MulOp):
        return None
    for product, scale in ((owner.A, owner.B), (owner.B, owner.A)):
        widen = product.owner
        if not (_scalar_shaped(scale) and not is_constant(scale) and isinstance(widen, ox.CastOp)):
            continue
        narrow = widen.input.owner
        if not is_float(product) or not isinstance(narrow, ox.CastOp) or is_float(narrow.output):
            continue
        matmul = narrow.input.owner
        if isinstance(matmul, ox.MatMulOp) and len(static_shape(matmul.Y)) == 4:
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
    if isinstance(owner, ox.MatMulOp) and len(static_shape(owner.Y)) == 4:
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
        isinstance(owner, ox.CastOp) and is_float(owner.input)
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
            if static_shape(score_side) != static_shape(owner.C) or not is_float(term):
                continue
            for scores in walk_scores(score_side, depth + 1):
                if scores.stage >= 3:
                    continue
                scores.bias_terms.append(term)
                scores.bias_factors.append(1.0)
                found.append(scores)
    if isinstance(owner, ox.WhereOp) and static_shape(owner.output) in (
        static_shape(owner.X),
        static_shape(owner.Y),
    ):
        fill_y, fill_x = _very_negative(owner.Y), _very_negative(owner.X)
        if fill_y is not None and static_shape(owner.X) == static_shape(owner.output):
            for scores in walk_scores(owner.X, depth + 1):
                if scores.stage >= 3:
                    continue
                scores.where_masks.append(WhereMask(owner.condition, True, fill_y))
                found.append(scores)
        if fill_x is not None and static_shape(owner.Y) == static_shape(owner.output):
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
            and constant_ints(owner.axes) in ([-1], [len(static_shape(owner.data)) - 1])
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
        if not single_use(value):
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
            if source is not None and static_shape(user.output) == static_shape(value):
                form.append("masked-row guard")
                guarded.append(source)
                value = user.output
                continue
            return None
        if isinstance(user, ox.CastOp) and is_float(user.output):
            value = user.output
            continue
        if isinstance(user, ox.DropoutOp | ox.IdentityOp):
            value = user.results[0]
            continue
        return None
    return None
