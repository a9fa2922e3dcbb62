"""ctac's Python API: compile a model, run and profile the program, compare attention modes.

    import ctac
    shapes = {"input_ids": (1, 64), "attention_mask": (1, 64)}
    exact = ctac.compile("tests/models/bert_ts_eager.onnx", shapes)
    cta = ctac.compile("tests/models/bert_ts_eager.onnx", shapes, "cta", tau=0.5,
                       cta_policy="always", hw_overrides={"pe_array.rows": 16})
    runs = [ctac.run(p) for p in (exact, cta)]
    print(ctac.compare(runs).table())

Every function does what a command does (`ctac compile` = `compile`, `ctac run` = `run`,
`ctac profile` = `profile`), on the same front end (ctac/frontend.py); the commands sit above
this module and use its provenance records. Each result is a dataclass whose `.to_dict()` is
JSON-ready, with units in the key names (`cycles`, `seconds`, `energy_pj`, `dram_bytes`) and a
`provenance` entry (`Provenance`: model_path, model_sha256, program, hardware,
hardware_config, hardware_sha256, ctac_version, settings), the record the CLI's JSON carries
too. Misuse raises `ctac.CtacError` with a message naming the argument.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctac import __version__
from ctac.emit import compile_module
from ctac.errors import CtacError
from ctac.files import file_sha256, write_atomically
from ctac.frontend import compile_arguments, front_end, record_origin
from ctac.hw import Hardware, with_precision
from ctac.hw_overrides import hardware
from ctac.model_interface import parse_shape_flags
from ctac.provenance import Provenance, provenance, run_settings
from ctac.run import (
    attention_report,
    compare_with_onnxruntime,
    execute,
    random_inputs,
    timing_clusters,
)
from ctac.runtime.costmodel import simulate
from ctac.runtime.profile import per_block, summary, write_reports
from ctac.runtime.program import encode_chunks

__all__ = [
    "ATTENTION_MODES", "CTA_OPTIONS", "ELSA_OPTIONS", "Comparison", "CompiledProgram",
    "ProfileResult", "Provenance", "RunResult", "compare", "compare_modes", "compile", "hardware",
    "profile", "provenance", "run", "run_settings",
]  # fmt: skip

ATTENTION_MODES = ("exact", "cta", "elsa")
# Compression options of `compile` (keyword = the CLI flag without `--`, dashes as underscores).
CTA_OPTIONS = (
    "tau", "tau_kv", "hash_bits", "cta_method", "cta_granularity", "cta_block", "cta_window",
    "cta_values", "cta_keys", "cta_keep_top", "cta_policy", "cluster_ratio",
)  # fmt: skip
ELSA_OPTIONS = ("elsa_bits", "elsa_threshold")


def _version() -> str:
    return __version__


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class CompiledProgram:
    """A program for the accelerator, with the machine it was compiled for."""

    program: Any  # ctac.runtime.program.Program
    hw: Hardware
    mode: str
    provenance: Provenance

    @property
    def instructions(self) -> int:
        return len(self.program.instructions)

    @property
    def policy(self) -> list[dict]:
        """The CTA cost policy's decision per attention layer (empty unless it ran)."""
        return list(self.program.policy)

    @property
    def inputs(self) -> dict[str, tuple[int, ...]]:
        return {symbol.name: tuple(symbol.shape) for symbol in self.program.inputs}

    def save(self, path: str | Path) -> Path:
        """Write the .ctab file (whole or not at all); it embeds its hardware config and
        records its model, so `ctac run` and `profile` need no --hw."""
        write_atomically(path, encode_chunks(self.program, file_ranges=True))  # weights not copied
        return Path(path)

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "instructions": self.instructions,
            "inputs": {name: list(shape) for name, shape in self.inputs.items()},
            "cta_policy": self.policy,
            "provenance": self.provenance.to_dict(),
        }


@dataclass
class RunResult:
    """One run of a program: totals, outputs (functional runs) and errors against onnxruntime."""

    mode: str
    timing_only: bool
    cycles: int
    seconds: float
    energy_pj: float
    dram_bytes: float
    outputs: dict[str, np.ndarray]
    errors: dict[str, dict]
    attention: list[dict]
    provenance: Provenance
    program: CompiledProgram = field(repr=False)
    profile: Any = field(repr=False)  # ctac.runtime.costmodel.Profile

    @property
    def max_abs_err(self) -> float | None:
        return max((e["max_abs_err"] for e in self.errors.values()), default=None)

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "timing_only": self.timing_only,
            "cycles": self.cycles,
            "seconds": self.seconds,
            "energy_pj": self.energy_pj,
            "dram_bytes": self.dram_bytes,
            "outputs": {
                name: {"shape": list(array.shape), **self.errors.get(name, {})}
                for name, array in self.outputs.items()
            },
            "max_abs_err": self.max_abs_err,
            "attention": self.attention,
            "cta_policy": self.program.policy,
            "provenance": self.provenance.to_dict(),
        }


