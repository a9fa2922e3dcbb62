"""`ctac calibrate` and `ctac compile --cta-settings`: thresholds that meet a target cosine on
calibration data (an npz, or text read with the model's tokenizer.json), the measured fidelity
and cluster ratios in a TOML file, the method search (the cheapest method meeting the target),
and a compile that uses them (and hands the cost-aware policy the calibrated cluster ratio)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import MODELS
from test_errors import assert_user_error, run_ctac
from test_modes import _self_attention_model

from ctac.calibrate import read_settings
from ctac.cli import main
from ctac.errors import CtacError

BERT = MODELS / "bert_ts_eager.onnx"  # input_ids (vocab 256) and attention_mask, no token types
BERT_1x16 = "input_ids=1x16,attention_mask=1x16"
WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "park"]


def _calibration_data(path: Path, samples: int, seed: int, seq: int = 12) -> Path:
    """Tokens near a few prototypes (so clusters form) plus noise (so merging costs accuracy)."""
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((4, 16)).astype(np.float32)
    picks = rng.integers(0, 4, size=(samples, 1, seq))
    x = prototypes[picks] + 0.15 * rng.standard_normal((samples, 1, seq, 16)).astype(np.float32)
    np.savez(path, x=x.astype(np.float32))
    return path


def test_calibrate_then_compile_round_trip(tmp_path: Path, capsys) -> None:
    model = _self_attention_model(tmp_path / "attention.onnx")
    data = _calibration_data(tmp_path / "calib.npz", samples=4, seed=1)
    settings_file = tmp_path / "cta.toml"
    argv = ["calibrate", str(model), "--shape", "x=1x12x16", "--data", str(data),
            "--target-cosine", "0.999", "-o", str(settings_file)]  # fmt: skip
    assert main(argv) == 0
    settings = read_settings(settings_file)
    assert settings.samples == 4 and settings.target_cosine == 0.999
    assert settings.mean_cosine >= 0.999 and settings.min_cosine >= 0.995
    assert settings.tau_q > 0 and len(settings.cluster_ratios) == 1
    assert 0 < settings.cluster_ratios[0] < 1  # the prototypes' tokens merged
    assert 1.0 <= settings.buckets <= 2**settings.hash_bits
    # A stricter target can only lower the threshold.
    strict = tmp_path / "strict.toml"
    assert main([*argv[:-4], "--target-cosine", "0.99999", "-o", str(strict)]) == 0
    assert read_settings(strict).tau_q <= settings.tau_q
    # The compile uses the calibrated thresholds ...
    capsys.readouterr()
    assert main(["compile", str(model), "--shape", "x=1x12x16", "--attention", "cta",
                 "--cta-settings", str(settings_file), "--cta-policy", "always",
                 "--emit", "cta"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    taus = sorted({float(t) for t in re.findall(r"tau = ([0-9.e+-]+)", text)})
    scale = settings.layer_scale[0] if settings.layer_scale else 1.0
    assert taus == pytest.approx(sorted([settings.tau_kv * scale, settings.tau_q * scale]))
    # ... and the policy expects the calibrated cluster ratios, the queries' and the keys' each.
    roles = settings.role_ratios[0]
    assert sorted(roles) == ["kv", "q"] and roles["q"] <= roles["kv"]  # tau-q > tau-kv
    assert settings.cluster_ratios[0] == pytest.approx((roles["q"] + roles["kv"]) / 2, abs=1e-3)
    assert read_settings(settings_file).role_ratios == [pytest.approx(roles, abs=1e-4)]
    assert main(["compile", str(model), "--shape", "x=1x12x16", "--attention", "cta",
                 "--cta-settings", str(settings_file), "--cta-policy", "cost",
                 "-o", str(tmp_path / "p.ctab")]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert f"at {roles['q']:.3g} (q) / {roles['kv']:.3g} (kv) clusters per token" in err


def test_calibration_fidelity_holds_on_held_out_data(tmp_path: Path) -> None:
    """Evaluated on samples not used for calibration, the thresholds stay near the target."""
    from ctac.calibrate import _fidelity, load_samples
    from ctac.importer import import_model
    from ctac.pipeline import run_passes
    from ctac.runtime.evaluator import evaluate

    model = _self_attention_model(tmp_path / "attention.onnx")
    calib = _calibration_data(tmp_path / "calib.npz", samples=4, seed=1)
    held = _calibration_data(tmp_path / "held.npz", samples=4, seed=2)
    assert main(["calibrate", str(model), "--shape", "x=1x12x16", "--data", str(calib),
                 "-o", str(tmp_path / "cta.toml")]) == 0  # fmt: skip
    settings = read_settings(tmp_path / "cta.toml")
    module = import_model(model, {"x": [1, 12, 16]}).module
    run_passes(module, "onnx-canonicalize,detect-attention")
    samples = load_samples(held, {"x": (1, 12, 16)})
    exact = [evaluate(module, sample) for sample in samples]
    spec = (f"cta-compress{{tau-q={settings.tau_q:.4f} tau-kv={settings.tau_kv:.4f} "
            f"hash-bits={settings.hash_bits}}}")  # fmt: skip
    mean, *_ = _fidelity(module, spec, samples, exact)
    assert mean >= 0.995


def test_bad_calibration_inputs_are_clear_errors(tmp_path: Path) -> None:
    model = _self_attention_model(tmp_path / "attention.onnx")
    np.savez(tmp_path / "wrong.npz", y=np.zeros((1, 12, 16), np.float32))
    with pytest.raises(CtacError, match="no array for input"):
        main(["--debug", "calibrate", str(model), "--shape", "x=1x12x16", "--data",
              str(tmp_path / "wrong.npz")])  # fmt: skip
    (tmp_path / "bad.toml").write_text("[cta]\ntau_q = 0.5\n")
    with pytest.raises(CtacError, match="not a CTA settings file"):
        read_settings(tmp_path / "bad.toml")


def test_settings_files_without_a_search_table_still_read(tmp_path: Path) -> None:
    (tmp_path / "old.toml").write_text(
        '[cta]\ntau_q = 0.3\ntau_kv = 0.18\nhash_bits = 4\nmethod = "hash-leader"\n'
        'granularity = "head"\n[fidelity]\ntarget_cosine = 0.999\nmean_cosine = 0.9995\n'
        "min_cosine = 0.998\nsamples = 4\n"
    )
    settings = read_settings(tmp_path / "old.toml")
    assert settings.method == "hash-leader" and settings.search == []
    assert "[search]" not in settings.to_toml()


# Text calibration data


def _tokenizer(path: Path, pad: str = "template") -> Path:
    """A tiny WordLevel tokenizer.json: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, then WORDS (ids below
    the test models' vocabulary of 256); a post-processor adds [CLS] ... [SEP]. `pad`: "config"
    (padding configured with id 9), "template" ([PAD] in the vocabulary) or "none" (neither)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"[UNK]": 1, "[CLS]": 2, "[SEP]": 3} | {w: 4 + i for i, w in enumerate(WORDS)}
    if pad != "none":
        vocab["[PAD]"] = 0
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    if pad == "config":
        tokenizer.enable_padding(pad_id=9, pad_token="[PAD]")
    tokenizer.save(str(path))
    return path


