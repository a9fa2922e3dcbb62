"""How compile cost and accelerator cost scale with sequence length, on the long test models.

For the long-context test models in tests/models/ (bert_long: 4096 positions; gpt2_long: 2048),
batch 1, each sequence length and each attention mode, `--attention exact` and `--attention cta`
(cta-compress with the CLI's default settings, see common.attention_passes), this compiles the
model the way `ctac compile` does and runs the cost model timing-only (no numerics: dynamic
sizes such as CTA's cluster counts are charged at their nominal worst case, i.e. every token its
own cluster). Recorded per point: total cycles, attention busy cycles (busy cycles of the
instructions of cta.attention / cta.compressed_attention and of the compression ops cta.cluster,
cta.pool, cta.recover, summed over units; not the projections), energy in pJ (dynamic + static), DRAM bytes, instructions, compile
seconds per stage and the peak RSS of the compile. Per model and mode: the exponent of attention
(and total) cycles vs length, a least-squares line through log(cycles) against log(length).

With --check, the interpreter also runs each program on random inputs (seeded): exact against
onnxruntime (max abs err), CTA against onnxruntime (its approximation error, no bound) and with
the cycles the cost model charges for the cluster counts that run formed.

Every point runs in its own Python subprocess, so the peak RSS (ru_maxrss) is that compile's, and
a refusal (the compiler's error, e.g. "key tiling is not implemented"), a crash or a timeout costs
only that point: it is recorded as {"error": ...} and the run goes on. Exit status 0 when at least
one point ran. Prints a table and writes bench/results/scaling.json and scaling.png (log-log
cycles vs length, both modes, one panel per model).

    python bench/scaling.py                          # bert_long 512..4096, gpt2_long 1024 2048
    python bench/scaling.py --quick                  # the smallest default length of each model
    python bench/scaling.py --lengths 128 256 512 --check
    python bench/scaling.py --models gpt2_long --modes exact --lengths 256 512
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    REPO,
    RESULTS,
    attention_passes,
    compile_attention_stages,
    machine,
    shapes_for,
)

if TYPE_CHECKING:
    from ctac.hw import Hardware
    from ctac.runtime.costmodel import Profile
    from ctac.runtime.program import Program

MODELS = REPO / "tests" / "models"
DEFAULT_LENGTHS = {"bert_long": [512, 1024, 2048, 4096], "gpt2_long": [1024, 2048]}
MODES = ("exact", "cta")
ENERGY_UNIT = "pJ"
DEFAULT_TIMEOUT_S = 1800.0
COMPILER_MODULES = (
    "ctac.importer",
    "ctac.pipeline",
    "ctac.passes.detect_attention",
    "ctac.passes.lower_to_isa",
    "ctac.emit",
)


# --------------------------------------------------------------------------------------------
# One point (runs in a subprocess)
# --------------------------------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def cost_summary(profile: Profile) -> dict:
    """Whole-program and attention-only cycles, energy and traffic of a simulated program."""
    from ctac.runtime.sources import parse_source

    # Attention proper and everything CTA adds around it (clustering, pooling, recovery), not the
    # Q/K/V projections (cta.project), which are linear in the length and the same in both modes.
    attention = [
        t
        for t in profile.timings
        if ".".join(parse_source(t.source).kind.split(".")[:2])  # "<op>.<role>" -> "<op>"
        in ("cta.attention", "cta.compressed_attention", "cta.cluster", "cta.pool", "cta.recover")
    ]
    return {
        "cycles": profile.cycles,
        "attention_busy_cycles": sum(t.occupied for t in attention),
        "energy_pj": profile.energy_pj,
        "dynamic_energy_pj": profile.dynamic_energy_pj,
        "static_energy_pj": profile.static_energy_pj,
        "attention_energy_pj": sum(t.energy_pj for t in attention),
        "dram_bytes": profile.dram_bytes,
        "attention_dram_bytes": sum(t.dram_bytes for t in attention),
        "macs": profile.macs,
    }


def measure_point(
    model: Path, mode: str, length: int, check: bool, verify: bool, seed: int
) -> dict:
    """Compile one model at batch 1 x length in one mode, simulate it timing-only and (check)
    run it; a compiler refusal is returned as {"error": ...}."""
    import importlib

    from ctac.errors import CtacError
    from ctac.hw import load_hardware
    from ctac.runtime.costmodel import simulate

    for module in COMPILER_MODULES:  # imported before the baseline, so the rest is the compile's
        importlib.import_module(module)
    hw = load_hardware(None)
    shapes = shapes_for(model, length)
    rss_before = peak_rss_bytes()
    try:
        times, program = compile_attention_stages(model, shapes, mode, hw, verify=verify)
    except CtacError as exc:
        return {"error": str(exc)}
    rss_peak = peak_rss_bytes()
    start = time.perf_counter()
    profile = simulate(program, hw)
    point = {
        "instructions": len(program.instructions),
        **cost_summary(profile),
        "compile_s": times["total_s"],
        "compile_stages_s": times,
        "compile_peak_rss_bytes": rss_peak,
        "rss_before_compile_bytes": rss_before,
        "simulate_s": time.perf_counter() - start,
    }
    if check:
        point["check"] = check_point(model, program, hw, seed)
    return point


def check_point(model: Path, program: Program, hw: Hardware, seed: int) -> dict:
    """Run the program in the interpreter on seeded random inputs and compare with onnxruntime;
    with CLUSTER instructions, also the cost of the cluster counts this run formed."""
    from ctac.run import attention_report, compare_with_onnxruntime, execute, random_inputs
    from ctac.runtime.costmodel import simulate

    start = time.perf_counter()
    inputs = random_inputs(program, seed)
    outputs, stats = execute(program, hw, inputs, progress=False)
    interpret_s = time.perf_counter() - start
    errors = compare_with_onnxruntime(model, inputs, outputs)
    result = {
        "seed": seed,
        "interpret_s": interpret_s,
        "max_abs_err_vs_onnxruntime": max(e["max_abs_err"] for e in errors.values()),
        "max_rel_err_vs_onnxruntime": max(e["max_rel_err"] for e in errors.values()),
    }
    if stats.clusters:
        result["measured"] = cost_summary(simulate(program, hw, stats.clusters))
        result["attention"] = attention_report(program, stats)
    return result


def point_main(args: argparse.Namespace) -> int:
    """--point MODEL MODE LENGTH: measure one point and write its JSON to --point-out."""
    name, mode, length = args.point
    try:
        point = measure_point(
            MODELS / f"{name}.onnx", mode, int(length), args.check, args.verify_attention, args.seed
        )
    except Exception as exc:  # a bug rather than a refusal; recorded as that point's error
        point = {"error": f"internal error: {type(exc).__name__}: {exc}"}
    Path(args.point_out).write_text(json.dumps(point))
    return 0


# --------------------------------------------------------------------------------------------
# Driving
# --------------------------------------------------------------------------------------------


def run_point(name: str, mode: str, length: int, args: argparse.Namespace) -> dict:
    """One point in a fresh Python process; a crash or timeout becomes {"error": ...}."""
    with tempfile.TemporaryDirectory(prefix="ctac-scaling-") as folder:
        out = Path(folder) / "point.json"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--point",
            name,
            mode,
            str(length),
            "--point-out",
            str(out),
            "--seed",
            str(args.seed),
            "--verify-attention" if args.verify_attention else "--no-verify-attention",
        ]
        if args.check and length <= args.check_max_length:
            command.append("--check")
        start = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {args.timeout:g} s"}
        wall = time.perf_counter() - start
        if not out.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return {"error": f"worker exited {done.returncode}: {' | '.join(tail)}"}
        point = json.loads(out.read_text())
    if "error" not in point:
        point["wall_s"] = wall
        if args.check and length > args.check_max_length:
            point["check"] = {"skipped": f"length > --check-max-length {args.check_max_length}"}
    return point


def fit_exponent(lengths: list[int], values: list[float]) -> float | None:
    """Slope of the least-squares line through (log length, log value); None below 2 points."""
    pairs = [(n, v) for n, v in zip(lengths, values, strict=True) if n > 0 and v > 0]
    if len({n for n, _ in pairs}) < 2:
        return None
    import numpy as np

    x = np.log([n for n, _ in pairs])
    y = np.log([v for _, v in pairs])
    slope, _ = np.polyfit(x, y, 1)
    return float(slope)


def fits(points: dict[str, dict]) -> dict:
    """Exponents of attention busy cycles and total cycles vs length over the points that ran."""
    ran = sorted((int(n), p) for n, p in points.items() if "error" not in p)
    lengths = [n for n, _ in ran]
    return {
        "lengths": lengths,
        "attention_cycles_exponent": fit_exponent(
            lengths, [p["attention_busy_cycles"] for _, p in ran]
        ),
        "total_cycles_exponent": fit_exponent(lengths, [p["cycles"] for _, p in ran]),
    }


def model_info(name: str) -> dict:
    manifest = json.loads((MODELS / "manifest.json").read_text())
    entry = next((m for m in manifest["models"] if m["file"] == f"{name}.onnx"), None)
    if entry is None:
        raise SystemExit(f"{name}.onnx is not in {MODELS / 'manifest.json'}")
    return {
        "file": str((MODELS / entry["file"]).relative_to(REPO)),
        "family": entry["family"],
        "exporter": entry["exporter"],
        "attn_implementation": entry["attn_implementation"],
        "max_positions": entry["max_positions"],
        "hidden_size": entry["hidden_size"],
        "num_heads": entry["num_heads"],
        "head_dim": entry["hidden_size"] // entry["num_heads"],
        "num_attention_layers": entry["num_attention_layers"],
    }


def short_error(error: str, limit: int = 160) -> str:
    """The first two lines of an error (a lowering refusal names its first op on line two)."""
    return " ".join(line.strip() for line in error.splitlines()[:2])[:limit]


def format_row(name: str, mode: str, length: int, point: dict) -> str:
    head = f"{name:<10}{mode:<6}{length:>6}"
    if "error" in point:
        return f"{head}  failed: {short_error(point['error'], 120)}"
    share = point["attention_busy_cycles"] / point["cycles"] if point["cycles"] else 0.0
    check = point.get("check", {})
    err = (
        f"{check['max_abs_err_vs_onnxruntime']:.2e}"
        if "max_abs_err_vs_onnxruntime" in check
        else "-"
    )
    measured = f"{check['measured']['cycles']:,}" if "measured" in check else "-"
    return (
        f"{head}{point['instructions']:>8,}{point['cycles']:>14,}{point['attention_busy_cycles']:>14,}"
        f"{share:>8.0%}{point['energy_pj'] / 1e6:>12,.2f}{point['dram_bytes'] / 1e6:>10,.2f}"
        f"{point['compile_s']:>10.2f}{point['compile_peak_rss_bytes'] / 2**20:>10,.0f}"
        f"{err:>11}{measured:>14}"
    )  # fmt: skip


HEADER = (
    f"{'model':<10}{'mode':<6}{'length':>6}{'instrs':>8}{'cycles':>14}{'attn busy':>14}"
    f"{'attn %':>8}{'energy uJ':>12}{'DRAM MB':>10}{'compile s':>10}{'peak MiB':>10}"
    f"{'max|err|':>11}{'CTA cycles*':>14}"
)  # fmt: skip


def plot(result: dict, path: Path) -> None:
    """Log-log cycles vs length: one panel per model, total (solid) and attention busy (dashed)
    cycles of each mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    models = result["models"]
    figure, axes = plt.subplots(1, len(models), figsize=(6.4 * len(models), 4.8), squeeze=False)
    colors = {"exact": "#4C72B0", "cta": "#DD8452"}
    for axis, (name, data) in zip(axes[0], models.items(), strict=True):
        info = data["model"]
        drawn = False
        ticks: set[int] = set()
        for mode, mode_data in data["modes"].items():
            ran = sorted((int(n), p) for n, p in mode_data["points"].items() if "error" not in p)
            if not ran:
                continue
            drawn = True
            lengths = [n for n, _ in ran]
            ticks.update(lengths)
            exponent = mode_data["fit"]["attention_cycles_exponent"]
            slope = f", attention ~ L^{exponent:.2f}" if exponent is not None else ""
            color = colors.get(mode)
            axis.plot(lengths, [p["cycles"] for _, p in ran], "o-", color=color,
                      label=f"{mode}: total cycles")  # fmt: skip
            axis.plot(lengths, [p["attention_busy_cycles"] for _, p in ran], "s--", color=color,
                      label=f"{mode}: attention busy cycles{slope}")  # fmt: skip
            measured = [(n, p["check"]["measured"]["cycles"]) for n, p in ran
                        if "measured" in p.get("check", {})]  # fmt: skip
            if measured:
                axis.plot([n for n, _ in measured], [c for _, c in measured], "^:", color=color,
                          label=f"{mode}: total cycles, clusters of a run on random tokens")  # fmt: skip
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        if ticks:
            axis.set_xticks(sorted(ticks), [str(n) for n in sorted(ticks)])
            axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        axis.set_xlabel("sequence length (tokens, batch 1)")
        axis.set_ylabel("cycles (cost model, timing only)")
        axis.set_title(
            f"{name}: {info['num_attention_layers']} layers, hidden {info['hidden_size']}, "
            f"{info['num_heads']} heads x {info['head_dim']}",
            fontsize=10,
        )
        if drawn:
            axis.legend(fontsize=8)
        else:
            axis.text(0.5, 0.5, "no length compiled", ha="center", va="center",
                      transform=axis.transAxes)  # fmt: skip
        axis.grid(True, which="both", alpha=0.3)
    settings = result["settings"]
    figure.suptitle(
        f"Cycles vs sequence length, exact vs CTA ({settings['cta_passes']})\n"
        f"{settings['hardware']}, cost model timing-only (CTA at its nominal worst case: "
        "one cluster per token; dotted: sized by the clusters a --check run formed)",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        choices=sorted(DEFAULT_LENGTHS),
        default=list(DEFAULT_LENGTHS),
        help="which long test models (default both)",
    )
    parser.add_argument(
        "--modes", nargs="+", choices=MODES, default=list(MODES), help="attention modes"
    )
    parser.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        help="sequence lengths for every model (default: bert_long 512 1024 2048 4096, "
        "gpt2_long 1024 2048)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="only the smallest length of each model"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="also run the interpreter and compare with onnxruntime",
    )
    parser.add_argument(
        "--check-max-length",
        type=int,
        default=4096,
        help="--check only up to this length (default 4096)",
    )
    parser.add_argument(
        "--verify-attention",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="prove each attention match numerically while compiling, as `ctac compile` does "
        "(default on; its seconds are part of the compile time)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --check inputs")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds per point before it is recorded as failed (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="folder for scaling.json and scaling.png"
    )
    parser.add_argument(
        "--point", nargs=3, metavar=("MODEL", "MODE", "LENGTH"), help=argparse.SUPPRESS
    )
    parser.add_argument("--point-out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def lengths_for(name: str, args: argparse.Namespace) -> list[int]:
    lengths = sorted(set(args.lengths or DEFAULT_LENGTHS[name]))
    return lengths[:1] if args.quick else lengths


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.point:
        return point_main(args)
    from ctac.hw import load_hardware

    hw = load_hardware(None)
    result: dict = {
        "benchmark": "scaling",
        "settings": {
            "batch": 1,
            "hardware": f"{hw.path} hardware config",
            "hardware_sha256": hw.digest.hex(),
            "clock_hz": hw.clock_hz,
            "cta_passes": attention_passes("cta"),
            "timing": "cost model timing-only (nominal sizes; CTA: one cluster per token)",
            "attention_cycles": "busy cycles of instructions whose source is a cta.* op, "
            "summed over units",
            "energy_unit": ENERGY_UNIT,
            "verify_attention": args.verify_attention,
            "check": args.check,
            "check_max_length": args.check_max_length if args.check else None,
            "compile_peak_memory": "ru_maxrss of a fresh subprocess right after the compile "
            "(includes the Python interpreter and ctac's imports, which rss_before_compile_bytes "
            "measures)",
        },
        "models": {},
        "failed": [],
        "machine": machine(),
    }
    print(HEADER)
    print("-" * len(HEADER))
    ran = 0
    for name in args.models:
        data = {"model": model_info(name), "modes": {}}
        result["models"][name] = data
        for mode in args.modes:
            points: dict[str, dict] = {}
            for length in lengths_for(name, args):
                if length > data["model"]["max_positions"]:
                    point = {
                        "error": f"length {length} is over the model's "
                        f"{data['model']['max_positions']} positions"
                    }
                else:
                    point = run_point(name, mode, length, args)
                points[str(length)] = point
                print(format_row(name, mode, length, point), flush=True)
                if "error" in point:
                    result["failed"].append(
                        {"model": name, "mode": mode, "length": length, "error": point["error"]}
                    )
                else:
                    ran += 1
            data["modes"][mode] = {"points": points, "fit": fits(points)}
    print("-" * len(HEADER))
    print(
        f"energy in {ENERGY_UNIT} in the JSON (uJ above); attn busy = busy cycles of attention "
        "and compression instructions (not projections) summed over units; * CTA cycles with "
        "the cluster counts of the --check run"
    )
    for name, data in result["models"].items():
        for mode, mode_data in data["modes"].items():
            fit = mode_data["fit"]
            exponents = ", ".join(
                f"{label} ~ L^{fit[key]:.2f}" if fit[key] is not None else f"{label}: n/a"
                for label, key in (
                    ("attention cycles", "attention_cycles_exponent"),
                    ("total cycles", "total_cycles_exponent"),
                )
            )
            print(f"{name} {mode}: {exponents} (lengths {fit['lengths'] or 'none'})")
    if result["failed"]:
        print(f"{len(result['failed'])} point(s) failed:")
        for failure in result["failed"]:
            where = f"{failure['model']} {failure['mode']} {failure['length']}"
            print(f"  {where}: {short_error(failure['error'])}")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.out / "scaling.json", args.out / "scaling.png"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {json_path}")
    if ran:
        plot(result, png_path)
        print(f"wrote {png_path}")
    print(f"{ran} point(s) ran, {len(result['failed'])} failed")
    return 0 if ran else 1


if __name__ == "__main__":
    sys.exit(main())
