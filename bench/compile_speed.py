"""Compile speed on BERT-base: import, canonicalize, detect-attention, lower-to-isa, emit, against
creating an onnxruntime InferenceSession on the same file (target: compile <= 3x session creation).

The model (random weights) is exported once into $CTAC_CACHE (or ~/.cache/ctac). Prints a table and
writes bench/results/compile_speed.json (medians of --runs runs, min and max).

    python bench/compile_speed.py [--runs 5] [--quick]      # --quick: sequence 128 only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, bert_base_model, compile_stages, machine, shapes_for, stats  # noqa: E402

STAGES = ("import_s", "canonicalize_s", "detect_attention_s", "lower_to_isa_s", "emit_s", "total_s")


def ort_session_seconds(model: Path) -> float:
    import onnxruntime as ort

    start = time.perf_counter()
    ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return time.perf_counter() - start


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
        "target_ratio": 3.0,
        "stretch_ratio": 1.0,
        "sequences": {},
        "machine": machine(),
    }
    print(f"BERT-base compile vs onnxruntime InferenceSession, {runs} runs each")
    print(f"{'seq':>5} {'step':<20}{'median s':>10}{'min s':>10}{'max s':>10}")
    print(
        f"{'':>5} {'ort session':<20}{ort_stats['median']:>10.3f}{ort_stats['min']:>10.3f}{ort_stats['max']:>10.3f}"
    )
    for seq in seqs:
        samples, unverified, instructions = [], [], 0
        for _ in range(runs):
            times, program = compile_stages(model, shapes_for(model, seq))
            instructions = len(program.instructions)
            samples.append(times)
            del program
            # as `ctac compile --no-verify-attention`: detection without the numerical proof
            unverified.append(compile_stages(model, shapes_for(model, seq), verify=False)[0])
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
            f"{seq:>5} ratio compile / ort session = {ratio:.2f}x (target <= 3x), {instructions} instructions"
        )
        print(f"{seq:>5} ratio without attention verification = {ratio_unverified:.2f}x")
        result["sequences"][str(seq)] = {
            "timings": summary,
            "instructions": instructions,
            "ratio_compile_over_ort_session": ratio,
            "ratio_no_verify_over_ort_session": ratio_unverified,
            "meets_target": ratio <= 3.0,
        }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compile_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS / 'compile_speed.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
