"""bench/cta_study.py's accounting and bench/cta_report.py's selection, on a small test model and hand-made rows (the
study itself needs the MiniLM export and runs for minutes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import cta_study  # noqa: E402
from cta_report import POINTS, pareto_front, pick  # noqa: E402
from cta_study import Variant, attention_cost, is_attention_work  # noqa: E402


def test_attention_kinds() -> None:
    assert is_attention_work("cta.attention")
    assert is_attention_work("cta.cluster.kv")
    assert is_attention_work("cta.compressed_attention")
    assert not is_attention_work("cta.project")
    assert not is_attention_work("onnx.MatMul")


@pytest.mark.parametrize("attention", ["exact", "cta"])
def test_attention_cycles_of_a_small_model(tmp_path: Path, attention: str) -> None:
    from ctac.hw import load_hardware
    from ctac.run import execute, random_inputs
    from ctac.runtime.costmodel import simulate
    from ctac.runtime.sources import parse_source

    hw = load_hardware(None)
    shapes = {"input_ids": [2, 16], "attention_mask": [2, 16]}
    flags = ("--cta-policy", "always") if attention == "cta" else ()  # a CTA-only flag
    variant = Variant(attention, attention, attention, flags)
    program = cta_study.compile_program(
        REPO / "tests" / "models" / "bert_ts_eager.onnx", shapes, variant, tmp_path / "p", hw
    )
    _, stats = execute(program, hw, random_inputs(program, 0), progress=False)
    profile = simulate(program, hw, stats.clusters)
    cycles, energy = attention_cost(profile)
    kinds = [parse_source(t.source).kind for t in profile.timings]
    projections = sum(
        t.occupied for t, k in zip(profile.timings, kinds, strict=True) if k == "cta.project"
    )
    every_cta = sum(
        t.occupied for t, k in zip(profile.timings, kinds, strict=True) if k.startswith("cta.")
    )
    assert cycles > 0 and energy > 0 and projections > 0
    assert cycles == every_cta - projections
    assert cycles <= sum(t.occupied for t in profile.timings)
    if attention == "cta":
        assert any(k.startswith("cta.cluster") for k in kinds)


def test_pareto_front() -> None:
    points = [(1.0, 0.999), (0.5, 0.99), (0.6, 0.98), (0.4, 0.9), (1.2, 1.0), (0.5, 0.95)]
    assert pareto_front(points) == [3, 1, 0, 4]
    assert pareto_front([(1.0, 1.0), (1.0, 1.0)]) == [0, 1]  # ties do not dominate
    assert pareto_front([]) == []


def _row(name: str, cos_mean: float, cos_min: float, drop: int, attention: float, **extra) -> dict:
    return {"setting": name, "kind": "cta", "error": None, "cos_mean": cos_mean, "cos_min": cos_min,
            "retrieval_drop_passages": drop, "attention_cycles": attention, **extra}  # fmt: skip


def test_pick_points() -> None:
    no_loss, one_percent = POINTS
    rows = [
        {**_row("exact", 1.0, 1.0, 0, 100), "kind": "exact"},
        _row("safe", 0.9995, 0.997, 0, 80),
        _row("low min", 0.9995, 0.99, 0, 60),  # min cosine below 0.995: not no-loss
        _row("drops one", 0.9992, 0.996, 1, 50),  # one passage lost: only ~1% loss
        _row("lossy", 0.992, 0.95, 1, 30),
        _row("too lossy", 0.98, 0.9, 0, 10),
        _row("kept exact", 1.0, 1.0, 0, 5, compressed_layers=0),  # cost policy: nothing compressed
        {**_row("failed", 1.0, 1.0, 0, 1), "error": "no ISA form"},
    ]
    assert pick(rows, no_loss)["setting"] == "safe"
    assert pick(rows, one_percent)["setting"] == "lossy"
    assert pick(rows[:1], no_loss) is None
