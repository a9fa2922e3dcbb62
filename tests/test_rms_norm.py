"""RMSNorm (T5, LLaMA-style): canonicalize recognises the exporters' decomposed forms as
`onnx.RMSNormalization` and the result still equals onnxruntime; the ONNX opset 23 op imports;
it lowers to LAYERNORM with the rms flag, which computes the reference and costs less than a
LayerNorm of the same tile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import FP32_HW
from onnx import TensorProto, helper, numpy_helper
from test_canonicalize import X_SHAPE, Graph, canonical_ops_and_check, layer_norm_graph

from ctac.emit import program_from_module
from ctac.importer import import_model
from ctac.passes.lower_to_isa import lower_module
from ctac.pipeline import run_passes
from ctac.runtime import isa
from ctac.runtime.evaluator import evaluate
from ctac.runtime.interpreter import run_program
from ctac.runtime.norms import rms_norm

CAPACITIES = {b.index: b.capacity for b in FP32_HW.buffers}
DECOMPOSED = {"onnx.ReduceMean", "onnx.ReduceSum", "onnx.Sqrt", "onnx.Pow", "onnx.Reciprocal"}


def rms_norm_graph(inverse: str, square: str, eps_first: bool, scale: str, axes) -> Graph:
    """x / sqrt(mean(x^2) + eps) [* w] in the forms exporters write (`inverse`: how the root is
    applied to x; `scale`: none, or the weight before / after the normalised value)."""
    g = Graph()
    squared = g.op("Pow", "x", g.const(2.0)) if square == "pow" else g.op("Mul", "x", "x")
    if inverse == "sum":  # ReduceSum / n, as ctac/contrib_fused.py writes it
        summed = g.op("ReduceSum", squared, g.const(axes, np.int64), keepdims=1)
        count = float(np.prod([X_SHAPE[a] for a in axes]))
        mean_square = g.op("Div", summed, g.const(count))
    else:
        mean_square = g.op("ReduceMean", squared, axes=axes, keepdims=1)
    eps = g.const(1e-6)
    shifted = g.op("Add", eps, mean_square) if eps_first else g.op("Add", mean_square, eps)
    if inverse == "pow":
        normalized = g.op("Mul", "x", g.op("Pow", shifted, g.const(-0.5)))
    elif inverse == "reciprocal":
        normalized = g.op("Mul", g.op("Reciprocal", g.op("Sqrt", shifted)), "x")
    elif inverse == "one_over":  # T5 under TorchScript
        normalized = g.op("Mul", "x", g.op("Div", g.const(1.0), g.op("Sqrt", shifted)))
    else:  # div, sum
        normalized = g.op("Div", "x", g.op("Sqrt", shifted))
    normalized_shape = [X_SHAPE[a] for a in axes]
    w = g.const(np.random.default_rng(0).standard_normal(normalized_shape) + 1.0)
    if scale == "before":
        normalized = g.op("Mul", w, normalized)
    elif scale == "after":
        normalized = g.op("Mul", normalized, w)
    g.output = normalized
    return g


@pytest.mark.parametrize("inverse", ["div", "one_over", "reciprocal", "pow", "sum"])
@pytest.mark.parametrize("square", ["pow", "mul"])
@pytest.mark.parametrize("eps_first", [False, True])
@pytest.mark.parametrize("scale", ["none", "before", "after"])
def test_rms_norm_forms(inverse, square, eps_first, scale, tmp_path: Path) -> None:
    ops = canonical_ops_and_check(
        rms_norm_graph(inverse, square, eps_first, scale, [2]), tmp_path / "m.onnx"
    )
    assert ops.count("onnx.RMSNormalization") == 1
    assert not (DECOMPOSED | {"onnx.Div", "onnx.Mul"}) & set(ops)


def test_rms_norm_over_two_axes(tmp_path: Path) -> None:
    ops = canonical_ops_and_check(
        rms_norm_graph("one_over", "pow", False, "before", [1, 2]), tmp_path / "m.onnx"
    )
    assert ops.count("onnx.RMSNormalization") == 1


def test_layer_norm_stays_layer_norm(tmp_path: Path) -> None:
    """A LayerNorm's Div is also an RMSNorm of the centred input: LayerNorm is tried first."""
    ops = canonical_ops_and_check(
        layer_norm_graph("pow", False, True, True, [-1]), tmp_path / "m.onnx"
    )
    assert "onnx.LayerNormalization" in ops and "onnx.RMSNormalization" not in ops


def test_sum_over_the_wrong_count_is_not_rms_norm(tmp_path: Path) -> None:
    g = Graph()
    summed = g.op("ReduceSum", g.op("Mul", "x", "x"), g.const([-1], np.int64), keepdims=1)
    shifted = g.op("Add", g.op("Div", summed, g.const(X_SHAPE[-1] - 1.0)), g.const(1e-6))
    g.output = g.op("Div", "x", g.op("Sqrt", shifted))
    assert "onnx.RMSNormalization" not in canonical_ops_and_check(g, tmp_path / "m.onnx")


