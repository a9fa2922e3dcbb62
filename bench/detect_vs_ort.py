"""Attention layers found by ctac vs fused by onnxruntime's transformers optimizer.

For every committed test model: the manifest's attention layer count, the `cta.attention` ops
ctac's detect-attention produces (each proven on random inputs), and the Attention /
MultiHeadAttention nodes `onnxruntime.transformers.optimizer.optimize_model(..., opt_level=0)`
produces with shape inference disabled (its default needs torch and sympy).
Prints a table and writes bench/results/detect_vs_ort.json.

    python bench/detect_vs_ort.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "tests" / "models"
sys.path.insert(0, str(REPO / "bench"))
from common import save_result  # noqa: E402

ORT_MODEL_TYPE = {
    "bert": "bert",
    "roberta": "bert",
    "distilbert": "bert",
    "vit": "vit",
    "gpt2": "gpt2",
    "t5": "t5",
    "bart": "bart",
}
FUSED_OPS = {"Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention"}


def ctac_count(entry: dict) -> tuple[int, float]:
    from ctac.importer import import_model
    from ctac.passes.detect_attention import detect_attention
    from ctac.pipeline import run_passes

    shapes = {name: spec["shape"] for name, spec in entry["inputs"].items()}
    start = time.perf_counter()
    imported = import_model(MODELS / entry["file"], shapes)
    run_passes(imported.module, "onnx-canonicalize")
    reports, _ = detect_attention(imported.module, verify=True)
    return len(reports), time.perf_counter() - start


def ort_count(entry: dict) -> tuple[int | str, float]:
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = ORT_MODEL_TYPE[entry["family"]]
    options = FusionOptions(model_type)
    options.enable_shape_inference = False
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            optimized = optimize_model(
                str(MODELS / entry["file"]),
                model_type=model_type,
                num_heads=entry["num_heads"],
                hidden_size=entry["hidden_size"],
                optimization_options=options,
                opt_level=0,
            )
    except Exception as exc:  # the optimizer's own failure is a result here
        return f"crash: {type(exc).__name__}", time.perf_counter() - start
    fused = sum(1 for node in optimized.model.graph.node if node.op_type in FUSED_OPS)
    return fused, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="TorchScript eager models only")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    manifest = json.loads((MODELS / "manifest.json").read_text())
    entries = [e for e in manifest["models"] if not e.get("skipped")]
    if args.quick:
        entries = [
            e
            for e in entries
            if e["exporter"] == "torchscript" and e["attn_implementation"] == "eager"
        ]
    rows = []
    print(f"{'model':<30}{'layers':>8}{'ctac':>8}{'onnxruntime':>14}")
    for entry in entries:
        found, ctac_seconds = ctac_count(entry)
        fused, ort_seconds = ort_count(entry)
        rows.append(
            {
                "model": entry["file"],
                "layers": entry["num_attention_layers"],
                "ctac": found,
                "onnxruntime": fused,
                "ctac_seconds": round(ctac_seconds, 3),
                "onnxruntime_seconds": round(ort_seconds, 3),
            }
        )
        print(f"{entry['file']:<30}{entry['num_attention_layers']:>8}{found:>8}{fused!s:>14}")
    layers = sum(r["layers"] for r in rows)
    ctac_total = sum(r["ctac"] for r in rows)
    ort_total = sum(r["onnxruntime"] for r in rows if isinstance(r["onnxruntime"], int))
    print(f"{'total':<30}{layers:>8}{ctac_total:>8}{ort_total:>14}")
    import onnxruntime

    result = {
        "benchmark": "detect_vs_ort",
        "onnxruntime": onnxruntime.__version__,
        "models": rows,
        "totals": {"layers": layers, "ctac": ctac_total, "onnxruntime": ort_total},
    }
    save_result("detect_vs_ort", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
