"""detect-attention on every committed model: every layer found, proven, equal to onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from conftest import MODELS, manifest_inputs, shape_flags

from ctac.importer import import_model
from ctac.passes.detect_attention import detect_attention
from ctac.pipeline import module_text, parse_module, run_passes
from ctac.runtime.evaluator import evaluate


@pytest.fixture
def detected(model_entry: dict):
    imported = import_model(MODELS / model_entry["file"], shape_flags(model_entry))
    run_passes(imported.module, "onnx-canonicalize")
    reports, refused = detect_attention(imported.module, verify=True)
    imported.module.verify()
    return imported.module, reports, refused


def test_every_attention_layer_becomes_one_op(model_entry: dict, detected) -> None:
    module, reports, refused = detected
    names = [op.name for op in module.walk()]
    assert refused == []
    assert names.count("cta.attention") == model_entry["num_attention_layers"] == len(reports)
    assert "onnx.Softmax" not in names


def test_heads_masks_and_projections(model_entry: dict, detected) -> None:
    _, reports, _ = detected
    family = model_entry["family"]
    for report in reports:
        assert report.num_heads == report.kv_heads == model_entry["num_heads"]
        assert report.head_dim * report.num_heads == model_entry["hidden_size"]
        if model_entry.get("seq2seq"):
            # Encoder self-attention (source x source) and cross-attention (target x source)
            # see the padded source; the decoder's self-attention (target x target) is causal.
            # T5 adds its relative position bias to the self-attentions' masks: additive.
            source = model_entry["inputs"]["input_ids"]["shape"][1]
            target = model_entry["inputs"]["decoder_input_ids"]["shape"][1]
            cross = (report.q_len, report.kv_len) == (target, source)
            decoder_self = (report.q_len, report.kv_len) == (target, target)
            assert cross or decoder_self or (report.q_len, report.kv_len) == (source, source)
            if family == "t5" and not cross:
                assert report.mask_kind == "additive" and not report.causal, report
            else:
                assert report.causal == decoder_self, report
                assert report.mask_kind == ("none" if decoder_self else "key_padding"), report
            assert report.projections.count("/") == 2
            assert float(report.verified) <= 1e-4
            continue
        assert report.causal == (family == "gpt2")
        assert report.mask_kind == ("none" if family == "vit" else "key_padding")
        assert report.projections.count("/") == 2, "Q, K and V projections must all be captured"
        assert float(report.verified) <= 1e-4


def test_rewritten_module_matches_onnxruntime(model_entry: dict, detected) -> None:
    module, _, _ = detected
    session = ort.InferenceSession(str(MODELS / model_entry["file"]))
    for seed in (3, 4):
        inputs = manifest_inputs(model_entry, seed=seed)
        expected = session.run(None, inputs)
        got = list(evaluate(module, inputs).values())
        for ours, theirs in zip(got, expected, strict=True):
            assert np.abs(ours - theirs).max() <= 1e-4


def test_cta_module_round_trips(detected) -> None:
    module, _, _ = detected
    text = module_text(module)
    assert module_text(parse_module(text)) == text


def test_inspect_reports_every_layer(capsys) -> None:
    import json

    from ctac.cli import main

    model = MODELS / "gpt2_dynamo_sdpa.onnx"
    assert (
        main(["inspect", str(model), "--shape", "input_ids=2x16,attention_mask=2x16", "--json"])
        == 0
    )
    rows = json.loads(capsys.readouterr().out)["attention"]
    assert len(rows) == 2
    assert {row["mask_kind"] for row in rows} == {"key_padding"}
    assert all(row["causal"] and row["num_heads"] == 4 and row["q_len"] == 16 for row in rows)
    assert all("NaN guard" in row["form"] for row in rows)
    assert main(["inspect", str(model), "--shape", "input_ids=2x16,attention_mask=2x16"]) == 0
    text = capsys.readouterr().out
    assert "2 attention layer(s)" in text and "projections captured" in text


def test_emit_cta_and_emit_onnx(capsys) -> None:
    from ctac.cli import main

    model = MODELS / "bert_ts_eager.onnx"
    assert (
        main(
            [
                "compile",
                str(model),
                "--shape",
                "input_ids=2x16,attention_mask=2x16",
                "--emit",
                "cta",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.count("= cta.attention ") == 2
    assert (
        main(
            [
                "compile",
                str(model),
                "--shape",
                "input_ids=2x16,attention_mask=2x16",
                "--emit",
                "onnx",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "cta." not in text and text.count("onnx.Softmax") == 2
