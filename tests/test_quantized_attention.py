"""Attention in quantized ONNX graphs: static QDQ pairs on the scores and the probabilities, and
QOperator requantizations (QLinearMatMul, QLinearMul, QLinearAdd, QLinearSoftmax, with P.V's as
the output stage), become cta.attention's fake_quant stages (detected, proven, run by the
reference and the accelerator as onnxruntime runs the graph); forms it cannot hold are refused
with their reason."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import FP32_HW
from onnx import TensorProto, helper, numpy_helper

from ctac.dialects import cta
from ctac.emit import program_from_module
from ctac.importer import import_model
from ctac.passes.attention_quant import QuantStep, quant_tolerance
from ctac.passes.detect_attention import detect_attention
from ctac.passes.lower_to_isa import lower_module
from ctac.pipeline import run_passes
from ctac.runtime.evaluator import evaluate
from ctac.runtime.interpreter import run_program

HW = FP32_HW
CAPACITIES = {b.index: b.capacity for b in HW.buffers}
B, H, S, D = 1, 2, 16, 8
SCALE = 1 / np.sqrt(D)
# stage -> (scale, zero point, type) of the QDQ pair the graph puts there
PAIRS = {
    "q": (0.03, 3, np.int8),
    "k": (0.025, -2, np.int8),
    "v": (0.02, 1, np.int8),
    "scores": (0.06, 5, np.int8),
    "scaled": (0.03, 5, np.int8),
    "masked": (0.05, 2, np.int8),
    "probs": (1 / 255, 0, np.uint8),
}
ALL = tuple(PAIRS)
RANGES = {np.int8: (-128, 127), np.uint8: (0, 255)}


class Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    def qdq(self, x: str, stage: str) -> str:
        scale, zero, dtype = PAIRS[stage]
        s = self.const(f"{x}_scale", np.float32(scale))
        z = self.const(f"{x}_zero", np.array(zero, dtype))
        return self.node("DequantizeLinear", [self.node("QuantizeLinear", [x, s, z], f"{x}_q"), s, z],
                         f"{x}_dq")  # fmt: skip


def qdq_attention(path: Path, stages: tuple[str, ...], padding: bool = False) -> None:
    """MatMul(Q, K^T) -> Mul(scale) -> Add(mask) -> Softmax -> MatMul(., V), with a QDQ pair at
    each of `stages`; the mask is a float input, or (padding) (1 - attention_mask) * -10000."""
    g = Graph()
    q = g.qdq("q", "q") if "q" in stages else "q"
    kt = g.node("Transpose", ["k"], "kt", perm=[0, 1, 3, 2])
    kt = g.qdq(kt, "k") if "k" in stages else kt
    v = g.qdq("v", "v") if "v" in stages else "v"
    x = g.node("MatMul", [q, kt], "qk")
    x = g.qdq(x, "scores") if "scores" in stages else x
    x = g.node("Mul", [x, g.const("scale", np.float32(SCALE))], "scaled")
    x = g.qdq(x, "scaled") if "scaled" in stages else x
    mask = "mask"
    if padding:
        flt = g.node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
        inverted = g.node("Sub", [g.const("one", np.float32(1)), flt], "inverted")
        flat = g.node("Mul", [inverted, g.const("big", np.float32(-10000))], "bias")
        mask = g.node("Reshape", [flat, g.const("shape", np.array([B, 1, 1, S]))], "mask")
    x = g.node("Add", [x, mask], "masked")
    x = g.qdq(x, "masked") if "masked" in stages else x
    x = g.node("Softmax", [x], "p", axis=-1)
    x = g.qdq(x, "probs") if "probs" in stages else x
    g.node("MatMul", [x, v], "out")
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(n, f, [B, H, S, D]) for n in "qkv"]
    inputs.append(
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [B, S])
        if padding
        else helper.make_tensor_value_info("mask", f, [B, 1, 1, S])
    )
    outputs = [helper.make_tensor_value_info("out", f, [B, H, S, D])]
    graph = helper.make_graph(g.nodes, "qattn", inputs, outputs, g.initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), path)


def feeds(padding: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {n: rng.standard_normal((B, H, S, D)).astype(np.float32) for n in "qkv"}
    if padding:
        mask = np.ones((B, S), np.int64)
        mask[:, S - S // 4 :] = 0
        arrays["attention_mask"] = mask
    else:
        arrays["mask"] = np.where(rng.random((B, 1, 1, S)) < 0.2, -3.0, 0.0).astype(np.float32)
    return arrays


def onnxruntime_outputs(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """onnxruntime with graph optimizations off: its QuantizeLinear / DequantizeLinear kernels
    as the definitions say (as tests/test_quantized.py checks them)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


