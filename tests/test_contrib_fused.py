"""onnxruntime's fused com.microsoft ops (what its transformers optimizer writes) import as the
standard ONNX nodes they stand for (ctac/contrib_fused.py), and both the reference evaluator and
the accelerator compute what onnxruntime computes from the fused graph."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import FP32_HW
from onnx import TensorProto, helper, numpy_helper

from ctac.emit import program_from_module
from ctac.errors import CtacError
from ctac.importer import import_model
from ctac.passes.detect_attention import detect_attention
from ctac.passes.lower_to_isa import lower_module
from ctac.pipeline import run_passes
from ctac.runtime.evaluator import evaluate
from ctac.runtime.interpreter import run_program

B, S, H, HEADS, VOCAB = 2, 6, 16, 4, 30
HW = FP32_HW  # checked against onnxruntime to 1e-4: float32 storage
MODELS = Path(__file__).parent / "models"
CAPACITIES = {b.index: b.capacity for b in HW.buffers}


def weight(name: str, shape, scale: float = 0.3, seed: int = 0) -> onnx.TensorProto:
    # crc32, not hash(): str hashes change with every process (PYTHONHASHSEED), and so did
    # the weights, making the fp16 test's worst element a matter of luck
    rng = np.random.default_rng(zlib.crc32(f"{name}/{seed}".encode()))
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def tensor(name: str, shape, elem=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def save(nodes, inputs, outputs, initializers, path: Path, opset: int = 14) -> Path:
    """Opset 14 by default: older than LayerNormalization (17), as optimized files often are."""
    graph = helper.make_graph(nodes, "fused", inputs, outputs, initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)],
    )
    onnx.save(model, str(path))
    return path


def check(
    path: Path,
    feeds: dict,
    attention: int = 0,
    atol: float = 1e-5,
    expected: dict | None = None,
    rtol: float = 1e-4,
) -> None:
    """Reference evaluator and accelerator both match onnxruntime on the fused file (or
    `expected`, for ops onnxruntime runs on GPUs only)."""
    if expected is None:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        expected = dict(zip(names, session.run(None, feeds), strict=True))
    imported = import_model(path)
    module = imported.module
    assert not [op.name for op in module.walk() if "com.microsoft" in op.name]
    run_passes(module, "onnx-canonicalize")
    reports, _ = detect_attention(module)
    assert sum(op.name == "cta.attention" for op in module.walk()) == attention
    for name, array in evaluate(module, feeds).items():
        np.testing.assert_allclose(array, expected[name], atol=atol, rtol=rtol, err_msg=name)
    program = program_from_module(lower_module(module, HW))
    outputs, _ = run_program(program, CAPACITIES, feeds)
    for name, array in outputs.items():
        np.testing.assert_allclose(
            array, expected[name], atol=max(atol, 1e-4), rtol=max(rtol, 1e-3)
        )


def x_feed(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((B, S, H)).astype(np.float32)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("with_beta", [True, False])
def test_skip_layer_normalization(with_bias: bool, with_beta: bool, tmp_path: Path) -> None:
    inputs = ["x", "skip", "gamma", "beta" if with_beta else "", "bias" if with_bias else ""]
    node = helper.make_node(
        "SkipLayerNormalization", inputs, ["y", "", "", "sum"], domain="com.microsoft",
        epsilon=1e-6,
    )  # fmt: skip
    # The sum (output 3) is read by the next op, as in an optimized BERT.
    after = helper.make_node("Add", ["y", "sum"], ["z"])
    initializers = [weight("gamma", [H], 1.0), weight("beta", [H]), weight("bias", [H])]
    path = save([node, after], [tensor("x", [B, S, H]), tensor("skip", [B, S, H])],
                [tensor("z", [B, S, H])], initializers, tmp_path / "sln.onnx")  # fmt: skip
    check(path, {"x": x_feed(1), "skip": x_feed(2)})
    # canonicalize sees an ordinary LayerNormalization
    module = import_model(path).module
    run_passes(module, "onnx-canonicalize")
    assert any(op.name == "onnx.LayerNormalization" for op in module.walk())


def test_skip_simplified_layer_normalization(tmp_path: Path) -> None:
    node = helper.make_node(
        "SkipSimplifiedLayerNormalization", ["x", "skip", "gamma", "bias"], ["y"],
        domain="com.microsoft", epsilon=1e-6,
    )  # fmt: skip
    path = save([node], [tensor("x", [B, S, H]), tensor("skip", [B, S, H])],
                [tensor("y", [B, S, H])], [weight("gamma", [H], 1.0), weight("bias", [H])],
                tmp_path / "ssln.onnx")  # fmt: skip
    check(path, {"x": x_feed(1), "skip": x_feed(2)})


@pytest.mark.parametrize("op", ["BiasGelu", "FastGelu", "FastGeluNoBias"])
def test_gelu_forms(op: str, tmp_path: Path) -> None:
    inputs = {"BiasGelu": ["x", "bias"], "FastGelu": ["x", "bias"], "FastGeluNoBias": ["x"],
              "BiasAdd": ["x", "bias", "skip"]}[op]  # fmt: skip
    node = helper.make_node(op.replace("NoBias", ""), inputs, ["y"], domain="com.microsoft")
    graph_inputs = [tensor("x", [B, S, H])] + (
        [tensor("skip", [B, S, H])] if op == "BiasAdd" else []
    )
    path = save([node], graph_inputs, [tensor("y", [B, S, H])], [weight("bias", [H])],
                tmp_path / "act.onnx")  # fmt: skip
    feeds = {"x": x_feed(1)} | ({"skip": x_feed(2)} if op == "BiasAdd" else {})
    check(path, feeds)
    if "Gelu" in op:  # canonicalize recognises the decomposed form as Gelu again
        module = import_model(path).module
        run_passes(module, "onnx-canonicalize")
        assert any(op.name == "onnx.Gelu" for op in module.walk())


def test_bias_add(tmp_path: Path) -> None:
    """BiasAdd has no CPU kernel in onnxruntime: checked against its definition."""
    node = helper.make_node("BiasAdd", ["x", "bias", "skip"], ["y"], domain="com.microsoft")
    bias = weight("bias", [H])
    path = save([node], [tensor("x", [B, S, H]), tensor("skip", [B, S, H])],
                [tensor("y", [B, S, H])], [bias], tmp_path / "bias_add.onnx")  # fmt: skip
    feeds = {"x": x_feed(1), "skip": x_feed(2)}
    expected = feeds["x"] + numpy_helper.to_array(bias) + feeds["skip"]
    check(path, feeds, expected={"y": expected})


@pytest.mark.parametrize("trans_a, trans_b, alpha", [(0, 0, 1.0), (1, 0, 0.5), (0, 1, 2.0)])
def test_fused_matmul(trans_a: int, trans_b: int, alpha: float, tmp_path: Path) -> None:
    a_shape = [B, H, S] if trans_a else [B, S, H]
    b_shape = [8, H] if trans_b else [H, 8]
    node = helper.make_node("FusedMatMul", ["a", "w"], ["y"], domain="com.microsoft",
                            transA=trans_a, transB=trans_b, alpha=alpha)  # fmt: skip
    path = save([node], [tensor("a", a_shape)], [tensor("y", [B, S, 8])], [weight("w", b_shape)],
                tmp_path / "fmm.onnx")  # fmt: skip
    feeds = {"a": np.random.default_rng(3).standard_normal(a_shape).astype(np.float32)}
    check(path, feeds)


def bert_like(path: Path, mask_format: str, with_segments: bool = True) -> Path:
    """EmbedLayerNormalization -> Attention -> SkipLayerNormalization -> MatMul -> BiasGelu ->
    MatMul -> SkipLayerNormalization: one block as onnxruntime's optimizer writes BERT, with the
    attention mask given as `mask_format`: 'index' (EmbedLayerNormalization's mask_index, end
    positions), 'start_end' (2 x batch), 'raw' (the 2-D 0/1 mask) or 'per_query' (3-D)."""
    mask_input = {"index": "mask_index", "start_end": "mask_se", "raw": "mask",
                  "per_query": "mask3"}[mask_format]  # fmt: skip
    embed = helper.make_node(
        "EmbedLayerNormalization",
        ["ids", "segments" if with_segments else "", "words", "positions",
         "segment_table" if with_segments else "", "ln_gamma", "ln_beta", "mask"],
        ["hidden", "mask_index"], domain="com.microsoft", epsilon=1e-12,
    )  # fmt: skip
    nodes = [embed]
    inputs = [tensor("ids", [B, S], TensorProto.INT32), tensor("mask", [B, S], TensorProto.INT32)]
    if with_segments:
        inputs.insert(1, tensor("segments", [B, S], TensorProto.INT32))
    if mask_format == "start_end":
        inputs.append(tensor("mask_se", [2 * B], TensorProto.INT32))
    if mask_format == "per_query":
        inputs.append(tensor("mask3", [B, S, S], TensorProto.INT32))
    nodes += [
        helper.make_node("Attention", ["hidden", "qkv_w", "qkv_b", mask_input], ["context"],
                         domain="com.microsoft", num_heads=HEADS),
        helper.make_node("MatMul", ["context", "out_w"], ["projected"]),
        helper.make_node("SkipLayerNormalization", ["projected", "hidden", "g1", "b1", "out_b"],
                         ["h1"], domain="com.microsoft", epsilon=1e-12),
        helper.make_node("MatMul", ["h1", "up_w"], ["up"]),
        helper.make_node("BiasGelu", ["up", "up_b"], ["act"], domain="com.microsoft"),
        helper.make_node("MatMul", ["act", "down_w"], ["down"]),
        helper.make_node("SkipLayerNormalization", ["down", "h1", "g2", "b2", "down_b"], ["y"],
                         domain="com.microsoft", epsilon=1e-12),
    ]  # fmt: skip
    initializers = [
        weight("words", [VOCAB, H], 1.0), weight("positions", [S, H], 0.5),
        weight("segment_table", [2, H], 0.5), weight("ln_gamma", [H], 1.0), weight("ln_beta", [H]),
        weight("qkv_w", [H, 3 * H]), weight("qkv_b", [3 * H], 0.1), weight("out_w", [H, H]),
        weight("out_b", [H], 0.1), weight("g1", [H], 1.0), weight("b1", [H], 0.1),
        weight("up_w", [H, 4 * H]), weight("up_b", [4 * H], 0.1), weight("down_w", [4 * H, H]),
        weight("down_b", [H], 0.1), weight("g2", [H], 1.0), weight("b2", [H], 0.1),
    ]  # fmt: skip
    return save(nodes, inputs, [tensor("y", [B, S, H])], initializers, path)


def bert_feeds(mask_format: str) -> dict:
    rng = np.random.default_rng(5)
    mask = np.ones((B, S), np.int32)
    mask[1, 4:] = 0  # right padding, as mask_index (end positions) assumes
    feeds = {"ids": rng.integers(0, VOCAB, (B, S)).astype(np.int32),
             "segments": rng.integers(0, 2, (B, S)).astype(np.int32), "mask": mask}  # fmt: skip
    if mask_format == "start_end":
        feeds["mask_se"] = np.array([S, 4, 0, 1], np.int32)  # ends, then starts
    if mask_format == "per_query":
        feeds["mask3"] = np.tril(np.ones((S, S), np.int32))[None].repeat(B, axis=0)
    return feeds


@pytest.mark.parametrize("mask_format", ["index", "start_end", "raw", "per_query"])
def test_optimized_bert_block_matches_onnxruntime(mask_format: str, tmp_path: Path) -> None:
    path = bert_like(tmp_path / "bert.onnx", mask_format)
    check(path, bert_feeds(mask_format), attention=1)


def test_embed_layer_norm_without_segments(tmp_path: Path) -> None:
    path = bert_like(tmp_path / "bert.onnx", "index", with_segments=False)
    feeds = bert_feeds("index")
    del feeds["segments"]
    check(path, feeds, attention=1)


def test_fused_ops_in_float16(tmp_path: Path) -> None:
    """A float16 model (onnxruntime's convert_float_to_float16 keeps fp16 weights and
    activations): the decompositions' scalars take the model's float type."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    path = bert_like(tmp_path / "bert.onnx", "index")
    half = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    onnx.save(half, str(tmp_path / "half.onnx"))
    # Both sides round every op to fp16 (11 significant bits) in their own order: over 40
    # weight seeds the evaluator was up to 0.011 off onnxruntime's fp16 run (|y| <= 5), and a
    # CI machine met 0.0195 at y = 2.7 (10 fp16 ulps). A 1% relative tolerance is that
    # precision's honest bound; a wrong decomposition is off by O(1)
    check(tmp_path / "half.onnx", bert_feeds("index"), attention=1, atol=1e-2, rtol=1e-2)


