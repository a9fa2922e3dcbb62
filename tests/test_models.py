"""End to end on every committed test model: import, canonicalize, evaluate vs onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from conftest import MODELS, manifest_inputs, shape_flags

from ctac.importer import import_model
from ctac.passes.canonicalize import FOLD_ELEMENTS
from ctac.pipeline import module_text, parse_module, run_passes
from ctac.runtime.evaluator import evaluate, output_names

FOLDED_AWAY = {"onnx.Shape", "onnx.ConstantOfShape", "onnx.Range", "onnx.Identity", "onnx.Dropout"}


@pytest.fixture
def canonical(model_entry: dict):
    imported = import_model(MODELS / model_entry["file"], shape_flags(model_entry))
    run_passes(imported.module, "onnx-canonicalize")
    return imported.module


def test_matches_onnxruntime(model_entry: dict, canonical) -> None:
    inputs = manifest_inputs(model_entry, seed=1)
    session = ort.InferenceSession(str(MODELS / model_entry["file"]))
    expected = dict(
        zip([o.name for o in session.get_outputs()], session.run(None, inputs), strict=True)
    )
    got = evaluate(canonical, inputs)
    assert list(got) == output_names(canonical) == list(expected)
    for name, array in got.items():
        assert array.shape == expected[name].shape
        assert np.abs(array - expected[name]).max() <= 1e-4, name


def test_print_parse_round_trip(canonical) -> None:
    text = module_text(canonical)
    assert module_text(parse_module(text)) == text


def test_parsed_module_still_evaluates(model_entry: dict, canonical) -> None:
    """A printed module records where its weights live, so it evaluates after parsing."""
    inputs = manifest_inputs(model_entry, seed=2)
    reparsed = parse_module(module_text(canonical))
    for name, array in evaluate(reparsed, inputs).items():
        np.testing.assert_array_equal(array, evaluate(canonical, inputs)[name])


def test_canonicalize_folds_shape_computations(model_entry: dict, canonical) -> None:
    left = sorted({op.name for op in canonical.walk() if op.name in FOLDED_AWAY})
    assert left == []


def test_canonicalize_recognises_layer_norm_and_gelu(model_entry: dict, canonical) -> None:
    layers = model_entry["num_attention_layers"]
    names = [op.name for op in canonical.walk()]
    if model_entry["family"] == "t5":
        # T5 normalises with RMSNorm (x * rsqrt(mean(x^2) + eps) * w): one before each sublayer
        # (encoder block: self-attention, MLP; decoder block: self, cross, MLP) and one at the
        # end of each stack. Its MLP is ReLU: no GELU, no LayerNorm.
        blocks = layers // 3
        assert names.count("onnx.RMSNormalization") == 2 * blocks + 3 * blocks + 2
        assert "onnx.LayerNormalization" not in names and "onnx.Gelu" not in names
        for decomposed in ("onnx.ReduceMean", "onnx.Sqrt", "onnx.Pow", "onnx.Reciprocal"):
            assert decomposed not in names
        return
    if model_entry.get("seq2seq"):
        # BART: per encoder block (self-attention + MLP) two LayerNorms and one GELU, per decoder
        # block (self + cross + MLP) three LayerNorms and one GELU, one per stack's embeddings.
        blocks = layers // 3
        assert names.count("onnx.LayerNormalization") == 2 * blocks + 3 * blocks + 2
        assert names.count("onnx.Gelu") == 2 * blocks
        return
    # Every transformer block has two LayerNorms and one GELU MLP; embeddings add one more
    # LayerNorm in BERT-like models and GPT-2 / ViT have a final one.
    assert names.count("onnx.LayerNormalization") == 2 * layers + 1
    assert names.count("onnx.Gelu") == layers
    for decomposed in ("onnx.ReduceMean", "onnx.Sqrt", "onnx.Erf", "onnx.Tanh", "onnx.Pow"):
        assert decomposed not in names


def test_no_weights_printed(canonical) -> None:
    weights = [op for op in canonical.walk() if op.name == "onnx.Weight"]
    assert weights, "large initializers must be onnx.Weight references"
    inline = [op.to_numpy() for op in canonical.walk() if op.name == "onnx.Constant"]
    non_splat = [a.size for a in inline if a.size > 1 and not (a == a.flat[0]).all()]
    assert max(non_splat, default=0) <= FOLD_ELEMENTS


def test_cli_compile_then_ctac_opt_is_byte_identical(model_entry: dict, tmp_path, capsys) -> None:
    """Acceptance: `ctac compile M --emit onnx > m.mlir` and `ctac-opt m.mlir` print the same."""
    from ctac.cli import main as ctac_main
    from ctac.opt import main as opt_main

    flags = ",".join(f"{k}={'x'.join(map(str, v))}" for k, v in shape_flags(model_entry).items())
    assert (
        ctac_main(
            ["compile", str(MODELS / model_entry["file"]), "--shape", flags, "--emit", "onnx"]
        )
        == 0
    )
    compiled = capsys.readouterr().out
    module_file = tmp_path / "m.mlir"
    module_file.write_text(compiled)
    assert opt_main([str(module_file)]) == 0
    assert capsys.readouterr().out == compiled


def test_compile_makes_the_program_of_the_printed_module(model_entry: dict, canonical) -> None:
    """`ctac compile` makes the program straight from the lowering's records; it is the program
    of the ctaisa module (the form ctac-opt prints), field for field and byte for byte."""
    from ctac.emit import program_from_lowering, program_from_module
    from ctac.hw import load_hardware
    from ctac.passes.detect_attention import detect_attention
    from ctac.passes.lower_to_isa import lower_module, lowered
    from ctac.runtime.program import encode_program

    detect_attention(canonical, verify=False)
    compressed = canonical.clone()
    run_passes(compressed, "cta-compress")  # dynamic sizes (cluster counts) too
    hw = load_hardware(None)
    for module in (canonical, compressed):
        direct = program_from_lowering(lowered(module, hw))
        printed = program_from_module(parse_module(module_text(lower_module(module, hw))))
        assert direct.instructions == printed.instructions
        assert (direct.sources, direct.dynamic, direct.symbols) == (
            printed.sources,
            printed.dynamic,
            printed.symbols,
        )
        assert encode_program(direct) == encode_program(printed)
    assert direct.dynamic  # the compressed program sizes tiles by its clusters