def assert_within_steps(ours: np.ndarray, want: np.ndarray, stages: tuple[str, ...], v: np.ndarray):
    """Equal to float error except where a value within float error of a half step rounds the
    other way (the float order of a MatMul or an exp differs): at most 2% of the outputs, each
    by at most what one step of each rounded stage can move an output (attention_quant.py)."""
    steps = {s: QuantStep(PAIRS[s][0], 0, 0, 0) for s in stages if s in cta.QUANT_STAGES}
    bound = 1e-5 + quant_tolerance(steps, SCALE, float(np.abs(v).max()))
    difference = np.abs(ours - want)
    assert difference.max() <= bound, (difference.max(), bound)
    assert np.mean(difference > 1e-5) <= 0.02, np.mean(difference > 1e-5)


def compile_and_run(path: Path, inputs: dict[str, np.ndarray]):
    module = import_model(path).module
    run_passes(module, "onnx-canonicalize")
    reports, refused = detect_attention(module)
    reference = evaluate(module, inputs)["out"]
    machine, _ = run_program(program_from_module(lower_module(module, HW)), CAPACITIES, inputs)
    return module, reports, refused, reference, machine["out"]


STAGE_SETS = [
    ALL,
    ("q", "k", "v", "probs"),
    ("q", "k", "v", "scores", "scaled"),
    ("q", "k", "v", "masked"),
    ("scores", "probs"),
]


@pytest.mark.parametrize("stages", STAGE_SETS, ids=["+".join(s) for s in STAGE_SETS])
def test_qdq_attention_detected_and_matches_onnxruntime(
    stages: tuple[str, ...], tmp_path: Path
) -> None:
    path = tmp_path / "qdq.onnx"
    qdq_attention(path, stages)
    inputs = feeds(padding=False)
    module, reports, refused, reference, accelerator = compile_and_run(path, inputs)
    assert refused == [] and len(reports) == 1
    quantized = [s for s in cta.QUANT_STAGES if s in stages]
    for stage in quantized:
        label = "probabilities" if stage == "probs" else f"{'raw' if stage == 'scores' else stage}"
        assert f"QDQ on {label}" in reports[0].form
    (attention,) = [op for op in module.walk() if isinstance(op, cta.AttentionOp)]
    found = cta.quant_stages(attention)
    assert sorted(found) == sorted(quantized)
    for stage in quantized:
        scale, zero, dtype = PAIRS[stage]
        assert found[stage] == pytest.approx((scale, zero, *RANGES[dtype]), rel=1e-7)
    want = onnxruntime_outputs(path, inputs)
    v = inputs["v"]
    assert_within_steps(reference, want, stages, v)
    assert_within_steps(accelerator, want, stages, v)


def test_a_padding_mask_under_rounded_scores_stays_a_bias(tmp_path: Path) -> None:
    """The graph rounds and clips the masked scores, so a padded key keeps a finite score:
    detection passes the bias as an additive mask (a key mask would give it -inf)."""
    path = tmp_path / "padding.onnx"
    qdq_attention(path, ALL, padding=True)
    inputs = feeds(padding=True)
    module, reports, refused, reference, accelerator = compile_and_run(path, inputs)
    assert refused == [] and len(reports) == 1
    assert reports[0].mask_kind == "additive" and "quantized as a bias" in reports[0].form
    want = onnxruntime_outputs(path, inputs)
    assert_within_steps(reference, want, ALL, inputs["v"])
    assert_within_steps(accelerator, want, ALL, inputs["v"])


