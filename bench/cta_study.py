"""Where CTA wins or loses: accuracy, cycles and energy of compressed token attention against exact
attention, the ELSA mode and the V100 roofline, on a real model with real text and on long
sequences; and whether `ctac compile --attention cta` ever makes a model slower.

1. all-MiniLM-L6-v2 (real weights) on pydoc topics, L in 128/256/512. Per length the usable topics
   (>= L tokens) split into a calibration set (the first 8) and a disjoint evaluation set (the next
   16). Every program is compiled by `ctac compile` itself (ctac.cli.main) and run on the
   interpreter, batch 1, for every evaluation passage: exact, ELSA (CLI defaults), the CTA
   SETTINGS (`--cta-policy always`), and `ctac calibrate` settings for mean cosine 0.999 and 0.99
   (`--cta-settings`, policies always and cost). Accuracy: cosine of the mask-mean-pooled last
   hidden state to onnxruntime's exact output (mean, min over passages); paired-halves retrieval
   (bench/accuracy.py) with programs compiled at L/2 on the interpreter. Cost: `simulate` with the
   run's clusters; attention = timings whose source kind is cta.* but not a projection (clustering,
   Q.K^T, softmax, P.V, pooling, recovery, their DMA): the sum of their units' occupied cycles (units
   overlap, so this counts work, not latency) and their dynamic energy.
2. bert_long (random weights) at 1024/2048/4096, timing only: the calibrated cluster ratios and hash
   buckets measured on MiniLM at the longest length (`expected_clusters`); ELSA at its candidate
   ratio there.
3. Acceptance: CTA-mode over exact-mode cycles with the CLI's default flags (and with
   `--cta-policy always`), every test model (random inputs) and MiniLM at 128/512 (real text);
   default-flag ratios > 1.01 are flagged.

    python bench/cta_study.py [--quick] [--lengths 128 256 512] [--passages 16] [--long 1024 ...]
    python bench/cta_study.py --markdown bench/results/cta_study.json   # the README table

--quick: L 128 and 512, 4 evaluation passages, 3 settings, calibration on 2 passages at L=128 only
(reused at 512), long 1024. Writes bench/results/cta_study.json and cta_study_L{L}.png
(cta_study_quick* with --quick). Calibrations are cached in $CTAC_CACHE/cta_study, keyed by the
compiler's sources and the data. Tables, the plot and the paper-form table: bench/cta_report.py.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, RESULTS, cache_dir, machine  # noqa: E402
from cta_report import (  # noqa: E402
    FLAG_RATIO,
    GOALS,
    MODEL_LABEL,
    PAPER,
    POINTS,
    ROW_HEADER,
    format_acceptance,
    format_long,
    format_row,
    markdown,
    plot_pareto,
)

LONG_MODEL = REPO / "tests" / "models" / "bert_long.onnx"
MANIFEST = REPO / "tests" / "models" / "manifest.json"
TARGETS = (0.999, 0.99)  # ctac calibrate --target-cosine: the no-loss and ~1%-loss points


@dataclass(frozen=True)
class Setting:
    """A CTA configuration: `ctac compile --attention cta` flags (add new methods here)."""

    name: str
    flags: tuple[str, ...] = ()


def cta(name: str, flags: str = "") -> Setting:
    return Setting(name, tuple(flags.split()))


SETTINGS: list[Setting] = [
    cta("tau 0.2/0.12", "--tau 0.2 --tau-kv 0.12"),
    cta("CLI defaults", ""),  # tau 0.5/0.3, 4 hash bits, window 8
    cta("CLI defaults w0", "--cta-window 0"),  # unbounded leader clustering
    cta("tau 0.6/0.4", "--tau 0.6 --tau-kv 0.4"),
    cta("tau 0.7/0.5", "--tau 0.7 --tau-kv 0.5"),
    cta("tau 0.8/0.5", "--tau 0.8 --tau-kv 0.5"),
    cta("tau 0.6/0.6", "--tau 0.6 --tau-kv 0.6"),
    cta("tau 0.3/0.3 bits8", "--tau 0.3 --tau-kv 0.3 --hash-bits 8"),
    cta("leader 0.4/0.4", "--cta-method leader --tau 0.4 --tau-kv 0.4"),
    cta("input 0.2 bits8", "--cta-granularity input --tau 0.2 --tau-kv 0.2 --hash-bits 8"),
    cta("input 0.3 bits8", "--cta-granularity input --tau 0.3 --tau-kv 0.3 --hash-bits 8"),
    # The frontier methods (docs/compression.md): values from the pooled layer input, keys
    # clustered across heads, the keys with the most attention mass kept exact.
    cta("pooled-v 0.5/0.3", "--cta-values pooled-input"),
    cta("shared-k 0.5/0.5", "--cta-keys shared --tau-kv 0.5"),
    cta("top8 0.7/0.5", "--cta-keep-top 8 --tau 0.7 --tau-kv 0.5"),
]
QUICK_SETTINGS = ("CLI defaults", "CLI defaults w0", "tau 0.7/0.5")


@dataclass(frozen=True)
class Variant:
    """One program of the study: `ctac compile --attention ATTENTION FLAGS`."""

    name: str
    kind: str  # exact | elsa | cta | calibrated
    attention: str
    flags: tuple[str, ...] = ()


EXACT, ELSA = Variant("exact", "exact", "exact"), Variant("ELSA", "elsa", "elsa")


class CompileFailed(Exception):
    pass


# ---------------------------------------------------------------- accounting and selection


def is_attention_work(kind: str) -> bool:
    """Attention work other than the Q/K/V projections (a `cta.*` kind, not `*.project*`)."""
    return kind.startswith("cta.") and "project" not in kind.split(".")[1:]


def attention_cost(profile) -> tuple[int, float]:
    """(occupied cycles summed over units, dynamic energy pJ) of the profile's attention work."""
    from ctac.runtime.sources import parse_source

    cycles, energy = 0, 0.0
    for timing in profile.timings:
        if is_attention_work(parse_source(timing.source).kind):
            cycles += timing.occupied
            energy += timing.energy_pj
    return cycles, energy


