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
are taken as they are after their dequantization, which stays in the graph. In QOperator graphs
(QLinearMatMul, QLinearMul, QLinearAdd, QLinearSoftmax; passes/attention_qoperator.py) each
requantization is a stage, P.V's the output stage, and the attention replaces the integers P.V's
requantization made (new ops turn its output back into them).

With `verify=true` (the default) every match is proven: the original subgraph and the new ops are
evaluated on the same random inputs and a match that differs by more than 1e-4 is refused. With
quantization stages, up to 1% of the output rows (at least 2) may differ by more than that, by at
most the effect of one quantization step (a value within float error of a half step rounds the
other way); the reference computes them op by op as the graph does, so this is rare.
"""

from __future__ import annotations

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
from xdsl.ir import Attribute, Block, Operation, SSAValue
from xdsl.passes import ModulePass

from ctac.blas import single_threaded_blas
from ctac.dialects import cta
from ctac.dialects import onnx as ox
from ctac.errors import CtacError
from ctac.passes.attention_graph import (
    Heads,
    capture_projection,
    heads_of,
    is_constant,
    key_heads_of_transposed,
    peel_scalars,
    static_shape,
)
from ctac.passes.attention_masks import (
    MaskDecision,
    classify_mask,
    probe_mask,
)
from ctac.passes.attention_qoperator import (
    QOperatorTail,
    integer_scores,
    integer_tail,
    levels_as_values,
    requantize_output,
)
from ctac.passes.attention_quant import (
    QuantStep,
    integer_valued,
    judge_proof,
    quant_tolerance,
)
from ctac.passes.attention_scores import (
    Scores,
    after_softmax,
    walk_scores,
)
from ctac.passes.canonicalize import remove_dead_ops
from ctac.runtime.evaluator import evaluate_values
from ctac.runtime.reference import SEMANTICS

VERIFY_TOLERANCE = 1e-4  # a match whose new ops differ by more than this is refused

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
    # QOperator: the integers P.V's requantization made (replaced instead of P.V's result).
    levels: SSAValue | None = None


def match_attention(softmax: ox.SoftmaxOp) -> Match | str | None:
    """The attention around `softmax`, None when it is not one, a reason when it is one that
    cannot be represented."""
    rank = len(static_shape(softmax.input))
    if rank != 4 or softmax.int_attr("axis", -1) % rank != rank - 1:
        return None
    followed = integer_tail(softmax) or after_softmax(softmax)
    if followed is None or isinstance(followed, str):
        return followed
    pv, post_form = followed.pv, followed.form
    candidates = walk_scores(softmax.input)
    if isinstance(followed, QOperatorTail):
        # Requantized integer scores (QLinear ops) before the softmax, or QDQ / float ones.
        read = integer_scores(softmax.input)
        if isinstance(read, str):
            return read
        candidates = [read] if read is not None else candidates
    for scores in candidates:
        if any(bias not in scores.bias_terms for bias in followed.guarded_biases):
            continue
        qk = scores.matmul
        quant = dict(scores.quant)
        if followed.probs_quant is not None:
            quant["probs"] = followed.probs_quant
        if isinstance(followed, QOperatorTail):
            quant["output"] = followed.output_quant
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
        if key is None and (quant or scores.dequantize) and len(static_shape(qk.B)) == 4:
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
        b, h, sq, d = static_shape(qk.A)
        sk = static_shape(qk.B)[3]
        if static_shape(pv.B)[:3] != (b, h, sk) or query.repeat != 1:
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
            followed.levels if isinstance(followed, QOperatorTail) else None,
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
        b, h, d, s = static_shape(heads.value)
        op = _transpose(heads.value, element, [b, h, s, d], [0, 1, 3, 2])
        new_ops.append(op)
        return op.results[0]
    b, s, h, d = static_shape(heads.value)
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
    shape = static_shape(value)
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
            if operand not in produced and not is_constant(operand) and operand not in leaves:
                leaves.append(operand)
    bindings = {leaf: _random_like(leaf, rng) for leaf in leaves}
    if match.levels is None:
        (expected,) = evaluate_values([match_output], bindings, module)
    else:  # the integers P.V's requantization made, compared as the output stage gives them
        (levels,) = evaluate_values([match.levels], bindings, module)
        expected = levels_as_values(levels, match.quant["output"])
    values = dict(bindings)
    constants = [v for op in new_ops for v in op.operands if is_constant(v) and v not in values]
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
    b, h, sq, _ = static_shape(match.scores.matmul.A)
    sk = static_shape(match.scores.matmul.B)[3]
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
        "kv_heads": IntegerAttr(static_shape(key)[1], i64),
        "head_dim": IntegerAttr(static_shape(query)[3], i64),
        "scale": FloatAttr(match.scale, f64),
    }
    if match.scores.softcap:
        properties["softcap"] = FloatAttr(match.scores.softcap, f64)
    if match.quant:
        # The output stage (QOperator graphs) last, written only when present.
        names = cta.QUANT_STAGES if "output" in match.quant else cta.QUANT_STAGES[:-1]
        stages = [
            value
            for stage in names
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
    replaced, result = pv.Y, attention.output
    if match.levels is not None:
        new_ops += requantize_output(attention.output, match.levels, match.quant["output"])
        replaced, result = match.levels, new_ops[-1].results[0]
    block.insert_ops_before(new_ops, pv)
    attention.output.name_hint = pv.Y.name_hint
    replaced.replace_all_uses_with(result)
    return DetectionReport(
        layer=layer,
        form=form,
        num_heads=h,
        kv_heads=static_shape(key)[1],
        head_dim=static_shape(query)[3],
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
            result_types=[
                TensorType(ox.element_of(fill.output), list(static_shape(mask.condition)))
            ],
        )
        new_ops.extend([zero, fill, where])
        terms.append(where.output)
    total = terms[0]
    for term in terms[1:]:
        shape = ox.broadcast_shapes(static_shape(total), static_shape(term))
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
    q_shape, k_shape = static_shape(attention.query), static_shape(attention.key)
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
