"""`ctac compare`: one model, every way of running its attention, in one table.

Modes share the accelerator and the inputs: exact attention, CTA (compressed) attention when the
cta-compress pass is available, and the roofline of the GPU baseline on the same operations.
Each mode reports whole-model and attention-only time and energy, and its error against
onnxruntime; the table gives CTA's speedup and energy saving over each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from xdsl.dialects.builtin import ModuleOp

from ctac.emit import program_from_module
from ctac.hw import Hardware
from ctac.passes.lower_to_isa import lower_module
from ctac.run import attention_report, compare_with_onnxruntime, execute, random_inputs
from ctac.runtime.costmodel import Profile, simulate
from ctac.runtime.gpu import roofline
from ctac.runtime.sources import parse_source


@dataclass
class ModeResult:
    mode: str
    seconds: float
    energy_j: float
    attention_seconds: float
    attention_energy_j: float
    max_abs_err: float | None
    details: dict = field(default_factory=dict)
    profile: Profile | None = None


def _attention_share(profile: Profile) -> tuple[float, float]:
    """Seconds and joules of attention instructions (busy time of their unit, energy)."""
    attention = [t for t in profile.timings if parse_source(t.source).is_attention]
    cycles = sum(t.end - t.start for t in attention)
    energy = sum(t.energy_pj for t in attention)
    return cycles / profile.clock_hz, energy * 1e-12


def accelerator_mode(
    name: str, module: ModuleOp, hw: Hardware, model: Path, inputs: dict
) -> ModeResult:
    program = program_from_module(lower_module(module, hw))
    outputs, stats = execute(program, hw, inputs)
    profile = simulate(program, hw, stats.clusters)
    errors = compare_with_onnxruntime(model, inputs, outputs)
    attention_seconds, attention_energy = _attention_share(profile)
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
    )


def compare(
    model: Path,
    detected: ModuleOp,
    hw: Hardware,
    compressed: ModuleOp | None,
    seed: int = 0,
    elsa: ModuleOp | None = None,
) -> list[ModeResult]:
    program_inputs = random_inputs(program_from_module(lower_module(detected.clone(), hw)), seed)
    results = [accelerator_mode("exact (accelerator)", detected, hw, model, program_inputs)]
    if compressed is not None:
        results.append(accelerator_mode("CTA (accelerator)", compressed, hw, model, program_inputs))
    if elsa is not None:
        results.append(accelerator_mode("ELSA (accelerator)", elsa, hw, model, program_inputs))
    results.append(gpu_mode(detected, hw))
    return results


def format_table(results: list[ModeResult]) -> str:
    reference = next((r for r in results if r.mode.startswith("CTA")), results[0])
    header = (
        f"{'mode':<24}{'time ms':>10}{'energy mJ':>11}{'attn ms':>10}{'attn mJ':>10}"
        f"{'speedup':>9}{'energy x':>10}{'attn speedup':>14}{'attn energy x':>15}{'max abs err':>13}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        err = f"{result.max_abs_err:.2e}" if result.max_abs_err is not None else "n/a"
        lines.append(
            f"{result.mode:<24}{result.seconds * 1e3:>10.4f}{result.energy_j * 1e3:>11.4f}"
            f"{result.attention_seconds * 1e3:>10.4f}{result.attention_energy_j * 1e3:>10.4f}"
            f"{result.seconds / reference.seconds:>9.2f}{result.energy_j / reference.energy_j:>10.2f}"
            f"{_ratio(result.attention_seconds, reference.attention_seconds):>14}"
            f"{_ratio(result.attention_energy_j, reference.attention_energy_j):>15}{err:>13}"
        )
    lines.append(
        f"(speedup and energy x: each mode's time and energy divided by {reference.mode}'s)"
    )
    return "\n".join(lines)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "n/a"


def to_json(results: list[ModeResult]) -> dict:
    return {
        "modes": [
            {
                "mode": r.mode,
                "seconds": r.seconds,
                "energy_j": r.energy_j,
                "attention_seconds": r.attention_seconds,
                "attention_energy_j": r.attention_energy_j,
                "max_abs_err": r.max_abs_err,
                **r.details,
            }
            for r in results
        ]
    }