def relate(row: dict, exact: dict, gpu: dict, elsa: dict | None, clock: float) -> dict:
    """Ratios to exact attention, ELSA and the GPU roofline (accelerator at `clock` Hz)."""
    if row.get("error") is not None or exact.get("error") is not None:
        return row
    row["attention_rel"] = row["attention_cycles"] / exact["attention_cycles"]
    row["cycles_rel"] = row["cycles"] / exact["cycles"]
    row["energy_rel"] = row["energy_pj"] / exact["energy_pj"]
    seconds, joules = row["attention_cycles"] / clock, row["attention_energy_pj"] * 1e-12
    row["vs_gpu"] = {"attention_speedup": gpu["attention_seconds"] / seconds,
                     "attention_energy": gpu["attention_joules"] / joules,
                     "speedup": gpu["seconds"] / (row["cycles"] / clock),
                     "energy": gpu["joules"] / (row["energy_pj"] * 1e-12)}  # fmt: skip
    if elsa is not None and elsa.get("error") is None:
        row["vs_elsa"] = {"attention_speedup": elsa["attention_cycles"] / row["attention_cycles"],
                          "attention_energy": elsa["attention_energy_pj"] / row["attention_energy_pj"]}  # fmt: skip
    return row


# ---------------------------------------------------------------- compiling and measuring


def shapes_of(length: int) -> dict[str, list[int]]:
    return {"input_ids": [1, length], "attention_mask": [1, length]}


def feeds(ids: np.ndarray) -> dict[str, np.ndarray]:
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def run_cli(argv: list[str]) -> str:
    """`ctac ARGV` in this process; its stderr; CompileFailed with its error line on failure."""
    from ctac.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    if code != 0:  # the error line and the two after it (a list of unlowerable ops)
        lines = err.getvalue().splitlines()
        at = max((i for i, line in enumerate(lines) if "error" in line), default=len(lines))
        raise CompileFailed(" ".join(x.strip() for x in lines[at : at + 3]) or f"exit {code}")
    return err.getvalue()


