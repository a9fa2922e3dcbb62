"""ctac's Python API: compile a model, run and profile the program, compare attention modes.

    import ctac
    shapes = {"input_ids": (1, 64), "attention_mask": (1, 64)}
    exact = ctac.compile("tests/models/bert_ts_eager.onnx", shapes)
    cta = ctac.compile("tests/models/bert_ts_eager.onnx", shapes, "cta", tau=0.5,
                       cta_policy="always", hw_overrides={"pe_array.rows": 16})
    runs = [ctac.run(p) for p in (exact, cta)]
    print(ctac.compare(runs).table())

Every function is the one the command line calls (`ctac compile` = `compile`, `ctac run` = `run`,
`ctac profile` = `profile`); each result is a dataclass whose `.to_dict()` is JSON-ready, with
units in the key names (`cycles`, `seconds`, `energy_pj`, `dram_bytes`) and a `provenance`
entry: the model's path and SHA-256, the settings, the hardware config's name and SHA-256, and
ctac's version. Misuse raises `ctac.CtacError` with a message naming the argument.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctac import __version__
from ctac.cli import build_parser
from ctac.commands.common import front_end
from ctac.emit import program_from_module
from ctac.errors import CtacError
from ctac.files import file_sha256, write_atomically
from ctac.hw import Hardware, hardware_from_text, load_hardware
from ctac.importer import parse_shape_flags
from ctac.passes.lower_to_isa import lower_module
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
# Hardware


def hardware(
    config: str | Path | Hardware | None = None, overrides: Mapping[str, Any] | None = None
) -> Hardware:
    """A hardware config: ctac's default (None), a TOML file, or a Hardware object, with
    `overrides` of any of its numbers by dotted key: `{"pe_array.rows": 64, "dram.bandwidth_gb_s":
    1024, "buffers.act.size_kib": 512}`. An unknown key or a value the key cannot take is a
    CtacError naming it. The result's `path` records the overrides; its digest is what programs
    compiled for it carry."""
    base = load_hardware(config)
    if not overrides:
        return base
    raw = copy.deepcopy(base.raw)
    applied = []
    for key, value in overrides.items():
        node = _hardware_node(raw, key)
        old = node["value"] if isinstance(node, dict) else node
        if isinstance(old, str):
            if not isinstance(value, str):
                raise CtacError(f"hardware override {key}: expected a string, got {value!r}")
            _set_string(raw, key, value)
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise CtacError(f"hardware override {key}: expected a number, got {value!r}")
            if isinstance(old, int) and not float(value).is_integer():
                raise CtacError(f"hardware override {key}: must be an integer, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise CtacError(
                    f"hardware override {key}: must be a positive number, got {value!r}"
                )
            node["value"] = int(value) if isinstance(old, int) else float(value)
            node["source"] = "[assumed] override (ctac.hardware)"
        applied.append(f"{key}={value}")
    label = f"{base.path}+{','.join(applied)}"
    return hardware_from_text(_toml_text(raw), f"hardware {label}", label)


def hardware_name(hw: Hardware) -> str:
    return str(hw.raw.get("accelerator", {}).get("name", "accelerator"))


def hardware_record(hw: Hardware) -> dict:
    """What a result records of its machine: name, where it came from, SHA-256 of the config."""
    return {"name": hardware_name(hw), "config": hw.path, "sha256": hw.digest.hex()}


def _hardware_node(raw: dict, key: str):
    parts = key.split(".")
    node: Any = raw
    for index, part in enumerate(parts):
        if isinstance(node, list):  # [[buffers]]: by name
            node = next((entry for entry in node if entry.get("name") == part), None)
        elif isinstance(node, dict):
            node = node.get(part)
        if node is None or (isinstance(node, dict) and "value" in node and index < len(parts) - 1):
            raise CtacError(
                f"unknown hardware key '{key}' (e.g. pe_array.rows, dram.bandwidth_gb_s, buffers.act.size_kib)"
            )
    if isinstance(node, dict) and "value" in node or isinstance(node, str):
        return node
    raise CtacError(f"hardware key '{key}' is a table, not a number; name one of its numbers")


def _set_string(raw: dict, key: str, value: str) -> None:
    *parents, last = key.split(".")
    node: Any = raw
    for part in parents:
        node = (
            next(e for e in node if e.get("name") == part) if isinstance(node, list) else node[part]
        )
    node[last] = value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise CtacError(f"cannot write {value!r} to a hardware config")


def _toml_text(raw: dict, prefix: str = "") -> str:
    """A hardware config's TOML (numbers as inline `{ value, source }` tables), deterministic."""
    lines = []

    def is_table(value: Any) -> bool:
        return isinstance(value, dict) and "value" not in value

    def is_table_array(value: Any) -> bool:
        return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)

    for key, value in raw.items():
        if not is_table(value) and not is_table_array(value):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if is_table(value):
            lines.append(f"\n[{name}]")
            lines.append(_toml_text(value, f"{name}."))
        elif is_table_array(value):
            for entry in value:
                lines.append(f"\n[[{name}]]")
                lines.append(_toml_text(entry, f"{name}."))
    return "\n".join(line for line in lines if line != "")


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Provenance:
    """Where a result comes from, so results of many runs can be aggregated."""

    model: str | None
    model_sha256: str | None
    settings: dict
    hardware: dict
    ctac_version: str

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "model_sha256": self.model_sha256,
            "settings": dict(self.settings),
            "hardware": dict(self.hardware),
            "ctac_version": self.ctac_version,
        }


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


