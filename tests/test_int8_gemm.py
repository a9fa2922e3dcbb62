"""The PE array's integer mode (GEMM int8=1): quantized MatMuls (MatMulInteger, QLinearMatMul)
run on it and cost an int8 MAC's energy; float models and dequantized operands stay float; the
machine's numbers do not change."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import FP32_HW
from onnx import TensorProto, helper, numpy_helper

from ctac.dialects import onnx as ox
from ctac.emit import program_from_module
from ctac.hw import hardware_from_text
from ctac.importer import import_model
from ctac.passes.lower_to_isa import lower_module
from ctac.passes.lower_to_isa.precision import integer_range, is_int8_operand
from ctac.pipeline import run_passes
from ctac.runtime import isa
from ctac.runtime.costmodel import simulate
from ctac.runtime.evaluator import evaluate, main_function
from ctac.runtime.interpreter import run_program
from ctac.runtime.profile import summary
from ctac.runtime.program import Program

HW = FP32_HW  # checked against the reference to float32 rounding
CAPACITIES = {b.index: b.capacity for b in HW.buffers}
rng = np.random.default_rng(1)
I8, U8, F32 = TensorProto.INT8, TensorProto.UINT8, TensorProto.FLOAT
M, K, N = 64, 96, 48


def const(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def t(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def build(path: Path, nodes, inputs, outputs, initializers):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), path)
    module = import_model(path).module
    run_passes(module, "onnx-canonicalize")
    return module, program_from_module(lower_module(module, HW))


def dynamic_int8(path: Path, weight_zero: int = 0):
    """onnxruntime's dynamic quantization of x @ W: DynamicQuantizeLinear (uint8, a zero point
    computed at run time), MatMulInteger with int8 weights, then the scales."""
    weight = rng.integers(-128, 128, (K, N)).astype(np.int8)
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
        helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["acc"]),
        helper.make_node("Cast", ["acc"], ["accf"], to=F32),
        helper.make_node("Mul", ["xs", "ws"], ["scale"]),
        helper.make_node("Mul", ["accf", "scale"], ["y"]),
    ]
    initializers = [const("w", weight), const("wz", np.int8(weight_zero)),
                    const("ws", np.float32(0.01))]  # fmt: skip
    return build(path, nodes, [t("x", F32, [1, M, K])], [t("y", F32, [1, M, N])], initializers)


def gemms(program: Program) -> list[dict]:
    return [fields for name, fields in program.instructions if name == "GEMM"]


def as_float(program: Program) -> Program:
    """The same program with every GEMM in float mode."""
    instructions = [
        (name, {**fields, "int8": 0} if name == "GEMM" else fields)
        for name, fields in program.instructions
    ]
    return dataclasses.replace(program, instructions=instructions)


def test_matmul_integer_runs_int8_and_costs_less(tmp_path: Path) -> None:
    module, program = dynamic_int8(tmp_path / "dyn.onnx", weight_zero=3)
    assert gemms(program) and all(fields["int8"] == 1 for fields in gemms(program))
    profile, floating = simulate(program, HW), simulate(as_float(program), HW)
    assert profile.int8_macs == profile.macs == M * K * N
    assert floating.int8_macs == 0 and floating.macs == M * K * N
    assert summary(profile)["int8_macs"] == M * K * N
    # Same cycles (the integer mode runs at the float rate); the MACs' energy is all that differs.
    assert profile.cycles == floating.cycles
    saved = M * K * N * (HW.number("energy_pj", "mac") - HW.number("energy_pj", "int8_mac"))
    assert floating.energy_pj - profile.energy_pj == pytest.approx(saved)
    assert profile.energy_by_action["int8_macs"] == pytest.approx(
        M * K * N * HW.number("energy_pj", "int8_mac")
    )
    # The machine computes the same numbers in either mode, and they are the reference's.
    x = rng.standard_normal((1, M, K)).astype(np.float32)
    got, _ = run_program(program, CAPACITIES, {"x": x})
    again, _ = run_program(as_float(program), CAPACITIES, {"x": x})
    np.testing.assert_array_equal(got["y"], again["y"])
    np.testing.assert_allclose(got["y"], evaluate(module, {"x": x})["y"], rtol=1e-6, atol=1e-6)


def test_qlinear_matmul_runs_int8(tmp_path: Path) -> None:
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    initializers = [
        const("as", np.float32(0.02)), const("az", np.uint8(128)),
        const("b", rng.integers(-128, 128, (K, N)).astype(np.int8)),
        const("bs", np.float32(0.01)), const("bz", np.int8(0)),
        const("ys", np.float32(0.05)), const("yz", np.uint8(120)),
    ]  # fmt: skip
    _, program = build(
        tmp_path / "qmm.onnx", [node], [t("a", U8, [1, M, K])], [t("y", U8, [1, M, N])],
        initializers,
    )  # fmt: skip
    assert gemms(program) and all(fields["int8"] == 1 for fields in gemms(program))


def test_float_and_dequantized_matmuls_stay_float(tmp_path: Path) -> None:
    """A float MatMul, and one of dequantized operands ((x - zp) * scale: not integers), run in
    float mode, priced as before (the int8 MAC energy plays no part)."""
    weight = rng.standard_normal((K, N)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["wq"]),
        helper.make_node("MatMul", ["h", "wq"], ["y"]),
    ]
    initializers = [const("w", weight),
                    const("q", rng.integers(-128, 128, (N, N)).astype(np.int8)),
                    const("s", np.float32(0.02)), const("z", np.int8(0))]  # fmt: skip
    _, program = build(
        tmp_path / "f.onnx", nodes, [t("x", F32, [1, M, K])], [t("y", F32, [1, M, N])],
        initializers,
    )  # fmt: skip
    assert len(gemms(program)) >= 2 and not any(fields["int8"] for fields in gemms(program))
    text = HW.text.replace("int8_mac = { value = 0.261", "int8_mac = { value = 0.001")
    assert text != HW.text
    profile = simulate(program, HW)
    assert profile.int8_macs == 0 and "int8_macs" not in profile.energy_by_action
    assert simulate(program, hardware_from_text(text, "variant")).energy_pj == profile.energy_pj
    # A GEMM word in float mode encodes as it did before the mode existed (the bit is zero).
    fields = gemms(program)[0]
    word = int.from_bytes(isa.encode("GEMM", fields), "little")
    assert word >> (isa.BY_NAME["GEMM"].bits - 1) == 0


def test_integer_range_follows_casts_and_zero_points(tmp_path: Path) -> None:
    module, _ = dynamic_int8(tmp_path / "dyn.onnx", weight_zero=0)
    values = {
        op.results[0].name_hint: op.results[0]
        for op in main_function(module).body.block.ops
        if op.results and op.results[0].name_hint
    }
    matmul = next(op for op in main_function(module).body.block.ops if isinstance(op, ox.MatMulOp))
    # uint8 less a zero point known only at run time: [-255, 255]; int8 less a constant 0.
    assert integer_range(matmul.operands[0]) == (-255, 255)
    assert integer_range(matmul.operands[1]) == (-128, 127)
    assert all(is_int8_operand(operand) for operand in matmul.operands)
    # The scaled output is no integer.
    assert integer_range(values["y"]) is None


def test_config_without_int8_energy_charges_float_macs(tmp_path: Path) -> None:
    _, program = dynamic_int8(tmp_path / "dyn.onnx")
    lines = [line for line in HW.text.splitlines() if not line.startswith("int8_mac =")]
    older = hardware_from_text("\n".join(lines), "older config")
    assert older.energy("int8_mac") == older.number("energy_pj", "mac")
    assert simulate(program, older).energy_pj == pytest.approx(
        simulate(as_float(program), older).energy_pj
    )


def test_qlinear_matmul_matches_onnxruntime_exactly(tmp_path: Path) -> None:
    """QLinearMatMul multiplies the integers first (the int8 GEMM) and requantises with one
    multiplier a_scale * b_scale / y_scale, as onnxruntime's kernel does: every output equal."""
    import onnxruntime as ort

    a = rng.integers(0, 256, (1, M, 384)).astype(np.uint8)
    initializers = [
        const("as", np.float32(0.0213)), const("az", np.uint8(131)),
        const("b", rng.integers(-128, 128, (384, N)).astype(np.int8)),
        const("bs", np.float32(0.00371)), const("bz", np.int8(0)),
        const("ys", np.float32(0.731)), const("yz", np.uint8(117)),
    ]  # fmt: skip
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    path = tmp_path / "qmm.onnx"
    module, program = build(
        path, [node], [t("a", U8, [1, M, 384])], [t("y", U8, [1, M, N])], initializers
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = session.run(None, {"a": a})[0]
    np.testing.assert_array_equal(evaluate(module, {"a": a})["y"], want)
    np.testing.assert_array_equal(run_program(program, CAPACITIES, {"a": a})[0]["y"], want)


def _without_narrow(program: Program) -> Program:
    instructions = [
        (name, {**fields, "narrow": 0} if name in ("LOAD", "STORE") else fields)
        for name, fields in program.instructions
    ]
    return dataclasses.replace(program, instructions=instructions)


def test_int8_tensors_move_one_byte_per_element(tmp_path: Path) -> None:
    """The int8 weight (W, zero point 0) loads narrow: one byte per element of DRAM traffic
    instead of the storage type's; the quantized activation (uint8) is stored and loaded narrow;
    the centred one (xq - zero point, 9 bits) and float tensors are not. The profile charges it."""
    module, program = dynamic_int8(tmp_path / "dyn.onnx", weight_zero=0)
    loads = [fields for name, fields in program.instructions if name == "LOAD"]
    weight_loads = [f for f in loads if f["narrow"]]
    assert weight_loads and len(weight_loads) < len(loads)
    narrow_loaded = sum(f["rows"] * f["cols"] for f in weight_loads)
    narrow_stored = sum(
        f["rows"] * f["cols"] for name, f in program.instructions if name == "STORE" and f["narrow"]
    )
    assert narrow_loaded >= K * N  # the whole weight, at least once
    assert narrow_stored >= M * K  # the uint8 activation (DynamicQuantizeLinear's output)
    profile, wide = simulate(program, HW), simulate(_without_narrow(program), HW)
    saved = (narrow_loaded + narrow_stored) * (HW.view().element_bytes - 1)
    assert wide.dram_bytes - profile.dram_bytes == saved
    assert profile.energy_pj < wide.energy_pj
    # The machine's numbers do not depend on it.
    x = rng.standard_normal((1, M, K)).astype(np.float32)
    np.testing.assert_array_equal(
        run_program(program, CAPACITIES, {"x": x})[0]["y"],
        run_program(_without_narrow(program), CAPACITIES, {"x": x})[0]["y"],
    )


def test_float_programs_move_no_narrow_tensors(tmp_path: Path) -> None:
    weight = rng.standard_normal((K, N)).astype(np.float32)
    _, program = build(
        tmp_path / "f.onnx", [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [t("x", F32, [1, M, K])], [t("y", F32, [1, M, N])], [const("w", weight)],
    )  # fmt: skip
    assert not any(f["narrow"] for name, f in program.instructions if name in ("LOAD", "STORE"))
