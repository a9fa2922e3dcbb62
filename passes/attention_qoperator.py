"""QOperator attention (QLinearMatMul, com.microsoft QLinearMul / QLinearAdd / QLinearSoftmax)
as cta.attention's fake_quant stages (passes/detect_attention.py).

ctac/quantized.py imports each QOperator op as the integer computation onnxruntime runs: the
centred integers of its inputs (Cast(levels) - zero point) combined with the scales folded into
one multiplier, rounded, the output zero point added, clipped and cast back to integers:

    QLinearMatMul   round((a - za) @ (b - zb) * m) + zy         m = sa * sb / sy
    QLinearMul      round((a - za) * (c - zc) * r + zy)         r = sa * sc / sy (c a constant)
    QLinearAdd      round((a - za) * ra + (b - zb) * rb + zy)   ra = sa / sy, rb = sb / sy
    QLinearSoftmax  round(softmax((x - zx) * sx) / sy) + zy

Read as floats (each tensor its levels' dequantized value), each op's output is a fake-quant
step of the float result: (clip(round(x / s) + z, low, high) - z) * s, up to the float rounding
of the folded multiplier and to adding z before rounding rather than after; both move a value
only at a rounding tie, which the proof lets a few rows show. So Q.K^T's requantization is the
raw scores' stage, a QLinearMul by a constant the scaled scores', a QLinearAdd of a bias the
masked scores', QLinearSoftmax's output the probabilities', and P.V's requantization the output
stage.

The graph never holds the scales of Q, K and V, only products in the multipliers, so the match
picks units: Q, K and V are their centred integers as the graph has them (no new op, exact in
fp16), the raw scores' step is 1 / m (the levels the graph rounds to), the attention's scale
carries the rest (sq * sk times the constant the scores are multiplied by), and the output is in
V's integer units with step sp / m_pv. The softmax's input is dequantized by the graph's own
scale, which fixes every step from the masked scores back. The attention's output replaces the
integers the P.V requantization made, turned back into them by new ops (Div, Round, Add, Cast:
exact, the output being k - z times the step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import TensorType
from xdsl.ir import Operation, SSAValue

from ctac.dialects import cta
from ctac.dialects import onnx as ox
from ctac.passes.attention_graph import is_float, peel_scalars, static_shape
from ctac.passes.attention_quant import REQUANTIZED, QuantStep, integer_valued, saturated
from ctac.passes.attention_scores import AfterSoftmax, Scores
from ctac.passes.canonicalize import scalar_of

SCORE_ORDER = (
    "the scores are requantized in an order cta.attention's stages (raw, scaled by a constant, "
    "plus a bias) cannot hold"
)


@dataclass(frozen=True)
class Requantized:
    """levels = Cast(clip(round(pre) + zero, low, high)) (zero added before or after rounding)."""

    pre: SSAValue
    zero: float
    low: float
    high: float

    def step(self, step: float) -> QuantStep:
        return QuantStep(step, self.zero, self.low, self.high)


def _integer_type(value: SSAValue) -> np.dtype | None:
    dtype = ox.numpy_dtype(ox.element_of(value))
    return dtype if dtype.kind in "iu" and dtype.itemsize <= 2 else None


def _zero_point(owner: Operation | None) -> tuple[SSAValue, float] | None:
    """(x, z) for owner = Add(x, z), z a scalar integer-valued constant (either order)."""
    if not isinstance(owner, ox.AddOp):
        return None
    for x, other in ((owner.A, owner.B), (owner.B, owner.A)):
        zero = scalar_of(other)
        if zero is not None and zero == round(zero) and static_shape(x) == static_shape(owner.C):
            return x, zero
    return None


def requantized(levels: SSAValue) -> Requantized | None:
    """How an integer tensor was rounded, as ctac/quantized.py builds QuantizeLinear and the
    QLinear ops."""
    found_levels = saturated(levels)
    if found_levels is None:
        return None
    value, low, high = found_levels
    zero = 0.0
    if (found := _zero_point(value.owner)) is not None:  # QLinearMatMul, QuantizeLinear
        value, zero = found
    if not isinstance(value.owner, ox.RoundOp):
        return None
    value = value.owner.X
    if zero == 0.0 and (found := _zero_point(value.owner)) is not None:  # QLinearAdd / Mul
        value, zero = found
    return Requantized(value, zero, low, high)


def centred(value: SSAValue) -> tuple[SSAValue, float] | None:
    """(levels, z) for value = Cast(levels) - z or Cast(levels), levels an integer tensor."""
    zero = 0.0
    owner = value.owner
    if isinstance(owner, ox.SubOp) and (z := scalar_of(owner.B)) is not None:
        value, zero, owner = owner.A, z, owner.A.owner
    if not isinstance(owner, ox.CastOp) or not is_float(value):
        return None
    return (owner.input, zero) if _integer_type(owner.input) is not None else None


def _dequantized(value: SSAValue) -> tuple[SSAValue, float, float] | None:
    """(levels, z, s) for value = (Cast(levels) - z) * s, s a positive scalar constant."""
    inner, step, _ = peel_scalars(value)
    found = centred(inner)
    return (*found, step) if found is not None and step > 0 else None


def _unique_user(value: SSAValue) -> Operation | None:
    user = value.get_user_of_unique_use() if value.has_one_use() else None
    return user if user is not None and len(user.results) == 1 else None


def _levels_after(value: SSAValue) -> tuple[SSAValue, Requantized, float] | None:
    """(levels, how, factor) when `value`'s only use starts a requantization whose rounded
    value is `value` times a scalar `factor`."""
    current = value
    for _ in range(6):  # Mul/Div, Add, Round, Add, Clip, Cast
        user = _unique_user(current)
        if user is None:
            return None
        current = user.results[0]
        if isinstance(user, ox.CastOp) and _integer_type(current) is not None:
            how = requantized(current)
            if how is None:
                return None
            inner, factor, _ = peel_scalars(how.pre)
            return (current, how, factor) if inner is value and factor > 0 else None
    return None


def _centred_user(levels: SSAValue) -> tuple[SSAValue, float] | None:
    """(Cast(levels) - z, z): the only use of `levels` centres them for an integer product."""
    user = _unique_user(levels)
    if not isinstance(user, ox.CastOp) or not is_float(user.output):
        return None
    value, after = user.output, _unique_user(user.output)
    if isinstance(after, ox.SubOp) and after.A is value and scalar_of(after.B) is not None:
        value = after.C
    found = centred(value)
    return (value, found[1]) if found is not None else None


@dataclass
class QOperatorTail(AfterSoftmax):
    """After a QLinearSoftmax: its integers into a QLinearMatMul P.V, requantized into `levels`
    with the output stage `output_quant`."""

    levels: SSAValue | None = None
    output_quant: QuantStep | None = None


def integer_tail(softmax: ox.SoftmaxOp) -> QOperatorTail | str | None:
    """The probabilities quantized into an integer P.V that is requantized (None: they are not
    rounded into integers; a reason when they are, in a form not read here)."""
    found = _levels_after(softmax.output)
    if found is None:
        return None
    p_levels, p_how, p_factor = found
    centring = _centred_user(p_levels)
    pv = _unique_user(centring[0]) if centring else None
    if centring is None or not isinstance(pv, ox.MatMulOp) or pv.A is not centring[0]:
        return None  # dequantized first (a QDQ pair), or not into a product: after_softmax's
    after = _levels_after(pv.Y)
    if centring[1] != p_how.zero or not integer_valued(pv.B) or after is None:
        return REQUANTIZED
    o_levels, o_how, multiplier = after
    probs_step = 1.0 / p_factor
    return QOperatorTail(
        pv=pv,
        form=["QLinearSoftmax probabilities", "QLinearMatMul P.V requantized"],
        guarded_biases=[],
        probs_quant=p_how.step(probs_step),
        levels=o_levels,
        output_quant=o_how.step(probs_step / multiplier),
    )


@dataclass
class _Stage:
    kind: str  # "matmul" (Q.K^T), "mul" (by a constant), "add" (a bias)
    how: Requantized
    ratio: float  # what the previous stage's centred integers (or Q.K^T) are multiplied by
    bias: tuple[SSAValue, float] | None = None  # (term, its factor) of an "add"
    matmul: ox.MatMulOp | None = None  # of a "matmul"


def _stage_of(levels: SSAValue, zero: float) -> tuple[_Stage, tuple[SSAValue, float] | None] | None:
    """The requantization that made `levels` (centred by `zero`) and the levels before it with
    their zero point (None at Q.K^T)."""
    how = requantized(levels)
    if how is None or how.zero != zero:
        return None
    inner, ratio, _ = peel_scalars(how.pre)
    owner = inner.owner
    if isinstance(owner, ox.MatMulOp) and len(static_shape(inner)) == 4:
        if integer_valued(owner.A) and integer_valued(owner.B) and ratio > 0:
            return _Stage("matmul", how, ratio, matmul=owner), None
        return None
    if isinstance(owner, ox.AddOp):
        for scores, term in ((owner.A, owner.B), (owner.B, owner.A)):
            scores_inner, scores_ratio, _ = peel_scalars(scores)
            previous = centred(scores_inner)
            if previous is None or static_shape(scores) != static_shape(inner):
                continue
            term_inner, term_ratio, _ = peel_scalars(term)
            if not is_float(term_inner) or scores_ratio <= 0:
                continue
            stage = _Stage("add", how, scores_ratio, (term_inner, term_ratio))
            return stage, previous
        return None
    previous = centred(inner)
    if previous is None or ratio <= 0:
        return None
    return _Stage("mul", how, ratio), previous


def integer_scores(value: SSAValue) -> Scores | str | None:
    """The softmax's input read back as requantized stages to an integer Q.K^T (None when it is
    not dequantized integers; a reason when the stages cannot be held)."""
    found = _dequantized(value)
    if found is None:
        return None
    levels, zero, step = found
    stages: list[_Stage] = []
    before: tuple[SSAValue, float] | None = (levels, zero)
    while before is not None:
        if len(stages) == 4:
            return None
        read = _stage_of(*before)
        if read is None:
            return None
        stage, before = read
        stages.insert(0, stage)
    kinds = [s.kind for s in stages]
    if kinds not in (["matmul"], ["matmul", "mul"], ["matmul", "add"], ["matmul", "mul", "add"]):
        return f"{SCORE_ORDER}: {' -> '.join(kinds)}"
    # Steps from the softmax back: each stage's step is the next one's times its ratio.
    steps = [0.0] * len(stages)
    steps[-1] = step
    for index in range(len(stages) - 1, 1, -1):
        steps[index - 1] = steps[index] * stages[index].ratio
    raw = stages[0]
    steps[0] = 1.0 / raw.ratio  # on Q.K^T of the centred integers, the levels the graph rounds
    after_raw = stages[1] if len(stages) > 1 else None
    # The scale brings the raw scores (in units of 1 / m) to what the next stage reads.
    scale = raw.ratio * (after_raw.ratio * steps[1] if after_raw else step)
    names = {"matmul": "scores", "mul": "scaled", "add": "masked"}
    quant = {names[s.kind]: s.how.step(t) for s, t in zip(stages, steps, strict=True)}
    form = ["QLinearMatMul Q.K^T requantized"]
    terms, factors = [], []
    for stage, stage_step in zip(stages[1:], steps[1:], strict=True):
        if stage.kind == "mul":
            form.append("QLinearMul scale requantized")
        else:
            form.append("QLinearAdd bias requantized")
            term, ratio = stage.bias
            terms.append(term)
            factors.append(ratio * stage_step)  # the term's integers in the scores' units
    assert raw.matmul is not None
    return Scores(
        raw.matmul,
        scale,
        terms,
        [],
        form,
        bias_factors=factors,
        quant=quant,
        stage=max(cta.QUANT_STAGES.index(name) + 1 for name in quant),
    )


def requantize_output(output: SSAValue, levels: SSAValue, quant: QuantStep) -> list[Operation]:
    """New ops turning the attention's output, (k - zero) * step after its output stage, back
    into the integers k (of `levels`' type) the graph carries on with: Div, Round, Add, Cast.
    Exact: k - zero is an integer within 255 of 0, so the quotient is within float error of it
    (within 1/8 after an fp16 store), and the fake-quant stage has already clipped it."""
    element = ox.element_of(output)
    dtype = ox.numpy_dtype(element)
    step = ox.ConstantOp.from_numpy(np.array(quant.step, dtype=dtype))
    zero = ox.ConstantOp.from_numpy(np.array(quant.zero, dtype=dtype))
    divided = ox.DivOp.build(operands=[output, step.output], result_types=[output.type])
    rounded = ox.RoundOp.build(operands=[divided.C], result_types=[output.type])
    shifted = ox.AddOp.build(operands=[rounded.Y, zero.output], result_types=[output.type])
    cast = ox.CastOp.build(
        operands=[shifted.C],
        result_types=[TensorType(ox.element_of(levels), list(static_shape(levels)))],
        properties={"to": ox.element_of(levels)},
    )
    return [step, zero, divided, rounded, shifted, cast]


def levels_as_values(levels: np.ndarray, quant: QuantStep) -> np.ndarray:
    """The integers a QOperator P.V left, as the attention's output stage gives them."""
    return (levels.astype(np.float64) - quant.zero) * quant.step
