"""Running compiled programs: inputs, the interpreter with progress, onnxruntime comparison,
and the JSON report of `ctac run`."""

from __future__ import annotations

import io
import math
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ctac.errors import CtacError, shorten
from ctac.hw import Hardware
from ctac.runtime import isa
from ctac.runtime.costmodel import Profile, simulate
from ctac.runtime.input_names import neutral_input
from ctac.runtime.interpreter import ExecutionStats, check_memory, run_program
from ctac.runtime.program import Program, read_program
from ctac.runtime.sources import parse_source


def capacities(hw: Hardware) -> dict[int, int]:
    return {buffer.index: buffer.capacity for buffer in hw.buffers}


def load_program(path: str | Path, hw: Hardware) -> Program:
    program = read_program(path, hw.digest, capacities(hw))
    check_cluster_tables(program, hw, str(path))
    return program


def check_cluster_tables(program: Program, hw: Hardware, where: str = "program") -> None:
    """Refuse CLUSTER / CLUSTER_READ instructions whose `resident` rows exceed what the cluster
    unit's table SRAM holds on this hardware (the lowering never emits them; a hand-made or
    altered program could, and would model a machine that does not exist)."""
    view = hw.view()
    for index, (name, fields) in enumerate(program.instructions):
        if name not in ("CLUSTER", "CLUSTER_READ") or not fields.get("resident"):
            continue
        capacity = isa.cluster_table_capacity(view, fields["cols"])
        if fields["resident"] > capacity:
            raise CtacError(
                f"corrupt program '{shorten(where, 200)}': instruction "
                f"{index} ({name}) keeps {fields['resident']} table rows of {fields['cols']} "
                f"features in the cluster unit, which holds {capacity} on this hardware "
                f"({view.cluster_table_bytes} bytes); recompile the model"
            )


def program_hardware(path: str | Path, config: str | Path | None = None) -> Hardware:
    """The hardware config to run, profile or disassemble the program at `path` on: the one it
    embeds (programs compiled since the config was embedded), else `config` (--hw) or ctac's
    default. A `config` given for a program that embeds another is refused: the program was not
    compiled for it (leave --hw out, or recompile)."""
    from ctac.hw import hardware_from_text, load_hardware
    from ctac.runtime.program import embedded_hardware

    embedded = embedded_hardware(path)
    if embedded is None:
        return load_hardware(config)
    if config is not None:
        given = load_hardware(config)
        if given.text != embedded["toml"]:
            import hashlib

            theirs = hashlib.sha256(embedded["toml"].encode()).hexdigest()[:12]
            raise CtacError(
                f"--hw {shorten(str(config), 200)} (SHA-256 {given.digest.hex()[:12]}...) is not "
                f"the hardware config '{path}' was compiled for ({shorten(embedded['path'], 200)}, "
                f"SHA-256 {theirs}..., embedded in it); leave --hw out to use the embedded "
                "config, or recompile for this one"
            )
        return given
    where = f"the hardware config embedded in '{path}'"
    return hardware_from_text(embedded["toml"], where, embedded["path"])