def shape_flag(shapes: dict[str, Sequence[int]]) -> str:
    return ",".join(f"{name}={'x'.join(map(str, dims))}" for name, dims in shapes.items())


def compile_program(model: Path, shapes: dict, variant: Variant, out: Path, hw):
    """The program `ctac compile` writes for the variant (no attention verification)."""
    from ctac.run import load_program

    run_cli(["compile", str(model), "--shape", shape_flag(shapes), "--attention",
             variant.attention, "--no-verify-attention", *variant.flags, "-o", str(out)])  # fmt: skip
    return load_program(out, hw)


def measure(program, hw, clusters: dict | None) -> dict[str, float]:
    from ctac.runtime.costmodel import simulate

    profile = simulate(program, hw, clusters)
    cycles, energy = attention_cost(profile)
    return {"cycles": profile.cycles, "energy_pj": profile.energy_pj,
            "attention_cycles": cycles, "attention_energy_pj": energy}  # fmt: skip


def compressed_layers(program) -> int | None:
    """Layers the cost policy compressed (None: no policy ran, every layer is compressed)."""
    return sum(bool(d.get("compress")) for d in program.policy) if program.policy else None


def clock_hz(hw) -> float:
    return hw.number("accelerator", "clock_ghz") * 1e9


def gpu_costs(model: Path, shapes: dict, hw) -> dict[str, float]:
    """The V100 roofline (runtime/gpu.py, as compare.gpu_mode) of the detected exact model;
    attention without the projections, as on the accelerator."""
    from ctac.importer import import_model
    from ctac.passes.detect_attention import detect_attention
    from ctac.pipeline import run_passes
    from ctac.runtime.gpu import roofline

    imported = import_model(model, shapes)
    run_passes(imported.module, "onnx-canonicalize")
    detect_attention(imported.module, verify=False)
    seconds, joules, kernels = roofline(imported.module, hw)
    attention = sum(k.seconds for k in kernels if is_attention_work(k.name))
    return {"seconds": seconds, "joules": joules, "attention_seconds": attention,
            "attention_joules": attention * hw.number("gpu", "power_w"),
            "attention_with_projections_seconds": sum(
                k.seconds for k in kernels if k.name.startswith("cta."))}  # fmt: skip


def dynamic_ratio(program, clusters: dict[int, int]) -> float:
    """Observed data-dependent sizes over their nominal ones (ELSA: candidate keys kept)."""
    from ctac.policy import expected_clusters

    nominal = expected_clusters(program, 1.0)
    keys = [s for s in nominal if s in clusters]
    return float(np.mean([clusters[s] / nominal[s] for s in keys])) if keys else 1.0


def source_digest() -> str:
    """Hash of the compiler's sources and hardware file (a cached calibration is stale after any
    change)."""
    digest = hashlib.sha256()
    for folder, pattern in (("ctac", "*.py"), ("ctac/data", "*.toml"), ("runtime", "*.py"),
                            ("passes", "**/*.py"), ("dialects", "*.py")):  # fmt: skip
        for path in sorted((REPO / folder).glob(pattern)):
            digest.update(path.read_bytes())
    return digest.hexdigest()


