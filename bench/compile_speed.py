"""Compile speed on BERT-base: import, canonicalize, detect-attention, lower-to-isa, emit, write,
against creating an onnxruntime InferenceSession on the same file (targets: compile <= 2x session
creation, peak memory <= 1.5x).

Two measurements in one run: each stage in this process (against a session created in this process),
and whole processes side by side, wall time and peak memory (ru_maxrss): `ctac compile MODEL
--shape ... -o PROGRAM.ctab` against a process that imports onnxruntime and creates a session with
one thread. The model (random weights) is exported once into $CTAC_CACHE (or ~/.cache/ctac). Prints
a table and writes bench/results/compile_speed.json (medians of --runs runs, min and max).

    python bench/compile_speed.py [--runs 5] [--quick]      # --quick: sequence 128 only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bert_base_model, compile_stages, machine, save_result, shapes_for, stats  # noqa: E402

STAGES = (
    "import_s",
    "canonicalize_s",
    "detect_attention_s",
    "lower_to_isa_s",
    "emit_s",
    "write_s",
    "total_s",
)
TARGET_TIME, TARGET_MEMORY = 2.0, 1.5
ORT_SESSION = (
    "import sys, onnxruntime as ort\n"
    "options = ort.SessionOptions()\n"
    "options.intra_op_num_threads = 1\n"
    "ort.InferenceSession(sys.argv[1], options, providers=['CPUExecutionProvider'])\n"
)


def ort_session_seconds(model: Path) -> float:
    import onnxruntime as ort

    start = time.perf_counter()
    ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return time.perf_counter() - start


# Runs the command given as its arguments and prints its wall seconds and peak RSS (MB). A child
# of this (large) benchmark process would report the benchmark's own peak as its ru_maxrss: Linux
# carries the high-water mark across fork and exec; a child of this small launcher reports its own.
MEASURE = (
    "import json, os, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "_, status, usage = os.wait4(child.pid, 0)\n"
    "seconds = time.perf_counter() - start\n"
    "print(json.dumps([os.waitstatus_to_exitcode(status), seconds, usage.ru_maxrss / 1024]))\n"
)


def process(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MB) of one whole process."""
    # As on a user's machine, Python may cache bytecode: an environment that forbids it
    # (PYTHONDONTWRITEBYTECODE, as some sandboxes set) makes every ctac process recompile its
    # own sources (0.13 s), while pip has already compiled onnxruntime's.
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryFile() as errors:
        done = subprocess.run(
            [sys.executable, "-c", MEASURE, *command], stdout=subprocess.PIPE, stderr=errors,
            env=environment,
        )  # fmt: skip
        status, seconds, peak = json.loads(done.stdout) if done.stdout else (done.returncode, 0, 0)
        if status or done.returncode:
            errors.seek(0)
            raise SystemExit(f"{' '.join(command)} failed:\n{errors.read().decode()}")
    return seconds, peak


def side_by_side(samples: dict[str, list[tuple[float, float]]], ctac: str, ort: str) -> dict:
    """Seconds and peak MB of the `ctac` and `ort` processes (as `{ctac}_s`, `{ctac}_peak_mb`,
    ...) and their median ratios (`ratio_time`, `ratio_peak_memory`)."""
    result: dict = {}
    for name, label in (("ctac", ctac), ("ort", ort)):
        result[f"{label}_s"] = stats([s for s, _ in samples[name]])
        result[f"{label}_peak_mb"] = stats([m for _, m in samples[name]])
    result["ratio_time"] = result[f"{ctac}_s"]["median"] / result[f"{ort}_s"]["median"]
    result["ratio_peak_memory"] = (
        result[f"{ctac}_peak_mb"]["median"] / result[f"{ort}_peak_mb"]["median"]
    )
    return result


def whole_processes(model: Path, seq: int, runs: int, folder: Path) -> dict:
    """`ctac compile` and onnxruntime session creation as whole processes, alternated."""
    shapes = ",".join(
        f"{name}={'x'.join(map(str, dims))}" for name, dims in shapes_for(model, seq).items()
    )
    ctac = [sys.executable, "-m", "ctac", "compile", str(model), "--shape", shapes]
    ctac += ["-o", str(folder / "bert_base.ctab")]
    ort = [sys.executable, "-c", ORT_SESSION, str(model)]
    samples = {"ctac": [], "ort": []}
    for _ in range(runs):
        samples["ort"].append(process(ort))
        # a new file each time, as a first compile writes (replacing one first frees its blocks)
        (folder / "bert_base.ctab").unlink(missing_ok=True)
        samples["ctac"].append(process(ctac))
    result = {
        "command": " ".join(ctac[1:]),
        "program_bytes": (folder / "bert_base.ctab").stat().st_size,
    }
    result.update(side_by_side(samples, "ctac_compile", "ort_session_1_thread"))
    result["meets_target"] = (
        result["ratio_time"] <= TARGET_TIME and result["ratio_peak_memory"] <= TARGET_MEMORY
    )
    return result