def test_without_the_rounding_the_proof_refuses(tmp_path: Path, monkeypatch) -> None:
    """The proof catches a dropped stage: with the probabilities' stage removed from the match,
    most outputs move and the match is refused."""
    import ctac.passes.detect_attention as detect
    from ctac.passes.attention_scores import AfterSoftmax

    original = detect.after_softmax

    def forget_probs(softmax):
        found = original(softmax)
        if isinstance(found, AfterSoftmax):
            found.probs_quant = None
        return found

    monkeypatch.setattr(detect, "after_softmax", forget_probs)
    path = tmp_path / "qdq.onnx"
    qdq_attention(path, ("probs",))
    module = import_model(path).module
    run_passes(module, "onnx-canonicalize")
    reports, refused = detect_attention(module)
    assert reports == [] and len(refused) == 1 and "differs from the original" in refused[0]


# QOperator attention as onnxruntime's quantizer writes it (QOperator format): per tensor
# (scale, zero point), uint8 activations; "scale" is the constant 1/sqrt(D) the scores are
# multiplied by, quantized exactly (level 255).
QOP = {
    "q": (0.03, 128), "k": (0.03, 128), "v": (0.02, 128), "qk": (0.05, 128),
    "scaled": (0.02, 128), "mask": (0.05, 128), "masked": (0.03, 128), "p": (1 / 256, 0),
    "o": (0.02, 128), "scale": (SCALE / 255, 0),
}  # fmt: skip


