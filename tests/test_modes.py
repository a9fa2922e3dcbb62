"""The three attention modes on the accelerator (exact, CTA, ELSA) and ctac compare."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FP16_ATOL, FP32_HW, MODELS, manifest_inputs, shape_flags

from ctac.emit import program_from_module
from ctac.importer import import_model
from ctac.passes.detect_attention import detect_attention
from ctac.passes.lower_to_isa import lower_module
from ctac.pipeline import run_passes
from ctac.runtime.costmodel import simulate
from ctac.runtime.evaluator import evaluate
from ctac.runtime.interpreter import run_program

# The programs are checked against the reference semantics to 1e-4: the fp32 machine.
HW = FP32_HW
CAPACITIES = {b.index: b.capacity for b in HW.buffers}
ENTRY = next(
    m
    for m in json.loads((MODELS / "manifest.json").read_text())["models"]
    if m["file"] == "bert_ts_eager.onnx"
)


def detected_module():
    imported = import_model(MODELS / ENTRY["file"], shape_flags(ENTRY))
    run_passes(imported.module, "onnx-canonicalize")
    detect_attention(imported.module)
    return imported.module


@pytest.mark.parametrize(
    "spec", ["elsa-filter{bits=16 threshold=0.5}", "elsa-filter{bits=8 threshold=0.9}"]
)
def test_elsa_program_equals_its_reference_semantics(spec: str) -> None:
    module = detected_module()
    run_passes(module, spec)
    inputs = manifest_inputs(ENTRY, seed=7)
    expected = evaluate(module, inputs)
    program = program_from_module(lower_module(copy.deepcopy(module), HW))
    assert any(name == "ELSA_SELECT" for name, _ in program.instructions)
    outputs, stats = run_program(program, CAPACITIES, inputs)
    for name, array in outputs.items():
        np.testing.assert_allclose(array, expected[name], atol=1e-4, rtol=1e-4)
    # Candidate counts drive the cost model: a strict filter costs less than no filter.
    assert (
        stats.clusters and simulate(program, HW, stats.clusters).macs < simulate(program, HW).macs
    )


def test_elsa_with_every_key_a_candidate_is_exact() -> None:
    module = detected_module()
    exact = evaluate(module, manifest_inputs(ENTRY, seed=8))
    run_passes(module, "elsa-filter{bits=8 threshold=-1.0}")
    for name, array in evaluate(module, manifest_inputs(ENTRY, seed=8)).items():
        np.testing.assert_allclose(array, exact[name], atol=1e-6)


def test_cta_at_threshold_zero_with_duplicated_tokens_equals_exact() -> None:
    """Identical sequences in a batch: per-head clusters at tau 0 reproduce exact attention."""
    module = detected_module()
    compressed = copy.deepcopy(module)
    run_passes(compressed, "cta-compress{tau-q=0.0 tau-kv=0.0}")
    inputs = manifest_inputs(ENTRY, seed=9)
    inputs["attention_mask"][:] = 1
    exact_program = program_from_module(lower_module(module, HW))
    cta_program = program_from_module(lower_module(compressed, HW))
    exact, _ = run_program(exact_program, CAPACITIES, inputs)
    cta, stats = run_program(cta_program, CAPACITIES, inputs)
    for name in exact:
        np.testing.assert_allclose(cta[name], exact[name], atol=1e-5)
    assert stats.clusters


def test_compare_prints_all_four_modes(tmp_path: Path, capsys) -> None:
    from ctac.cli import main

    args = [
        "compare",
        str(MODELS / ENTRY["file"]),
        "--shape",
        "input_ids=2x16,attention_mask=2x16",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    table = capsys.readouterr().out
    for mode in (
        "exact (accelerator)",
        "CTA (accelerator)",
        "ELSA (accelerator)",
        "V100-SXM2 roofline",
    ):
        assert mode in table
    report = json.loads((tmp_path / "compare.json").read_text())
    assert [m["mode"] for m in report["modes"]][0] == "exact (accelerator)"
    # `ctac compare` runs ctac's default machine: fp16 storage, its rounding error reported.
    assert 0 < report["modes"][0]["max_abs_err"] <= FP16_ATOL
    # Every ratio is relative to exact attention on the same accelerator (the first row), and
    # the keys carry their units.
    exact, cta = report["modes"][0], report["modes"][1]
    assert report["baseline"] == "exact (accelerator)" and exact["speedup"] == 1.0
    assert cta["speedup"] == pytest.approx(exact["seconds"] / cta["seconds"])
    assert cta["energy_saving"] == pytest.approx(exact["energy_pj"] / cta["energy_pj"])
    assert "energy_j" not in cta
    assert "exact (accelerator)'s time and energy over each mode's" in table
    assert "1.00x" in table.splitlines()[2]  # the exact row
    # Attention's wall time never exceeds the model's, nor its busy time summed over units.
    for mode in report["modes"]:
        assert 0 < mode["attention_wall_seconds"] <= mode["seconds"]
        assert mode["attention_wall_seconds"] <= mode["attention_seconds"] * (1 + 1e-12)
    assert "attn wall ms" in table
    assert (tmp_path / "compare_cycles.png").exists()


def _self_attention_model(path: Path, seq: int = 12, hidden: int = 16, heads: int = 2) -> Path:
    """One self-attention layer over an input X (no position embeddings), as exporters write it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    head_dim = hidden // heads
    init = []
    nodes = []
    for name in ("q", "k", "v"):
        init.append(
            numpy_helper.from_array(
                (rng.standard_normal((hidden, hidden)) * 0.3).astype(np.float32), f"w{name}"
            )
        )
        init.append(
            numpy_helper.from_array(
                (rng.standard_normal(hidden) * 0.1).astype(np.float32), f"b{name}"
            )
        )
        nodes += [
            helper.make_node("MatMul", ["x", f"w{name}"], [f"{name}_mm"]),
            helper.make_node("Add", [f"{name}_mm", f"b{name}"], [f"{name}_add"]),
            helper.make_node("Reshape", [f"{name}_add", "heads_shape"], [f"{name}_r"]),
        ]
    init.append(
        numpy_helper.from_array(np.array([1, seq, heads, head_dim], np.int64), "heads_shape")
    )
    init.append(numpy_helper.from_array(np.array([1, seq, hidden], np.int64), "out_shape"))
    init.append(numpy_helper.from_array(np.array(1 / np.sqrt(head_dim), np.float32), "scale"))
    nodes += [
        helper.make_node("Transpose", ["q_r"], ["q_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["k_r"], ["k_t"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["v_r"], ["v_t"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["q_t", "k_t"], ["scores"]),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v_t"], ["o"]),
        helper.make_node("Transpose", ["o"], ["o_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["o_t", "out_shape"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, seq, hidden])],
        init,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_cta_on_duplicated_tokens_merges_them_and_stays_exact(tmp_path: Path, capsys) -> None:
    """Acceptance: threshold 0 on inputs with repeated tokens equals exact within 1e-5, and the
    run's JSON shows fewer clusters than tokens."""
    from ctac.cli import main

    model = _self_attention_model(tmp_path / "attention.onnx")
    rng = np.random.default_rng(1)
    distinct = rng.standard_normal((4, 16)).astype(np.float32)
    x = distinct[rng.integers(0, 4, size=12)][None]  # 12 tokens, 4 distinct
    np.save(tmp_path / "x.npy", x)
    for mode in ("exact", "cta"):
        assert (
            main(
                [
                    "compile",
                    str(model),
                    "--attention",
                    mode,
                    *(["--tau", "0", "--cta-policy", "always"] if mode == "cta" else []),
                    "--precision",  # equal within 1e-5: float32 storage
                    "fp32",
                    "-o",
                    str(tmp_path / f"{mode}.ctab"),
                ]
            )
            == 0
        )
    capsys.readouterr()
    results = {}
    for mode in ("exact", "cta"):
        out = tmp_path / f"{mode}.npz"
        assert (
            main(
                [
                    "run",
                    str(tmp_path / f"{mode}.ctab"),
                    "--input",
                    f"x={tmp_path / 'x.npy'}",
                    "--compare",
                    str(model),
                    "--json",
                    "-o",
                    str(out),
                ]
            )
            == 0
        )
        results[mode] = (json.loads(capsys.readouterr().out), np.load(out)["y"])
    np.testing.assert_allclose(results["cta"][1], results["exact"][1], atol=1e-5)
    attention = results["cta"][0]["attention"]
    assert attention and all(
        layer["query_clusters"] < layer["tokens"] and layer["kv_clusters"] < layer["tokens"]
        for layer in attention
    )
    assert results["cta"][0]["outputs"]["y"]["max_abs_err"] <= 1e-5


def test_elsa_over_several_key_tiles_equals_its_reference_semantics() -> None:
    """bert_long at 1024 tokens: each query's keys span two key tiles, so ELSA scans them for
    every row's nearest distance, then selects per tile; equal to the reference filter."""
    entry = next(
        m
        for m in json.loads((MODELS / "manifest.json").read_text())["models"]
        if m["file"] == "bert_long.onnx"
    )
    shapes = {"input_ids": [1, 1024], "attention_mask": [1, 1024]}
    module = import_model(MODELS / entry["file"], shapes).module
    run_passes(module, "onnx-canonicalize,detect-attention,elsa-filter{bits=8 threshold=0.5}")
    rng = np.random.default_rng(11)
    mask = np.ones((1, 1024), np.int64)
    mask[:, 900:] = 0
    inputs = {"input_ids": rng.integers(0, 128, size=(1, 1024)), "attention_mask": mask}
    expected = evaluate(module, inputs)
    program = program_from_module(lower_module(copy.deepcopy(module), HW))
    phases = {fields["phase"] for name, fields in program.instructions if name == "ELSA_SELECT"}
    assert phases == {"scan", "select"}
    outputs, stats = run_program(program, CAPACITIES, inputs)
    for name, array in outputs.items():
        np.testing.assert_allclose(array, expected[name], atol=1e-4, rtol=1e-4)


def test_attention_wall_time_is_the_union_of_intervals() -> None:
    from types import SimpleNamespace

    from ctac.compare import covered_cycles

    def spans(*pairs):
        return [SimpleNamespace(start=a, end=b) for a, b in pairs]

    assert covered_cycles([]) == 0
    assert covered_cycles(spans((0, 10))) == 10
    assert covered_cycles(spans((5, 9), (0, 10))) == 10  # nested, out of order
    assert covered_cycles(spans((0, 10), (8, 15), (20, 25))) == 20  # overlap and a gap
    assert covered_cycles(spans((0, 10), (10, 12))) == 12  # touching