def random_inputs(program: Program, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid inputs: token ids inside their vocabulary, integer masks of ones, zeros for float
    masks and biases (additive: nothing masked) and token types, normal floats otherwise. Their
    size is checked against the memory available first: a header may declare inputs of up to
    the ISA's 2^32 DRAM elements."""
    # float64 intermediates of the normal draws: 8 bytes per element at the peak.
    check_memory(8 * sum(symbol.size for symbol in program.inputs), "the program's inputs")
    rng = np.random.default_rng(seed)
    inputs = {}
    for symbol in program.inputs:
        dtype = np.dtype(symbol.dtype)
        if neutral_input(symbol.name, dtype):
            inputs[symbol.name] = np.zeros(symbol.shape, dtype=dtype)
        elif dtype.kind == "f":
            inputs[symbol.name] = rng.standard_normal(symbol.shape).astype(dtype)
        elif symbol.vocab:
            inputs[symbol.name] = rng.integers(0, symbol.vocab, size=symbol.shape).astype(dtype)
        else:
            inputs[symbol.name] = np.ones(symbol.shape, dtype=dtype)
    return inputs


# No --input array may be larger than this (the importer's cap on one tensor).
MAX_INPUT_BYTES = 4 * 1024**3


def load_inputs(
    flags: Sequence[str], known: Sequence[str] | Mapping[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """The arrays of `--input NAME=FILE.npy` flags; with `known`, a name that is not one of the
    program's inputs is an error (it would otherwise leave that input random, silently). When
    `known` maps names to arrays of the right shape and dtype (the random inputs), each file
    must match that shape and hold values of a compatible kind, and comes back in that dtype."""
    inputs = {}
    for flag in flags:
        name, sep, path = flag.partition("=")
        if not sep or not name or not path:
            raise CtacError(f"--input '{shorten(flag, 200)}' should look like NAME=FILE.npy")
        if known is not None and name not in known:
            raise CtacError(
                f"--input {shorten(name, 200)}: no input of that name; the inputs are {', '.join(known)}"
            )
        expected = known.get(name) if isinstance(known, Mapping) else None
        inputs[name] = _read_npy(name, path, expected)
    return inputs


def _read_npy(name: str, path: str, expected: np.ndarray | None) -> np.ndarray:
    """One .npy file, its header checked before any data is read."""
    where = f"--input {shorten(name, 200)}"
    try:
        with open(path, "rb") as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                header = np.lib.format.read_array_header_2_0(stream)
            else:
                raise ValueError(f".npy format version {version} is not supported")
            shape, _, dtype = header
            data_bytes = Path(path).stat().st_size - stream.tell()
            _check_header(where, path, shape, dtype, data_bytes, expected)
            stream.seek(0)
            array = np.load(stream, allow_pickle=False)
    except (OSError, ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise CtacError(
            f"{where}: cannot read '{shorten(path, 200)}' as a .npy array: {exc}"
        ) from None
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array if expected is None else _convert(where, array, expected.dtype)


def _check_header(
    where: str,
    path: str,
    shape: tuple[int, ...],
    dtype: np.dtype,
    data_bytes: int,
    expected: np.ndarray | None,
) -> None:
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biuf":
        raise CtacError(
            f"{where}: '{shorten(path, 200)}' holds {dtype} values; inputs must be numbers "
            "(bool, integers or floats)"
        )
    size = math.prod(shape) * dtype.itemsize
    if size > MAX_INPUT_BYTES:
        raise CtacError(
            f"{where}: '{shorten(path, 200)}' declares {size} bytes, over {MAX_INPUT_BYTES}"
        )
    if expected is not None and tuple(shape) != expected.shape:
        raise CtacError(
            f"{where}: '{shorten(path, 200)}' has shape {tuple(shape)}, the input is "
            f"{expected.dtype}{list(expected.shape)}"
        )
    if size > data_bytes:
        raise CtacError(
            f"{where}: '{shorten(path, 200)}' declares {size} bytes of data but holds {data_bytes} "
            "(truncated)"
        )


def _convert(where: str, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The array in the input's dtype, refusing conversions that would change values."""
    if array.dtype == dtype:
        return array
    if dtype.kind == "f":
        if array.dtype.kind in "biuf":
            return array.astype(dtype)
    elif array.dtype.kind == "f":
        raise CtacError(
            f"{where}: the input takes {dtype} values but the file holds {array.dtype} "
            "(token ids and masks are integers; convert them with astype)"
        )
    elif dtype.kind == "b":
        if array.size == 0 or bool(((array == 0) | (array == 1)).all()):
            return array.astype(dtype)
        raise CtacError(f"{where}: the input takes bool values but the file holds other integers")
    else:
        info = np.iinfo(dtype)
        if array.size == 0 or (int(array.min()) >= info.min and int(array.max()) <= info.max):
            return array.astype(dtype)
        raise CtacError(f"{where}: the file holds values outside the range of the input's {dtype}")
    raise CtacError(f"{where}: the file holds {array.dtype}, the input takes {dtype}")


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An .npz archive of named arrays, laid out as numpy's savez lays it out, for any names
    (passing the names as keywords to savez fails on an output named 'file' or 'allow_pickle')."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
            archive.writestr(f"{name}.npy", member.getvalue())
    return buffer.getvalue()


def execute(
    program: Program,
    hw: Hardware,
    inputs: Mapping[str, np.ndarray],
    progress: bool = True,
    keep_widened: bool = False,
    lanes: bool | None = None,
) -> tuple[dict[str, np.ndarray], ExecutionStats]:
    """Run the program; a progress bar on stderr for long programs (when stderr is a terminal).
    `keep_widened`: the program will run again; `lanes`: on two threads (both: run_program)."""
    bar = None
    if progress and len(program.instructions) > 2000 and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(program.instructions), unit="instr", desc="interpreting", leave=False)
    try:
        return run_program(
            program,
            capacities(hw),
            inputs,
            progress=bar.update if bar else None,
            keep_widened=keep_widened,
            lanes=lanes,
        )
    finally:
        if bar is not None:
            bar.close()


_ORT_DTYPES = {
    f"tensor({name})": np.dtype(dtype)
    for name, dtype in [
        ("float", np.float32), ("float16", np.float16), ("double", np.float64),
        ("int64", np.int64), ("int32", np.int32), ("int16", np.int16), ("int8", np.int8),
        ("uint8", np.uint8), ("bool", np.bool_),
    ]
}  # fmt: skip


# Ops whose presence makes a model quantized (compared with onnxruntime unoptimized).
QUANTIZING_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul",
                  "QLinearAdd", "QLinearMul", "QLinearSoftmax", "ConvInteger", "QLinearConv"}  # fmt: skip


def row_cosines(expected: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Cosine between matching rows (last axis) of two arrays of one shape; 1.0 where either
    row is all zeros."""
    a = expected.reshape(-1, expected.shape[-1] if expected.ndim else 1).astype(np.float64)
    b = got.reshape(a.shape).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(axis=1) / np.maximum(norms, 1e-30), 1.0)


def _min_row_cosine(got: np.ndarray, want: np.ndarray) -> float:
    """The smallest row cosine (1.0 for integer outputs, all-zero rows or empty arrays):
    quantized models flip a rounding step here and there, which max abs err exaggerates and the
    cosine does not."""
    if got.size == 0 or got.dtype.kind not in "f" or got.shape != want.shape:
        return 1.0
    return float(row_cosines(want, got).min())


def compare_with_onnxruntime(
    model: str | Path, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]
) -> dict[str, dict]:
    """Per output: max absolute and relative error against onnxruntime on the same inputs."""
    import onnxruntime as ort

    from ctac.onnx_loader import load_onnx

    # ctac's checked loader reads the model and its external data (only from the model's folder,
    # every tensor within its file and the size cap); onnxruntime gets the checked bytes and never
    # opens a file itself, whatever its version checks.
    proto = load_onnx(model)
    if not proto.graph.output:
        raise CtacError(f"--compare: '{model}' has no outputs to compare")
    if proto.ByteSize() >= 2**31 - 1:
        raise CtacError(
            f"--compare: '{model}' is over 2 GiB with its weights, more than onnxruntime can "
            "take from memory"
        )
    options = ort.SessionOptions()
    if any(node.op_type in QUANTIZING_OPS for node in proto.graph.node):
        # onnxruntime's optimizer fuses Q/DQ pairs into integer kernels that round differently
        # from the ONNX definitions (on a static-int8 MiniLM its two paths agree to cosine 0.6);
        # unoptimized, it runs the definitions, which is what ctac implements.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(
            proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime's own errors are many types
        raise CtacError(f"onnxruntime cannot load '{model}': {shorten(exc, 500)}") from None
    feeds = {i.name: np.asarray(inputs[i.name]) for i in session.get_inputs() if i.name in inputs}
    missing = [i.name for i in session.get_inputs() if i.name not in inputs]
    if missing:
        raise CtacError(
            f"--compare: the model needs inputs {missing} that the program does not take"
        )
    for i in session.get_inputs():
        dtype = _ORT_DTYPES.get(i.type)
        if dtype is not None and feeds[i.name].dtype != dtype:
            raise CtacError(
                f"--compare: input '{i.name}' is {feeds[i.name].dtype} but the model takes {dtype}"
            )
    try:
        results = session.run(None, feeds)
    except Exception as exc:  # onnxruntime's own errors are many types
        raise CtacError(f"onnxruntime cannot run '{model}': {shorten(exc, 500)}") from None
    expected = dict(zip([o.name for o in session.get_outputs()], results, strict=True))
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
            "min_cosine": _min_row_cosine(array, expected[name]),
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


def timing_clusters(
    program: Program, cluster_ratio: float | None = None, settings: str | Path | None = None
) -> dict[int, int] | None:
    """The data-dependent sizes a timing-only run charges: None (the nominal worst case), R
    clusters per token (`cluster_ratio`), or the ratios and hash-bucket spread a `ctac
    calibrate` settings file measured (each layer and role its own; `cluster_ratio` still wins
    for the ratio). `ctac profile --timing-only` and the API's `run(timing_only=True)`."""
    if cluster_ratio is None and settings is None:
        return None
    from ctac.policy import expected_clusters

    ratio, buckets = cluster_ratio, 1.0
    if settings is not None:
        from ctac.calibrate import read_settings

        calibration = read_settings(settings)
        ratio = calibration.expectation() if ratio is None else ratio
        buckets = calibration.buckets
    return expected_clusters(program, ratio, buckets)


def profile_json(profile: Profile) -> dict:
    """The totals `ctac run` reports (runtime/profile.summary has every figure)."""
    return {key: getattr(profile, key) for key in ("cycles", "seconds", "energy_pj", "dram_bytes")}