def qoperator_attention(path: Path, order: tuple[str, ...], v_columns: bool = False) -> None:
    """QLinearMatMul(Q, K^T) -> `order` of QLinearMul (by the scale) and QLinearAdd (of the
    quantized mask) -> QLinearSoftmax -> QLinearMatMul(., V) -> Transpose and Reshape of the
    integers (the heads merged, as MiniLM's) -> DequantizeLinear. `v_columns`: P.V reads V
    with a scale per column (a multiplier per output column)."""
    g = Graph()
    used = {"q", "k", "v", "qk", "p", "o"}
    used |= ({"scale", "scaled"} if "mul" in order else set()) | (
        {"mask", "masked"} if "add" in order else set()
    )
    scale = {n: g.const(f"{n}_s", np.float32(s)) for n, (s, _) in QOP.items() if n in used}
    zero = {n: g.const(f"{n}_z", np.array(z, np.uint8)) for n, (_, z) in QOP.items() if n in used}
    if "mul" in order:
        g.const("scale_u8", np.array(255, np.uint8))
    u8 = {n: g.node("QuantizeLinear", [n, scale[n], zero[n]], f"{n}_u8") for n in "qkv"}
    u8["kt"] = g.node("Transpose", [u8["k"]], "kt_u8", perm=[0, 1, 3, 2])

    def qlinear(op: str, a: str, an: str, b: str, bn: str, out: str, **attributes) -> str:
        operands = [a, scale[an], zero[an], b, scale[bn], zero[bn], scale[out], zero[out]]
        return g.node(op, operands, f"{out}_u8", **attributes)

    x, name = qlinear("QLinearMatMul", u8["q"], "q", u8["kt"], "k", "qk"), "qk"
    for step in order:
        if step == "mul":
            x = qlinear("QLinearMul", x, name, "scale_u8", "scale", "scaled", domain=MS)
            name = "scaled"
        else:
            u8["mask"] = g.node("QuantizeLinear", ["mask", scale["mask"], zero["mask"]], "mask_u8")
            x = qlinear("QLinearAdd", x, name, u8["mask"], "mask", "masked", domain=MS)
            name = "masked"
    p = g.node("QLinearSoftmax", [x, scale[name], zero[name], scale["p"], zero["p"]], "p_u8",
               domain=MS, axis=-1, opset=13)  # fmt: skip
    if v_columns:
        scale["v"] = g.const("v_columns", np.linspace(0.018, 0.022, D).astype(np.float32))
    o = qlinear("QLinearMatMul", p, "p", u8["v"], "v", "o")
    o = g.node("Transpose", [o], "merged_u8", perm=[0, 2, 1, 3])
    o = g.node("Reshape", [o, g.const("merged", np.array([B, S, H * D]))], "flat_u8")
    g.node("DequantizeLinear", [o, scale["o"], zero["o"]], "out")
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(n, f, [B, H, S, D]) for n in "qkv"]
    if "add" in order:
        inputs.append(helper.make_tensor_value_info("mask", f, [B, 1, 1, S]))
    outputs = [helper.make_tensor_value_info("out", f, [B, S, H * D])]
    graph = helper.make_graph(g.nodes, "qop", inputs, outputs, g.initializers)
    opsets = [helper.make_opsetid("", 19), helper.make_opsetid(MS, 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)


MS = "com.microsoft"
ORDERS = [("mul", "add"), ("mul",), ("add",), ()]


def qoperator_module(tmp_path: Path, order: tuple[str, ...], v_columns: bool = False):
    """qoperator_attention's graph, imported and canonicalised (attention not yet detected)."""
    path = tmp_path / "qop.onnx"
    qoperator_attention(path, order, v_columns)
    module = import_model(path).module
    run_passes(module, "onnx-canonicalize")
    return module


@pytest.mark.parametrize("order", ORDERS, ids=["+".join(o) or "folded" for o in ORDERS])
def test_qoperator_attention_detected_and_matches_onnxruntime(
    order: tuple[str, ...], tmp_path: Path
) -> None:
    """Each requantization is a fake_quant stage: Q.K^T's the raw scores', QLinearMul's the
    scaled, QLinearAdd's the masked, QLinearSoftmax's the probabilities', P.V's the output's.
    Q, K and V stay their centred integers, so the raw scores' step is 1 / (sq sk / s_qk) and
    the scale carries sq sk; the output is in V's integer units (step so / sv)."""
    path = tmp_path / "qop.onnx"
    qoperator_attention(path, order)
    inputs = feeds(padding=False)
    if "add" not in order:
        del inputs["mask"]
    module, reports, refused, reference, accelerator = compile_and_run(path, inputs)
    assert refused == [] and len(reports) == 1, refused
    assert "QLinearMatMul P.V requantized" in reports[0].form
    (attention,) = [op for op in module.walk() if isinstance(op, cta.AttentionOp)]
    found = cta.quant_stages(attention)
    names = {"mul": "scaled", "add": "masked"}
    assert list(found) == ["scores", *(names[s] for s in order), "probs", "output"]
    (sq, _), (sk, _), (sv, _), (s_qk, z_qk) = (QOP[n] for n in ("q", "k", "v", "qk"))
    assert found["scores"] == pytest.approx((s_qk / (sq * sk), z_qk, 0, 255), rel=1e-6)
    for stage in ("scaled", "masked"):
        if stage in found:
            assert found[stage] == pytest.approx((QOP[stage][0], QOP[stage][1], 0, 255))
    assert found["probs"] == pytest.approx((1 / 256, 0, 0, 255))
    assert found["output"] == pytest.approx((QOP["o"][0] / sv, QOP["o"][1], 0, 255), rel=1e-6)
    factor = SCALE if "mul" in order else 1.0
    assert attention.float_attr("scale") == pytest.approx(factor * sq * sk, rel=1e-6)
    # One step of a stage moves an output by at most quant_tolerance's bound (in real units);
    # the rest agree to float error.
    steps = {"scores": s_qk, "scaled": QOP["scaled"][0], "masked": QOP["masked"][0],
             "probs": 1 / 256, "output": QOP["o"][0]}  # fmt: skip
    steps = {s: QuantStep(t, 0, 0, 0) for s, t in steps.items() if s in found}
    bound = 1e-5 + quant_tolerance(steps, factor, sv * 128)
    want = onnxruntime_outputs(path, inputs)
    for ours in (reference, accelerator):
        difference = np.abs(ours - want)
        assert difference.max() <= bound, (difference.max(), bound)
        assert np.mean(difference > 1e-5) <= 0.02, np.mean(difference > 1e-5)


def test_a_wrong_output_step_is_refused_by_the_proof(tmp_path: Path, monkeypatch) -> None:
    """The proof compares the graph's integers with the output stage's: an output step off by
    a factor 2 moves nearly every output and the match is refused."""
    import ctac.passes.detect_attention as detect
    from ctac.passes.attention_qoperator import QOperatorTail

    original = detect.integer_tail

    def doubled(softmax):
        found = original(softmax)
        if isinstance(found, QOperatorTail):
            step = found.output_quant
            found.output_quant = QuantStep(2 * step.step, step.zero, step.low, step.high)
        return found

    monkeypatch.setattr(detect, "integer_tail", doubled)
    module = qoperator_module(tmp_path, ("mul", "add"))
    reports, refused = detect_attention(module)
    assert reports == [] and len(refused) == 1 and "differs from the original" in refused[0]


def test_a_mask_added_before_the_scale_is_refused_with_its_reason(tmp_path: Path) -> None:
    """QLinearAdd of the mask, then QLinearMul by the scale: cta.attention scales the scores
    before it adds the mask, so the order cannot be held."""
    module = qoperator_module(tmp_path, ("add", "mul"))
    reports, refused = detect_attention(module)
    assert reports == [] and len(refused) == 1
    assert "requantized in an order" in refused[0] and "matmul -> add -> mul" in refused[0]


def test_a_per_column_p_v_requantization_is_refused_with_its_reason(tmp_path: Path) -> None:
    """P.V with a multiplier per output column is not one output stage: refused, named."""
    module = qoperator_module(tmp_path, ("mul",), v_columns=True)
    reports, refused = detect_attention(module)
    assert reports == [] and len(refused) == 1
    assert "QOperator form" in refused[0] and "one scalar multiplier" in refused[0]


def test_cta_does_not_compress_a_qoperator_attention(tmp_path: Path) -> None:
    """Compressed attention has no output stage either: CTA leaves the layer exact, saying why."""
    from ctac.passes.cta_compress import uncompressible

    module = qoperator_module(tmp_path, ("mul",))
    assert len(detect_attention(module)[0]) == 1
    ((_, reason),) = uncompressible(module)
    assert "quantization grid" in reason


def dynamic_attention(path: Path, quantize_pv: bool) -> None:
    """Q.K^T as onnxruntime's dynamic quantization writes a MatMul: DynamicQuantizeLinear on
    both operands, MatMulInteger, Cast, times the product of the two run-time scales; P.V the
    same way (quantize_pv) or in float."""
    g = Graph()

    def integer_matmul(a: str, b: str, out: str) -> str:
        operands = []
        for x in (a, b):
            g.nodes.append(helper.make_node("DynamicQuantizeLinear", [x], [f"{x}_u8", f"{x}_s",
                                                                          f"{x}_z"]))  # fmt: skip
            operands.append((f"{x}_u8", f"{x}_s", f"{x}_z"))
        (au, a_scale, az), (bu, b_scale, bz) = operands
        product = g.node("MatMulInteger", [au, bu, az, bz], f"{out}_i32")
        product = g.node("Cast", [product], f"{out}_f", to=TensorProto.FLOAT)
        return g.node("Mul", [product, g.node("Mul", [a_scale, b_scale], f"{out}_s")], out)

    kt = g.node("Transpose", ["k"], "kt", perm=[0, 1, 3, 2])
    x = integer_matmul("q", kt, "qk")
    x = g.node("Mul", [x, g.const("scale", np.float32(SCALE))], "scaled")
    x = g.node("Softmax", [g.node("Add", [x, "mask"], "masked")], "p", axis=-1)
    if quantize_pv:
        integer_matmul(x, "v", "out")
    else:
        g.node("MatMul", [x, "v"], "out")
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(n, f, [B, H, S, D]) for n in "qkv"]
    inputs.append(helper.make_tensor_value_info("mask", f, [B, 1, 1, S]))
    outputs = [helper.make_tensor_value_info("out", f, [B, H, S, D])]
    graph = helper.make_graph(g.nodes, "dynamic", inputs, outputs, g.initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), path)


