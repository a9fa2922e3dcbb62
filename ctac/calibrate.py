"""CTA calibration: thresholds that keep a model's outputs within a target cosine on a
calibration set, and the cluster ratios they form there.

`calibrate` runs the detected model exactly and compressed (numpy reference semantics) on every
calibration sample, for a ladder of thresholds (tau-q = tau, tau-kv = 0.6 tau, the ratio of the
CLI defaults 0.5 / 0.3), keeps the largest tau whose outputs meet the target (mean cosine >=
target, min >= target - 0.004 per output row), then raises each layer's threshold in turn
(`layer-scale`) while the target still holds. The settings file (TOML) records the thresholds,
the fidelity measured with them, and each attention layer's observed clusters per token, which
`ctac compile --cta-settings FILE` uses (and hands the cost-aware policy as its cluster ratio).
Evaluate on data not used for calibration: the fidelity in the file is measured on the
calibration set.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from ctac.errors import CtacError

TAU_LADDER = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
KV_RATIO = 0.6  # tau-kv / tau-q of the CLI defaults (0.3 / 0.5)
LAYER_STEPS = (1.25, 1.5, 2.0)
MIN_SLACK = 0.004  # the worst output row may fall this far below the target


@dataclass
class Settings:
    tau_q: float
    tau_kv: float
    hash_bits: int
    method: str
    granularity: str
    layer_scale: list[float]
    target_cosine: float
    mean_cosine: float
    min_cosine: float
    samples: int
    cluster_ratios: list[float] = field(default_factory=list)  # per attention layer
    # Effective hash buckets: how evenly tokens spread over them, from the comparisons the
    # leader step made (1: all in one bucket; 2^hash_bits: perfectly even).
    buckets: float = 1.0

    @property
    def cluster_ratio(self) -> float:
        """The ratio the cost-aware policy should expect: the largest layer's."""
        return max(self.cluster_ratios, default=1.0)

    def to_toml(self) -> str:
        scale = ", ".join(f"{f:.4f}" for f in self.layer_scale)
        ratios = ", ".join(f"{r:.4f}" for r in self.cluster_ratios)
        return (
            "# CTA settings from `ctac calibrate` (ctac/calibrate.py)\n"
            "[cta]\n"
            f"tau_q = {self.tau_q:.4f}\ntau_kv = {self.tau_kv:.4f}\nhash_bits = {self.hash_bits}\n"
            f'method = "{self.method}"\ngranularity = "{self.granularity}"\n'
            f"layer_scale = [{scale}]\n\n"
            "[fidelity]  # measured on the calibration set\n"
            f"target_cosine = {self.target_cosine:g}\nmean_cosine = {self.mean_cosine:.6f}\n"
            f"min_cosine = {self.min_cosine:.6f}\nsamples = {self.samples}\n\n"
            "[clusters]  # observed clusters per valid token, per attention layer\n"
            f"ratios = [{ratios}]\n"
            f"buckets = {self.buckets:.4f}  # effective hash buckets (comparisons observed)\n"
        )