def test_root_of_another_value_is_not_rms_norm(tmp_path: Path) -> None:
    g = Graph()
    other = g.op("Add", "x", g.const(1.0))
    mean_square = g.op("ReduceMean", g.op("Pow", other, g.const(2.0)), axes=[-1], keepdims=1)
    g.output = g.op("Div", "x", g.op("Sqrt", g.op("Add", mean_square, g.const(1e-6))))
    assert "onnx.RMSNormalization" not in canonical_ops_and_check(g, tmp_path / "m.onnx")


def _rms_model(path: Path, axis: int, epsilon: float) -> Path:
    scale_shape = X_SHAPE[axis:]
    scale = np.random.default_rng(2).standard_normal(scale_shape).astype(np.float32)
    node = helper.make_node("RMSNormalization", ["x", "s"], ["y"], axis=axis, epsilon=epsilon)
    graph = helper.make_graph(
        [node],
        "rms",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, X_SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, X_SHAPE)],
        [numpy_helper.from_array(scale, "s")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(("axis", "epsilon"), [(-1, 1e-6), (1, 1e-3)])
def test_onnx_rms_normalization_imports_lowers_and_runs(
    axis: int, epsilon: float, tmp_path: Path
) -> None:
    path = _rms_model(tmp_path / "rms.onnx", axis, epsilon)
    x = np.random.default_rng(3).standard_normal(X_SHAPE).astype(np.float32) * 2 + 0.5
    expected = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    module = import_model(path).module
    assert [op.name for op in module.walk() if op.name.startswith("onnx.RMS")] == [
        "onnx.RMSNormalization"
    ]
    np.testing.assert_allclose(evaluate(module, {"x": x})["y"], expected, rtol=1e-5, atol=1e-5)
    if axis != -1:
        # As for LayerNormalization, lower-to-isa takes the scale as one row: a 2-D scale over
        # two normalised axes is refused (an existing limit of the norm lowering).
        return
    program = program_from_module(lower_module(module, FP32_HW))
    norms = [fields for name, fields in program.instructions if name == "LAYERNORM"]
    assert norms and all(f["rms"] == 1 and f["has_beta"] == 0 for f in norms)
    outputs, _ = run_program(program, CAPACITIES, {"x": x})
    np.testing.assert_allclose(outputs["y"], expected, rtol=1e-4, atol=1e-5)


def test_reference_has_no_mean_subtraction() -> None:
    x = np.array([[1.0, 3.0]])
    # mean(x^2) = 5: x / sqrt(5); a LayerNorm would give (-1, 1).
    np.testing.assert_allclose(rms_norm(x, np.ones(2), -1, 0.0), x / np.sqrt(5.0))


def test_rms_layernorm_costs_one_pass_less() -> None:
    instruction = isa.BY_NAME["LAYERNORM"]
    view = FP32_HW.view()
    fields = isa.checked_fields(
        "LAYERNORM",
        dict(dst=3, dst_addr=0, src=0, src_addr=0, gamma=3, gamma_addr=0, beta=3, beta_addr=0,
             has_beta=0, rows=64, cols=512, eps=1e-6),
    )  # fmt: skip
    rms = {**fields, "rms": 1}
    pass_cycles = -(-64 * 512 // view.vector_lanes)
    assert instruction.cycles(fields, view) - instruction.cycles(rms, view) == pass_cycles
    layer_norm_ops = instruction.actions(fields, view)["vector_ops"]
    assert instruction.actions(rms, view)["vector_ops"] == layer_norm_ops * 4 / 5


def test_skip_simplified_layer_normalization_becomes_rms_norm(tmp_path: Path) -> None:
    shape = [2, 6, 16]
    node = helper.make_node(
        "SkipSimplifiedLayerNormalization", ["x", "skip", "gamma"], ["y"],
        domain="com.microsoft", epsilon=1e-6,
    )  # fmt: skip
    gamma = np.random.default_rng(4).standard_normal(shape[-1]).astype(np.float32)
    graph = helper.make_graph(
        [node],
        "ssln",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "skip")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(gamma, "gamma")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 14), helper.make_opsetid("com.microsoft", 1)]
    )
    path = tmp_path / "ssln.onnx"
    onnx.save(model, str(path))
    rng = np.random.default_rng(5)
    feeds = {n: rng.standard_normal(shape).astype(np.float32) for n in ("x", "skip")}
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    module = import_model(path).module
    run_passes(module, "onnx-canonicalize")
    names = [op.name for op in module.walk()]
    assert names.count("onnx.RMSNormalization") == 1 and not DECOMPOSED & set(names)
    np.testing.assert_allclose(evaluate(module, feeds)["y"], expected[0], rtol=1e-4, atol=1e-5)
