"""ONNX's quantized ops (and onnxruntime's QOperator ones) evaluate as their definitions say:
each checked against onnxruntime running the same node with graph optimizations off (its
reference kernels), on the reference evaluator and on the accelerator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import FP32_HW
from onnx import TensorProto, helper, numpy_helper

from ctac.emit import program_from_module
from ctac.importer import import_model
from ctac.passes.lower_to_isa import lower_module
from ctac.pipeline import run_passes
from ctac.runtime.evaluator import evaluate
from ctac.runtime.interpreter import run_program

HW = FP32_HW  # checked against the reference to float32 rounding
CAPACITIES = {b.index: b.capacity for b in HW.buffers}
rng = np.random.default_rng(0)
I8, U8 = TensorProto.INT8, TensorProto.UINT8


def const(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def run(nodes, inputs, outputs, initializers, feeds, path: Path, ms: bool = False) -> None:
    opsets = [helper.make_opsetid("", 19)] + (
        [helper.make_opsetid("com.microsoft", 1)] if ms else []
    )
    graph = helper.make_graph(nodes, "q", inputs, outputs, initializers)
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in outputs], session.run(None, feeds), strict=True))
    module = import_model(path).module
    run_passes(module, "onnx-canonicalize")
    got = evaluate(module, feeds)
    machine, _ = run_program(program_from_module(lower_module(module, HW)), CAPACITIES, feeds)
    for name, want in expected.items():
        for label, ours in (("reference", got[name]), ("accelerator", machine[name])):
            assert ours.dtype == want.dtype, (label, name)
            if want.dtype.kind in "iu":  # at most one step off where float order flips a .5
                diff = np.abs(ours.astype(np.int64) - want.astype(np.int64))
                assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (label, name, diff.max())
            else:
                np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5, err_msg=label)


def t(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


@pytest.mark.parametrize("target", [I8, U8])
@pytest.mark.parametrize("per_axis", [False, True])
def test_quantize_dequantize(target: int, per_axis: bool, tmp_path: Path) -> None:
    dtype = helper.tensor_dtype_to_np_dtype(target)
    scale = np.array([0.02, 0.05, 0.1], np.float32) if per_axis else np.float32(0.03)
    zero = (np.array([3, -2, 0]) if per_axis else np.array(5)).astype(
        dtype if target == I8 else np.uint8
    )
    if target == U8:
        zero = np.abs(zero.astype(np.int64)).astype(np.uint8) + 100
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1)]  # fmt: skip
    x = (rng.standard_normal((2, 3, 8)) * 3).astype(np.float32)
    x[0, 0, :4] = [0.015, 0.045, -0.015, 100.0]  # halves (to even) and saturation
    run(nodes, [t("x", TensorProto.FLOAT, [2, 3, 8])],
        [t("q", target, [2, 3, 8]), t("y", TensorProto.FLOAT, [2, 3, 8])],
        [const("s", scale), const("z", zero)], {"x": x}, tmp_path / "qdq.onnx")  # fmt: skip


def test_dynamic_quantize_then_matmul_integer(tmp_path: Path) -> None:
    """onnxruntime's dynamic int8 MatMul: DynamicQuantizeLinear (an ONNX function: Round and
    Clip inside) on the activation, MatMulInteger with int8 weights, then the scales."""
    weight = rng.integers(-128, 128, (16, 8)).astype(np.int8)
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
        helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["acc"]),
        helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xs", "ws"], ["scale"]),
        helper.make_node("Mul", ["accf", "scale"], ["y"]),
    ]
    x = rng.standard_normal((2, 5, 16)).astype(np.float32)
    run(nodes, [t("x", TensorProto.FLOAT, [2, 5, 16])],
        [t("acc", TensorProto.INT32, [2, 5, 8]), t("y", TensorProto.FLOAT, [2, 5, 8])],
        [const("w", weight), const("wz", np.int8(3)), const("ws", np.float32(0.01))],
        {"x": x}, tmp_path / "dyn.onnx")  # fmt: skip


def test_qlinear_matmul(tmp_path: Path) -> None:
    a = rng.integers(0, 256, (2, 5, 16)).astype(np.uint8)
    b = rng.integers(-128, 128, (16, 8)).astype(np.int8)
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    initializers = [const("as", np.float32(0.02)), const("az", np.uint8(128)), const("b", b),
                    const("bs", np.float32(0.01)), const("bz", np.int8(0)),
                    const("ys", np.float32(0.05)), const("yz", np.uint8(120))]  # fmt: skip
    run([node], [t("a", U8, [2, 5, 16])], [t("y", U8, [2, 5, 8])], initializers, {"a": a},
        tmp_path / "qmm.onnx")  # fmt: skip


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
def test_qlinear_binary(op: str, tmp_path: Path) -> None:
    a = rng.integers(-128, 128, (2, 5, 8)).astype(np.int8)
    b = rng.integers(-128, 128, (8,)).astype(np.int8)
    node = helper.make_node(op, ["a", "as", "az", "b", "bs", "bz", "cs", "cz"], ["c"],
                            domain="com.microsoft")  # fmt: skip
    initializers = [const("as", np.float32(0.02)), const("az", np.int8(-3)), const("b", b),
                    const("bs", np.float32(0.01)), const("bz", np.int8(2)),
                    const("cs", np.float32(0.03 if op == "QLinearAdd" else 0.002)),
                    const("cz", np.int8(1))]  # fmt: skip
    run([node], [t("a", I8, [2, 5, 8])], [t("c", I8, [2, 5, 8])], initializers, {"a": a},
        tmp_path / "qbin.onnx", ms=True)  # fmt: skip


def test_qlinear_softmax(tmp_path: Path) -> None:
    x = rng.integers(0, 256, (2, 5, 8)).astype(np.uint8)
    node = helper.make_node("QLinearSoftmax", ["x", "xs", "xz", "ys", "yz"], ["y"],
                            domain="com.microsoft", axis=-1, opset=13)  # fmt: skip
    initializers = [const("xs", np.float32(0.05)), const("xz", np.uint8(128)),
                    const("ys", np.float32(1 / 256)), const("yz", np.uint8(0))]  # fmt: skip
    run([node], [t("x", U8, [2, 5, 8])], [t("y", U8, [2, 5, 8])], initializers, {"x": x},
        tmp_path / "qsm.onnx", ms=True)  # fmt: skip


@pytest.mark.parametrize("per_channel", [False, True])
def test_conv_integer(per_channel: bool, tmp_path: Path) -> None:
    """ConvInteger (uint8 input less its zero point, int8 weights less theirs): the int32 sums,
    padded, strided; the im2col GEMM runs in the int8 mode."""
    w = rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8)
    w_zero = np.array([1, -2, 0, 3], np.int8) if per_channel else np.int8(2)
    node = helper.make_node(
        "ConvInteger", ["x", "w", "xz", "wz"], ["y"], pads=[1, 1, 1, 1], strides=[2, 1]
    )
    x = rng.integers(0, 256, (1, 3, 8, 7)).astype(np.uint8)
    path = tmp_path / "convint.onnx"
    inputs, outputs = [t("x", U8, [1, 3, 8, 7])], [t("y", TensorProto.INT32, [1, 4, 4, 7])]
    initializers = [const("w", w), const("xz", np.uint8(128)), const("wz", w_zero)]
    if not per_channel:
        run([node], inputs, outputs, initializers, {"x": x}, path)
    else:  # onnxruntime refuses a per-channel weight zero point; ONNX's reference does not
        from onnx.reference import ReferenceEvaluator

        graph = helper.make_graph([node], "q", inputs, outputs, initializers)
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), path)
        (want,) = ReferenceEvaluator(str(path)).run(None, {"x": x})
    module = import_model(path).module
    run_passes(module, "onnx-canonicalize")
    program = program_from_module(lower_module(module, HW))
    gemms = [f for n, f in program.instructions if n == "GEMM"]
    assert gemms and all(f["int8"] for f in gemms)
    if per_channel:
        np.testing.assert_array_equal(evaluate(module, {"x": x})["y"], want)
        np.testing.assert_array_equal(run_program(program, CAPACITIES, {"x": x})[0]["y"], want)


@pytest.mark.parametrize("per_channel", [False, True])
def test_qlinear_conv(per_channel: bool, tmp_path: Path) -> None:
    """QLinearConv with an int32 bias and per-output-channel weight scales, requantized as
    onnxruntime computes it."""
    w = rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8)
    w_scale = np.array([0.01, 0.02, 0.015, 0.03], np.float32) if per_channel else np.float32(0.02)
    w_zero = np.zeros(4, np.int8) if per_channel else np.int8(0)
    node = helper.make_node(
        "QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], pads=[1, 1, 1, 1]
    )
    x = rng.integers(0, 256, (1, 3, 6, 6)).astype(np.uint8)
    initializers = [
        const("xs", np.float32(0.05)), const("xz", np.uint8(120)), const("w", w),
        const("ws", w_scale), const("wz", w_zero), const("ys", np.float32(0.9)),
        const("yz", np.uint8(100)), const("b", rng.integers(-2000, 2000, 4).astype(np.int32)),
    ]  # fmt: skip
    run([node], [t("x", U8, [1, 3, 6, 6])], [t("y", U8, [1, 4, 6, 6])], initializers, {"x": x},
        tmp_path / "qconv.onnx")  # fmt: skip


@pytest.mark.parametrize("per_column", [False, True])
def test_qdq_matmul_runs_the_integers_in_int8_mode(per_column: bool, tmp_path: Path) -> None:
    """MatMul(DequantizeLinear(x), DequantizeLinear(W)) becomes the integers' MatMul times one
    constant (passes/patterns_quant.py): the GEMM runs in the int8 mode and the int8 weight moves
    one byte per element; the numbers stay onnxruntime's (to float rounding)."""
    w = rng.integers(-128, 128, (32, 16)).astype(np.int8)
    w_scale = rng.uniform(0.005, 0.02, 16).astype(np.float32) if per_column else np.float32(0.01)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"], axis=1),
        helper.make_node("MatMul", ["xd", "wd"], ["y"]),
    ]
    initializers = [const("xs", np.float32(0.03)), const("xz", np.uint8(128)),
                    const("wq", w), const("ws", w_scale)]  # fmt: skip
    x = rng.standard_normal((1, 8, 32)).astype(np.float32)
    path = tmp_path / "qdq_mm.onnx"
    run(nodes, [t("x", TensorProto.FLOAT, [1, 8, 32])], [t("y", TensorProto.FLOAT, [1, 8, 16])],
        initializers, {"x": x}, path)  # fmt: skip
    module = import_model(path).module
    run_passes(module, "onnx-canonicalize")
    program = program_from_module(lower_module(module, HW))
    gemms = [f for n, f in program.instructions if n == "GEMM"]
    assert gemms and all(f["int8"] for f in gemms)
    assert any(f["narrow"] for n, f in program.instructions if n == "LOAD")


def test_a_per_row_activation_scale_stays_a_float_matmul(tmp_path: Path) -> None:
    """Scales that do not factor out of the sum (one per row of the left operand's columns)
    leave the dequantized float MatMul as it is."""
    nodes = [
        helper.make_node("DequantizeLinear", ["aq", "as"], ["ad"], axis=1),
        helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"]),
        helper.make_node("MatMul", ["ad", "wd"], ["y"]),
    ]
    initializers = [const("as", rng.uniform(0.01, 0.02, 32).astype(np.float32)),
                    const("wq", rng.integers(-128, 128, (32, 16)).astype(np.int8)),
                    const("ws", np.float32(0.01))]  # fmt: skip
    a = rng.integers(-128, 128, (8, 32)).astype(np.int8)
    path = tmp_path / "rows.onnx"
    run(nodes, [t("aq", I8, [8, 32])], [t("y", TensorProto.FLOAT, [8, 16])], initializers,
        {"aq": a}, path)  # fmt: skip
    module = import_model(path).module
    run_passes(module, "onnx-canonicalize")
    gemms = [
        f for n, f in program_from_module(lower_module(module, HW)).instructions if n == "GEMM"
    ]
    assert gemms and not any(f["int8"] for f in gemms)