@dataclass
class ProfileResult:
    """`ctac profile`'s numbers: the summary, the per-block table, and the files written."""

    summary: dict
    blocks: dict[str, dict]
    files: dict[str, str]
    provenance: Provenance

    @property
    def cycles(self) -> int:
        return self.summary["cycles"]

    @property
    def energy_pj(self) -> float:
        return self.summary["energy_pj"]

    @property
    def dram_bytes(self) -> float:
        return self.summary["dram_bytes"]

    def to_dict(self) -> dict:
        return {
            **self.summary,
            "blocks": self.blocks,
            "files": dict(self.files),
            "provenance": self.provenance.to_dict(),
        }


@dataclass
class Comparison:
    """Runs side by side; speedup and energy saving relative to the baseline run (exact
    attention on the same accelerator unless told otherwise)."""

    baseline: str
    rows: list[dict]

    def to_dict(self) -> dict:
        return {"baseline": self.baseline, "modes": [dict(row) for row in self.rows]}

    def table(self) -> str:
        header = (
            f"{'mode':<8}{'cycles':>12}{'energy uJ':>12}{'DRAM MB':>10}"
            f"{'speedup':>9}{'energy saving':>15}{'max abs err':>13}"
        )
        lines = [header, "-" * len(header)]
        for row in self.rows:
            err = row["max_abs_err"]
            lines.append(
                f"{row['mode']:<8}{row['cycles']:>12,}{row['energy_pj'] / 1e6:>12.3f}"
                f"{row['dram_bytes'] / 1e6:>10.3f}{row['speedup']:>8.2f}x"
                f"{row['energy_saving']:>14.2f}x{'n/a' if err is None else f'{err:.2e}':>13}"
            )
        lines.append(f"(speedup, energy saving: {self.baseline}'s cycles and energy / each mode's)")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Compile, run, profile, compare


def _shape_flags(shapes: Mapping[str, Any] | str | Sequence[str] | None) -> list[str]:
    if shapes is None:
        return []
    if isinstance(shapes, str):
        return [shapes]
    if isinstance(shapes, Mapping):
        flags = []
        for name, dims in shapes.items():
            if isinstance(dims, str):
                flags.append(f"{name}={dims}")
                continue
            if isinstance(dims, int):
                dims = (dims,)
            if not all(isinstance(d, int | np.integer) and not isinstance(d, bool) for d in dims):
                raise CtacError(f"shapes[{name!r}]: dimensions must be integers, got {dims!r}")
            flags.append(f"{name}={'x'.join(str(int(d)) for d in dims)}")
        return flags
    if all(isinstance(item, str) for item in shapes):
        return list(shapes)
    raise CtacError(f"shapes: give a dict like {{'input_ids': (1, 64)}}, got {shapes!r}")


