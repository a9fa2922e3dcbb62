"""Values that depend on no input are computed when the program is made, not per inference.

lower-to-isa precomputes the onnx ops whose operands are all weights, constants or results of
such ops (a QDQ model's weight dequantization, a transposed weight) into the data segment; the
lowered module carries the recipe (`ctaisa.data ... %value`), so printed modules never hold the
derived arrays and parse back to the same program. Integer accumulations carried as floats
(MatMulInteger's int32 sums) are stored exactly on the fp16 machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from ctac.dialects.ctaisa import DataOp
from ctac.emit import program_from_module
from ctac.hw import load_hardware
from ctac.importer import import_model
from ctac.passes.lower_to_isa import lower_module
from ctac.pipeline import module_text, parse_module, run_passes
from ctac.runtime.interpreter import run_program

FP16 = load_hardware(None)
CAPACITIES = {b.index: b.capacity for b in FP16.buffers}
F32, I8 = TensorProto.FLOAT, TensorProto.INT8
M, K, N = 16, 64, 32
rng = np.random.default_rng(5)


def _save(path: Path, nodes, inputs, outputs, initializers) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), path)
    return path


def _lowered(path: Path):
    module = import_model(path).module
    run_passes(module, "onnx-canonicalize")
    return lower_module(module, FP16)


def _onnxruntime(path: Path, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def qdq_linear(path: Path) -> Path:
    """x @ DequantizeLinear(W_q) + DequantizeLinear(b_q): int8 weights, an int32 bias whose
    integers (up to 30000) fp16 cannot hold, a transposed weight besides."""
    weight = rng.integers(-128, 128, (N, K)).astype(np.int8)  # stored transposed
    bias = rng.integers(-30000, 30000, (N,)).astype(np.int32)
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "ws"], ["wt"]),
        helper.make_node("Transpose", ["wt"], ["w"], perm=[1, 0]),
        helper.make_node("DequantizeLinear", ["bq", "bs"], ["b"]),
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["y"]),
    ]
    initializers = [
        numpy_helper.from_array(weight, "wq"),
        numpy_helper.from_array(np.float32(0.02), "ws"),
        numpy_helper.from_array(bias, "bq"),
        numpy_helper.from_array(np.float32(1e-4), "bs"),
    ]
    inputs = [helper.make_tensor_value_info("x", F32, [M, K])]
    outputs = [helper.make_tensor_value_info("y", F32, [M, N])]
    return _save(path, nodes, inputs, outputs, initializers)


def test_weight_only_ops_run_when_the_program_is_made(tmp_path: Path) -> None:
    path = qdq_linear(tmp_path / "qdq.onnx")
    lowered = _lowered(path)
    program = program_from_module(lowered)
    # Only the MatMul and the bias add run: no instruction comes from a weight-only op.
    sources = {source.split(":")[0] for source in program.sources if source}
    assert sources <= {"onnx.MatMul", "onnx.Add", "end"}, sources
    assert any(isinstance(op, DataOp) and op.source is not None for op in lowered.ops)
    x = rng.standard_normal((M, K)).astype(np.float32)
    got, _ = run_program(program, CAPACITIES, {"x": x})
    (expected,) = _onnxruntime(path, {"x": x})
    # fp16 storage of x, the weights and the result: a few fp16 steps of the largest value
    np.testing.assert_allclose(got["y"], expected, atol=4e-3 * np.abs(expected).max())


def test_a_printed_module_carries_the_recipe_and_parses_to_the_same_program(
    tmp_path: Path,
) -> None:
    lowered = _lowered(qdq_linear(tmp_path / "qdq.onnx"))
    text = module_text(lowered)
    assert "onnx.DequantizeLinear" not in text  # imported as its definition's ops
    assert (
        "ctaisa.data" in text
        and "dense<" not in text.split("ctaisa.symbol")[0].split("ctaisa.data")[-1]
    )
    assert len(text) < 20_000  # the recipe, not 2048 weights and 32 bias values inline
    again = program_from_module(parse_module(text))
    first = program_from_module(lowered)
    assert again.instructions == first.instructions
    np.testing.assert_array_equal(
        np.asarray(again.data.stored("fp32")), np.asarray(first.data.stored("fp32"))
    )


def test_a_broadcast_of_a_weight_stays_a_run_time_op(tmp_path: Path) -> None:
    """Expand of a (K,) weight to (M, K) would grow the data segment: it runs on the machine."""
    row = rng.standard_normal(K).astype(np.float32)
    nodes = [
        helper.make_node("Expand", ["row", "shape"], ["wide"]),
        helper.make_node("Mul", ["x", "wide"], ["y"]),
    ]
    initializers = [
        numpy_helper.from_array(row, "row"),
        numpy_helper.from_array(np.array([M * 512, K], np.int64), "shape"),
    ]
    inputs = [helper.make_tensor_value_info("x", F32, [M * 512, K])]
    outputs = [helper.make_tensor_value_info("y", F32, [M * 512, K])]
    program = program_from_module(
        _lowered(_save(tmp_path / "expand.onnx", nodes, inputs, outputs, initializers))
    )
    assert len(program.data) < M * 512 * K
    x = rng.standard_normal((M * 512, K)).astype(np.float32)
    got, _ = run_program(program, CAPACITIES, {"x": x})
    np.testing.assert_allclose(got["y"], x * row, rtol=2e-3, atol=1e-3)


def test_integer_accumulations_stay_exact_on_the_fp16_machine(tmp_path: Path) -> None:
    """MatMulInteger's int32 sums (here up to ~1e6) carried as floats: fp16 would round them
    above 2048 and saturate them above 65504; they are stored exactly."""
    weight = rng.integers(-128, 128, (K, N)).astype(np.int8)
    weight[:, 0] = 127
    nodes = [
        helper.make_node("Cast", ["x"], ["a"], to=I8),
        helper.make_node("MatMulInteger", ["a", "w"], ["acc"]),
        helper.make_node("Cast", ["acc"], ["y"], to=F32),
    ]
    inputs = [helper.make_tensor_value_info("x", F32, [M, K])]
    outputs = [helper.make_tensor_value_info("y", F32, [M, N])]
    path = _save(
        tmp_path / "mmi.onnx", nodes, inputs, outputs, [numpy_helper.from_array(weight, "w")]
    )
    program = program_from_module(_lowered(path))
    a = rng.integers(-128, 128, (M, K)).astype(np.float32)
    a[0] = 127
    got, _ = run_program(program, CAPACITIES, {"x": a})
    expected = a.astype(np.int64) @ weight.astype(np.int64)
    assert np.abs(expected).max() > 65504
    np.testing.assert_array_equal(got["y"], expected.astype(np.float32))


def test_an_integer_precomputed_value_is_evaluated_once_on_the_fp16_machine(
    tmp_path: Path, monkeypatch
) -> None:
    """fp16's integer check evaluates a precomputed index tensor; the emitter reuses that array
    instead of evaluating the recipe again, and the program is the one the module gives."""
    import ctac.emit as emit
    from ctac.passes.lower_to_isa import lowered as lowering_of

    table = rng.standard_normal((10, K)).astype(np.float32)
    nodes = [
        helper.make_node("Add", ["base", "step"], ["offsets"]),  # int64, no input: precomputed
        helper.make_node("Add", ["ids", "offsets"], ["indices"]),
        helper.make_node("Gather", ["table", "indices"], ["rows"], axis=0),
        helper.make_node("Add", ["x", "rows"], ["y"]),
    ]
    initializers = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(np.array([0, 2, 4, 5], np.int64), "base"),
        numpy_helper.from_array(np.array([1, 1, 2, 3], np.int64), "step"),
    ]
    inputs = [
        helper.make_tensor_value_info("x", F32, [4, K]),
        helper.make_tensor_value_info("ids", TensorProto.INT64, [4]),
    ]
    outputs = [helper.make_tensor_value_info("y", F32, [4, K])]
    path = _save(tmp_path / "gather.onnx", nodes, inputs, outputs, initializers)
    module = import_model(path).module  # not canonicalized: that would fold the Add
    lowering = lowering_of(module, FP16)
    assert [a.tolist() for a in lowering.evaluated.values()] == [[1, 3, 6, 8]]
    evaluated: list = []
    real = emit.evaluate_values

    def spy(values, *args):
        evaluated.extend(values)
        return real(values, *args)

    monkeypatch.setattr(emit, "evaluate_values", spy)
    program = emit.program_from_lowering(lowering)
    assert not set(evaluated) & set(lowering.evaluated)
    feeds = {"x": rng.standard_normal((4, K)).astype(np.float32), "ids": np.array([1, 0, 1, 0])}
    got, _ = run_program(program, CAPACITIES, feeds)
    (expected,) = _onnxruntime(path, feeds)
    np.testing.assert_allclose(got["y"], expected, atol=4e-3 * np.abs(expected).max())
