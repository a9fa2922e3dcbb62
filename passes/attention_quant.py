"""Quantize -> dequantize pairs inside attention, as detect-attention reads them.

ctac/quantized.py imports QuantizeLinear(x, s, z) -> DequantizeLinear(., s, z) as

    Div(x, s) -> Round -> Add(z) -> Clip(low, high) -> Cast(int8/uint8) -> Cast(float)
      -> Sub(z) -> Mul(s)

(canonicalize drops the Div and the Mul when s = 1 and the Add and the Sub when z = 0). Such a
pair on the scores or the probabilities of an attention is a step of `cta.attention`'s
`fake_quant` (dialects/cta.py): the value becomes (clip(round(x / s) + z, low, high) - z) * s.
Only pairs whose quantize and dequantize agree on s and z are read this way. QOperator graphs,
which carry the integers from one op to the next with a new scale (QLinearMatMul, QLinearSoftmax),
are read by passes/attention_qoperator.py, with an output stage for P.V's requantization; a form
it does not read is refused with `REQUANTIZED`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.ir import SSAValue

from ctac.dialects import onnx as ox
from ctac.passes.match import scalar_of

# The output rows (query positions of a head) a proof lets differ, each by at most one
# quantization step's effect: a value within float error of a half step may round the other way
# (a different float order), which moves one row; a dropped or misplaced stage moves nearly all.
QUANT_OUTLIER_ROWS = 0.01  # of the rows, and at least 2
REQUANTIZED = (
    "the probabilities are quantized into an integer P.V product that is requantized with a new "
    "scale (QOperator form: QLinearSoftmax / QLinearMatMul) in a form cta.attention's fake_quant "
    "cannot represent (it reads P.V of the probabilities' centred integers and V's, rounded to "
    "integers by one scalar multiplier)"
)

DYNAMIC_PROBABILITIES = (
    "the probabilities are quantized dynamically (DynamicQuantizeLinear: a scale and zero point "
    "computed at run time from the whole probability tensor), which cta.attention's fake_quant "
    "(a constant step per stage) cannot represent"
)


@dataclass(frozen=True)
class QuantStep:
    step: float
    zero: float
    low: float
    high: float

    def as_list(self) -> list[float]:
        return [self.step, self.zero, self.low, self.high]


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-7 * max(abs(a), abs(b))


def _scalar_operand(owner: ox.OnnxOp, kind: type) -> tuple[SSAValue, float] | None:
    """(x, c) for owner = kind(x, c) with c a scalar constant (either order for Mul)."""
    if not isinstance(owner, kind):
        return None
    pairs = [(owner.A, owner.B)] + ([(owner.B, owner.A)] if kind is ox.MulOp else [])
    for x, other in pairs:
        constant = scalar_of(other)
        if constant is not None and ox.shape_of(x) == ox.shape_of(owner.C):
            return x, constant
    return None


def saturated(levels: SSAValue) -> tuple[SSAValue, float, float] | None:
    """(x, low, high) for levels = Cast(Clip(x, low, high)) to an integer type of at most 16
    bits whose range holds [low, high]: how ctac/quantized.py saturates every quantizer."""
    narrow = levels.owner
    if not isinstance(narrow, ox.CastOp):
        return None
    integer = ox.numpy_dtype(ox.element_of(narrow.output))
    clip = narrow.input.owner
    if integer.kind not in "iu" or integer.itemsize > 2 or not isinstance(clip, ox.ClipOp):
        return None
    low, high = scalar_of(clip.min), scalar_of(clip.max)
    info = np.iinfo(integer)
    if low is None or high is None or not info.min <= low <= high <= info.max:
        return None
    return clip.input, low, high


def fake_quant_of(value: SSAValue) -> tuple[SSAValue, QuantStep] | None:
    """(x, step) when `value` is DequantizeLinear(QuantizeLinear(x, s, z), s, z)."""
    step_out, zero_out = 1.0, 0.0
    if (found := _scalar_operand(value.owner, ox.MulOp)) is not None:
        value, step_out = found
    if (found := _scalar_operand(value.owner, ox.SubOp)) is not None:
        value, zero_out = found
    widen = value.owner
    if not isinstance(widen, ox.CastOp) or ox.numpy_dtype(ox.element_of(widen.output)).kind != "f":
        return None
    found_levels = saturated(widen.input)
    if found_levels is None:
        return None
    value, low, high = found_levels
    zero_in = 0.0
    if (found := _scalar_operand(value.owner, ox.AddOp)) is not None:
        value, zero_in = found
    rounded = value.owner
    if not isinstance(rounded, ox.RoundOp):
        return None
    value, step_in = rounded.X, 1.0
    if (found := _scalar_operand(value.owner, ox.DivOp)) is not None:
        value, step_in = found
    if not (_same(step_in, step_out) and step_out > 0 and zero_in == zero_out == round(zero_in)):
        return None
    return value, QuantStep(step_out, zero_out, low, high)


def fake_quant_after(value: SSAValue) -> tuple[SSAValue, QuantStep] | None:
    """(dequantized, step) when `value`'s only use starts a quantize -> dequantize pair."""
    current = value
    for _ in range(8):  # the longest pair is 8 ops
        if not current.has_one_use():
            return None
        user = current.get_user_of_unique_use()
        if user is None or len(user.results) != 1:
            return None
        current = user.results[0]
        found = fake_quant_of(current)
        if found is not None and found[0] is value:
            return current, found[1]
    return None


