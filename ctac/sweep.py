"""`ctac sweep SPEC.toml`: a design-space sweep, models x settings x hardware, cached by content.

A spec names the models and the axes of a grid; every point is compiled and run with the Python
API (ctac/api.py) in a process pool (or on Ray with `--ray`), and the results become one table
(results.csv, and results.parquet when pyarrow is installed) and one figure per metric (cycles,
energy, and the error against onnxruntime when checked) against the first axis, plus the Pareto
front of cycles and error when checked:

    [sweep]
    attention = "cta"            # exact | cta | elsa
    numerics = false             # false (default): timing only; true: functional runs
    check = false                # with numerics: max abs error against onnxruntime
    seed = 0                     # of the random inputs of functional runs
    hw = "my_hw.toml"            # base hardware config (default: ctac's own)
    out = "sweep-results"        # table and plots, relative to the current folder (--out wins)
    plot_x = "sequence"          # the plots' x axis: one of the grid's keys (default: the first)

    [fixed]                      # settings or hardware numbers every point shares
    cta_policy = "always"

    [[models]]
    path = "../tests/models/bert_ts_eager.onnx"    # relative to the spec file
    shapes = { input_ids = "1x64", attention_mask = "1x64" }

    [grid]                       # the cartesian product of these axes (or [[points]]: a list)
    tau = [0.3, 0.5, 0.7]
    pe_array = [{ rows = 16, cols = 16 }, { rows = 32, cols = 32 }]
    sequence = [64, 128]         # tokens per sequence: every point compiled at each length

A key is a compile option of `ctac.compile` (tau, tau_kv, hash_bits, cta_window, cta_policy,
cluster_ratio, ...), `attention`, `timing_cluster_ratio` (the clusters per token a timing-only
run charges), `sequence`, or any number of the hardware config by its dotted TOML key
(`pe_array.rows`, `dram.bandwidth_gb_s`, `buffers.act.size_kib`); a table value sets several
keys together. `sequence` replaces the second dimension (batch x sequence [x features]) of
every input of the model's `shapes`, which must all be 2-D or 3-D; the table's `sequence`
column holds each point's length (also without the key: the models' own).

Cache: each point's result is stored under the SHA-256 of everything that decides it (the
model's SHA-256 and input shapes after `sequence`, the settings, the hardware config's SHA-256
after overrides, ctac's version), so a re-run computes only the points that changed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctac.errors import CtacError
from ctac.files import write_atomically
from ctac.sweep_plots import METRICS, SEQUENCE, plot_metric, plot_pareto

SWEEP_KEYS = ("attention", "numerics", "check", "seed", "hw", "out", "plot_x")
MODEL_KEYS = ("path", "shapes", "name")
RUN_KEYS = ("timing_cluster_ratio",)
# Part of every cache key: bumped when what a cached entry holds changes (2: input shapes
# normalised to lists, the sequence axis, the provenance columns in the metrics).
CACHE_SCHEMA = 2


@dataclass
class Point:
    """One point of the sweep, as plain data (it crosses process and Ray boundaries)."""

    model: str
    model_name: str
    model_sha256: str
    shapes: dict  # input name -> dimensions (lists), after `sequence`
    sequence: int | None  # the sequence length (the spec's, else the shapes' second dimension)
    attention: str
    options: dict
    hw_config: str | None
    hw_overrides: dict
    numerics: bool
    check: bool
    seed: int
    timing_cluster_ratio: float | None
    axes: dict  # the grid's values of this point, by flattened key
    key: str = ""


@dataclass
class SweepResult:
    rows: list[dict]  # one per point, in spec order (models, then the grid)
    computed: int
    cached: int
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    failed: int = 0
    up_to_date: bool = False  # the outputs already held these rows: nothing rewritten

    @property
    def table(self):
        """The rows as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows)


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else key))
        return flat
    return {prefix: value}


def _classify(key: str, where: str, base_raw: dict) -> str:
    """'option', 'attention', 'run', 'sequence' or 'hw'; an unknown key is an error naming it."""
    from ctac.api import CTA_OPTIONS, ELSA_OPTIONS
    from ctac.hw_overrides import hardware_node

    if key == "attention":
        return "attention"
    if key in CTA_OPTIONS or key in ELSA_OPTIONS:
        return "option"
    if key in RUN_KEYS:
        return "run"
    if key == SEQUENCE:
        return "sequence"
    try:
        hardware_node(base_raw, key)
    except CtacError:
        raise CtacError(
            f"{where}: unknown key '{key}' (not a compile option such as tau, tau_kv, hash_bits, "
            "cta_policy; not sequence; not a hardware number such as pe_array.rows)"
        ) from None
    return "hw"


