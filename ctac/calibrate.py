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
calibration set. The samples come from ctac/calibration_data.py (an npz of inputs, or text read
with the model's tokenizer.json).

With several clustering methods (`methods`), the search runs once per method, and among the
methods that meet the target the one whose compressed program the cost model finds cheapest
(ctac/policy.py `decide`, at that method's observed cluster ratio and buckets, summed over the
layers) is chosen: thresholds mean different things to different methods, so each gets its own,
and what a method saves is only known once its clusters are. The `[search]` table records every
method tried; a method with no CTA-ISA form (no modelled cycles) is chosen only if no method
with one meets the target.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from ctac.errors import CtacError

if TYPE_CHECKING:
    from ctac.hw import Hardware
    from ctac.policy import ClusterExpectation

TAU_LADDER = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
KV_RATIO = 0.6  # tau-kv / tau-q of the CLI defaults (0.3 / 0.5)
LAYER_STEPS = (1.25, 1.5, 2.0)
MIN_SLACK = 0.004  # the worst output row may fall this far below the target
# What calibration compares: every output row (token), or per sequence the outputs mean-pooled
# over its real tokens (the sentence embedding a model like all-MiniLM-L6-v2 is used for).
FIDELITY_MEASURES = ("rows", "pooled")
ROLES = ("q", "kv", "qkv")  # the clustering roles cta-compress labels its cta.cluster ops with


@dataclass
class MethodResult:
    """One method's calibration, as the `[search]` table records it."""

    method: str
    tau_q: float
    tau_kv: float
    mean_cosine: float
    min_cosine: float
    cluster_ratio: float  # clusters per valid token, mean over the attention layers
    cycles: int | None  # modelled cycles of its compressed program; None: it has no ISA form
    meets_target: bool
    note: str = ""  # why there are no cycles

    def to_toml(self) -> str:
        cycles = (
            f"cycles = {self.cycles}" if self.cycles is not None else f"note = {_quote(self.note)}"
        )
        return (
            f"{_quote(self.method)} = {{ tau_q = {self.tau_q:.4f}, tau_kv = {self.tau_kv:.4f}, "
            f"mean_cosine = {self.mean_cosine:.6f}, min_cosine = {self.min_cosine:.6f}, "
            f"cluster_ratio = {self.cluster_ratio:.4f}, {cycles}, "
            f"meets_target = {str(self.meets_target).lower()} }}\n"
        )


def _quote(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's; the notes quote error messages)."""
    return json.dumps(text)


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
    search: list[MethodResult] = field(default_factory=list)  # every method tried
    window: int = 0  # cta-compress window (0: every cluster of the bucket is compared)
    measure: str = "rows"  # what the cosines compare (FIDELITY_MEASURES)
    # Per attention layer, clusters per valid token of each clustering role ('q', 'kv', 'qkv'):
    # the queries' threshold is higher than the keys', so they merge more.
    role_ratios: list[dict[str, float]] = field(default_factory=list)

    @property
    def cluster_ratio(self) -> float:
        """One ratio for everything: the largest layer's (conservative)."""
        return max(self.cluster_ratios, default=1.0)

    def expectation(self) -> ClusterExpectation:
        """What the cost model should charge: each layer and role at its observed ratio (files
        without per-role ratios: each layer at its own), anything else at the largest."""
        from ctac.policy import ALL_ROLES, ClusterExpectation

        layers = self.role_ratios or [{ALL_ROLES: r} for r in self.cluster_ratios]
        return ClusterExpectation(self.cluster_ratio, self.buckets, tuple(layers))

    def to_toml(self) -> str:
        scale = ", ".join(f"{f:.4f}" for f in self.layer_scale)
        ratios = ", ".join(f"{r:.4f}" for r in self.cluster_ratios)
        return (
            "# CTA settings from `ctac calibrate` (ctac/calibrate.py)\n"
            "[cta]\n"
            f"tau_q = {self.tau_q:.4f}\ntau_kv = {self.tau_kv:.4f}\nhash_bits = {self.hash_bits}\n"
            f'method = "{self.method}"\ngranularity = "{self.granularity}"\n'
            f"window = {self.window}\nlayer_scale = [{scale}]\n\n"
            "[fidelity]  # measured on the calibration set\n"
            f"target_cosine = {self.target_cosine:g}\nmean_cosine = {self.mean_cosine:.6f}\n"
            f"min_cosine = {self.min_cosine:.6f}\nsamples = {self.samples}\n"
            f'measure = "{self.measure}"\n\n'
            "[clusters]  # observed clusters per valid token, per attention layer\n"
            f"ratios = [{ratios}]\n"
            + "".join(
                f"{role} = [{', '.join(f'{layer.get(role, 1.0):.4f}' for layer in self.role_ratios)}]"
                "  # its clustering role only\n"
                for role in ROLES
                if any(role in layer for layer in self.role_ratios)
            )
            + f"buckets = {self.buckets:.4f}  # effective hash buckets (comparisons observed)\n"
        ) + (
            "\n[search]  # every method tried; [cta] has the cheapest (modelled cycles) of those "
            "meeting the target\n" + "".join(result.to_toml() for result in self.search)
            if self.search
            else ""
        )

    def compress_spec(self) -> str:
        """The cta-compress pass spec of these settings."""
        return _spec(self.tau_q, self.tau_kv, self.hash_bits, self.method, self.granularity,
                     self.layer_scale, self.window)  # fmt: skip


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
            [_method_result(name, entry) for name, entry in raw.get("search", {}).items()],
            int(cta.get("window", 0)), str(fidelity.get("measure", "rows")),
            _role_ratios(raw.get("clusters", {})),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise CtacError(
            f"{path}: not a CTA settings file ({exc}); write one with `ctac calibrate`"
        ) from None


def _role_ratios(clusters: dict) -> list[dict[str, float]]:
    """[clusters] q = [...], kv = [...] as one {role: ratio} per layer."""
    columns = {role: [float(r) for r in clusters[role]] for role in ROLES if role in clusters}
    layers = max((len(column) for column in columns.values()), default=0)
    return [
        {role: column[i] for role, column in columns.items() if i < len(column)}
        for i in range(layers)
    ]


def _method_result(name: str, entry: dict) -> MethodResult:
    return MethodResult(
        name, float(entry["tau_q"]), float(entry["tau_kv"]), float(entry["mean_cosine"]),
        float(entry["min_cosine"]), float(entry["cluster_ratio"]),
        int(entry["cycles"]) if "cycles" in entry else None, bool(entry["meets_target"]),
        str(entry.get("note", "")),
    )  # fmt: skip


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


def _pooled(array: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """(batch, sequence, features) -> (batch, features): the mean over each sequence's real
    tokens (a sentence embedding); other outputs are left as they are."""
    if array.ndim != 3:
        return array
    weight = np.ones(array.shape[:2]) if mask is None or mask.shape != array.shape[:2] else mask
    weight = np.asarray(weight, dtype=np.float64)[..., None]
    return (array * weight).sum(axis=1) / np.maximum(weight.sum(axis=1), 1.0)


def _fidelity(
    detected: ModuleOp, spec: str, samples: list[dict], exact: list[dict], measure: str = "rows"
):
    """(mean cosine, min cosine, clusters per valid token of each attention layer, effective
    hash buckets). `measure` "rows": cosines of every output row (every real token's vector);
    "pooled": of each sequence's outputs mean-pooled over its real tokens (what a sentence
    embedding model returns). If every token of a sequence of n compared with all clusters so far in one
    bucket, a sequence forming m clusters would make about m n / 2 comparisons; the effective
    number of buckets is that over the comparisons observed."""
    from ctac.pipeline import run_passes
    from ctac.run import row_cosines
    from ctac.runtime import compression
    from ctac.runtime.evaluator import evaluate

    module = detected.clone()
    run_passes(module, spec)
    cosines, ratios, roles = [], {}, {}
    one_bucket = observed = 0.0
    for sample, expected in zip(samples, exact, strict=True):
        with compression.recording() as log:
            got = evaluate(module, sample)
        # Padding positions carry no meaning (the model's own outputs there are arbitrary), so
        # an output laid out per token (batch, sequence, ...) is compared on real tokens only.
        mask = sample.get("attention_mask")
        for name, array in expected.items():
            if measure == "pooled":
                cosines.append(row_cosines(_pooled(array, mask), _pooled(got[name], mask)))
                continue
            rows = row_cosines(array, got[name])
            if mask is not None and array.ndim == 3 and array.shape[:2] == mask.shape:
                rows = rows[np.asarray(mask).reshape(-1) != 0]
            cosines.append(rows)
        for record in log:
            one_bucket += float(record.clusters.sum()) * record.shape[-2] / 2
            observed += record.comparisons
            layer, _, role = record.label.partition("/")
            formed, valid = float(record.clusters.sum()), float(record.valid_tokens.sum())
            for table, key in ((ratios, layer), (roles, (layer, role))):
                so_far = table.get(key, (0.0, 0.0))
                table[key] = (so_far[0] + formed, so_far[1] + valid)
    values = np.concatenate(cosines)
    per_layer = [formed / tokens if tokens else 1.0 for formed, tokens in ratios.values()]
    per_role = [
        {
            role: f / t if t else 1.0
            for (name, role), (f, t) in roles.items()
            if name == layer and role
        }
        for layer in ratios
    ]
    buckets = max(1.0, one_bucket / observed) if observed else 1.0
    return float(values.mean()), float(values.min()), per_layer, buckets, per_role


def _spec(
    tau_q: float, tau_kv: float, hash_bits: int, method: str, granularity: str, scale: list[float],
    window: int = 0,
) -> str:  # fmt: skip
    scales = f" layer-scale={','.join(f'{f:.4f}' for f in scale)}" if scale else ""
    windowed = f" window={window}" if window else ""
    return (
        f"cta-compress{{tau-q={tau_q:.4f} tau-kv={tau_kv:.4f} hash-bits={hash_bits} "
        f"method={method} granularity={granularity}{scales}{windowed}}}"
    )


def _meets(result: tuple, target: float) -> bool:
    return result[0] >= target and result[1] >= target - MIN_SLACK


def _search(
    detected: ModuleOp, samples: list[dict], exact: list[dict], target: float, hash_bits: int,
    method: str, granularity: str, progress: Callable[[str], None] | None, window: int = 0,
    measure: str = "rows",
) -> Settings:  # fmt: skip
    """One method's thresholds: the tau ladder, then the per-layer raises."""

    def spec(tau: float, scale: list[float]) -> str:
        return _spec(tau, tau * KV_RATIO, hash_bits, method, granularity, scale, window)

    best_tau, best = 0.0, _fidelity(detected, spec(0.0, []), samples, exact, measure)
    for tau in TAU_LADDER:
        result = _fidelity(detected, spec(tau, []), samples, exact, measure)
        if progress:
            progress(f"{method} tau {tau:g}: mean cosine {result[0]:.5f}, min {result[1]:.5f}")
        if not _meets(result, target):
            break
        best_tau, best = tau, result
    layers = len(best[2])
    scale = [1.0] * layers
    if best_tau > 0:
        for layer in range(layers):
            for step in LAYER_STEPS:
                trial = scale.copy()
                trial[layer] = step
                result = _fidelity(detected, spec(best_tau, trial), samples, exact, measure)
                if not _meets(result, target):
                    break
                scale, best = trial, result
            if progress:
                progress(f"{method} layer {layer}: threshold x{scale[layer]:g}")
    return Settings(
        best_tau, best_tau * KV_RATIO, hash_bits, method, granularity,
        scale if any(f != 1.0 for f in scale) else [], target, best[0], best[1], len(samples),
        best[2], min(best[3], float(2**hash_bits)), window=window, measure=measure,
        role_ratios=best[4],
    )  # fmt: skip


def _modelled(detected: ModuleOp, settings: Settings, hw: Hardware) -> MethodResult:
    """The `[search]` line of a method's settings: its fidelity, and the cost model's cycles for
    its compressed program at its observed clusters (summed over the attention blocks)."""
    from ctac.policy import decide

    cycles, note = None, ""
    try:
        decisions = decide(detected, settings.compress_spec(), hw, settings.expectation())
        cycles = sum(decision.cta_cycles for decision in decisions)
    except CtacError as exc:  # e.g. a method without a CLUSTER instruction (hash-spread)
        lines = str(exc).splitlines()  # "N op(s) cannot be lowered ...:" then one per op
        note = "not compiled: " + (lines[1] if len(lines) > 1 else lines[0]).strip()
    ratios = settings.cluster_ratios
    return MethodResult(
        settings.method, settings.tau_q, settings.tau_kv, settings.mean_cosine,
        settings.min_cosine, sum(ratios) / len(ratios) if ratios else 1.0, cycles,
        _meets((settings.mean_cosine, settings.min_cosine), settings.target_cosine), note,
    )  # fmt: skip


def _choose(results: list[MethodResult]) -> int:
    """Index of the chosen method: the cheapest meeting the target; else the first meeting it
    (no method has cycles); else the most faithful."""
    meeting = [i for i, r in enumerate(results) if r.meets_target]
    costed = [i for i in meeting if results[i].cycles is not None]
    if costed:
        return min(costed, key=lambda i: results[i].cycles)
    if meeting:
        return meeting[0]
    return max(range(len(results)), key=lambda i: results[i].mean_cosine)


def calibrate(
    detected: ModuleOp,
    samples: list[dict],
    target: float = 0.999,
    hash_bits: int = 4,
    method: str = "hash-leader",
    granularity: str = "head",
    progress: Callable[[str], None] | None = None,
    methods: Sequence[str] | None = None,
    hw: Hardware | None = None,
    window: int = 0,
    measure: str = "rows",
) -> Settings:
    """Thresholds meeting `target` on `samples`, for the cheapest of `methods` (default: just
    `method`) on `hw` (default: ctac's own hardware) that meets it (see the module doc)."""
    from ctac.dialects.cta import CLUSTER_METHODS
    from ctac.runtime.evaluator import evaluate

    if not 0 < target <= 1:
        raise CtacError(f"--target-cosine must be in (0, 1], got {target}")
    if measure not in FIDELITY_MEASURES:
        raise CtacError(f"--fidelity must be one of {', '.join(FIDELITY_MEASURES)}, got {measure}")
    methods = list(dict.fromkeys(methods or [method]))  # in order, once each
    unknown = [m for m in methods if m not in CLUSTER_METHODS]
    if unknown:
        raise CtacError(
            f"unknown clustering method(s) {unknown}; choose from {', '.join(CLUSTER_METHODS)}"
        )
    if hw is None:
        from ctac.hw import load_hardware

        hw = load_hardware(None)
    exact = [evaluate(detected, sample) for sample in samples]
    found, results = [], []
    for name in methods:
        settings = _search(
            detected, samples, exact, target, hash_bits, name, granularity, progress, window,
            measure,
        )  # fmt: skip
        result = _modelled(detected, settings, hw)
        found.append(settings)
        results.append(result)
        if progress:
            cost = (
                f"{result.cycles:,} modelled cycles" if result.cycles is not None else result.note
            )
            progress(
                f"{name}: tau-q {result.tau_q:g}, mean cosine {result.mean_cosine:.5f}"
                f"{'' if result.meets_target else ' (misses the target)'}, "
                f"{result.cluster_ratio:.3g} clusters per token, {cost}"
            )
    chosen = found[_choose(results)]
    chosen.search = results
    if progress and len(methods) > 1:
        progress(f"chose {chosen.method}")
    return chosen
