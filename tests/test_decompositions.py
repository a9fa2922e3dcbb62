"""Standard operators decomposed at import (ctac/decompositions.py), against onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import FP32_HW
from onnx import TensorProto, helper, numpy_helper

from ctac import api
from ctac.errors import CtacError


def _batch_norm_model(path: Path, shape: list[int], constant: bool = True, **attributes) -> Path:
    channels = shape[1]
    rng = np.random.default_rng(1)
    parameters = {
        "scale": rng.standard_normal(channels).astype(np.float32),
        "bias": rng.standard_normal(channels).astype(np.float32),
        "mean": rng.standard_normal(channels).astype(np.float32),
        "var": rng.uniform(0.5, 2.0, channels).astype(np.float32),
    }
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)]
    initializers = []
    for name, array in parameters.items():
        if constant:
            initializers.append(numpy_helper.from_array(array, name))
        else:
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [channels]))
    node = helper.make_node("BatchNormalization", ["x", *parameters], ["y"], **attributes)
    graph_outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]
    graph = helper.make_graph([node], "bn", inputs, graph_outputs, initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]), path)
    return path


@pytest.mark.parametrize(
    "shape, constant, epsilon",
    [([2, 3, 4, 5], True, 1e-5), ([1, 8, 6], True, 1e-3), ([4, 16], False, 1e-5)],
)
def test_batch_normalization_matches_onnxruntime(tmp_path, shape, constant, epsilon) -> None:
    path = _batch_norm_model(tmp_path / "bn.onnx", shape, constant, epsilon=epsilon)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
    if not constant:
        feeds.update(scale=rng.standard_normal(shape[1]).astype(np.float32),
                     bias=rng.standard_normal(shape[1]).astype(np.float32),
                     mean=rng.standard_normal(shape[1]).astype(np.float32),
                     var=rng.uniform(0.5, 2.0, shape[1]).astype(np.float32))  # fmt: skip
    program = api.compile(path, {name: list(a.shape) for name, a in feeds.items()}, hw=FP32_HW)
    got = api.run(program, feeds).outputs["y"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got, session.run(["y"], feeds)[0], atol=1e-5, rtol=1e-5)
    if constant:  # the parameters folded: one Mul and one Add on x
        module = api_module(path, {"x": shape})
        kinds = [op.name for op in module.walk() if op.name.startswith("onnx.")]
        assert sorted(k for k in kinds if k not in ("onnx.Constant", "onnx.Weight")) == [
            "onnx.Add", "onnx.Mul"
        ]  # fmt: skip


def api_module(path: Path, shapes: dict):
    from ctac.importer import import_model
    from ctac.pipeline import run_passes

    module = import_model(path, shapes).module
    run_passes(module, "onnx-canonicalize")
    return module


def test_batch_normalization_in_training_mode_is_refused(tmp_path) -> None:
    path = _batch_norm_model(tmp_path / "bn.onnx", [2, 3, 4], training_mode=1)
    with pytest.raises(CtacError, match="training_mode=1 .* export for inference"):
        api.compile(path, {"x": [2, 3, 4]})