def _compile_namespace(model: str, **values: Any):
    """The `ctac compile` arguments with the CLI's own defaults, so the API and the CLI cannot
    drift apart."""

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    args = commands.choices["compile"].parse_args([model])
    for key, value in values.items():
        setattr(args, key, value)
    return args


def compile(
    model: str | Path,
    shapes: Mapping[str, Any] | str | Sequence[str] | None = None,
    attention: str = "exact",
    *,
    settings: str | Path | None = None,
    hw: str | Path | Hardware | None = None,
    hw_overrides: Mapping[str, Any] | None = None,
    verify_attention: bool = True,
    **options: Any,
) -> CompiledProgram:
    """Import an ONNX model with the given input shapes and compile it for the accelerator
    (`ctac compile`). `attention`: exact, cta or elsa. `settings`: a `ctac calibrate` file (its
    thresholds replace tau and tau_kv). `options`: the CLI's compression flags as keywords (tau,
    tau_kv, hash_bits, cta_method, cta_granularity, cta_block, cta_window, cta_values, cta_keys,
    cta_keep_top, cta_policy = "cost" | "always", cluster_ratio; elsa_bits, elsa_threshold)."""

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
    machine = hardware(hw, hw_overrides)
    args = _compile_namespace(
        str(model_path), shape=_shape_flags(shapes), attention=attention, hw=machine,
        verify_attention=verify_attention,
        cta_settings=str(settings) if settings is not None else None,
        **{key: value for key, value in options.items() if value is not None},
    )  # fmt: skip
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        module, _ = front_end(args, "ctab")
    for line in stderr.getvalue().splitlines():
        if line.startswith("warning:"):
            warnings.warn(line.removeprefix("warning: "), stacklevel=2)
    program = program_from_module(lower_module(module, machine))
    model_sha256 = file_sha256(model_path)
    # Recorded in the program file (CompiledProgram.save): `ctac run --compare` refuses another
    # model, and run, profile and disasm need no --hw.
    program.model = {"path": str(model_path.resolve()), "sha256": model_sha256}
    program.hardware = {"path": machine.path, "toml": machine.text}
    recorded = {
        "attention": attention,
        "shapes": {name: list(dims) for name, dims in _parsed_shapes(args.shape).items()},
    }
    for key in mode_options:
        recorded[key] = getattr(args, key)
    if settings is not None:
        recorded["settings_file"] = str(settings)
        recorded["settings_sha256"] = file_sha256(settings)
    provenance = Provenance(
        str(model_path.resolve()), model_sha256, recorded,
        hardware_record(machine), _version(),
    )  # fmt: skip
    return CompiledProgram(program, machine, attention, provenance)


def _parsed_shapes(flags: list[str]) -> dict[str, list[int]]:

    return parse_shape_flags(flags)


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
    outputs with onnxruntime running the program's model on the same inputs."""

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
        outputs, stats = execute(program.program, program.hw, bound, progress=False)
        profile = simulate(program.program, program.hw, stats.clusters)
        attention = attention_report(program.program, stats)
        if check:
            errors = compare_with_onnxruntime(program.provenance.model, bound, outputs)
    settings_record = dict(program.provenance.settings)
    settings_record.update(timing_only=timing_only, seed=None if timing_only else seed)
    if timing_only:
        settings_record["timing_cluster_ratio"] = cluster_ratio
        if settings is not None:
            settings_record["timing_settings_file"] = str(settings)
    provenance = Provenance(
        program.provenance.model, program.provenance.model_sha256, settings_record,
        program.provenance.hardware, program.provenance.ctac_version,
    )  # fmt: skip
    return RunResult(
        program.mode, timing_only, profile.cycles, profile.seconds, profile.energy_pj,
        profile.dram_bytes, outputs, errors, attention, provenance, program, profile,
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
        label = Path(result.provenance.model or "program").stem + f" ({result.mode})"
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
    models = {r.provenance.model_sha256: r.provenance.model for r in named.values()}
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