def calibration(model: Path, length: int, ids: np.ndarray, names: list[str], target: float) -> dict:
    """`ctac calibrate --target-cosine TARGET` on the calibration passages (cached)."""
    from ctac.calibrate import read_settings

    key = json.dumps([source_digest(), str(model), length, target, names])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = cache_dir() / "cta_study" / f"calibration_L{length}_{target:g}_{digest}.toml"
    entry = {"target_cosine": target, "file": str(path), "calibrated_at": length, "topics": names,
             "from_cache": path.exists(), "seconds": 0.0}  # fmt: skip
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        data = path.with_suffix(".npz")
        np.savez(data, input_ids=ids[:, None, :], attention_mask=np.ones_like(ids)[:, None, :])
        start = time.perf_counter()
        # Fidelity as the study measures it: the mean-pooled sentence embedding.
        run_cli(["calibrate", str(model), "--shape", shape_flag(shapes_of(length)), "--data",
                 str(data), "--target-cosine", str(target), "--fidelity", "pooled",
                 "--no-verify-attention", "-o", str(path)])  # fmt: skip
        entry["seconds"] = time.perf_counter() - start
        data.unlink()
    settings = read_settings(path)
    entry.update(toml=path.read_text(), cluster_ratio=settings.cluster_ratio,
                 buckets=settings.buckets, tau_q=settings.tau_q)  # fmt: skip
    return entry


# ---------------------------------------------------------------- part 1: MiniLM on real text


@dataclass
class Texts:
    """Token ids of one length: calibration passages, evaluation passages and their halves."""

    length: int
    calibration: np.ndarray
    calibration_names: list[str]
    full: np.ndarray
    first: np.ndarray
    second: np.ndarray
    names: list[str]


def texts(tok, length: int, calibrate: int, evaluate: int) -> Texts:
    from accuracy import passages

    full, first, second, names = passages(tok, length, calibrate + evaluate)
    c = calibrate
    return Texts(length, full[:c], names[:c], full[c:], first[c:], second[c:], names[c:])


def variants(settings: Sequence[Setting], calibrations: Sequence[dict]) -> list[Variant]:
    found = [EXACT, ELSA]
    for s in settings:
        policy = () if "--cta-policy" in s.flags else ("--cta-policy", "always")
        found.append(Variant(s.name, "cta", "cta", (*s.flags, *policy)))
    for entry in calibrations:
        for policy in ("always", "cost"):
            flags = ("--cta-settings", entry["file"], "--cta-policy", policy)
            name = f"calibrated {entry['target_cosine']:g} {policy}"
            found.append(Variant(name, "calibrated", "cta", flags))
    return found