def _ids(text: str) -> list[int]:
    return [2, *(4 + WORDS.index(w) for w in text.split()), 3]


SHORT = "the cat sat on a mat and dog ran"  # 9 words
LONG = " ".join(WORDS * 3)  # 33 words: truncated
TINY = "the cat sat"  # 3 words: skipped


def test_text_samples_are_tokenized_padded_and_truncated(tmp_path: Path) -> None:
    from ctac.calibration_data import load_calibration_data, load_tokenizer, pad_id
    from ctac.importer import import_model

    (tmp_path / "a.txt").write_text(f"{SHORT}\n\n{TINY}\n\n  \n{LONG}\n")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "b.txt").write_text(f"{SHORT} mat\n{SHORT}\n")  # no blank line: one
    (tmp_path / "texts" / "skipped.md").write_text(LONG)
    module = import_model(BERT, {"input_ids": [1, 16], "attention_mask": [1, 16]}).module
    tokenizer = _tokenizer(tmp_path / "tokenizer.json")
    data = [tmp_path / "a.txt", tmp_path / "texts"]
    samples = load_calibration_data(module, data, tokenizer)
    assert len(samples) == 3 and all(set(s) == {"input_ids", "attention_mask"} for s in samples)
    assert all(s["input_ids"].shape == (1, 16) and s["input_ids"].dtype == np.int64
               for s in samples)  # fmt: skip
    first, long, file = (s["input_ids"][0].tolist() for s in samples)
    assert first == _ids(SHORT) + [0] * 5  # [CLS] 9 words [SEP], padded with [PAD]
    assert samples[0]["attention_mask"][0].tolist() == [1] * 11 + [0] * 5
    assert long == _ids(" ".join((WORDS * 3)[:14]))  # [CLS] 14 words [SEP]: truncated
    assert samples[1]["attention_mask"].sum() == 16
    assert file == _ids(f"{SHORT} mat {SHORT}")[:15] + [3]
    assert len(load_calibration_data(module, data, tokenizer, max_samples=2)) == 2
    # The pad id: the tokenizer's padding config, else its [PAD] token, else 0.
    assert pad_id(load_tokenizer(_tokenizer(tmp_path / "c.json", pad="config"))) == 9
    assert pad_id(load_tokenizer(tokenizer)) == 0
    assert pad_id(load_tokenizer(_tokenizer(tmp_path / "n.json", pad="none"))) == 0
    padded = load_calibration_data(module, data[:1], tmp_path / "c.json")[0]["input_ids"][0]
    assert padded.tolist() == _ids(SHORT) + [9] * 5
    # A batch of 2 rows takes 2 paragraphs; the last batch repeats the first paragraph.
    module = import_model(BERT, {"input_ids": [2, 16], "attention_mask": [2, 16]}).module
    batches = load_calibration_data(module, data, tokenizer)
    assert [b["input_ids"].shape for b in batches] == [(2, 16), (2, 16)]
    assert batches[1]["input_ids"][1].tolist() == first