def load_spec(path: str | Path) -> tuple[list[Point], dict]:
    """The points of a spec file, each with its cache key, and the spec's [sweep] table."""
    from ctac.api import ATTENTION_MODES, CTA_OPTIONS, ELSA_OPTIONS
    from ctac.files import file_sha256
    from ctac.hw_overrides import hardware

    spec_path = Path(path)
    try:
        raw = tomllib.loads(spec_path.read_text())
    except OSError as exc:
        raise CtacError(f"cannot read sweep spec '{spec_path}': {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CtacError(f"{spec_path}: not valid TOML: {exc}") from None
    where = str(spec_path)
    for key in raw:
        if key not in ("sweep", "fixed", "models", "grid", "points"):
            raise CtacError(f"{where}: unknown table '{key}' (sweep, fixed, models, grid, points)")
    sweep = raw.get("sweep", {})
    for key in sweep:
        if key not in SWEEP_KEYS:
            raise CtacError(f"{where}: unknown key 'sweep.{key}' ({', '.join(SWEEP_KEYS)})")
    folder = spec_path.parent
    base_hw = str(folder / sweep["hw"]) if "hw" in sweep else None
    base = hardware(base_hw)
    attention = sweep.get("attention", "exact")
    numerics = bool(sweep.get("numerics", False))
    check = bool(sweep.get("check", False))
    if check and not numerics:
        raise CtacError(f"{where}: sweep.check needs sweep.numerics = true")
    seed = sweep.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise CtacError(f"{where}: sweep.seed must be an integer, got {seed!r}")

    models = raw.get("models", [])
    if not isinstance(models, list) or not models:
        raise CtacError(f"{where}: no models; add [[models]] tables with path and shapes")
    model_entries = []
    for index, entry in enumerate(models):
        for key in entry:
            if key not in MODEL_KEYS:
                raise CtacError(
                    f"{where}: unknown key 'models[{index}].{key}' ({', '.join(MODEL_KEYS)})"
                )
        if "path" not in entry:
            raise CtacError(f"{where}: models[{index}] has no path")
        model = (folder / entry["path"]).resolve()
        if not model.is_file():
            raise CtacError(f"{where}: models[{index}].path '{entry['path']}' is not a file")
        shapes = _model_shapes(entry.get("shapes", {}), f"{where}: models[{index}].shapes")
        model_entries.append((str(model), entry.get("name", model.stem), file_sha256(model),
                              shapes))  # fmt: skip

    fixed = _flatten(raw.get("fixed", {}), "")
    for key in fixed:
        _classify(key, f"{where}: [fixed]", base.raw)
    if "grid" in raw and "points" in raw:
        raise CtacError(
            f"{where}: give [grid] (a cartesian product) or [[points]] (a list), not both"
        )
    if "grid" in raw:
        grid = raw["grid"]
        if not grid:
            raise CtacError(
                f"{where}: [grid] is empty; give at least one axis, e.g. tau = [0.3, 0.5]"
            )
        axes = []
        for key, values in grid.items():
            if not isinstance(values, list):
                raise CtacError(f"{where}: grid.{key} must be a list of values, got {values!r}")
            if not values:
                raise CtacError(f"{where}: grid.{key} is empty; give at least one value")
            axes.append([_flatten(value, key) for value in values])
        assignments = [
            {k: v for part in combination for k, v in part.items()}
            for combination in itertools.product(*axes)
        ]
    elif "points" in raw:
        assignments = [_flatten(point, "") for point in raw["points"]]
        if not assignments:
            raise CtacError(f"{where}: [[points]] is empty")
    else:
        assignments = [{}]
    for assignment in assignments:
        for key in assignment:
            _classify(key, f"{where}: grid/points", base.raw)

    plot_x = sweep.get("plot_x")
    if plot_x is not None and not any(plot_x in assignment for assignment in assignments):
        axes = list(dict.fromkeys(key for assignment in assignments for key in assignment))
        raise CtacError(
            f"{where}: sweep.plot_x '{plot_x}' is not a key of [grid] or [[points]] "
            f"({', '.join(axes) or 'none'})"
        )
    points = []
    for index, (model, name, sha, shapes) in enumerate(model_entries):
        for assignment in assignments:
            values = {**fixed, **assignment}
            kinds = {key: _classify(key, where, base.raw) for key in values}
            sequence = values.get(SEQUENCE)
            point_shapes = _with_sequence(shapes, sequence, f"{where}: models[{index}]")
            mode = values.get("attention", attention)
            if mode not in ATTENTION_MODES:
                raise CtacError(
                    f"{where}: attention must be one of {', '.join(ATTENTION_MODES)}, got {mode!r}"
                )
            # Options of another mode do not apply (exact ignores tau): such points share a key.
            applies = CTA_OPTIONS if mode == "cta" else ELSA_OPTIONS if mode == "elsa" else ()
            options = {k: v for k, v in values.items() if kinds[k] == "option" and k in applies}
            overrides = {k: v for k, v in values.items() if kinds[k] == "hw"}
            point = Point(
                model, name, sha, point_shapes, _sequence_of(point_shapes, sequence), mode,
                options, base_hw, overrides, numerics, check, seed,
                values.get("timing_cluster_ratio"), dict(assignment),
            )  # fmt: skip
            point.key = _cache_key(point, hardware(base, overrides))
            points.append(point)
    return points, sweep


def _model_shapes(shapes: Any, where: str) -> dict[str, list[int]]:
    """A model entry's shapes ({name: "1x128" or [1, 128]}) as {name: [1, 128]}."""
    from ctac.api import _shape_flags
    from ctac.model_interface import parse_shape_flags

    if not isinstance(shapes, dict):
        raise CtacError(f'{where}: give a table like {{ input_ids = "1x128" }}, got {shapes!r}')
    try:
        return parse_shape_flags(_shape_flags(shapes))
    except CtacError as exc:
        raise CtacError(f"{where}: {exc}") from None


def _with_sequence(shapes: dict[str, list[int]], sequence: Any, where: str) -> dict:
    """The shapes with `sequence` as the second dimension of every input (batch x sequence
    [x features]); an input of another rank, or no shapes, is an error naming the model."""
    if sequence is None:
        return shapes
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 1:
        raise CtacError(f"{where}: sequence must be a positive integer, got {sequence!r}")
    if not shapes:
        raise CtacError(
            f"{where}: sequence = {sequence} needs the model's shapes (e.g. shapes = "
            '{ input_ids = "1x128", attention_mask = "1x128" }) to set the length in'
        )
    other = [f"{name} ({'x'.join(map(str, dims))})" for name, dims in shapes.items()
             if len(dims) not in (2, 3)]  # fmt: skip
    if other:
        raise CtacError(
            f"{where}: sequence sets the second dimension of 2-D or 3-D inputs (batch x sequence "
            f"[x features]); {', '.join(other)} has none"
        )
    return {name: [dims[0], sequence, *dims[2:]] for name, dims in shapes.items()}


def _sequence_of(shapes: dict[str, list[int]], sequence: int | None) -> int | None:
    """The table's sequence column: the spec's value, else the inputs' common second
    dimension when they are 2-D or 3-D and agree on it."""
    if sequence is not None:
        return sequence
    lengths = {dims[1] for dims in shapes.values() if len(dims) in (2, 3)}
    if len(lengths) == 1 and all(len(dims) in (2, 3) for dims in shapes.values()):
        return lengths.pop()
    return None


def _cache_key(point: Point, hw) -> str:
    from ctac import __version__

    content = {
        "schema": CACHE_SCHEMA,
        "model_sha256": point.model_sha256,
        "shapes": point.shapes,  # after `sequence`: each length is its own entry
        "attention": point.attention,
        "options": point.options,
        "hardware_sha256": hw.digest.hex(),
        "numerics": point.numerics,
        "check": point.check,
        "seed": point.seed if point.numerics else None,
        "timing_cluster_ratio": point.timing_cluster_ratio,
        "ctac_version": __version__,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def compute_point_in_worker(point: Point) -> dict:
    """compute_point in one of several worker processes, which already take a core each: one
    thread for OpenMP and one interpreter lane (runtime/lanes.py)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("CTAC_THREADS", "1")
    return compute_point(point)


def compute_point(point: Point) -> dict:
    """Compile and run one point; its metrics, or {'error': message}."""
    from ctac.api import compile, hardware, run

    try:
        hw = hardware(point.hw_config, point.hw_overrides)
        program = compile(point.model, point.shapes, point.attention, hw=hw, **point.options)
        result = run(
            program, seed=point.seed, timing_only=not point.numerics, check=point.check,
            cluster_ratio=point.timing_cluster_ratio if not point.numerics else None,
        )  # fmt: skip
    except CtacError as exc:
        return {"error": str(exc)}
    metrics = {
        "cycles": result.cycles,
        "seconds": result.seconds,
        "energy_pj": result.energy_pj,
        "dram_bytes": result.dram_bytes,
        "instructions": program.instructions,
    }
    # The provenance's identity columns (hardware, hardware_config, hardware_sha256,
    # ctac_version), named as in every JSON result; the row has the model's already.
    origin = result.provenance.to_dict()
    for key in ("settings", "program", "model_path", "model_sha256"):
        origin.pop(key)
    metrics.update(origin)
    if point.check:
        metrics["max_abs_err"] = result.max_abs_err
    return metrics


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ctac" / "sweep"


def _cache_read(cache: Path, key: str) -> dict | None:
    try:
        entry = json.loads((cache / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None
    return entry.get("metrics") if isinstance(entry, dict) and entry.get("key") == key else None


def _cache_write(cache: Path, point: Point, metrics: dict) -> None:
    from dataclasses import asdict

    entry = {"key": point.key, "point": asdict(point), "metrics": metrics}
    write_atomically(cache / f"{point.key}.json", (json.dumps(entry, indent=1) + "\n").encode())


def _run_local(points: list[Point], jobs: int, done) -> None:
    if jobs <= 1 or len(points) <= 1:
        for point in points:
            done(point, compute_point(point))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: onnxruntime and numpy threads do not survive a fork cleanly
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(compute_point_in_worker, point): point for point in points}
        for future in as_completed(futures):
            done(futures[future], future.result())


def _run_ray(points: list[Point], address: str | None, jobs: int, done) -> None:
    try:
        import ray
    except ImportError:
        raise CtacError("--ray needs Ray: pip install 'ctac[ray]'") from None
    if not ray.is_initialized():
        if address or os.environ.get("RAY_ADDRESS"):  # a running cluster
            ray.init(address=address or None, log_to_driver=False)
        else:  # a local instance with --jobs CPUs
            ray.init(num_cpus=max(jobs, 1), include_dashboard=False, log_to_driver=False)
    remote = ray.remote(compute_point_in_worker)
    pending = {remote.remote(point): point for point in points}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            done(pending.pop(ref), ray.get(ref))


def run_sweep(
    spec: str | Path,
    out: str | Path | None = None,
    *,
    jobs: int | None = None,
    cache: str | Path | None = None,
    ray_address: str | None = None,
    use_ray: bool = False,
    progress: bool = True,
    image_format: str = "png",
) -> SweepResult:
    """Run a sweep spec: cached points are read back, the rest computed; then the table and
    the plots are written to `out` (default: the spec's sweep.out, else sweep-<spec name>)."""
    from tqdm import tqdm

    started = time.perf_counter()
    points, sweep = load_spec(spec)
    out_dir = Path(out or sweep.get("out") or f"sweep-{Path(spec).stem}")
    cache_dir = Path(cache) if cache is not None else default_cache()
    jobs = jobs or min(os.cpu_count() or 1, 8)
    if jobs < 1:
        raise CtacError(f"--jobs must be at least 1, got {jobs}")
    results: dict[str, tuple[dict, bool]] = {}
    todo = []
    for point in points:
        hit = _cache_read(cache_dir, point.key)
        if hit is not None:
            results[point.key] = (hit, True)
        elif point.key not in {p.key for p in todo}:
            todo.append(point)
    bar = tqdm(total=len(points), desc="sweep", unit="point", disable=not progress, file=sys.stderr)
    bar.update(len(points) - len(todo))
    bar.set_postfix(cached=len(points) - len(todo))

    def done(point: Point, metrics: dict) -> None:
        results[point.key] = (metrics, False)
        if "error" not in metrics:
            _cache_write(cache_dir, point, metrics)
        bar.update(sum(1 for p in points if p.key == point.key))

    try:
        if use_ray:
            _run_ray(todo, ray_address, jobs, done)
        else:
            _run_local(todo, jobs, done)
    finally:
        bar.close()
    rows = []
    for point in points:
        metrics, cached = results[point.key]
        rows.append({
            "model": point.model_name, "model_path": point.model, "model_sha256": point.model_sha256,
            "shapes": _shape_text(point.shapes), SEQUENCE: point.sequence,
            "attention": point.attention,
            "timing_only": not point.numerics, **point.axes, **metrics,
            "cache_key": point.key,
        })  # fmt: skip
    failed = sum(1 for row in rows if "error" in row)
    files, up_to_date = write_outputs(rows, points, out_dir, image_format, sweep.get("plot_x"))
    computed = sum(1 for metrics, cached in results.values() if not cached)
    return SweepResult(rows, computed, len(results) - computed, files,
                       time.perf_counter() - started, failed, up_to_date)  # fmt: skip


def _shape_text(shapes: Any) -> str:
    from ctac.api import _shape_flags

    return ",".join(_shape_flags(shapes))


def _has_pyarrow() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None


def write_outputs(
    rows: list[dict], points: list[Point], out: Path, image_format: str, plot_x: str | None = None
) -> tuple[dict[str, Path], bool]:
    """results.csv (and .parquet with pyarrow) and one figure per metric against `plot_x` (default:
    the first axis). The outputs are a function of the rows and these options: when `out`
    already holds them (its .sweep-stamp), nothing is rewritten."""

    if out.exists() and not out.is_dir():
        raise CtacError(f"--out {out} is a file; give a folder")
    stamp_path = out / ".sweep-stamp"
    digest = hashlib.sha256(
        json.dumps(
            [rows, image_format, _has_pyarrow(), plot_x], sort_keys=True, default=str
        ).encode()
    ).hexdigest()
    try:
        stamp = json.loads(stamp_path.read_text())
        if stamp["digest"] == digest and all(Path(p).is_file() for p in stamp["files"].values()):
            return {kind: Path(path) for kind, path in stamp["files"].items()}, True
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    import pandas as pd

    table = pd.DataFrame(rows)
    files = {"csv": out / "results.csv"}
    write_atomically(files["csv"], table.to_csv(index=False).encode())
    if _has_pyarrow():
        import io

        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        files["parquet"] = out / "results.parquet"
        write_atomically(files["parquet"], buffer.getvalue())
    axes = list(dict.fromkeys(key for point in points for key in point.axes))
    if plot_x in axes:  # the x axis first: the others make the lines
        axes.remove(plot_x)
        axes.insert(0, plot_x)
    for metric in METRICS:
        if metric in table and table[metric].notna().any():
            path = out / f"{metric}.{image_format}"
            plot_metric(table, metric, axes, points, path, image_format)
            files[metric] = path
    if "max_abs_err" in table and table["max_abs_err"].notna().any():
        files["pareto"] = out / f"pareto.{image_format}"
        plot_pareto(table, axes, files["pareto"], image_format)
    stamp = {"digest": digest, "files": {kind: str(path) for kind, path in files.items()}}
    write_atomically(stamp_path, (json.dumps(stamp, indent=1) + "\n").encode())
    return files, False


def main(args) -> int:
    """`ctac sweep` (the CLI's handler)."""
    result = run_sweep(
        args.spec, args.out, jobs=args.jobs, cache=args.cache,
        use_ray=args.ray is not None, ray_address=args.ray or None,
        progress=not args.no_progress, image_format=args.format,
    )  # fmt: skip
    print(
        f"{len(result.rows)} points: {result.computed} computed, {result.cached} from the cache "
        f"({result.seconds:.1f} s)"
    )
    for kind, path in result.files.items():
        print(f"{'up to date' if result.up_to_date else 'wrote'} {path}  ({kind})")
    if result.failed:
        first = next(row["error"] for row in result.rows if "error" in row)
        raise CtacError(f"{result.failed} of {len(result.rows)} points failed; the first: {first}")
    return 0
