"""`ctac demo`: the story it prints is the one its numbers tell, and its real-weight step."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from ctac.cli import main
from ctac.commands import demo_real


def test_demo_writes_its_artifacts_and_explains_the_verdict(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-real-weights"]) == 0
    text = capsys.readouterr().out
    for name in ("profile.json", "trace.json", "exact_vs_cta_cycles.png", "compare.json"):
        assert (out / name).is_file(), name
    rows = {row["mode"]: row for row in json.loads((out / "compare.json").read_text())["modes"]}
    exact = next(row for mode, row in rows.items() if mode.startswith("exact"))
    cta = next(row for mode, row in rows.items() if mode.startswith("CTA"))
    relative = cta["cycles"] / exact["cycles"]
    # The verdict line states the measured ratio and agrees with it.
    verdict = re.search(r"why: CTA (pays|does not pay) here \((\d+\.\d+)x", text)
    assert verdict, text
    assert verdict.group(1) == ("pays" if relative < 1 else "does not pay")
    assert float(verdict.group(2)) == pytest.approx(relative, abs=0.006)
    assert "crossover (cost model)" in text
    assert "[4/4]" in text and "[5/5]" not in text  # the real-weight step was skipped


def test_real_weight_step_says_how_to_get_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("CTAC_CACHE", str(tmp_path))  # no exported model here
    lines: list[str] = []
    demo_real.real_weight_step(128, lines.append)
    assert len(lines) == 1 and lines[0].startswith("real weights: skipped")
    assert "export_test_models.py --minilm" in lines[0]


def _real_weights_or_skip(tmp_path: Path, monkeypatch) -> demo_real.RealWeights:
    found = demo_real.find_real_weights()
    if isinstance(found, str):
        pytest.skip(f"real weights not on this machine: {found}")
    # A cache folder of the test's own (the model linked in), so the calibration is computed.
    os.symlink(found.model, tmp_path / demo_real.MODEL_FILE)
    monkeypatch.setenv("CTAC_CACHE", str(tmp_path))
    return demo_real.RealWeights(tmp_path / demo_real.MODEL_FILE, found.tokenizer)


# What `ctac calibrate` wrote for all-MiniLM-L6-v2 at 32 tokens on the demo's 8 calibration
# passages (the search itself takes minutes on a loaded machine; tests/test_calibrate.py covers it).
MINILM_32_SETTINGS = """\
[cta]
tau_q = 0.5000
tau_kv = 0.3000
hash_bits = 4
method = "hash-leader"
granularity = "head"
window = 8
layer_scale = [1.2500, 1.0000, 1.0000, 1.2500, 1.0000, 1.0000]

[fidelity]
target_cosine = 0.999
mean_cosine = 0.999049
min_cosine = 0.998642
samples = 8
measure = "pooled"

[clusters]
ratios = [0.5190, 0.6693, 0.5715, 0.4632, 0.5480, 0.4720]
q = [0.4785, 0.6227, 0.5286, 0.4141, 0.5195, 0.4359]
kv = [0.5596, 0.7158, 0.6143, 0.5124, 0.5765, 0.5081]
buckets = 5.1834
"""


def test_real_weight_step_calibrates_once_and_never_loses(tmp_path, monkeypatch):
    """all-MiniLM-L6-v2 with real weights at 32 tokens (short, to stay quick): the calibration
    is searched once (then served from the cache), on passages disjoint from the evaluated ones;
    the policy's program is never slower than exact; compressing every layer changes the
    outputs and the cycles."""
    from ctac.calibrate import read_settings

    real = _real_weights_or_skip(tmp_path, monkeypatch)
    fixture = tmp_path / "minilm_32.toml"
    fixture.write_text(MINILM_32_SETTINGS)
    searched: list[list[dict]] = []

    def calibrate(module, samples, target, **options):
        searched.append(samples)
        assert target == demo_real.TARGET_COSINE and options["measure"] == "pooled"
        return read_settings(fixture)

    monkeypatch.setattr("ctac.calibrate.calibrate", calibrate)
    lines: list[str] = []
    exact, policy, every = demo_real.evaluate_real_weights(real, 32, lines.append)
    assert any(line.startswith("calibrating on 8 passages") for line in lines)
    assert len(searched) == 1 and len(searched[0]) == demo_real.CALIBRATION_PASSAGES
    assert len(list((tmp_path / "demo").glob("calibration_L32_*.toml"))) == 1
    # Calibration and evaluation passages are disjoint.
    evaluated = demo_real.prose_passages(real.tokenizer, 32)[8:12]
    calibrated = {tuple(sample["input_ids"][0]) for sample in searched[0]}
    assert not calibrated & {tuple(row) for row in evaluated}
    assert exact.cosines == pytest.approx([1.0] * demo_real.EVALUATION_PASSAGES)
    assert policy.cycles <= 1.01 * exact.cycles
    assert min(policy.cosines) > 0.99
    assert every.cycles != exact.cycles and min(every.cosines) < 1.0
    assert len(policy.policy) == 6  # one decision per MiniLM layer, each with its reason
    assert all(decision["reason"] for decision in policy.policy)
    lines.clear()
    demo_real._calibration(real, 32, demo_real.prose_passages(real.tokenizer, 32)[:8], lines.append)
    assert len(searched) == 1 and lines[0].startswith("calibration: reusing")


def test_real_weight_step_refuses_a_length_the_prose_cannot_fill(tmp_path, monkeypatch):
    from ctac.errors import CtacError

    real = _real_weights_or_skip(tmp_path, monkeypatch)
    with pytest.raises(CtacError, match="pydoc topics have 100000 tokens"):
        demo_real.evaluate_real_weights(real, 100_000, lambda line: None)