def run_variant(variant: Variant, model: Path, t: Texts, hw, folder: Path, bar) -> dict:
    """Every evaluation passage through the variant's program, and its halves through the L/2
    program: embeddings, mean costs, clusters per token."""
    from accuracy import mean_pool

    from ctac.run import attention_report, execute

    row: dict = {"setting": variant.name, "kind": variant.kind, "flags": list(variant.flags),
                 "error": None}  # fmt: skip
    start = time.perf_counter()
    try:
        full = compile_program(model, shapes_of(t.length), variant, folder / "full", hw)
        half = compile_program(model, shapes_of(t.length // 2), variant, folder / "half", hw)
    except CompileFailed as exc:
        bar.update(len(t.full))
        return {**row, "error": str(exc)}
    row["policy"] = [{k: d.get(k) for k in ("compress", "reason")} for d in full.policy]
    row["compressed_layers"] = compressed_layers(full)
    embeddings: dict[str, list] = {"full": [], "first": [], "second": []}
    costs, clusters, ratios = [], [], []
    for i in range(len(t.full)):
        for part in ("full", "first", "second"):
            ids = getattr(t, part)[i : i + 1]
            outputs, stats = execute(full if part == "full" else half, hw, feeds(ids), False)
            hidden = outputs.get("last_hidden_state", next(iter(outputs.values())))
            embeddings[part].append(mean_pool(hidden, np.ones_like(ids))[0])
            if part == "full":
                costs.append(measure(full, hw, stats.clusters))
                clusters.append([(a["query_clusters"] / a["tokens"], a["kv_clusters"] / a["tokens"])
                                 for a in attention_report(full, stats) if a["tokens"]])  # fmt: skip
                ratios.append(dynamic_ratio(full, stats.clusters))
        bar.update(1)
    for key in costs[0]:
        row[key] = float(np.mean([c[key] for c in costs]))
    row["attention_cycles_per_passage"] = [c["attention_cycles"] for c in costs]
    per = np.array(clusters)  # passages x layers x (q, kv)
    row["q_clusters_per_token"] = float(per[..., 0].mean()) if per.size else 1.0
    row["kv_clusters_per_token"] = float(per[..., 1].mean()) if per.size else 1.0
    row["dynamic_ratio"] = float(np.mean(ratios))
    row["embeddings"] = {k: np.array(v) for k, v in embeddings.items()}  # not saved
    row["seconds"] = time.perf_counter() - start
    return row


def study_length(
    model: Path, t: Texts, calibrations: list[dict], chosen: list[Setting], hw
) -> dict:
    from accuracy import Runner, cosine_rows, mean_pool, retrieval_accuracy
    from tqdm import tqdm

    runner = Runner(model)
    exact = {p: mean_pool(runner.exact(getattr(t, p)), np.ones_like(getattr(t, p)))
             for p in ("full", "first", "second")}  # fmt: skip
    exact_retrieval = retrieval_accuracy(exact["first"], exact["second"])
    gpu = gpu_costs(model, shapes_of(t.length), hw)
    todo = variants(chosen, calibrations)
    rows: list[dict] = []
    print(ROW_HEADER)
    bar = tqdm(total=len(todo) * len(t.full), desc=f"L={t.length}", unit="run", file=sys.stderr)
    with tempfile.TemporaryDirectory() as folder:
        for variant in todo:
            row = run_variant(variant, model, t, hw, Path(folder), bar)
            if row["error"] is None:
                emb = row.pop("embeddings")
                cos = cosine_rows(emb["full"], exact["full"])
                retrieval = retrieval_accuracy(emb["first"], emb["second"])
                row.update(cos=cos.tolist(), cos_mean=float(cos.mean()), cos_min=float(cos.min()),
                           retrieval=retrieval, retrieval_drop_passages=int(round(
                               (exact_retrieval - retrieval) * len(t.full))))  # fmt: skip
            rows.append(row)
            elsa = next((r for r in rows if r["kind"] == "elsa"), None)
            bar.write(format_row(relate(row, rows[0], gpu, elsa, clock_hz(hw))))
    bar.close()
    for row in rows[:2]:  # exact and ELSA ran before ELSA's row existed
        relate(row, rows[0], gpu, rows[1], clock_hz(hw))
    return {"calibration_topics": calibrations[0]["topics"], "evaluation_topics": t.names,
            "passages": len(t.full), "exact_retrieval_onnxruntime": exact_retrieval,
            "calibrations": calibrations, "gpu": gpu, "rows": rows}  # fmt: skip


# ---------------------------------------------------------------- part 2: long sequences


def transferred(settings_file: str):
    """MiniLM's calibrated ratios for another model (bert_long): its layers do not match
    MiniLM's, so every layer gets, per clustering role, the largest ratio any MiniLM layer
    formed (conservative; the queries' and the keys' apart)."""
    from ctac.calibrate import read_settings
    from ctac.policy import ClusterExpectation

    expectation = read_settings(settings_file).expectation()
    roles = {role for layer in expectation.layers for role in layer}
    worst = {role: max(layer.get(role, 0.0) for layer in expectation.layers) for role in roles}
    return ClusterExpectation(expectation.ratio, expectation.buckets, (worst,) * 1024)


def study_long(lengths: Sequence[int], calibrations: list[dict], elsa_ratio: float, hw) -> list:
    """bert_long, timing only, at the calibrated cluster ratios (expected_clusters)."""
    from tqdm import tqdm

    from ctac.policy import expected_clusters

    todo = [(EXACT, 1.0, 1.0), (ELSA, elsa_ratio, 1.0)]
    for entry in calibrations:
        for policy in ("always", "cost"):
            flags = ("--cta-settings", entry["file"], "--cta-policy", policy)
            variant = Variant(f"calibrated {entry['target_cosine']:g} {policy}", "calibrated",
                              "cta", flags)  # fmt: skip
            todo.append((variant, transferred(entry["file"]), entry["buckets"]))
    results = []
    print(f"{'L':>5} {'program':<24}{'cycles':>14}{'attn rel':>9}{'cyc rel':>9}{'E rel':>8}"
          f"{'xV100 a':>9}")  # fmt: skip
    bar = tqdm(total=len(lengths) * len(todo), desc="long", unit="program", file=sys.stderr)
    for length in lengths:
        gpu, rows = gpu_costs(LONG_MODEL, shapes_of(length), hw), []
        with tempfile.TemporaryDirectory() as folder:
            for variant, ratio, buckets in todo:
                row = {"setting": variant.name, "kind": variant.kind, "error": None}
                try:
                    program = compile_program(LONG_MODEL, shapes_of(length), variant,
                                              Path(folder) / "p", hw)  # fmt: skip
                except CompileFailed as exc:
                    row["error"] = str(exc)
                else:
                    clusters = (
                        None if variant is EXACT else expected_clusters(program, ratio, buckets)
                    )
                    row.update(measure(program, hw, clusters), buckets=buckets,
                               cluster_ratio=getattr(ratio, "ratio", ratio),
                               compressed_layers=compressed_layers(program))  # fmt: skip
                    del program
                elsa = rows[1] if len(rows) > 1 else None
                rows.append(relate(row, rows[0] if rows else row, gpu, elsa, clock_hz(hw)))
                bar.write(f"{length:>5} {format_long(row)}")
                bar.update(1)
        results.append({"length": length, "gpu": gpu, "rows": rows})
    bar.close()
    return results


# ---------------------------------------------------------------- part 3: acceptance ratio


def acceptance(model: Path, minilm: dict[int, np.ndarray], hw) -> dict:
    """CTA-mode over exact-mode cycles per model: the CLI's default flags, and policy always."""
    from tqdm import tqdm

    from ctac.cli import build_parser
    from ctac.run import execute, random_inputs

    defaults = vars(build_parser().parse_args(["compile", "model.onnx", "--attention", "cta"]))
    manifest = json.loads(MANIFEST.read_text())["models"]
    cases = [(m["file"], MANIFEST.parent / m["file"],
              {k: v["shape"] for k, v in m["inputs"].items()}, None) for m in manifest]  # fmt: skip
    cases += [(f"{MODEL_LABEL} L={n}", model, shapes_of(n), ids) for n, ids in minilm.items()]
    modes = [EXACT, Variant("cta", "cta", "cta"),
             Variant("always", "cta", "cta", ("--cta-policy", "always"))]  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, path, shapes, ids in tqdm(cases, desc="acceptance", file=sys.stderr):
            row = {"model": name, "shape": shapes, "error": None,
                   "inputs": "real text" if ids is not None else "random (seed 0)"}  # fmt: skip
            try:
                programs = [compile_program(path, shapes, v, Path(folder) / v.name, hw)
                            for v in modes]  # fmt: skip
            except CompileFailed as exc:
                rows.append({**row, "error": str(exc)})
                continue
            samples = [feeds(ids[i : i + 1]) for i in range(len(ids))] if ids is not None else [
                random_inputs(programs[0], 0)]  # fmt: skip
            cycles = [float(np.mean([measure(p, hw, execute(p, hw, s, progress=False)[1].clusters)
                                     ["cycles"] for s in samples])) for p in programs]  # fmt: skip
            ratio = cycles[1] / cycles[0]
            row.update(exact_cycles=cycles[0], cta_cycles=cycles[1], ratio=ratio,
                       always_cycles=cycles[2], always_ratio=cycles[2] / cycles[0],
                       compressed_layers=compressed_layers(programs[1]),
                       flagged=ratio > FLAG_RATIO)  # fmt: skip
            rows.append(row)
    return {"cli_defaults": {k: v for k, v in defaults.items() if k != "handler"}, "rows": rows}


# ---------------------------------------------------------------- the paper-form table


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes (see above)")
    parser.add_argument("--lengths", type=int, nargs="+", help="default 128 256 512")
    parser.add_argument("--passages", type=int, help="evaluation passages (default 16)")
    parser.add_argument("--long", type=int, nargs="*", help="bert_long lengths (1024 2048 4096)")
    parser.add_argument("--no-acceptance", action="store_true", help="skip part 3")
    parser.add_argument("--markdown", type=Path, metavar="JSON", help="print a saved study's table")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return 0
    from accuracy import minilm_model, tokenizer

    from ctac.hw import load_hardware

    quick = args.quick
    lengths = args.lengths or ([128, 512] if quick else [128, 256, 512])
    n_eval, n_cal = args.passages or (4 if quick else 16), 2 if quick else 8
    long_lengths = args.long if args.long is not None else ([1024] if quick else [1024, 2048, 4096])
    chosen = [s for s in SETTINGS if not quick or s.name in QUICK_SETTINGS]
    hw = load_hardware(None)
    hw_name = hw.raw["accelerator"].get("name", hw.path)
    model, tok = minilm_model(), tokenizer()
    start = time.perf_counter()
    payload: dict = {
        "benchmark": "cta_study", "command": [sys.executable, *sys.argv], "quick": quick,
        "machine": machine(), "hw": {"name": hw_name, "path": hw.path},
        "model": f"{MODEL_LABEL} (real weights), {model}", "text": "pydoc_data.topics",
        "passages": n_eval, "settings": [asdict(s) for s in chosen], "paper": PAPER,
        "goals_at_512": GOALS, "points": [asdict(p) for p in POINTS],
        "retrieval": "paired halves (bench/accuracy.py), every setting compiled at L/2 and run on "
                     "the interpreter, batch 1",
        "attention": "sum of occupied cycles (over units) and dynamic energy of timings whose "
                     "source kind starts with cta. and is not a projection",
        "calibration": "ctac calibrate per length" + (" (quick: at the first length only, "
                       "reused)" if quick else ""), "lengths": {},
    }  # fmt: skip
    all_texts = {n: texts(tok, n, n_cal, n_eval) for n in lengths}
    calibrations: list[dict] = []
    for length in lengths:
        t = all_texts[length]
        if not quick or not calibrations:
            print(f"calibrating at L={length} on {n_cal} passages ...", flush=True)
            calibrations = [calibration(model, length, t.calibration, t.calibration_names, target)
                            for target in TARGETS]  # fmt: skip
        used = set(calibrations[0]["topics"])
        assert not used & set(t.names), "calibration and evaluation passages overlap"
        for c in calibrations:
            print(f"  calibrated {c['target_cosine']:g}: tau-q {c['tau_q']:g}, "
                  f"{c['cluster_ratio']:.3f} clusters per token (largest layer)")  # fmt: skip
        print(f"--- L={length}: {n_eval} passages", flush=True)
        entry = study_length(model, t, calibrations, chosen, hw)
        payload["lengths"][str(length)] = entry
        suffix = "_quick" if quick else ""
        plot_pareto(entry["rows"], length, hw_name, RESULTS / f"cta_study{suffix}_L{length}.png")
    last = payload["lengths"][str(max(lengths))]
    elsa_ratio = last["rows"][1].get("dynamic_ratio", 1.0)
    payload["long_basis"] = {"length": max(lengths), "elsa_candidate_ratio": elsa_ratio}
    if long_lengths:
        print(f"--- bert_long, timing only, ratios calibrated at L={max(lengths)}")
        payload["long"] = study_long(long_lengths, last["calibrations"], elsa_ratio, hw)
    if not args.no_acceptance:
        minilm = {n: all_texts[n].full[:4] if n in all_texts else texts(tok, n, n_cal, 4).full
                  for n in (128, 512)}  # fmt: skip
        payload["acceptance"] = acceptance(model, minilm, hw)
        print(format_acceptance(payload["acceptance"]))
    payload["seconds"] = time.perf_counter() - start
    print()
    print(markdown(payload))
    out = RESULTS / ("cta_study_quick.json" if quick else "cta_study.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    print(f"\ntotal {payload['seconds']:.0f}s; wrote {out} and the plots beside it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