def timed_compile(model: Path, seq: int, folder: Path, verify: bool = True) -> tuple[dict, int]:
    """Seconds of each stage, writing the program file included (`write_s`), and instructions."""
    from ctac.runtime.program import write_program

    times, program = compile_stages(model, shapes_for(model, seq), verify=verify)
    (folder / "stages.ctab").unlink(missing_ok=True)
    start = time.perf_counter()
    write_program(program, folder / "stages.ctab")
    times["write_s"] = time.perf_counter() - start
    times["total_s"] += times["write_s"]
    return times, len(program.instructions)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seq", type=int, nargs="*", help="sequence lengths (default 128 512)")
    parser.add_argument("--quick", action="store_true", help="sequence 128 only")
    args = parser.parse_args()
    runs = max(args.runs, 5)
    seqs = args.seq or ([128] if args.quick else [128, 512])
    model = bert_base_model()
    ort_samples = [ort_session_seconds(model) for _ in range(runs)]
    ort_stats = stats(ort_samples)
    result = {
        "benchmark": "compile_speed",
        "model": str(model),
        "runs": runs,
        "onnxruntime_session_s": ort_stats,
        "target_ratio": TARGET_TIME,
        "target_peak_memory_ratio": TARGET_MEMORY,
        "stretch_ratio": 1.0,
        "sequences": {},
        "machine": machine(),
    }
    print(f"BERT-base compile vs onnxruntime InferenceSession, {runs} runs each")
    print(f"{'seq':>5} {'step':<20}{'median s':>10}{'min s':>10}{'max s':>10}")
    print(
        f"{'':>5} {'ort session':<20}{ort_stats['median']:>10.3f}{ort_stats['min']:>10.3f}{ort_stats['max']:>10.3f}"
    )
    folder = Path(tempfile.mkdtemp(prefix="ctac-compile-speed-"))
    for seq in seqs:
        samples, unverified, instructions = [], [], 0
        for _ in range(runs):
            times, instructions = timed_compile(model, seq, folder)
            samples.append(times)
            # as `ctac compile --no-verify-attention`: detection without the numerical proof
            unverified.append(timed_compile(model, seq, folder, verify=False)[0])
        summary = {key: stats([s[key] for s in samples]) for key in STAGES}
        summary["total_no_verify_s"] = stats([s["total_s"] for s in unverified])
        summary["detect_attention_no_verify_s"] = stats(
            [s["detect_attention_s"] for s in unverified]
        )
        ratio = summary["total_s"]["median"] / ort_stats["median"]
        ratio_unverified = summary["total_no_verify_s"]["median"] / ort_stats["median"]
        for key in (*STAGES, "detect_attention_no_verify_s", "total_no_verify_s"):
            s = summary[key]
            print(f"{seq:>5} {key:<20}{s['median']:>10.3f}{s['min']:>10.3f}{s['max']:>10.3f}")
        print(
            f"{seq:>5} ratio compile / ort session = {ratio:.2f}x (target <= {TARGET_TIME:g}x), "
            f"{instructions} instructions"
        )
        print(f"{seq:>5} ratio without attention verification = {ratio_unverified:.2f}x")
        whole = whole_processes(model, seq, runs, folder)
        print(
            f"{seq:>5} whole processes: `ctac compile` {whole['ctac_compile_s']['median']:.2f} s, "
            f"{whole['ctac_compile_peak_mb']['median']:.0f} MB peak vs onnxruntime session "
            f"(1 thread) {whole['ort_session_1_thread_s']['median']:.2f} s, "
            f"{whole['ort_session_1_thread_peak_mb']['median']:.0f} MB: "
            f"{whole['ratio_time']:.2f}x time (target <= {TARGET_TIME:g}x), "
            f"{whole['ratio_peak_memory']:.2f}x peak memory (target <= {TARGET_MEMORY:g}x)"
        )
        result["sequences"][str(seq)] = {
            "timings": summary,
            "instructions": instructions,
            "ratio_compile_over_ort_session": ratio,
            "ratio_no_verify_over_ort_session": ratio_unverified,
            "meets_target": ratio <= TARGET_TIME,
            "whole_process": whole,
        }
    for leftover in folder.iterdir():
        leftover.unlink()
    folder.rmdir()
    save_result("compile_speed", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