def compile(
    model: str | Path,
    shapes: Mapping[str, Any] | str | Sequence[str] | None = None,
    attention: str = "exact",
    *,
    settings: str | Path | None = None,
    hw: str | Path | Hardware | None = None,
    hw_overrides: Mapping[str, Any] | None = None,
    precision: str | None = None,
    verify_attention: bool = True,
    outputs: Sequence[str] | None = None,
    **options: Any,
) -> CompiledProgram:
    """Import an ONNX model with the given input shapes and compile it for the accelerator
    (`ctac compile`). `attention`: exact, cta or elsa. `settings`: a `ctac calibrate` file (its
    thresholds replace tau and tau_kv). `options`: the CLI's compression flags as keywords (tau,
    tau_kv, hash_bits, cta_method, cta_granularity, cta_block, cta_window, cta_values, cta_keys,
    cta_keep_top, cta_policy = "cost" | "always", cluster_ratio; elsa_bits, elsa_threshold).
    `precision`: "fp16" or "fp32" sets the machine's storage type (`--precision`,
    ctac.hw.with_precision; None: the config's, fp16 for ctac's default). `outputs`: compile
    only the part of the model computing these node outputs (`--outputs`)."""

    if attention not in ATTENTION_MODES:
        raise CtacError(f"attention must be one of {', '.join(ATTENTION_MODES)}, got {attention!r}")
    unknown = sorted(set(options) - set(CTA_OPTIONS) - set(ELSA_OPTIONS))
    if unknown:
        raise CtacError(
            f"compile: unknown option {', '.join(unknown)}; the options are "
            f"{', '.join(CTA_OPTIONS + ELSA_OPTIONS)}"
        )
    mode_options = (
        CTA_OPTIONS if attention == "cta" else ELSA_OPTIONS if attention == "elsa" else ()
    )
    misplaced = sorted(set(options) - set(mode_options)) + (
        ["settings"] if settings is not None and attention != "cta" else []
    )
    if misplaced:
        raise CtacError(
            f"compile: {', '.join(misplaced)} only apply to attention='"
            f"{'elsa' if set(misplaced) <= set(ELSA_OPTIONS) else 'cta'}', not {attention!r}"
        )
    for key in ("tau", "tau_kv"):
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not 0 <= value <= 1):  # fmt: skip
            raise CtacError(f"compile: {key} must be a number in [0, 1], got {value!r}")
    model_path = Path(model)
    if not model_path.is_file():
        raise CtacError(f"model '{model}' is not a file")
    machine = with_precision(hardware(hw, hw_overrides), precision)
    args = compile_arguments(
        str(model_path), shape=_shape_flags(shapes), attention=attention, hw=machine,
        verify_attention=verify_attention,
        cta_settings=str(settings) if settings is not None else None,
        outputs=list(outputs) if outputs else None,
        **{key: value for key, value in options.items() if value is not None},
    )  # fmt: skip
    stderr = io.StringIO()
    reuse: dict = {}  # the CTA policy's program of the final module, as `ctac compile` takes it
    with contextlib.redirect_stderr(stderr):
        module, _ = front_end(args, "ctab", reuse)
    for line in stderr.getvalue().splitlines():
        if line.startswith("warning:"):
            warnings.warn(line.removeprefix("warning: "), stacklevel=2)
    program = reuse.get("program") or compile_module(module, machine)
    record_origin(program, model_path, machine)  # what CompiledProgram.save writes
    recorded = {
        "attention": attention,
        "shapes": {name: list(dims) for name, dims in parse_shape_flags(args.shape).items()},
    }
    if outputs:
        recorded["outputs"] = list(outputs)
    for key in mode_options:
        recorded[key] = getattr(args, key)
    if settings is not None:
        recorded["settings_file"] = str(settings)
        recorded["settings_sha256"] = file_sha256(settings)
    origin = provenance(program.model["path"], program.model["sha256"], machine, recorded)
    return CompiledProgram(program, machine, attention, origin)


def run(
    program: CompiledProgram,
    inputs: Mapping[str, np.ndarray] | None = None,
    *,
    seed: int = 0,
    timing_only: bool = False,
    cluster_ratio: float | None = None,
    settings: str | Path | None = None,
    check: bool = False,
) -> RunResult:
    """Run a compiled program on the accelerator model (`ctac run`). Inputs not given are random
    and valid (token ids inside the vocabulary); a name the program does not take is an error.
    `timing_only`: no numerics, CTA's data-dependent work at its nominal worst case or at
    `cluster_ratio` clusters per token (or a calibration `settings` file's). `check`: compare the
    outputs with onnxruntime running the program's model on the same inputs. A functional run
    keeps an fp16 program's weights widened to float32 for its next runs, as an onnxruntime
    session keeps its prepacked weights: twice the data segment's memory, for one program at a
    time (runtime/forwarding.py)."""

    if not isinstance(program, CompiledProgram):
        raise CtacError(
            f"run: expected a CompiledProgram (from ctac.compile), got {type(program).__name__}"
        )
    if (cluster_ratio is not None or settings is not None) and not timing_only:
        raise CtacError(
            "run: cluster_ratio and settings need timing_only=True (a functional run measures the clusters itself)"
        )
    if timing_only and (inputs or check):
        raise CtacError("run: inputs and check need a functional run (timing_only=False)")
    outputs: dict[str, np.ndarray] = {}
    errors: dict[str, dict] = {}
    attention: list[dict] = []
    if cluster_ratio is not None and (isinstance(cluster_ratio, bool) or not cluster_ratio > 0):
        raise CtacError(f"run: cluster_ratio must be > 0, got {cluster_ratio!r}")
    if timing_only:
        clusters = timing_clusters(program.program, cluster_ratio, settings)
        profile = simulate(program.program, program.hw, clusters)
    else:
        bound = random_inputs(program.program, seed)
        unknown = sorted(set(inputs or {}) - set(bound))
        if unknown:
            raise CtacError(
                f"run: no input named {', '.join(unknown)}; the inputs are {', '.join(bound)}"
            )
        bound.update({name: np.asarray(array) for name, array in (inputs or {}).items()})
        # a CompiledProgram runs again: its fp16 weights are widened once, as a session would
        outputs, stats = execute(
            program.program, program.hw, bound, progress=False, keep_widened=True
        )
        profile = simulate(program.program, program.hw, stats.clusters)
        attention = attention_report(program.program, stats)
        if check:
            errors = compare_with_onnxruntime(program.provenance.model_path, bound, outputs)
    origin = dataclasses.replace(
        program.provenance,
        settings={
            **program.provenance.settings,
            **run_settings(timing_only, seed, cluster_ratio, settings),
        },
    )
    return RunResult(
        program.mode, timing_only, profile.cycles, profile.seconds, profile.energy_pj,
        profile.dram_bytes, outputs, errors, attention, origin, program, profile,
    )  # fmt: skip