def read_settings(path: str | Path) -> Settings:
    """A settings file written by `calibrate`; a clear error names what is missing."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise CtacError(f"cannot read CTA settings '{path}': {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CtacError(f"{path}: not valid TOML: {exc}") from None
    try:
        cta, fidelity = raw["cta"], raw["fidelity"]
        return Settings(
            float(cta["tau_q"]), float(cta["tau_kv"]), int(cta["hash_bits"]), str(cta["method"]),
            str(cta["granularity"]), [float(f) for f in cta.get("layer_scale", [])],
            float(fidelity["target_cosine"]), float(fidelity["mean_cosine"]),
            float(fidelity["min_cosine"]), int(fidelity["samples"]),
            [float(r) for r in raw.get("clusters", {}).get("ratios", [])],
            float(raw.get("clusters", {}).get("buckets", 1.0)),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise CtacError(
            f"{path}: not a CTA settings file ({exc}); write one with `ctac calibrate`"
        ) from None


def load_samples(path: str | Path, input_shapes: dict[str, tuple[int, ...]]) -> list[dict]:
    """Calibration samples from an npz: per model input an array of the input's shape, or with
    one more leading axis of samples."""
    try:
        archive = np.load(path)
    except (OSError, ValueError) as exc:
        raise CtacError(f"cannot read calibration data '{path}': {exc}") from None
    missing = sorted(set(input_shapes) - set(archive.files))
    if missing:
        raise CtacError(f"{path}: no array for input(s) {missing}; the npz needs one per input")
    counts = set()
    arrays = {}
    for name, shape in input_shapes.items():
        array = archive[name]
        if tuple(array.shape) == tuple(shape):
            array = array[None]
        if tuple(array.shape[1:]) != tuple(shape):
            raise CtacError(
                f"{path}: '{name}' has shape {list(array.shape)}; expected {list(shape)} or "
                f"[samples, {', '.join(map(str, shape))}]"
            )
        arrays[name] = array
        counts.add(array.shape[0])
    if len(counts) != 1:
        raise CtacError(f"{path}: inputs disagree on the number of samples {sorted(counts)}")
    return [{n: a[i] for n, a in arrays.items()} for i in range(counts.pop())]


def _row_cosines(expected: np.ndarray, got: np.ndarray) -> np.ndarray:
    a = expected.reshape(-1, expected.shape[-1]).astype(np.float64)
    b = got.reshape(-1, got.shape[-1]).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(axis=1) / np.maximum(norms, 1e-30), 1.0)


def _fidelity(detected: ModuleOp, spec: str, samples: list[dict], exact: list[dict]):
    """(mean cosine, min cosine, clusters per valid token of each attention layer, effective
    hash buckets). If every token of a sequence of n compared with all clusters so far in one
    bucket, a sequence forming m clusters would make about m n / 2 comparisons; the effective
    number of buckets is that over the comparisons observed."""
    from ctac.pipeline import run_passes
    from ctac.runtime import compression
    from ctac.runtime.evaluator import evaluate

    module = copy.deepcopy(detected)
    run_passes(module, spec)
    cosines, ratios = [], {}
    one_bucket = observed = 0.0
    for sample, expected in zip(samples, exact, strict=True):
        with compression.recording() as log:
            got = evaluate(module, sample)
        for name, array in expected.items():
            cosines.append(_row_cosines(array, got[name]))
        for record in log:
            one_bucket += float(record.clusters.sum()) * record.shape[-2] / 2
            observed += record.comparisons
            layer = record.label.split("/")[0]
            formed, tokens = ratios.get(layer, (0.0, 0.0))
            ratios[layer] = (formed + float(record.clusters.sum()),
                             tokens + float(record.valid_tokens.sum()))  # fmt: skip
    values = np.concatenate(cosines)
    per_layer = [formed / tokens if tokens else 1.0 for formed, tokens in ratios.values()]
    buckets = max(1.0, one_bucket / observed) if observed else 1.0
    return float(values.mean()), float(values.min()), per_layer, buckets


def calibrate(
    detected: ModuleOp,
    samples: list[dict],
    target: float = 0.999,
    hash_bits: int = 4,
    method: str = "hash-leader",
    granularity: str = "head",
    progress=None,
) -> Settings:
    """Thresholds meeting `target` on `samples` (see the module doc)."""
    from ctac.runtime.evaluator import evaluate

    if not 0 < target <= 1:
        raise CtacError(f"--target-cosine must be in (0, 1], got {target}")
    exact = [evaluate(detected, sample) for sample in samples]

    def spec(tau: float, scale: list[float]) -> str:
        scales = f" layer-scale={','.join(f'{f:.4f}' for f in scale)}" if scale else ""
        return (
            f"cta-compress{{tau-q={tau:.4f} tau-kv={tau * KV_RATIO:.4f} hash-bits={hash_bits} "
            f"method={method} granularity={granularity}{scales}}}"
        )

    def meets(result) -> bool:
        return result[0] >= target and result[1] >= target - MIN_SLACK

    best_tau, best = 0.0, _fidelity(detected, spec(0.0, []), samples, exact)
    for tau in TAU_LADDER:
        result = _fidelity(detected, spec(tau, []), samples, exact)
        if progress:
            progress(f"tau {tau:g}: mean cosine {result[0]:.5f}, min {result[1]:.5f}")
        if not meets(result):
            break
        best_tau, best = tau, result
    layers = len(best[2])
    scale = [1.0] * layers
    if best_tau > 0:
        for layer in range(layers):
            for step in LAYER_STEPS:
                trial = scale.copy()
                trial[layer] = step
                result = _fidelity(detected, spec(best_tau, trial), samples, exact)
                if not meets(result):
                    break
                scale, best = trial, result
            if progress:
                progress(f"layer {layer}: threshold x{scale[layer]:g}")
    return Settings(
        best_tau, best_tau * KV_RATIO, hash_bits, method, granularity,
        scale if any(f != 1.0 for f in scale) else [], target, best[0], best[1], len(samples),
        best[2], min(best[3], float(2**hash_bits)),
    )  # fmt: skip
