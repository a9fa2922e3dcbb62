"""Import + canonicalize + print of a BERT-base-size model (12 layers, hidden 768, 12 heads).

The model (random weights, ~436 MB) is exported once by scripts/export_test_models.py into a
cache folder ($CTAC_CACHE or ~/.cache/ctac), never committed; that step needs the `export` extra
(pip install -e ".[export]"). Prints a table and writes bench/results/import_bert_base.json.

    python bench/import_bert_base.py [--seq 128] [--runs 5] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bert_base_model, machine, save_result, stats  # noqa: E402


def time_once(model: Path, seq: int) -> dict[str, float]:
    from ctac.importer import import_model
    from ctac.pipeline import module_text, run_passes
    from ctac.weights import forget_stores

    forget_stores()
    start = time.perf_counter()
    imported = import_model(model, {"input_ids": [1, seq], "attention_mask": [1, seq]})
    imported_at = time.perf_counter()
    run_passes(imported.module, "onnx-canonicalize")
    canonical_at = time.perf_counter()
    text = module_text(imported.module)
    printed_at = time.perf_counter()
    return {
        "import_s": imported_at - start,
        "canonicalize_s": canonical_at - imported_at,
        "print_s": printed_at - canonical_at,
        "total_s": printed_at - start,
        "ir_bytes": len(text.encode()),
        "ops": sum(1 for _ in imported.module.walk()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 runs")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    model = bert_base_model()
    samples = [time_once(model, args.seq) for _ in range(runs)]
    summary = {}
    for key in ("import_s", "canonicalize_s", "print_s", "total_s"):
        summary[key] = stats([s[key] for s in samples])
    result = {
        "benchmark": "import_bert_base",
        "model": str(model),
        "model_bytes": model.stat().st_size,
        "sequence": args.seq,
        "runs": runs,
        "ir_bytes": samples[0]["ir_bytes"],
        "ops": samples[0]["ops"],
        "timings": summary,
        "targets": {"total_s": 10.0, "ir_bytes": 2 * 1024 * 1024},
        "machine": machine(),
    }
    print(f"BERT-base (seq {args.seq}), {runs} runs, model {result['model_bytes'] / 1e6:.0f} MB")
    print(f"{'step':<14}{'median s':>10}{'min s':>10}{'max s':>10}")
    for key, timing in summary.items():
        print(f"{key:<14}{timing['median']:>10.3f}{timing['min']:>10.3f}{timing['max']:>10.3f}")
    print(
        f"printed IR: {result['ir_bytes'] / 1e6:.3f} MB, {result['ops']} ops (target < 10 s, < 2 MB)"
    )
    save_result("import_bert_base", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
