"""The numpy semantics of each op, one node at a time, against onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from ctac.importer import import_model
from ctac.runtime.evaluator import evaluate
from ctac.runtime.reference import erf, missing_semantics

rng = np.random.default_rng(0)
F = rng.standard_normal((2, 3, 4)).astype(np.float32)
G = rng.standard_normal((2, 3, 4)).astype(np.float32)
ROW = rng.standard_normal((4,)).astype(np.float32)
POS = np.abs(F) + 0.5
I64 = rng.integers(-5, 6, size=(2, 3, 4)).astype(np.int64)
I64B = rng.integers(1, 4, size=(2, 3, 4)).astype(np.int64)
B = F > 0
B2 = G > 0


def c(values, dtype=np.int64) -> np.ndarray:
    """A constant input (becomes an initializer, so it reaches the op as data)."""
    return np.asarray(values, dtype=dtype)


# (op type, inputs: list of (array, is_constant) or None for an omitted optional, attributes)
CASES = {
    "Add": ("Add", [F, ROW], {}),
    "Sub": ("Sub", [F, G], {}),
    "Mul": ("Mul", [F, ROW], {}),
    "Div": ("Div", [F, POS], {}),
    "DivInt": ("Div", [I64, I64B], {}),
    "Pow": ("Pow", [POS, c(2.0, np.float32)], {}),
    "Sqrt": ("Sqrt", [POS], {}),
    "Erf": ("Erf", [F * 2], {}),
    "Tanh": ("Tanh", [F], {}),
    "Exp": ("Exp", [F], {}),
    "Neg": ("Neg", [F], {}),
    "Abs": ("Abs", [F], {}),
    "Sigmoid": ("Sigmoid", [F], {}),
    "Relu": ("Relu", [F], {}),
    "Reciprocal": ("Reciprocal", [POS], {}),
    "Log": ("Log", [POS], {}),
    "Floor": ("Floor", [F * 3], {}),
    "Ceil": ("Ceil", [F * 3], {}),
    # Halves round to even: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2.
    "Round": (
        "Round",
        [np.concatenate([F.reshape(-1) * 3, c([0.5, 1.5, -2.5, 2.5], np.float32)])],
        {},
    ),
    "Sign": ("Sign", [F], {}),
    "Max": ("Max", [F, G, ROW], {}),
    "Min": ("Min", [F, G], {}),
    "Sum": ("Sum", [F, G, ROW], {}),
    "Mod": ("Mod", [I64, I64B], {}),
    "Fmod": ("Mod", [F, POS], {"fmod": 1}),
    "Clip": ("Clip", [F, c(-0.5, np.float32), c(0.5, np.float32)], {}),
    "ClipNoMin": ("Clip", [F, None, c(0.5, np.float32)], {}),
    "MatMul": ("MatMul", [F, rng.standard_normal((4, 5)).astype(np.float32)], {}),
    "MatMulBatched": ("MatMul", [F, rng.standard_normal((2, 4, 3)).astype(np.float32)], {}),
    "Gemm": (
        "Gemm",
        [
            F[0],
            rng.standard_normal((5, 4)).astype(np.float32),
            rng.standard_normal(5).astype(np.float32),
        ],
        {"transB": 1, "alpha": 0.5, "beta": 2.0},
    ),
    "Softmax": ("Softmax", [F], {"axis": 1}),
    "LayerNormalization": ("LayerNormalization", [F, ROW, ROW * 0.1], {"epsilon": 1e-5}),
    "LayerNormalization2": ("LayerNormalization", [F, np.ones((3, 4), np.float32)], {"axis": 1}),
    "RMSNormalization": ("RMSNormalization", [F, ROW], {"epsilon": 1e-5}),
    "Gelu": ("Gelu", [F], {}),
    "GeluTanh": ("Gelu", [F], {"approximate": "tanh"}),
    "Transpose": ("Transpose", [F], {"perm": [2, 0, 1]}),
    "TransposeDefault": ("Transpose", [F], {}),
    "Reshape": ("Reshape", [F, c([0, -1])], {}),
    "Flatten": ("Flatten", [F], {"axis": 2}),
    "Gather": ("Gather", [F, c([[1, -1], [0, 2]])], {"axis": 2}),
    "GatherElements": ("GatherElements", [F, c(np.zeros((2, 3, 2)))], {"axis": 2}),
    "GatherND": ("GatherND", [F, c([[[1], [0]], [[2], [1]]])], {"batch_dims": 1}),
    "ScatterND": ("ScatterND", [F, c([[1, -1], [0, 2]]), G[0, :2]], {"reduction": "add"}),
    "ScatterElements": ("ScatterElements", [F, c(I64 % 3), G], {"axis": 1, "reduction": "max"}),
    "Resize": ("Resize", [F, None, None, c([2, 5, 7])], {"mode": "linear"}),
    "Unsqueeze": ("Unsqueeze", [F, c([0, -1])], {}),
    "Squeeze": ("Squeeze", [F[:1], c([0])], {}),
    "Concat": ("Concat", [F, G], {"axis": -1}),
    "Slice": ("Slice", [F, c([0, 3]), c([2, -1]), c([1, 2]), c([2, 1])], {}),
    "SliceNegativeStep": ("Slice", [F, c([-1]), c([-100]), c([2]), c([-2])], {}),
    "Split": ("Split", [F, c([1, 3])], {"axis": 2}),
    "Shape": ("Shape", [F], {"start": 1}),
    "Cast": ("Cast", [F * 4], {"to": TensorProto.INT64}),
    "CastLike": ("CastLike", [I64, F], {}),
    "Where": ("Where", [B, F, c(-1.0, np.float32)], {}),
    "Equal": ("Equal", [I64, I64B], {}),
    "Greater": ("Greater", [F, G], {}),
    "GreaterOrEqual": ("GreaterOrEqual", [I64, I64B], {}),
    "Less": ("Less", [F, G], {}),
    "LessOrEqual": ("LessOrEqual", [I64, I64B], {}),
    "And": ("And", [B, B2], {}),
    "Or": ("Or", [B, B2], {}),
    "Xor": ("Xor", [B, B2], {}),
    "Not": ("Not", [B], {}),
    "IsNaN": ("IsNaN", [np.where(B, np.nan, F).astype(np.float32)], {}),
    "Expand": ("Expand", [ROW, c([3, 1, 4])], {}),
    "ConstantOfShape": (
        "ConstantOfShape",
        [c([2, 3])],
        {"value": helper.make_tensor("v", TensorProto.FLOAT, [1], [0.25])},
    ),
    "Pad": ("Pad", [F, c([0, 1, 2, 0, 0, 1]), c(-1.5, np.float32)], {}),
    "PadAxesEdge": ("Pad", [F, c([1, 2]), None, c([-1])], {"mode": "edge"}),
    "Range": ("Range", [c(1), c(11), c(3)], {}),
    "Trilu": ("Trilu", [F, c(1)], {"upper": 0}),
    "CumSum": ("CumSum", [F, c(1)], {"exclusive": 1, "reverse": 1}),
    "ReduceMean": ("ReduceMean", [F, c([-1])], {}),
    "ReduceSum": ("ReduceSum", [F, c([0, 2])], {"keepdims": 0}),
    "ReduceMax": ("ReduceMax", [F, c([1])], {}),
    "ReduceMin": ("ReduceMin", [F], {}),
    "Identity": ("Identity", [F], {}),
    "Dropout": ("Dropout", [F], {}),
    "Conv": (
        "Conv",
        [
            rng.standard_normal((1, 3, 8, 8)).astype(np.float32),
            rng.standard_normal((4, 3, 4, 4)).astype(np.float32),
            ROW,
        ],
        {"strides": [4, 4]},
    ),
    "ConvPaddedGrouped": (
        "Conv",
        [
            rng.standard_normal((1, 4, 5, 5)).astype(np.float32),
            rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
        ],
        {"pads": [1, 1, 1, 1], "group": 2, "dilations": [1, 2]},
    ),
    "ConvTranspose": (
        "ConvTranspose",
        [
            rng.standard_normal((1, 4, 3, 4)).astype(np.float32),
            rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
            rng.standard_normal(6).astype(np.float32),
        ],
        {"strides": [2, 2], "pads": [1, 0, 0, 1], "output_padding": [1, 1], "group": 2},
    ),
}


def single_node_model(
    op_type: str, inputs: list, attributes: dict, path: Path
) -> tuple[Path, dict]:
    """Arrays from `c()` (int or 0-d) become initializers; the rest become graph inputs."""
    names, graph_inputs, initializers, feeds = [], [], [], {}
    for index, array in enumerate(inputs):
        if array is None:
            names.append("")
            continue
        name = f"in{index}"
        names.append(name)
        tensor_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        shape_input = op_type in ("Range", "ConstantOfShape")
        small = array.ndim <= 1 and array.dtype != np.float32 or array.ndim == 0
        if shape_input or (index > 0 and small):
            initializers.append(onnx.numpy_helper.from_array(array, name))
        else:
            graph_inputs.append(helper.make_tensor_value_info(name, tensor_type, list(array.shape)))
            feeds[name] = array
    node = helper.make_node(
        op_type, names, ["out"] if op_type != "Split" else ["out", "out2"], **attributes
    )
    outputs = [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in node.output]
    graph = helper.make_graph([node], "single", graph_inputs, outputs, initializers)
    opset = {"Gelu": 20, "RMSNormalization": 23}.get(op_type, 18)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model = onnx.shape_inference.infer_shapes(model)
    onnx.save(model, str(path))
    return path, feeds


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_matches_onnxruntime(case: str, tmp_path: Path) -> None:
    op_type, inputs, attributes = CASES[case]
    path, feeds = single_node_model(op_type, inputs, attributes, tmp_path / f"{case}.onnx")
    session = ort.InferenceSession(str(path))
    expected = session.run(None, feeds)
    got = list(evaluate(import_model(path).module, feeds).values())
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.shape == theirs.shape
        assert ours.dtype == theirs.dtype
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_every_op_has_semantics() -> None:
    assert missing_semantics() == []


def test_every_onnx_op_is_covered_here() -> None:
    from ctac.dialects.onnx import OP_BY_ONNX_TYPE

    covered = {op_type for op_type, _, _ in CASES.values()} | {"Constant"}
    assert sorted(set(OP_BY_ONNX_TYPE) - covered) == []


def test_erf_accuracy() -> None:
    import math

    xs = np.linspace(-6, 6, 2001)
    exact = np.array([math.erf(x) for x in xs])
    assert np.abs(erf(xs) - exact).max() < 2e-7
