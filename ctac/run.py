"""Running compiled programs: inputs, the interpreter with progress, onnxruntime comparison,
and the JSON report of `ctac run`."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ctac.errors import CtacError
from ctac.hw import Hardware
from ctac.runtime.costmodel import Profile, simulate
from ctac.runtime.interpreter import ExecutionStats, run_program
from ctac.runtime.program import Program, read_program
from ctac.runtime.sources import parse_source


def capacities(hw: Hardware) -> dict[int, int]:
    return {buffer.index: buffer.capacity for buffer in hw.buffers}


def load_program(path: str | Path, hw: Hardware) -> Program:
    return read_program(path, hw.digest, capacities(hw))


def random_inputs(program: Program, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid inputs: token ids inside their vocabulary, masks of ones, normal floats."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for symbol in program.inputs:
        dtype = np.dtype(symbol.dtype)
        if dtype.kind == "f":
            inputs[symbol.name] = rng.standard_normal(symbol.shape).astype(dtype)
        elif symbol.vocab:
            inputs[symbol.name] = rng.integers(0, symbol.vocab, size=symbol.shape).astype(dtype)
        else:
            inputs[symbol.name] = np.ones(symbol.shape, dtype=dtype)
    return inputs


def load_inputs(flags: Sequence[str], known: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of `--input NAME=FILE.npy` flags; with `known`, a name that is not one of the
    program's inputs is an error (it would otherwise leave that input random, silently)."""
    inputs = {}
    for flag in flags:
        name, sep, path = flag.partition("=")
        if not sep or not name or not path:
            raise CtacError(f"--input '{flag}' should look like NAME=FILE.npy")
        if known is not None and name not in known:
            raise CtacError(
                f"--input {name}: no input of that name; the inputs are {', '.join(known)}"
            )
        try:
            inputs[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CtacError(
                f"--input {name}: cannot read '{path}' as a .npy array: {exc}"
            ) from None
    return inputs


def execute(
    program: Program, hw: Hardware, inputs: Mapping[str, np.ndarray], progress: bool = True
) -> tuple[dict[str, np.ndarray], ExecutionStats]:
    """Run the program; a progress bar on stderr for long programs (when stderr is a terminal)."""
    bar = None
    if progress and len(program.instructions) > 2000 and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(program.instructions), unit="instr", desc="interpreting", leave=False)
    try:
        return run_program(program, capacities(hw), inputs, progress=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()


def compare_with_onnxruntime(
    model: str | Path, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]
) -> dict[str, dict]:
    """Per output: max absolute and relative error against onnxruntime on the same inputs."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own errors are many types
        raise CtacError(f"onnxruntime cannot load '{model}': {exc}") from None
    feeds = {i.name: np.asarray(inputs[i.name]) for i in session.get_inputs() if i.name in inputs}
    missing = [i.name for i in session.get_inputs() if i.name not in inputs]
    if missing:
        raise CtacError(
            f"--compare: the model needs inputs {missing} that the program does not take"
        )
    expected = dict(
        zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True)
    )
    report = {}
    for name, array in outputs.items():
        if name not in expected:
            continue
        difference = np.abs(array.astype(np.float64) - expected[name].astype(np.float64))
        scale = np.maximum(np.abs(expected[name].astype(np.float64)), 1e-6)
        report[name] = {
            "shape": list(array.shape),
            "max_abs_err": float(difference.max()) if difference.size else 0.0,
            "max_rel_err": float((difference / scale).max()) if difference.size else 0.0,
        }
    return report


def attention_report(program: Program, stats: ExecutionStats) -> list[dict]:
    """Per attention layer: tokens, and the mean query / key-value clusters per sequence."""
    layers: dict[str, dict] = {}
    found: dict[tuple[str, str], list[int]] = {}
    run: dict[str, int] = {}  # keys of the key tiles of the current query tile, per layer
    for index, (name, fields) in enumerate(program.instructions):
        source = parse_source(program.sources[index] if program.sources else "")
        layer = source.name
        attention = source.kind in ("cta.attention", "cta.compressed_attention")
        if name == "SOFTMAX" and attention:
            entry = layers.setdefault(layer, {"layer": layer, "tokens": 0})
            entry["tokens"] = max(entry["tokens"], fields["cols"])
        if name == "SOFTMAX_ONLINE" and attention:
            # A query tile's key tiles run first=1 ... last=1: their columns add up to its keys.
            run[layer] = (0 if fields["first"] else run.get(layer, 0)) + fields["cols"]
            entry = layers.setdefault(layer, {"layer": layer, "tokens": 0})
            entry["tokens"] = max(entry["tokens"], run[layer])
        if name == "CLUSTER_READ" and index in stats.clusters:
            # A table's readout tiles: its rows add up to the tokens it clustered; each tile
            # reports the clusters of the whole table (one count per table from its first tile).
            entry = layers.setdefault(layer, {"layer": layer, "tokens": 0})
            entry["tokens"] = max(entry["tokens"], fields["row0"] + fields["rows"])
            if fields["row0"] == 0:
                role = source.role or "qkv"
                found.setdefault((layer, role), []).append(stats.clusters[index])
    for layer, entry in layers.items():
        for role, key in (("q", "query_clusters"), ("kv", "kv_clusters")):
            counts = found.get((layer, role)) or found.get((layer, "qkv"))
            entry[key] = round(float(np.mean(counts)), 2) if counts else entry["tokens"]
    return list(layers.values())


def profile_program(program: Program, hw: Hardware, stats: ExecutionStats | None) -> Profile:
    return simulate(program, hw, stats.clusters if stats is not None else None)


def profile_json(profile: Profile) -> dict:
    return {
        "cycles": profile.cycles,
        "seconds": profile.seconds,
        "energy_pj": profile.energy_pj,
        "dram_bytes": profile.dram_bytes,
    }
