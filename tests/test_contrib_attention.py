"""onnxruntime's fused com.microsoft Attention / MultiHeadAttention import straight to
cta.attention and evaluate like onnxruntime runs them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ctac.errors import CtacError
from ctac.importer import import_model
from ctac.pipeline import run_passes
from ctac.runtime.evaluator import evaluate

B, S, L, H, N = 2, 5, 7, 16, 4
rng = np.random.default_rng(0)


def save(nodes, inputs, outputs, initializers, path: Path) -> Path:
    graph = helper.make_graph(nodes, "contrib", inputs, outputs, initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    onnx.save(model, str(path))
    return path


def run_both(path: Path, feeds: dict) -> None:
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    imported = import_model(path)
    run_passes(imported.module, "onnx-canonicalize")
    names = [op.name for op in imported.module.walk()]
    assert names.count("cta.attention") == 1
    got = list(evaluate(imported.module, feeds).values())
    for ours, theirs in zip(got, expected, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=1e-4)


def tensor(name: str, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("unidirectional", [0, 1])
@pytest.mark.parametrize("scale", [0.0, 0.3])
def test_ms_attention(mask: bool, unidirectional: int, scale: float, tmp_path: Path) -> None:
    weight = numpy_helper.from_array(rng.standard_normal((H, 3 * H)).astype(np.float32) * 0.3, "w")
    bias = numpy_helper.from_array(rng.standard_normal(3 * H).astype(np.float32) * 0.1, "b")
    attributes = {"num_heads": N, "unidirectional": unidirectional}
    if scale:
        attributes["scale"] = scale
    node = helper.make_node(
        "Attention",
        ["x", "w", "b", "mask" if mask else ""],
        ["y"],
        domain="com.microsoft",
        **attributes,
    )
    inputs = [tensor("x", [B, S, H])] + (
        [tensor("mask", [B, S], TensorProto.INT32)] if mask else []
    )
    path = save([node], inputs, [tensor("y", [B, S, H])], [weight, bias], tmp_path / "a.onnx")
    feeds = {"x": rng.standard_normal((B, S, H)).astype(np.float32)}
    if mask:
        feeds["mask"] = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=np.int32)
    run_both(path, feeds)


@pytest.mark.parametrize(
    "form", ["plain", "bias", "padding", "attention_bias", "heads_kv", "past", "causal"]
)
def test_ms_multi_head_attention(form: str, tmp_path: Path) -> None:
    # Causal self-attention: as many keys as queries.
    keys = S if form == "causal" else L
    kv_len = keys
    inputs = [tensor("q", [B, S, H])]
    feeds = {"q": rng.standard_normal((B, S, H)).astype(np.float32)}
    names = ["q", "k", "v", "", "", "", "", ""]
    outputs = [tensor("y", [B, S, H])]
    attributes = {"num_heads": N}
    if form == "heads_kv":
        inputs += [tensor("k", [B, N, keys, H // N]), tensor("v", [B, N, keys, H // N])]
        feeds["k"] = rng.standard_normal((B, N, keys, H // N)).astype(np.float32)
        feeds["v"] = rng.standard_normal((B, N, keys, H // N)).astype(np.float32)
    else:
        inputs += [tensor("k", [B, keys, H]), tensor("v", [B, keys, H])]
        feeds["k"] = rng.standard_normal((B, keys, H)).astype(np.float32)
        feeds["v"] = rng.standard_normal((B, keys, H)).astype(np.float32)
    initializers = []
    if form == "bias":
        initializers.append(
            numpy_helper.from_array(rng.standard_normal(3 * H).astype(np.float32), "bias")
        )
        names[3] = "bias"
    if form == "padding":
        inputs.append(tensor("kpm", [B, keys], TensorProto.INT32))
        feeds["kpm"] = np.array([[1] * keys, [1] * (keys - 3) + [0] * 3], dtype=np.int32)
        names[4] = "kpm"
    if form == "attention_bias":
        inputs.append(tensor("ab", [1, N, S, keys]))
        feeds["ab"] = rng.standard_normal((1, N, S, keys)).astype(np.float32)
        names[5] = "ab"
    if form == "past":
        past = 3
        inputs += [tensor("pk", [B, N, past, H // N]), tensor("pv", [B, N, past, H // N])]
        feeds["pk"] = rng.standard_normal((B, N, past, H // N)).astype(np.float32)
        feeds["pv"] = rng.standard_normal((B, N, past, H // N)).astype(np.float32)
        names[6:8] = ["pk", "pv"]
        kv_len = keys + past
        outputs += [
            tensor("present_k", [B, N, kv_len, H // N]),
            tensor("present_v", [B, N, kv_len, H // N]),
        ]
    if form == "causal":
        attributes["unidirectional"] = 1
    node = helper.make_node(
        "MultiHeadAttention", names, [o.name for o in outputs], domain="com.microsoft", **attributes
    )
    path = save([node], inputs, outputs, initializers, tmp_path / "m.onnx")
    run_both(path, feeds)


def test_causal_cross_attention_is_refused(tmp_path: Path) -> None:
    node = helper.make_node(
        "MultiHeadAttention",
        ["q", "k", "v"],
        ["y"],
        domain="com.microsoft",
        num_heads=N,
        unidirectional=1,
    )
    inputs = [tensor("q", [B, S, H]), tensor("k", [B, L, H]), tensor("v", [B, L, H])]
    path = save([node], inputs, [tensor("y", [B, S, H])], [], tmp_path / "c.onnx")
    with pytest.raises(CtacError, match="causal cross-attention"):
        import_model(path)


def test_unsupported_input_is_named(tmp_path: Path) -> None:
    node = helper.make_node(
        "MultiHeadAttention",
        ["q", "k", "v", "", "", "", "", "", "psl"],
        ["y"],
        domain="com.microsoft",
        num_heads=N,
    )
    inputs = [
        tensor("q", [B, S, H]),
        tensor("k", [B, L, H]),
        tensor("v", [B, L, H]),
        tensor("psl", [1], TensorProto.INT32),
    ]
    path = save([node], inputs, [tensor("y", [B, S, H])], [], tmp_path / "u.onnx")
    with pytest.raises(CtacError, match="past_sequence_length"):
        import_model(path)
