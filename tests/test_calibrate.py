"""`ctac calibrate` and `ctac compile --cta-settings`: thresholds that meet a target cosine on
calibration data, the measured fidelity and cluster ratios in a TOML file, and a compile that
uses them (and hands the cost-aware policy the calibrated cluster ratio)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from test_modes import _self_attention_model

from ctac.calibrate import read_settings
from ctac.cli import main
from ctac.errors import CtacError


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
                 "--cta-settings", str(settings_file), "--emit", "cta"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    taus = sorted({float(t) for t in re.findall(r"tau = ([0-9.e+-]+)", text)})
    scale = settings.layer_scale[0] if settings.layer_scale else 1.0
    assert taus == pytest.approx(sorted([settings.tau_kv * scale, settings.tau_q * scale]))
    # ... and the policy expects the calibrated cluster ratio.
    assert main(["compile", str(model), "--shape", "x=1x12x16", "--attention", "cta",
                 "--cta-settings", str(settings_file), "--cta-policy", "cost",
                 "-o", str(tmp_path / "p.ctab")]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert f"at {settings.cluster_ratio:g} clusters per token" in err


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
    run_passes(module, "canonicalize,detect-attention")
    samples = load_samples(held, {"x": (1, 12, 16)})
    exact = [evaluate(module, sample) for sample in samples]
    spec = (f"cta-compress{{tau-q={settings.tau_q:.4f} tau-kv={settings.tau_kv:.4f} "
            f"hash-bits={settings.hash_bits}}}")  # fmt: skip
    mean, _, _, _ = _fidelity(module, spec, samples, exact)
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