def test_text_calibration_then_compile(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    paragraphs = [" ".join(rng.choice(WORDS[:5], size=12)) for _ in range(3)]
    (tmp_path / "calib.txt").write_text("\n\n".join(paragraphs) + "\n")
    tokenizer = _tokenizer(tmp_path / "tokenizer.json")
    out = tmp_path / "cta.toml"
    assert main(["calibrate", str(BERT), "--shape", BERT_1x16, "--data", str(tmp_path / "calib.txt"),
                 "--tokenizer", str(tokenizer), "--no-verify-attention", "-o", str(out)]) == 0  # fmt: skip
    settings = read_settings(out)
    assert settings.samples == 3 and settings.method == "hash-leader"
    assert len(settings.cluster_ratios) == 2  # two attention layers
    assert settings.mean_cosine >= settings.target_cosine
    # One [search] line (the default: just --cta-method), matching [cta].
    assert [r.method for r in settings.search] == ["hash-leader"]
    assert settings.search[0].tau_q == settings.tau_q and settings.search[0].cycles > 0
    assert read_settings(out).to_toml() == out.read_text()  # round trip
    capsys.readouterr()
    assert main(["compile", str(BERT), "--shape", BERT_1x16, "--attention", "cta",
                 "--no-verify-attention", "--cta-settings", str(out), "--cta-policy", "always",
                 "--emit", "cta"]) == 0  # fmt: skip
    assert "cta.cluster" in capsys.readouterr().out


def test_method_search_chooses_the_cheapest_method_meeting_the_target(tmp_path: Path) -> None:
    model = _self_attention_model(tmp_path / "attention.onnx")
    data = _calibration_data(tmp_path / "calib.npz", samples=4, seed=1)
    out = tmp_path / "cta.toml"
    assert main(["calibrate", str(model), "--shape", "x=1x12x16", "--data", str(data),
                 "--methods", "hash-leader,leader,hash-spread", "-o", str(out)]) == 0  # fmt: skip
    settings = read_settings(out)
    search = {r.method: r for r in settings.search}
    assert list(search) == ["hash-leader", "leader", "hash-spread"]
    assert search["hash-leader"].cycles > 0 and search["leader"].cycles > 0
    # hash-spread has no CLUSTER instruction: calibrated, but not modelled, so not chosen.
    assert search["hash-spread"].cycles is None and "no CLUSTER form" in search["hash-spread"].note
    costed = [r for r in settings.search if r.meets_target and r.cycles is not None]
    assert costed
    cheapest = min(costed, key=lambda r: r.cycles)
    assert settings.method == cheapest.method and settings.tau_q == cheapest.tau_q
    assert all(r.mean_cosine >= 0.999 for r in settings.search if r.meets_target)
    with pytest.raises(CtacError, match="unknown clustering method"):
        main(["--debug", "calibrate", str(model), "--shape", "x=1x12x16", "--data", str(data),
              "--methods", "hash-leader,kmeans"])  # fmt: skip


def _renamed_mask_model(path: Path) -> Path:
    """bert_ts_eager with attention_mask renamed: an input text data cannot fill."""
    model = onnx.load(str(BERT))
    for value in model.graph.input:
        if value.name == "attention_mask":
            value.name = "segment_mask"
    for node in model.graph.node:
        node.input[:] = ["segment_mask" if n == "attention_mask" else n for n in node.input]
    onnx.save(model, str(path))
    return path


def test_text_calibration_errors(tmp_path: Path, capsys) -> None:
    """Each one `error:` line, exit status 2, no traceback (in process, but for the first, to
    keep the suite fast: main() prints the line and returns the status the process exits with)."""
    (tmp_path / "calib.txt").write_text(f"{SHORT}\n")
    (tmp_path / "tiny.txt").write_text(f"{TINY}\n\nthe\n")
    (tmp_path / "broken.json").write_text("{}")
    tokenizer = str(_tokenizer(tmp_path / "tokenizer.json"))
    text = str(tmp_path / "calib.txt")

    def calibrate(model: Path, shape: str, *args: str, fragments: tuple[str, ...]) -> None:
        argv = ["calibrate", str(model), "--shape", shape, "--no-verify-attention", *args]
        capsys.readouterr()
        status = main(argv)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
        assert "Traceback" not in err and all(f in lines[0] for f in fragments), err

    assert_user_error(
        run_ctac("calibrate", str(BERT), "--shape", BERT_1x16, "--no-verify-attention",
                 "--data", text),
        "needs --tokenizer",
    )  # fmt: skip
    missing = str(tmp_path / "nope.json")
    calibrate(BERT, BERT_1x16, "--data", text, "--tokenizer", missing,
              fragments=("cannot read tokenizer", "nope.json"))  # fmt: skip
    broken = str(tmp_path / "broken.json")
    calibrate(BERT, BERT_1x16, "--data", text, "--tokenizer", broken,
              fragments=("cannot read tokenizer", "broken.json"))  # fmt: skip
    calibrate(BERT, BERT_1x16, "--data", str(tmp_path / "tiny.txt"), "--tokenizer", tokenizer,
              fragments=("no usable paragraph",))  # fmt: skip
    calibrate(MODELS / "vit_ts_eager.onnx", "pixel_values=1x3x32x32", "--data", text,
              "--tokenizer", tokenizer,
              fragments=("needs a model with an input_ids input", "pixel_values"))  # fmt: skip
    renamed = _renamed_mask_model(tmp_path / "renamed.onnx")
    calibrate(renamed, "input_ids=1x16,segment_mask=1x16", "--data", text, "--tokenizer",
              tokenizer, fragments=("cannot fill input(s) ['segment_mask']",))  # fmt: skip


def test_pooled_fidelity_compares_sentence_embeddings(tmp_path: Path, capsys) -> None:
    """--fidelity pooled compares each sequence's outputs mean-pooled over its real tokens (padding
    excluded); the window and the measure travel in the settings file; on these samples the
    pooled search keeps a threshold at least as coarse as the per-row one (pooling averages the
    per-token errors out)."""
    from ctac.calibrate import _pooled

    array = np.arange(12, dtype=np.float64).reshape(1, 3, 4)
    mask = np.array([[1, 1, 0]])
    np.testing.assert_allclose(_pooled(array, mask), [[2.0, 3.0, 4.0, 5.0]])
    rng = np.random.default_rng(0)
    paragraphs = [" ".join(rng.choice(WORDS[:5], size=12)) for _ in range(3)]
    (tmp_path / "calib.txt").write_text("\n\n".join(paragraphs) + "\n")
    tokenizer = _tokenizer(tmp_path / "tokenizer.json")
    taus = {}
    for measure in ("rows", "pooled"):
        out = tmp_path / f"{measure}.toml"
        assert main(["calibrate", str(BERT), "--shape", BERT_1x16, "--data",
                     str(tmp_path / "calib.txt"), "--tokenizer", str(tokenizer),
                     "--no-verify-attention", "--fidelity", measure, "--cta-window", "4",
                     "-o", str(out)]) == 0  # fmt: skip
        settings = read_settings(out)
        assert settings.measure == measure and settings.window == 4
        assert "window=4" in settings.compress_spec()
        taus[measure] = settings.tau_q
    assert taus["pooled"] >= taus["rows"]
    capsys.readouterr()
