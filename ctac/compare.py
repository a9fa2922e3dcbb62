"""`ctac compare`: one model, every way of running its attention, in one table.

Modes share the accelerator and the inputs: exact attention, CTA (compressed) attention when the
cta-compress pass is available, and the roofline of the GPU baseline on the same operations.
Each mode reports whole-model and attention-only time and energy, and its error against
onnxruntime; speedup and energy saving are relative to exact attention on the same accelerator
(the first mode), in the table and in the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from xdsl.dialects.builtin import ModuleOp

from ctac.emit import compile_module
from ctac.hw import Hardware
from ctac.run import attention_report, compare_with_onnxruntime, execute, random_inputs
from ctac.runtime.costmodel import Profile, simulate
from ctac.runtime.gpu import roofline
from ctac.runtime.sources import parse_source


@dataclass
class ModeResult:
    mode: str
    seconds: float
    energy_j: float
    # Busy time: each attention instruction's time on its unit, summed over units (overlapping
    # units count twice, so it can exceed the whole model's time); what the attention columns
    # and ratios use, as the paper's attention-only figures do.
    attention_seconds: float
    attention_energy_j: float
    max_abs_err: float | None
    details: dict = field(default_factory=dict)
    profile: Profile | None = None
    # Wall time: while at least one attention instruction runs (the union of their intervals);
    # never more than the whole model's time.
    attention_wall_seconds: float = 0.0


def _attention_share(profile: Profile) -> tuple[float, float, float]:
    """Busy seconds (summed over units), wall seconds (the union of their intervals) and joules
    of the attention instructions."""
    attention = [t for t in profile.timings if parse_source(t.source).is_attention]
    busy = sum(t.end - t.start for t in attention)
    energy = sum(t.energy_pj for t in attention)
    return busy / profile.clock_hz, covered_cycles(attention) / profile.clock_hz, energy * 1e-12


def covered_cycles(timings: list) -> int:
    """Cycles during which at least one of `timings` ([start, end) each) runs."""
    covered, reach = 0, None
    for start, end in sorted((t.start, t.end) for t in timings):
        if reach is None or start > reach:
            covered += end - start
            reach = end
        elif end > reach:
            covered += end - reach
            reach = end
    return covered


def accelerator_mode(
    name: str, module: ModuleOp, hw: Hardware, model: Path, inputs: dict
) -> ModeResult:
    program = compile_module(module, hw)
    outputs, stats = execute(program, hw, inputs)
    profile = simulate(program, hw, stats.clusters)
    errors = compare_with_onnxruntime(model, inputs, outputs)
    attention_seconds, attention_wall, attention_energy = _attention_share(profile)
    return ModeResult(
        name,
        profile.seconds,
        profile.energy_pj * 1e-12,
        attention_seconds,
        attention_energy,
        max((e["max_abs_err"] for e in errors.values()), default=None),
        {
            "instructions": len(program.instructions),
            "cycles": profile.cycles,
            "dram_bytes": profile.dram_bytes,
            "attention": attention_report(program, stats),
        },
        profile,
        attention_wall,
    )


def gpu_mode(module: ModuleOp, hw: Hardware) -> ModeResult:
    seconds, joules, kernels = roofline(module, hw)
    attention = [k for k in kernels if k.name.startswith("cta.")]
    attention_seconds = sum(k.seconds for k in attention)
    power = hw.number("gpu", "power_w")
    return ModeResult(
        f"{hw.raw['gpu'].get('name', 'GPU')} roofline",
        seconds,
        joules,
        attention_seconds,
        attention_seconds * power,
        None,
        {"kernels": len(kernels)},
        attention_wall_seconds=attention_seconds,  # kernels run one after another
    )


def compare(
    model: Path,
    detected: ModuleOp,
    hw: Hardware,
    compressed: ModuleOp | None,
    seed: int = 0,
    elsa: ModuleOp | None = None,
) -> list[ModeResult]:
    program_inputs = random_inputs(compile_module(detected.clone(), hw), seed)
    results = [accelerator_mode("exact (accelerator)", detected, hw, model, program_inputs)]
    if compressed is not None:
        results.append(accelerator_mode("CTA (accelerator)", compressed, hw, model, program_inputs))
    if elsa is not None:
        results.append(accelerator_mode("ELSA (accelerator)", elsa, hw, model, program_inputs))
    results.append(gpu_mode(detected, hw))
    return results


ENERGY_UNITS = (("pJ", 1.0), ("nJ", 1e3), ("uJ", 1e6), ("mJ", 1e9), ("J", 1e12))


def energy_unit(picojoules: float) -> tuple[str, float]:
    """The unit a text table shows `picojoules` in (the largest with a value >= 1), and its
    size in picojoules."""
    chosen = ENERGY_UNITS[0]
    for unit in ENERGY_UNITS:
        if picojoules >= unit[1]:
            chosen = unit
    return chosen


def format_table(results: list[ModeResult]) -> str:
    """Every mode relative to exact attention on the same accelerator (the first row): speedup
    and energy saving are exact's time and energy over the mode's (above 1: better than exact).
    Energy in one unit, chosen by the exact row's magnitude and named in the header."""
    baseline = results[0]
    unit, size = energy_unit(baseline.energy_j * 1e12)
    to_unit = 1e12 / size
    header = (
        f"{'mode':<24}{'time ms':>10}{'energy ' + unit:>13}{'attn ms':>10}{'attn wall ms':>14}"
        f"{'attn ' + unit:>11}"
        f"{'speedup':>9}{'energy saving':>15}{'attn speedup':>14}{'attn energy saving':>20}"
        f"{'max abs err':>13}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        err = f"{result.max_abs_err:.2e}" if result.max_abs_err is not None else "n/a"
        lines.append(
            f"{result.mode:<24}{result.seconds * 1e3:>10.4f}{result.energy_j * to_unit:>13.3f}"
            f"{result.attention_seconds * 1e3:>10.4f}{result.attention_wall_seconds * 1e3:>14.4f}"
            f"{result.attention_energy_j * to_unit:>11.3f}"
            f"{_ratio(baseline.seconds, result.seconds):>9}"
            f"{_ratio(baseline.energy_j, result.energy_j):>15}"
            f"{_ratio(baseline.attention_seconds, result.attention_seconds):>14}"
            f"{_ratio(baseline.attention_energy_j, result.attention_energy_j):>20}{err:>13}"
        )
    lines.append(
        f"(speedup, energy saving: {baseline.mode}'s time and energy over each mode's; "
        "above 1 is better than exact attention on the same accelerator. attn ms: the attention "
        "layers' busy time summed over units, which the attn ratios use; attn wall ms: the time "
        "at least one of them runs)"
    )
    return "\n".join(lines)


def _ratio(a: float, b: float) -> str:
    if not b > 0:
        return "n/a"
    return f"{a / b:.2f}x" if a / b >= 0.1 else f"{a / b:.2g}x"


def to_json(results: list[ModeResult]) -> dict:
    """Units in the key names; ratios relative to the first mode (exact attention)."""
    baseline = results[0]

    def ratio(a: float, b: float) -> float | None:
        return a / b if b > 0 else None

    return {
        "baseline": baseline.mode,
        "modes": [
            {
                "mode": r.mode,
                "seconds": r.seconds,
                "energy_pj": r.energy_j * 1e12,
                "attention_seconds": r.attention_seconds,
                "attention_wall_seconds": r.attention_wall_seconds,
                "attention_energy_pj": r.attention_energy_j * 1e12,
                "speedup": ratio(baseline.seconds, r.seconds),
                "energy_saving": ratio(baseline.energy_j, r.energy_j),
                "attention_speedup": ratio(baseline.attention_seconds, r.attention_seconds),
                "attention_energy_saving": ratio(baseline.attention_energy_j, r.attention_energy_j),
                "max_abs_err": r.max_abs_err,
                **r.details,
            }
            for r in results
        ],
    }
