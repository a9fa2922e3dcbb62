"""Helpers shared by the benchmark scripts: the cached BERT-base model, compiling it, statistics."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def cache_dir() -> Path:
    return Path(os.environ.get("CTAC_CACHE", Path.home() / ".cache" / "ctac"))


def exported_model(name: str = "bert_base", flag: str = "--bert-base") -> Path:
    """A model exported once by scripts/export_test_models.py into the cache folder."""
    path = cache_dir() / f"{name}.onnx"
    if not path.exists():
        print(f"exporting {name} into {path.parent} (once) ...", flush=True)
        subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "export_test_models.py"),
                flag,
                str(path.parent),
            ],
            check=True,
        )
    return path


def bert_base_model() -> Path:
    return exported_model("bert_base", "--bert-base")


def save_result(name: str, payload: dict, indent: int = 2) -> Path:
    """Write bench/results/NAME.json (numbers the README quotes come from these) and say so."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=indent, default=str) + "\n")
    print(f"wrote {path}")
    return path


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def machine() -> dict:
    import numpy as np

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()),
    }


def shapes_for(model: Path, seq: int, batch: int = 1) -> dict[str, list[int]]:
    """Every model input at batch x seq (token models); images keep their static sizes."""
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    initializers = {i.name for i in proto.graph.initializer}
    shapes = {}
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 2:
            shapes[value.name] = [batch, seq]
        else:
            shapes[value.name] = [batch] + [d.dim_value for d in dims[1:]]
    return shapes


def compile_stages(model: Path, shapes: dict, hw=None, verify: bool = True) -> tuple[dict, object]:
    """Import, canonicalize, detect attention, lower, emit; seconds of each and the program."""
    times, program = compile_attention_stages(model, shapes, "exact", hw, verify=verify)
    times.pop("attention_s")
    return times, program


def blas_threads() -> int:
    """Threads numpy's BLAS uses (threadpoolctl), else the CPU count."""
    try:
        from threadpoolctl import threadpool_info

        counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
        if counts:
            return max(counts)
    except ImportError:
        pass
    return os.cpu_count() or 1


def attention_passes(attention: str, flags: Sequence[str] = ()) -> str | None:
    """The pass pipeline `ctac compile --attention ATTENTION [flags]` runs after detect-attention,
    with the CLI's own defaults (tau, tau-kv, hash bits, method, granularity, block; ELSA bits and
    threshold): None for exact, the cta-compress spec for cta, the elsa-filter spec for elsa."""
    from ctac.cli import build_parser
    from ctac.frontend import compress_spec, elsa_spec

    args = build_parser().parse_args(["compile", "model.onnx", "--attention", attention, *flags])
    if attention == "cta":
        return compress_spec(args)
    if attention == "elsa":
        return elsa_spec(args)
    return None


def compile_attention_stages(
    model: Path,
    shapes: dict,
    attention: str = "exact",
    hw=None,
    verify: bool = True,
    flags: Sequence[str] = (),
) -> tuple[dict, object]:
    """compile_stages for `ctac compile --attention exact|cta|elsa`: the same stages (seconds of
    each, and the program), with the mode's pass (`attention_s`) between detect-attention and
    lower-to-isa."""
    from ctac.emit import program_from_lowering
    from ctac.hw import load_hardware
    from ctac.importer import import_model
    from ctac.passes.detect_attention import detect_attention
    from ctac.passes.lower_to_isa import lowered as lower_records
    from ctac.pipeline import run_passes
    from ctac.weights import forget_stores

    hw = hw or load_hardware(None)
    spec = attention_passes(attention, flags)
    forget_stores()
    times = {}
    start = time.perf_counter()
    imported = import_model(model, shapes)
    times["import_s"] = time.perf_counter() - start
    mark = time.perf_counter()
    run_passes(imported.module, "onnx-canonicalize")
    times["canonicalize_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    detect_attention(imported.module, verify=verify)
    times["detect_attention_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    if spec is not None:
        run_passes(imported.module, spec)
    times["attention_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    lowering = lower_records(imported.module, hw)  # as `ctac compile` does
    times["lower_to_isa_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    program = program_from_lowering(lowering)
    times["emit_s"] = time.perf_counter() - mark
    times["total_s"] = time.perf_counter() - start
    return times, program