def test_unsupported_forms_name_the_node(tmp_path: Path) -> None:
    node = helper.make_node("FusedMatMul", ["a", "w"], ["y"], domain="com.microsoft",
                            transBatchA=1)  # fmt: skip
    path = save([node], [tensor("a", [B, S, H])], [tensor("y", [B, S, 8])],
                [weight("w", [H, 8])], tmp_path / "fmm.onnx")  # fmt: skip
    with pytest.raises(CtacError, match="FusedMatMul node 'y'.*transBatchA"):
        import_model(path)
    node = helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma"], ["y", "mean"],
                            domain="com.microsoft")  # fmt: skip
    after = helper.make_node("Add", ["y", "mean"], ["z"])
    path = save([node, after], [tensor("x", [B, S, H]), tensor("skip", [B, S, H])],
                [tensor("z", [B, S, H])], [weight("gamma", [H], 1.0)], tmp_path / "s.onnx")  # fmt: skip
    with pytest.raises(CtacError, match="output 'mean' is used"):
        import_model(path)


def test_inspect_counts_attention_fused_by_onnxruntime(tmp_path: Path, capsys) -> None:
    """A file whose attention onnxruntime already fused has nothing to detect, but its layers
    are layers: inspect lists them (and compile --attention cta compresses them)."""
    import json

    from ctac.cli import main

    path = bert_like(tmp_path / "bert.onnx", "index")
    shapes = f"ids={B}x{S},segments={B}x{S},mask={B}x{S}"
    assert main(["inspect", str(path), "--shape", shapes, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["attention"]
    assert len(rows) == 1 and rows[0]["form"].startswith("com.microsoft.Attention")
    assert rows[0]["mask_kind"] == "key_padding" and rows[0]["num_heads"] == HEADS
    out = tmp_path / "bert.ctab"
    argv = ["compile", str(path), "--shape", shapes, "--attention", "cta", "--cta-policy",
            "always", "-o", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert main(["run", str(out), "--compare", str(path), "--json"]) == 0


def test_attention_cta_cannot_compress_is_named(tmp_path: Path, capsys) -> None:
    """--attention cta on a layer with an additive mask (here onnxruntime's 3-D mask, turned into
    its additive bias) keeps it exact and says so, naming the layer and the fix."""
    from ctac.cli import main

    path = bert_like(tmp_path / "bert.onnx", "per_query")
    shapes = f"ids={B}x{S},segments={B}x{S},mask={B}x{S},mask3={B}x{S}x{S}"
    argv = ["compile", str(path), "--shape", shapes, "--attention", "cta", "--cta-policy",
            "always", "-o", str(tmp_path / "b.ctab")]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: attention 'context' stays exact: its mask is additive" in err
    assert "feed a 0/1 key mask instead" in err


def test_inspect_reports_layers_of_a_model_it_cannot_compile(tmp_path: Path, capsys) -> None:
    """The cost policy compiles the model; when that fails (an op with no lowering after the
    attention), inspect still lists the layers and says why nothing was decided."""
    import json

    from ctac.cli import main

    path = bert_like(tmp_path / "bert.onnx", "index")
    model = onnx.load(str(path))
    model.graph.node.append(helper.make_node("Floor", ["y"], ["floored"]))
    model.graph.output[0].name = "floored"
    onnx.save(model, str(path))
    shapes = f"ids={B}x{S},segments={B}x{S},mask={B}x{S}"
    assert main(["inspect", str(path), "--shape", shapes, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["attention"]
    assert row["cta_policy"]["compress"] is None
    assert "not decided: the model cannot be compiled" in row["cta_policy"]["reason"]


def test_inspect_json_gives_numbers_as_numbers(tmp_path: Path, capsys) -> None:
    """`ctac inspect --json`: the proof's error is a number (null when not proven, with the
    reason in words), not a string."""
    import json

    from ctac.cli import main

    shapes = "input_ids=2x16,attention_mask=2x16"
    assert main(["inspect", str(MODELS / "bert_ts_eager.onnx"), "--shape", shapes, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["attention"]
    assert all(isinstance(r["verified_max_rel_err"], float) for r in rows)
    assert all(r["verified_max_rel_err"] <= 1e-4 and "verified" not in r for r in rows)
    path = bert_like(tmp_path / "bert.onnx", "index")  # attention fused by onnxruntime
    fused = f"ids={B}x{S},segments={B}x{S},mask={B}x{S}"
    assert main(["inspect", str(path), "--shape", fused, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["attention"]
    assert row["verified_max_rel_err"] is None and "imported" in row["verification"]


def test_run_gives_float_masks_and_token_types_their_neutral_value(tmp_path: Path, capsys) -> None:
    """`ctac run` without --input: an additive float mask gets zeros (nothing masked, it used to
    get standard-normal noise) and token types segment 0, each named in a note; other inputs
    stay random."""
    from ctac.cli import main

    nodes = [
        helper.make_node("Gather", ["table", "token_type_ids"], ["types"]),
        helper.make_node("Add", ["x", "types"], ["h"]),
        helper.make_node("Add", ["h", "attention_bias"], ["y"]),
    ]
    inputs = [tensor("x", [B, S, H]), tensor("token_type_ids", [B, S], TensorProto.INT64),
              tensor("attention_bias", [B, S, H])]  # fmt: skip
    path = save(nodes, inputs, [tensor("y", [B, S, H])], [weight("table", [2, H], 1.0)],
                tmp_path / "m.onnx", opset=17)  # fmt: skip
    program = tmp_path / "m.ctab"
    shapes = f"x={B}x{S}x{H},token_type_ids={B}x{S},attention_bias={B}x{S}x{H}"
    flags = ["--shape", shapes, "--precision", "fp32", "-o", str(program)]  # y exact: fp32
    assert main(["compile", str(path), *flags]) == 0
    capsys.readouterr()
    out = tmp_path / "out.npz"
    assert main(["run", str(program), "-o", str(out), "--json"]) == 0
    err = capsys.readouterr().err
    assert "note: input 'attention_bias' (float32) is all zeros (an additive mask" in err
    assert "note: input 'token_type_ids' (int64) is all zeros (token types" in err
    assert "'x'" not in err
    from ctac.run import random_inputs
    from ctac.runtime.program import read_program

    feeds = random_inputs(read_program(program))
    assert not feeds["attention_bias"].any() and not feeds["token_type_ids"].any()
    assert feeds["x"].std() > 0.5
    with np.load(out) as got:  # y = x + table[0] + 0
        table = numpy_helper.to_array(weight("table", [2, H], 1.0))
        np.testing.assert_allclose(got["y"], feeds["x"] + table[0], atol=1e-6)
