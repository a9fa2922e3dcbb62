"""legalize-for-isa: reductions over any axes and Clip run on the accelerator as onnxruntime runs
them (a sentence-transformers mean-pooling head is the case that needed it)."""

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
from ctac.passes.legalize import needs_legalizing
from ctac.passes.lower_to_isa import lower_module
from ctac.pipeline import module_text, run_passes
from ctac.runtime.interpreter import run_program

HW = FP32_HW  # checked against the reference to float32 rounding
CAPACITIES = {b.index: b.capacity for b in HW.buffers}
SHAPE = [2, 5, 8]


def _check(nodes, initializers, out_shape, path: Path, opset: int = 18, shape=SHAPE) -> None:
    graph = helper.make_graph(
        nodes, "legalize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], initializers,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    (expected,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )
    module = import_model(path).module
    run_passes(module, "onnx-canonicalize")
    before = module_text(module)
    assert needs_legalizing(module)
    outputs, _ = run_program(program_from_module(lower_module(module, HW)), CAPACITIES, {"x": x})
    np.testing.assert_allclose(outputs["y"], expected, rtol=1e-5, atol=1e-6)
    assert module_text(module) == before  # lower_module legalized its own copy


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("axes", [[1], [0], [0, 2], [-2, -1], [0, 1, 2], None])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reductions_over_any_axes(op: str, axes, keepdims: int, tmp_path: Path) -> None:
    reduced = range(3) if axes is None else [a % 3 for a in axes]
    out_shape = (
        [1 if a in reduced else n for a, n in enumerate(SHAPE)]
        if keepdims
        else [n for a, n in enumerate(SHAPE) if a not in reduced]
    )
    inputs = ["x"] + (["axes"] if axes is not None else [])
    initializers = [numpy_helper.from_array(np.array(axes, np.int64), "axes")] if axes else []
    node = helper.make_node(op, inputs, ["y"], keepdims=keepdims)
    _check([node], initializers, out_shape, tmp_path / "r.onnx")


@pytest.mark.parametrize("bounds", [("lo", "hi"), ("lo", ""), ("", "hi")])
def test_clip(bounds: tuple[str, str], tmp_path: Path) -> None:
    initializers = [numpy_helper.from_array(np.float32(-0.5), "lo"),
                    numpy_helper.from_array(np.float32(0.7), "hi")]  # fmt: skip
    node = helper.make_node("Clip", ["x", *bounds], ["y"])
    _check([node], initializers, SHAPE, tmp_path / "c.onnx")


def test_mean_pooling_head(tmp_path: Path) -> None:
    """sentence-transformers' mean pooling: masked sum over the sequence / clipped mask count."""
    nodes = [
        helper.make_node("ReduceSum", ["x", "seq"], ["total"], keepdims=0),
        helper.make_node("ReduceSum", ["ones", "seq"], ["count"], keepdims=0),
        helper.make_node("Clip", ["count", "tiny", ""], ["count_c"]),
        helper.make_node("Div", ["total", "count_c"], ["y"]),
    ]
    initializers = [numpy_helper.from_array(np.array([1], np.int64), "seq"),
                    numpy_helper.from_array(np.ones(SHAPE, np.float32), "ones"),
                    numpy_helper.from_array(np.float32(1e-9), "tiny")]  # fmt: skip
    _check(nodes, initializers, [SHAPE[0], SHAPE[2]], tmp_path / "pool.onnx", opset=17)


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMean"])
@pytest.mark.parametrize("shape, axes", [([1, 48, 256], None), ([2, 3, 12288], [-1])])
def test_long_rows_reduce_in_two_stages(op: str, shape, axes, tmp_path: Path) -> None:
    """A row longer than SPLIT_ROW (the dynamic-int8 quantizer's min and max over a whole
    activation) is reduced as (rows, a, b) -> (rows, a) -> rows, each stage short enough for a
    buffer."""
    from ctac.passes.legalize import SPLIT_ROW, legalize

    out_shape = [] if axes is None else shape[:-1]
    inputs = ["x"] + (["axes"] if axes else [])
    initializers = [numpy_helper.from_array(np.array(axes, np.int64), "axes")] if axes else []
    node = helper.make_node(op, inputs, ["y"], keepdims=0)
    _check([node], initializers, out_shape, tmp_path / "long.onnx", shape=shape)
    module = import_model(tmp_path / "long.onnx").module
    legalize(module)
    rows = [ox_shape[-1] for ox_shape in _reduced_rows(module)]
    assert len(rows) == 2 and max(rows) <= SPLIT_ROW


def _reduced_rows(module):
    from ctac.dialects import onnx as ox

    return [ox.shape_of(op.data) for op in module.walk() if isinstance(op, ox.ReduceOp)]


@pytest.mark.parametrize("perm", [[2, 0, 1], [2, 1, 0], [0, 3, 1, 2]])
def test_transposes_moving_the_last_axis_forward(perm: list[int], tmp_path: Path) -> None:
    """(q, k, heads) -> (heads, q, k), a T5 position bias: done as two lowerable transposes."""
    shape = [3, 4, 5] if len(perm) == 3 else [2, 3, 4, 5]
    node = helper.make_node("Transpose", ["x"], ["y"], perm=perm)
    _check([node], [], [shape[p] for p in perm], tmp_path / "t.onnx", shape=shape)