def quantized_into_integers(value: SSAValue) -> bool:
    """`value`'s only use rounds it (a QuantizeLinear) without a dequantize pair after it."""
    user = value.get_user_of_unique_use() if value.has_one_use() else None
    if isinstance(user, ox.DivOp | ox.MulOp) and user.results[0].has_one_use():
        user = user.results[0].get_user_of_unique_use()
    return isinstance(user, ox.RoundOp)


def quant_tolerance(steps: dict[str, QuantStep], scale: float, value_max: float) -> float:
    """How far one value rounded to the neighbouring level moves an output: a probability by its
    step p_s moves an output by at most p_s * max|v|; a score by its step s (times the scale
    applied after it) moves a row's probabilities by at most s * scale in total variation, so an
    output by at most that * max|v|; the output stage then rounds, which may add its own step.
    Used only for the few rows detect-attention's proof lets differ (a rounding of a value that
    lands within float error of a half step)."""
    total = sum(
        q.step * (scale if stage == "scores" else 1.0)
        for stage, q in steps.items()
        if stage != "output"
    )
    return total * value_max + (steps["output"].step if "output" in steps else 0.0)


def judge_proof(difference: np.ndarray, tolerance: float, step_bound: float) -> str | None:
    """The `verified` text of a proof, None when it fails. Without quantization (step_bound 0)
    every output is within `tolerance`; with it, a few rows may be off by one step's effect."""
    error = float(difference.max(initial=0.0))
    if error <= tolerance:
        return f"{error:.1e}"
    rows = difference.reshape(-1, difference.shape[-1]) if difference.ndim else difference[None]
    off = int(np.count_nonzero((rows > tolerance).any(axis=-1)))
    allowed = max(2, int(QUANT_OUTLIER_ROWS * len(rows)))
    if step_bound and off <= allowed and error <= tolerance + step_bound:
        return f"{error:.1e} ({off} of {len(rows)} rows within one quantization step)"
    return None


def integer_valued(value: SSAValue) -> bool:
    """Cast(integer) or Cast(integer) - zero point: the centred integers of a quantized tensor."""
    owner = value.owner
    if isinstance(owner, ox.SubOp):
        owner = owner.A.owner
    return isinstance(owner, ox.CastOp) and ox.numpy_dtype(ox.element_of(owner.input)).kind != "f"
