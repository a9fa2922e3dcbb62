"""The long-context test models (bert_long: 4096 positions, gpt2_long: 2048): manifest, onnxruntime
at a long length, compiling and running them, and the scaling benchmark's bookkeeping.

Exact mode runs up to 2048 tokens against onnxruntime (key-tiled attention with an online
softmax; before it the compiler refused attention over more than ~512 keys).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import FP16_ATOL, FP32_HW, MANIFEST, MODELS, manifest_inputs

REPO = Path(__file__).resolve().parent.parent
LONG = {"bert_long": ("bert", "dynamo", 4096), "gpt2_long": ("gpt2", "torchscript", 2048)}
LONG_LENGTH = 1024


def entry_of(name: str) -> dict:
    return next(m for m in MANIFEST["models"] if m["file"] == f"{name}.onnx")


def at_length(entry: dict, length: int) -> dict:
    """The manifest entry with every input at batch 1 x length (for conftest.manifest_inputs)."""
    inputs = {name: {**spec, "shape": [1, length]} for name, spec in entry["inputs"].items()}
    return {**entry, "inputs": inputs}


def session(name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(MODELS / f"{name}.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", sorted(LONG))
def test_in_manifest_with_max_positions(name: str) -> None:
    family, exporter, positions = LONG[name]
    entry = entry_of(name)
    assert entry["long"] is True and entry["max_positions"] == positions
    assert (entry["family"], entry["exporter"], entry["dynamic"]) == (family, exporter, True)
    assert entry["hidden_size"] // entry["num_heads"] == 64
    # small test shape, so the suites that run every manifest model stay fast
    assert all(spec["shape"][1] <= 128 for spec in entry["inputs"].values())
    assert entry["long_shape_inputs"]["input_ids"] == [1, LONG_LENGTH]
    assert entry["max_abs_err_long_shape"] <= 1e-4
    # the position table really has max_positions rows
    model = onnx.load(str(MODELS / entry["file"]))
    tables = [list(t.dims) for t in model.graph.initializer if len(t.dims) == 2]
    assert [positions, entry["hidden_size"]] in tables


@pytest.mark.parametrize("name", sorted(LONG))
def test_onnxruntime_runs_at_a_long_length(name: str) -> None:
    """At 1x1024 (the last quarter padded): the output has the right shape, is finite, and the
    padded tokens do not reach the others (key padding works at this length)."""
    entry = at_length(entry_of(name), LONG_LENGTH)
    inputs = manifest_inputs(entry, seed=3)
    (output,) = session(name).run(None, inputs)
    assert output.shape == (1, LONG_LENGTH, entry["hidden_size"])
    assert np.isfinite(output).all()
    kept = inputs["attention_mask"][0] == 1
    assert 0 < kept.sum() < LONG_LENGTH
    changed = dict(inputs)
    changed["input_ids"] = inputs["input_ids"].copy()
    vocab = entry["inputs"]["input_ids"]["vocab_size"]
    changed["input_ids"][0, ~kept] = (changed["input_ids"][0, ~kept] + 1) % vocab
    (again,) = session(name).run(None, changed)
    assert np.abs(again[0, kept] - output[0, kept]).max() <= 1e-5


def test_gpt2_long_is_causal_at_a_long_length() -> None:
    """The first 64 positions of a 1x1024 run equal a 1x64 run of the same tokens."""
    entry = at_length(entry_of("gpt2_long"), LONG_LENGTH)
    inputs = manifest_inputs(entry, seed=4)
    inputs["attention_mask"][:] = 1
    (long,) = session("gpt2_long").run(None, inputs)
    prefix = {name: array[:, :64] for name, array in inputs.items()}
    (short,) = session("gpt2_long").run(None, prefix)
    assert np.abs(long[:, :64] - short).max() <= 1e-5


def compile_and_compare(name: str, length: int, tmp_path: Path, capsys) -> dict:
    """`ctac compile --attention exact` then `ctac run --compare` at 1 x length; the run's JSON."""
    from ctac.cli import main

    model = MODELS / f"{name}.onnx"
    program = tmp_path / f"{name}_{length}.ctab"
    shapes = f"input_ids=1x{length},attention_mask=1x{length}"
    code = main(["compile", str(model), "--shape", shapes, "--attention", "exact",
                 "--precision", "fp32", "-o", str(program)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["run", str(program), "--compare", str(model), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("name", "length"),
    [("bert_long", 512), ("bert_long", 1024), ("bert_long", 2048), ("gpt2_long", 1024),
     ("gpt2_long", 2048)],
)  # fmt: skip
def test_cli_exact_long_sequences_match_onnxruntime(
    name: str, length: int, tmp_path: Path, capsys
) -> None:
    """Key-tiled attention (online softmax) at lengths whose keys and values are many times a
    buffer: the interpreter equals onnxruntime."""
    report = compile_and_compare(name, length, tmp_path, capsys)
    output = report["outputs"]["last_hidden_state"]
    assert output["shape"][:2] == [1, length]
    assert output["max_abs_err"] <= 1e-4


CTA_LENGTHS = [
    ("bert_long", 512), ("bert_long", 1024), ("bert_long", 2048), ("gpt2_long", 1024),
    ("gpt2_long", 2048),
]  # fmt: skip


@pytest.mark.parametrize(("name", "length"), CTA_LENGTHS)
def test_cta_long_sequences_equal_the_compressed_reference(name: str, length: int) -> None:
    """CTA mode (the CLI's default compression; block-causal for GPT-2) at long lengths: the
    interpreter runs the key-tiled compressed attention and equals the numpy reference semantics
    of the compressed module."""
    import copy

    from ctac.cli import build_parser
    from ctac.emit import program_from_module
    from ctac.frontend import compress_spec
    from ctac.importer import import_model
    from ctac.passes.lower_to_isa import lower_module
    from ctac.pipeline import run_passes
    from ctac.runtime.evaluator import evaluate
    from ctac.runtime.interpreter import run_program

    hw = FP32_HW  # equal to the reference to float32 rounding
    shapes = {"input_ids": [1, length], "attention_mask": [1, length]}
    module = import_model(MODELS / f"{name}.onnx", shapes).module
    args = build_parser().parse_args(["compile", "x.onnx", "--attention", "cta"])
    run_passes(module, f"onnx-canonicalize,detect-attention,{compress_spec(args)}")
    rng = np.random.default_rng(5)
    # Repeated tokens so clusters really merge.
    ids = np.tile(rng.integers(0, 128, size=(1, 16)), (1, length // 16)).astype(np.int64)
    inputs = {"input_ids": ids, "attention_mask": np.ones((1, length), np.int64)}
    expected = evaluate(module, inputs)
    program = program_from_module(lower_module(copy.deepcopy(module), hw))
    outputs, stats = run_program(program, {b.index: b.capacity for b in hw.buffers}, inputs)
    for output, array in outputs.items():
        scale = float(np.abs(expected[output]).max())
        assert np.abs(array - expected[output]).max() <= 1e-5 * max(scale, 1.0)
    assert any(name == "SOFTMAX_ONLINE" for name, _ in program.instructions)
    assert any(source.startswith("cta.compressed_attention") for source in program.sources)
    assert stats.clusters and min(stats.clusters.values()) < length  # tokens merged


def test_scaling_benchmark_records_points_failures_and_fits(tmp_path: Path) -> None:
    """bench/scaling.py: points that compile are measured (and checked), a length over the
    model's positions is recorded as that point's error, the run goes on and exits 0."""
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "scaling.py"), "--models", "gpt2_long",
         "--modes", "exact", "--lengths", "64", "128", "4096", "--check", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "scaling.json").read_text())
    assert (tmp_path / "scaling.png").read_bytes().startswith(b"\x89PNG")
    mode = result["models"]["gpt2_long"]["modes"]["exact"]
    points = mode["points"]
    assert "over the model's 2048 positions" in points["4096"]["error"]
    assert result["failed"] == [
        {"model": "gpt2_long", "mode": "exact", "length": 4096, "error": points["4096"]["error"]}
    ]
    for length in ("64", "128"):
        point = points[length]
        assert point["attention_busy_cycles"] > 0 and point["cycles"] > 0
        assert point["energy_pj"] > 0 and point["dram_bytes"] > 0
        assert point["compile_peak_rss_bytes"] >= point["rss_before_compile_bytes"] > 0
        # the bench runs ctac's default machine: fp16 storage's error, reported
        assert point["check"]["max_abs_err_vs_onnxruntime"] <= FP16_ATOL
    assert mode["fit"]["lengths"] == [64, 128]
    assert isinstance(mode["fit"]["attention_cycles_exponent"], float)
    assert result["settings"]["energy_unit"] == "pJ" and "machine" in result