def profile(
    target: CompiledProgram | RunResult, out: str | Path | None = None, **run_options: Any
) -> ProfileResult:
    """Profile a program (`ctac profile`): run it first (`run_options` as for `run`) unless
    given a RunResult; with `out`, write profile.json, trace.json and the plots there."""

    if isinstance(target, CompiledProgram):
        result = run(target, **run_options)
    elif isinstance(target, RunResult):
        if run_options:
            raise CtacError(
                f"profile: {', '.join(run_options)} apply to a program, not a RunResult"
            )
        result = target
    else:
        raise CtacError(
            f"profile: expected a CompiledProgram or RunResult, got {type(target).__name__}"
        )
    files: dict[str, str] = {}
    if out is not None:
        label = Path(result.provenance.model_path or "program").stem + f" ({result.mode})"
        paths = write_reports(result.profile, Path(out), label, result.program.policy)
        files = {kind: str(path) for kind, path in paths.items()}
    return ProfileResult(
        summary(result.profile), per_block(result.profile), files, result.provenance
    )


def compare(
    runs: Iterable[RunResult] | Mapping[str, RunResult], baseline: str = "exact"
) -> Comparison:
    """Runs of one model side by side (by mode, or by the mapping's names; hardware may
    differ); speedup and energy saving are the baseline run's cycles and energy over each run's
    (so > 1 is better than the baseline)."""
    named: dict[str, RunResult] = {}
    if isinstance(runs, Mapping):
        named = dict(runs)
    else:
        for result in runs:
            name = result.mode if result.mode not in named else f"{result.mode}#{len(named)}"
            named[name] = result
    if not named or not all(isinstance(r, RunResult) for r in named.values()):
        raise CtacError("compare: expected RunResults (from ctac.run)")
    if baseline not in named:
        raise CtacError(
            f"compare: no run named {baseline!r} to be the baseline; the runs are {', '.join(named)}"
        )
    base = named[baseline]
    models = {r.provenance.model_sha256: r.provenance.model_path for r in named.values()}
    if len(models) > 1:  # hardware may differ: that is a comparison of machines
        raise CtacError(
            f"compare: the runs are of different models ({', '.join(map(str, models.values()))}); "
            "compare runs of one model"
        )
    rows = [
        {
            "mode": name,
            "cycles": r.cycles,
            "seconds": r.seconds,
            "energy_pj": r.energy_pj,
            "dram_bytes": r.dram_bytes,
            "speedup": base.cycles / r.cycles if r.cycles else math.nan,
            "energy_saving": base.energy_pj / r.energy_pj if r.energy_pj else math.nan,
            "max_abs_err": r.max_abs_err,
            "timing_only": r.timing_only,
            "provenance": r.provenance.to_dict(),
        }
        for name, r in named.items()
    ]
    return Comparison(baseline, rows)


def compare_modes(
    model: str | Path,
    shapes: Mapping[str, Any] | str | Sequence[str] | None = None,
    modes: Sequence[str] = ("exact", "cta"),
    *,
    seed: int = 0,
    timing_only: bool = False,
    check: bool = False,
    hw: str | Path | Hardware | None = None,
    hw_overrides: Mapping[str, Any] | None = None,
    **options: Any,
) -> Comparison:
    """Compile the model once per attention mode, run each on the same inputs and compare them
    against the first mode. `options` go to the modes they apply to (tau to cta, elsa_bits to
    elsa)."""
    machine = hardware(hw, hw_overrides)
    runs = {}
    for mode in modes:
        allowed = CTA_OPTIONS if mode == "cta" else ELSA_OPTIONS if mode == "elsa" else ()
        unknown = sorted(set(options) - set(CTA_OPTIONS) - set(ELSA_OPTIONS))
        if unknown:
            raise CtacError(f"compare_modes: unknown option {', '.join(unknown)}")
        mode_options = {k: v for k, v in options.items() if k in allowed}
        program = compile(model, shapes, mode, hw=machine, **mode_options)
        runs[mode] = run(program, seed=seed, timing_only=timing_only, check=check)
    if not runs:
        raise CtacError("compare_modes: no modes given")
    return compare(runs, baseline=next(iter(runs)))