def test_dynamic_integer_scores_are_detected_on_dequantized_operands(tmp_path: Path) -> None:
    """MatMulInteger(Q, K^T) x run-time scales: the attention takes Q and K^T times their
    scales (new Muls; DynamicQuantizeLinear stays before it). No rounding inside attention, so
    the match is proven at the usual tolerance and the outputs agree to float error."""
    path = tmp_path / "dynamic.onnx"
    dynamic_attention(path, quantize_pv=False)
    inputs = feeds(padding=False)
    module, reports, refused, reference, accelerator = compile_and_run(path, inputs)
    assert refused == [] and len(reports) == 1
    assert "integer Q.K^T (MatMulInteger)" in reports[0].form
    assert "%" not in reports[0].verified and float(reports[0].verified) <= 1e-4
    (attention,) = [op for op in module.walk() if isinstance(op, cta.AttentionOp)]
    assert attention.fake_quant is None
    want = onnxruntime_outputs(path, inputs)
    np.testing.assert_allclose(reference, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(accelerator, want, rtol=1e-5, atol=1e-5)


def test_dynamically_quantized_probabilities_are_refused_with_their_reason(
    tmp_path: Path,
) -> None:
    path = tmp_path / "dynamic_pv.onnx"
    dynamic_attention(path, quantize_pv=True)
    module = import_model(path).module
    run_passes(module, "onnx-canonicalize")
    reports, refused = detect_attention(module)
    assert reports == [] and len(refused) == 1
    assert "quantized dynamically (DynamicQuantizeLinear" in refused[0]


def test_cta_does_not_compress_a_quantized_attention(tmp_path: Path) -> None:
    """Compressed attention has no rounding stages: CTA leaves the layer exact, saying why."""
    from ctac.passes.cta_compress import uncompressible

    path = tmp_path / "qdq.onnx"
    qdq_attention(path, ("q", "k", "v", "probs"), padding=True)
    module = import_model(path).module
    run_passes(module, "onnx-canonicalize")
    reports, _ = detect_attention(module)
    assert len(reports) == 1 and reports[0].mask_kind == "key_padding"
    ((_, reason),) = uncompressible(module)
    assert "quantization grid" in reason


def test_judge_proof_lets_a_few_rows_be_one_step_off() -> None:
    from ctac.passes.attention_quant import judge_proof

    difference = np.zeros((1, 2, 100, 8))
    assert judge_proof(difference, 1e-4, 0.0) == "0.0e+00"
    difference[0, 0, 3, :2] = 5e-3  # one row off by less than one step's effect
    assert judge_proof(difference, 1e-4, 0.0) is None  # no quantization: no allowance
    assert "1 of 200 rows" in judge_proof(difference, 1e-4, 1e-2)
    assert judge_proof(difference, 1e-4, 1e-3) is None  # more than one step's effect
    difference[0, :, :, 0] = 5e-3  # every row: a dropped stage, not a rounding flip
    assert judge_proof(difference, 1e-4, 1e-2) is None


VARIANTS = Path(os.path.expanduser("~/.cache/ctac/variants"))
# Before detection found their layers (0 in qdq_int8), the fp32 accelerator on bench/real_world.py's
# inputs was this close to onnxruntime (unoptimized): max abs error, smallest row cosine.
# qdq_int8's since its MatMuls of dequantized operands run as the integers' MatMul scaled after
# (passes/patterns_quant.py, as int8 hardware runs them): a float product in another order
# flips one more quantization step than onnxruntime's dequantized float MatMul (0.0655, 0.99947
# before; detection on or off gives the same numbers).
BEFORE = {"qdq_int8": (0.1311, 0.99930), "dynamic_int8": (0.2737, 0.99091)}


@pytest.mark.parametrize("variant", ["qdq_int8", "dynamic_int8"])
def test_minilm_int8_variants_have_six_layers(variant: str) -> None:
    """all-MiniLM-L6-v2 quantized by onnxruntime's own quantizer (make_deployment_variants.py):
    every layer detected and proven, and the compiled program as close to onnxruntime as it was
    without the detection."""
    path = VARIANTS / f"{variant}.onnx"
    if not path.exists():
        pytest.skip(f"{path} not made (scripts/make_deployment_variants.py)")
    length = 128
    module = import_model(path, {"input_ids": [1, length], "attention_mask": [1, length]}).module
    run_passes(module, "onnx-canonicalize")
    reports, refused = detect_attention(module)
    assert len(reports) == 6 and refused == []
    if variant == "qdq_int8":
        assert all("QDQ on probabilities" in r.form for r in reports)
    rng = np.random.default_rng(0)  # bench/real_world.py's inputs
    mask = np.ones((1, length), np.int64)
    mask[:, length - length // 4 :] = 0
    inputs = {"input_ids": rng.integers(1000, 8000, (1, length)), "attention_mask": mask}
    machine, _ = run_program(program_from_module(lower_module(module, HW)), CAPACITIES, inputs)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    want = session.run(["last_hidden_state"], inputs)[0].reshape(length, -1).astype(np.float64)
    got = machine["last_hidden_state"].reshape(length, -1).astype(np.float64)
    cosine = (got * want).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))
    error, smallest = BEFORE[variant]
    assert np.abs(got - want).max() <= error * 1.05 and cosine.min() >= smallest - 1e-4
