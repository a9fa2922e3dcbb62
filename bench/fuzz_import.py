"""Fuzz the ONNX importer with hostile models built from the committed test models.

Each case copies one test model into its own folder, mutates it (truncation, byte flips, edited
protobuf fields: huge / negative / zero dims, wrong dtypes, dangling, duplicate or cyclic value
names, external data pointing with `../`, absolute paths or symlinks out of the folder, tensors
declaring more bytes than their file holds, ...) and imports it with `ctac.importer.import_model`.
Issue 17's kinds (computed_size: Expand / ConstantOfShape / Pad / Range / Concat / broadcasts to
huge shapes; io_dtype: inputs and outputs in dtypes the program format may not hold; output_name:
outputs named 'file', 'allow_pickle', ...; npy_header: hostile --input .npy files) and a few
others go on past the import: canonicalize, the reference evaluator, lowering, the program
loader's checks, the interpreter and the .npz writer (`_exercise`).

A case passes when the import succeeds or raises CtacError, within 10 s, without opening any
file outside the model's folder that belongs to the case (a sentinel file next to the folder,
watched with a Python audit hook), and without allocating (tracemalloc peak) more than a bound
derived from the small `--max-tensor-bytes` cap the fuzzer passes. Prints a table of outcomes by
mutation kind and writes bench/results/fuzz_import.json.

    python bench/fuzz_import.py --cases 1000 [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "tests" / "models"
RESULTS = REPO / "bench" / "results"
MANIFEST = json.loads((MODELS / "manifest.json").read_text())
ENTRIES = [m for m in MANIFEST["models"] if not m.get("skipped")]

TIME_LIMIT = 10.0
# The cap passed to the importer; the test models' largest tensor is well under it.
FUZZ_MAX_TENSOR_BYTES = 1 << 20
# No case may allocate (tracemalloc peak) more than this: a hostile dim that got past the cap
# would allocate far more.
ALLOCATION_LIMIT = 256 << 20
SENTINEL = np.full(4096, 1234.5678, dtype=np.float32).tobytes()

HUGE_DIMS = [1 << 40, 1 << 62, 2**63 - 1, 1 << 31, 1 << 20]
BAD_DIMS = [-1, -(1 << 40), 0, -7]


class CaseTimeout(BaseException):
    pass


# ---------------------------------------------------------------------------------------------
# Mutations: each takes (rng, model proto, case) and returns the file bytes to write (or None to
# serialize the proto). `case` holds the folder paths and the shape flags (which it may edit).
# ---------------------------------------------------------------------------------------------


class Case:
    def __init__(self, root: Path, entry: dict) -> None:
        self.root = root
        self.folder = root / "model"
        self.folder.mkdir(parents=True)
        self.secret = root / "secret.bin"
        self.secret.write_bytes(SENTINEL)
        self.path = self.folder / "model.onnx"
        self.shapes = {name: list(spec["shape"]) for name, spec in entry["inputs"].items()}
        self.input_flag: str | None = None


def _pick_tensor(rng: random.Random, model: onnx.ModelProto) -> TensorProto | None:
    tensors = list(model.graph.initializer)
    tensors += [
        a.t for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR
    ]
    return rng.choice(tensors) if tensors else None


def _pick_large_initializer(rng: random.Random, model: onnx.ModelProto) -> TensorProto | None:
    large = [t for t in model.graph.initializer if len(t.raw_data) >= 64]
    return rng.choice(large) if large else _pick_tensor(rng, model)


def _real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    names = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in names]


def m_truncate(rng, model, case):
    blob = model.SerializeToString()
    return blob[: rng.randrange(0, len(blob))]


def m_byte_flip(rng, model, case):
    blob = bytearray(model.SerializeToString())
    for _ in range(rng.choice([1, 2, 4, 16, 64])):
        position = rng.randrange(len(blob))
        blob[position] ^= 1 << rng.randrange(8) if rng.random() < 0.7 else rng.randrange(256)
    return bytes(blob)


def m_input_dim(rng, model, case):
    value = rng.choice(_real_inputs(model))
    dims = value.type.tensor_type.shape.dim
    if dims:
        dim = rng.choice(dims)
        dim.Clear()
        dim.dim_value = rng.choice(HUGE_DIMS + BAD_DIMS)
    if rng.random() < 0.5:
        case.shapes.pop(value.name, None)
    elif value.name in case.shapes and case.shapes[value.name] and rng.random() < 0.5:
        shape = case.shapes[value.name]
        shape[rng.randrange(len(shape))] = rng.choice([1 << 40, 1 << 24, 100000])
    return None


def m_initializer_dim(rng, model, case):
    tensor = _pick_tensor(rng, model)
    if tensor is None:
        return None
    choice = rng.random()
    if choice < 0.4 and tensor.dims:
        tensor.dims[rng.randrange(len(tensor.dims))] = rng.choice(HUGE_DIMS + BAD_DIMS)
    elif choice < 0.7:
        tensor.dims.append(rng.choice([0, 2, 1 << 30, -3]))
    else:
        del tensor.dims[:]
        tensor.dims.extend(rng.choice([[1 << 21, 1 << 21], [0], [3, -3], [1 << 17]]))
    return None


def m_dtype(rng, model, case):
    codes = list(TensorProto.DataType.values()) + [0, 99, -1, 1 << 20]
    if rng.random() < 0.6:
        tensor = _pick_tensor(rng, model)
        if tensor is not None:
            tensor.data_type = rng.choice(codes)
    else:
        value = rng.choice(list(model.graph.input) + list(model.graph.output))
        value.type.tensor_type.elem_type = rng.choice(codes)
    return None


def m_dangling(rng, model, case):
    node = rng.choice([n for n in model.graph.node if n.input] or list(model.graph.node))
    if node.input:
        node.input[rng.randrange(len(node.input))] = rng.choice(["nowhere", "", "x" * 300])
    elif rng.random() < 0.5:
        model.graph.output[0].name = "nowhere"
    return None


def m_duplicate(rng, model, case):
    nodes = list(model.graph.node)
    choice = rng.random()
    if choice < 0.4 and len(nodes) > 1:
        a, b = rng.sample(nodes, 2)
        b.output[0] = a.output[0]
    elif choice < 0.7 and len(model.graph.initializer) > 1:
        a, b = rng.sample(list(model.graph.initializer), 2)
        b.name = a.name
    elif choice < 0.85 and model.graph.initializer:
        model.graph.initializer[0].name = _real_inputs(model)[0].name
    else:
        model.graph.input.append(model.graph.input[0])
    return None


def m_cycle(rng, model, case):
    nodes = list(model.graph.node)
    if len(nodes) < 2:
        return None
    readers = [k for k, node in enumerate(nodes[:-1]) if node.input]
    if not readers:
        return None
    i = rng.choice(readers)
    j = rng.randrange(i, len(nodes))
    if nodes[i].input:
        nodes[i].input[rng.randrange(len(nodes[i].input))] = nodes[j].output[0]
    if rng.random() < 0.3:  # also reorder so a topological sort does not exist
        model.graph.node[i].CopyFrom(nodes[j])
    return None


def m_delete_node(rng, model, case):
    del model.graph.node[rng.randrange(len(model.graph.node))]
    return None


def m_attribute(rng, model, case):
    candidates = [(n, a) for n in model.graph.node for a in n.attribute]
    if not candidates:
        return None
    node, attribute = rng.choice(candidates)
    if attribute.type == onnx.AttributeProto.INT:
        attribute.i = rng.choice([-(1 << 40), -5, 0, 7, 1 << 40, 2**63 - 1])
    elif attribute.type == onnx.AttributeProto.INTS:
        attribute.ints.append(rng.choice([-(1 << 40), 99, 1 << 40]))
    elif attribute.type == onnx.AttributeProto.FLOAT:
        attribute.f = rng.choice([float("nan"), float("inf"), -1e38])
    elif attribute.type == onnx.AttributeProto.TENSOR:
        attribute.t.dims.append(rng.choice([1 << 30, 0, -2]))
    else:
        attribute.type = rng.choice(list(onnx.AttributeProto.AttributeType.values()) + [77])
    return None


def m_opset(rng, model, case):
    model.opset_import[0].version = rng.choice([0, 1, 7, 12, 99, 1 << 40 if False else 10**6])
    if rng.random() < 0.3:
        model.ir_version = rng.choice([0, 1, 99])
    return None


def _make_external(tensor: TensorProto, location: str, offset=None, length=None) -> None:
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.ClearField("int64_data")
    tensor.ClearField("int32_data")
    del tensor.external_data[:]
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)


def m_external_parent(rng, model, case):
    tensor = _pick_large_initializer(rng, model)
    if tensor is not None:
        location = rng.choice(["../secret.bin", "sub/../../secret.bin", "./../secret.bin"])
        _make_external(tensor, location)
    return None


def m_external_absolute(rng, model, case):
    tensor = _pick_large_initializer(rng, model)
    if tensor is not None:
        _make_external(
            tensor, rng.choice([str(case.secret), "/etc/passwd", "//" + str(case.secret)])
        )
    return None


def m_external_symlink(rng, model, case):
    tensor = _pick_large_initializer(rng, model)
    if tensor is None:
        return None
    if rng.random() < 0.5:
        os.symlink(case.secret, case.folder / "link.bin")
        _make_external(tensor, "link.bin")
    else:
        os.symlink(case.root, case.folder / "up")
        _make_external(tensor, "up/secret.bin")
    return None


def m_external_short(rng, model, case):
    """External data in the folder, but the tensor needs more bytes than the file (or range) holds."""
    tensor = _pick_large_initializer(rng, model)
    if tensor is None:
        return None
    raw = onnx.numpy_helper.to_array(tensor).tobytes()
    data = case.folder / "weights.bin"
    choice = rng.random()
    if choice < 0.25:
        data.write_bytes(raw[: len(raw) // 2])
        _make_external(tensor, "weights.bin")
    elif choice < 0.5:
        data.write_bytes(raw)
        _make_external(tensor, "weights.bin", offset=rng.choice([1, 64, 1 << 40, -8]))
    elif choice < 0.7:
        data.write_bytes(raw)
        _make_external(tensor, "weights.bin", length=rng.choice([len(raw) + 4, 3, -1, 1 << 50]))
    elif choice < 0.85:
        data.write_bytes(raw)
        _make_external(tensor, "weights.bin")
        tensor.dims.append(rng.choice([2, 1 << 30]))
    else:
        _make_external(tensor, rng.choice(["missing.bin", "", "model", "."]))
        if rng.random() < 0.5:
            (case.folder / "model").mkdir()
    return None


def m_external_valid(rng, model, case):
    """A genuine external-data model (in the folder): must import."""
    tensor = _pick_large_initializer(rng, model)
    if tensor is None:
        return None
    raw = onnx.numpy_helper.to_array(tensor).tobytes()
    pad = rng.choice([0, 16])
    (case.folder / "weights.bin").write_bytes(b"\0" * pad + raw)
    _make_external(tensor, "weights.bin", offset=pad or None, length=len(raw))
    return None


def m_sparse_or_function(rng, model, case):
    """Tensors in the less visited places: a sparse initializer or a local function's Constant,
    with hostile dims or external data pointing out of the folder."""
    values = onnx.helper.make_tensor("sparse_values", TensorProto.FLOAT, [2], [1.0, 2.0])
    indices = onnx.helper.make_tensor("sparse_indices", TensorProto.INT64, [2], [0, 3])
    target = rng.choice(["values", "function"])
    tensor = values
    if target == "function":
        tensor = onnx.helper.make_tensor("fconst", TensorProto.FLOAT, [2], [1.0, 2.0])
    choice = rng.random()
    if choice < 0.4:
        _make_external(tensor, rng.choice(["../secret.bin", str(case.secret)]))
    elif choice < 0.7:
        tensor.dims[0] = rng.choice([1 << 40, -1, 0])
    if target == "values":
        dense = [rng.choice([4, 1 << 40, -1])]
        model.graph.sparse_initializer.append(
            onnx.helper.make_sparse_tensor(values, indices, dense)
        )
    else:
        constant = onnx.helper.make_node("Constant", [], ["y"], value=tensor)
        function = onnx.helper.make_function(
            "local", "Fuzz", [], ["y"], [constant], [onnx.helper.make_opsetid("", 17)]
        )
        model.functions.append(function)
        model.opset_import.append(onnx.helper.make_opsetid("local", 1))
    return None


def m_shape_flags(rng, model, case):
    names = list(case.shapes)
    choice = rng.random()
    if choice < 0.3 and names:
        case.shapes[rng.choice(names)] = [rng.choice([1 << 40, 1 << 30, 4096])] * rng.choice([1, 2])
    elif choice < 0.5 and names:
        case.shapes[rng.choice(names)].append(3)
    elif choice < 0.7:
        case.shapes["not_an_input"] = [1]
    elif names:
        case.shapes.pop(rng.choice(names))
    return None


def m_empty(rng, model, case):
    return rng.choice([b"", b"\0" * 64, b"not an onnx file\n", os.urandom(256)])


# --- issue 17: computed sizes, input/output dtypes, output names, --input .npy headers ----------
# These cases go on past the import (run_case's _exercise): canonicalize, the reference evaluator
# on random inputs, lowering, the program loader's checks, the interpreter and the .npz writer.

# Sizes around the fuzzer's 1 MiB cap (2**18 float32 is exactly 1 MiB) and far past any memory.
COMPUTED_DIMS = [2**18, 2**18 + 1, 2**16, 2**20, 2**31, 2**40, 3]


def _int64(name: str, values) -> TensorProto:
    return onnx.helper.make_tensor(name, TensorProto.INT64, [len(values)], list(values))


def m_computed_size(rng, model, case):
    """A node whose result is far larger than any tensor in the file: Expand, ConstantOfShape,
    Tile, Pad, a broadcast, Range or Concat (issue 17 class 1)."""
    graph = model.graph
    inputs = _real_inputs(model)
    source = rng.choice(inputs)
    rank = len(case.shapes.get(source.name) or source.type.tensor_type.shape.dim)
    big = rng.choice(COMPUTED_DIMS)
    kind = rng.choice(
        ["expand", "constant_of_shape", "tile", "pad", "broadcast", "range", "concat"]
    )
    prefix = f"fuzz_{kind}"
    nodes = []
    if kind == "expand":
        graph.initializer.append(_int64(f"{prefix}_shape", [big] * rng.choice([1, 2]) + [1] * rank))
        nodes.append(onnx.helper.make_node("Expand", [source.name, f"{prefix}_shape"], [prefix]))
    elif kind == "constant_of_shape":
        graph.initializer.append(_int64(f"{prefix}_shape", [big] * rng.choice([1, 2, 3])))
        nodes.append(onnx.helper.make_node("ConstantOfShape", [f"{prefix}_shape"], [f"{prefix}_c"]))
        nodes.append(onnx.helper.make_node("Add", [f"{prefix}_c", f"{prefix}_c"], [prefix]))
    elif kind == "tile" and rank:
        graph.initializer.append(_int64(f"{prefix}_repeats", [big] + [1] * (rank - 1)))
        nodes.append(onnx.helper.make_node("Tile", [source.name, f"{prefix}_repeats"], [prefix]))
    elif kind == "pad" and rank:
        graph.initializer.append(_int64(f"{prefix}_pads", [big] * (2 * rank)))
        nodes.append(onnx.helper.make_node("Pad", [source.name, f"{prefix}_pads"], [prefix]))
    elif kind == "broadcast":
        graph.initializer.append(_int64(f"{prefix}_a", [big, 1]))
        graph.initializer.append(_int64(f"{prefix}_b", [1, big]))
        nodes.append(onnx.helper.make_node("ConstantOfShape", [f"{prefix}_a"], [f"{prefix}_x"]))
        nodes.append(onnx.helper.make_node("ConstantOfShape", [f"{prefix}_b"], [f"{prefix}_y"]))
        nodes.append(onnx.helper.make_node("Mul", [f"{prefix}_x", f"{prefix}_y"], [prefix]))
    elif kind == "range":
        for name, v in (("start", 0), ("limit", big), ("delta", 1)):
            graph.initializer.append(
                onnx.helper.make_tensor(f"{prefix}_{name}", TensorProto.INT64, [], [v])
            )
        nodes.append(
            onnx.helper.make_node(
                "Range", [f"{prefix}_start", f"{prefix}_limit", f"{prefix}_delta"], [prefix]
            )
        )
    else:
        graph.initializer.append(_int64(f"{prefix}_shape", [big]))
        nodes.append(onnx.helper.make_node("ConstantOfShape", [f"{prefix}_shape"], [f"{prefix}_c"]))
        names = [f"{prefix}_c"] * rng.choice([2, 64])
        nodes.append(onnx.helper.make_node("Concat", names, [prefix], axis=0))
    graph.node.extend(nodes)
    if nodes and rng.random() < 0.5:  # also a graph output, its sizes left to inference
        element = source.type.tensor_type.elem_type
        out_rank = {"expand": None, "tile": rank, "pad": rank, "broadcast": 2}.get(kind, 1)
        if kind == "expand":
            out_rank = len(graph.initializer[-1].dims and graph.initializer[-1].int64_data)
        if kind in ("constant_of_shape", "broadcast", "concat"):
            element = TensorProto.FLOAT
            if kind == "constant_of_shape":
                out_rank = len(graph.initializer[-1].int64_data)
        elif kind == "range":
            element = TensorProto.INT64
        dims = [f"{prefix}_d{axis}" for axis in range(out_rank)]
        graph.output.append(onnx.helper.make_tensor_value_info(prefix, element, dims))
    return None


def _rename_value(graph, old: str, new: str) -> None:
    """Every node output and input named `old` becomes `new` (graph outputs are left)."""
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


IO_DTYPES = [TensorProto.DOUBLE, TensorProto.INT16, TensorProto.UINT16, TensorProto.FLOAT16,
             TensorProto.INT8, TensorProto.UINT8, TensorProto.BOOL, TensorProto.INT32,
             TensorProto.UINT64, TensorProto.STRING, TensorProto.COMPLEX64]  # fmt: skip


def m_io_dtype(rng, model, case):
    """An input or output in a dtype the program format may not hold, with a Cast next to it
    so the graph stays consistent (issue 17 class 3)."""
    graph = model.graph
    element = rng.choice(IO_DTYPES)
    if rng.random() < 0.5:
        value = rng.choice(_real_inputs(model))
        original = value.type.tensor_type.elem_type
        value.type.tensor_type.elem_type = element
        renamed = f"{value.name}_fuzz_cast"
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name == value.name:
                    node.input[i] = renamed
        graph.node.insert(0, onnx.helper.make_node("Cast", [value.name], [renamed], to=original))
    else:
        value = rng.choice(list(graph.output))
        renamed = f"{value.name}_fuzz_cast"
        _rename_value(graph, value.name, renamed)
        graph.node.append(onnx.helper.make_node("Cast", [renamed], [value.name], to=element))
        value.type.tensor_type.elem_type = element
    return None


OUTPUT_NAMES = ["file", "allow_pickle", "args", "kwds", "a/b", "../up", "x.npy", "naïve",
                "", " ", "arr_0", "output" * 200, "with\nnewline"]  # fmt: skip


def m_output_name(rng, model, case):
    """An output named like np.savez's parameters, or oddly (issue 17 class 4)."""
    graph = model.graph
    value = rng.choice(list(graph.output))
    new = rng.choice(OUTPUT_NAMES)
    _rename_value(graph, value.name, new)
    value.name = new
    return None


def _npy_header(rng) -> bytes:
    descr = rng.choice(
        ["<f4", ">f4", "<f8", ">i8", "<i4", "|b1", "<c16", "|O", "<U3", "|S4", "|V8",
         [("a", "<i4"), ("b", "<f4")], "<f4", "<i8", "bogus", "<M8[s]"]
    )  # fmt: skip
    shape = rng.choice(
        [(2, 16), (10**12,), (2**31, 2**31), (-1, 16), (), (0,), (2, 16, 1), (16, 2),
         (1 << 62, 4), "nonsense", (2.5, 16)]
    )  # fmt: skip
    header = {"descr": descr, "fortran_order": rng.random() < 0.2, "shape": shape}
    if rng.random() < 0.1:
        header = rng.choice(["{}", "[1, 2]", "{'descr': '<f4'}", "__import__('os')", "x" * 70000])
    text = (header if isinstance(header, str) else repr(header)).encode("latin1", "replace")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    version = rng.choice([(1, 0), (1, 0), (2, 0), (3, 0), (9, 9)])
    length = len(text).to_bytes(2 if version[0] == 1 else 4, "little")
    magic = b"\x93NUMPY" + bytes(version)
    if rng.random() < 0.05:
        magic = b"\x93NUMPZ" + bytes(version)
    data = os.urandom(rng.choice([0, 16, 128, 2 * 16 * 8]))
    return magic + length + text + data


def m_npy_header(rng, model, case):
    """A hostile --input .npy for one of the model's inputs (issue 17 class 8); _exercise loads
    it with ctac.run.load_inputs against the model's input signature."""
    value = rng.choice(_real_inputs(model))
    path = case.folder / "input.npy"
    choice = rng.random()
    shape = case.shapes.get(value.name) or [2, 16]
    if choice < 0.6:
        path.write_bytes(_npy_header(rng))
    elif choice < 0.8:
        array = rng.choice(
            [np.zeros(shape, np.float64) + 0.5, np.zeros(shape, ">i8"), np.zeros(shape, np.int32),
             np.zeros(shape, np.uint64) + 2**63, np.zeros(shape, complex), np.zeros(shape, bool),
             np.full(shape, "a"), np.zeros(shape, "V4")]
        )  # fmt: skip
        np.save(path, array)
    else:
        np.save(path, np.zeros(shape, np.float32))
        blob = path.read_bytes()
        path.write_bytes(blob[: rng.randrange(len(blob))])
    case.input_flag = f"{value.name}={path}"
    return None


MUTATIONS: dict[str, Callable] = {
    "truncate": m_truncate,
    "byte_flip": m_byte_flip,
    "input_dim": m_input_dim,
    "initializer_dim": m_initializer_dim,
    "dtype": m_dtype,
    "dangling_name": m_dangling,
    "duplicate_name": m_duplicate,
    "cycle": m_cycle,
    "delete_node": m_delete_node,
    "attribute": m_attribute,
    "opset": m_opset,
    "external_parent": m_external_parent,
    "external_absolute": m_external_absolute,
    "external_symlink": m_external_symlink,
    "external_short": m_external_short,
    "external_valid": m_external_valid,
    "sparse_or_function": m_sparse_or_function,
    "shape_flags": m_shape_flags,
    "garbage": m_empty,
    "computed_size": m_computed_size,
    "io_dtype": m_io_dtype,
    "output_name": m_output_name,
    "npy_header": m_npy_header,
}
# Kinds whose imported model also goes through the evaluator, the compiler and the interpreter.
PIPELINE_KINDS = {"computed_size", "io_dtype", "output_name", "npy_header", "dtype", "attribute"}

_ORIGINALS: dict[str, onnx.ModelProto] = {}


def _original(entry: dict) -> onnx.ModelProto:
    if entry["file"] not in _ORIGINALS:
        _ORIGINALS[entry["file"]] = onnx.load(str(MODELS / entry["file"]))
    model = onnx.ModelProto()
    model.CopyFrom(_ORIGINALS[entry["file"]])
    return model


# ---------------------------------------------------------------------------------------------
# Running one case
# ---------------------------------------------------------------------------------------------

_OPENED: list[str] = []
_WATCHING = [False]


def _audit(event: str, args: tuple) -> None:
    if _WATCHING[0] and event in ("open", "os.open") and args and isinstance(args[0], str | bytes):
        _OPENED.append(os.fsdecode(args[0]))


_HOOKED = [False]


def _install_hook() -> None:
    if not _HOOKED[0]:
        sys.addaudithook(_audit)
        _HOOKED[0] = True


def _on_alarm(signum, frame):
    raise CaseTimeout()


def run_case(index: int, seed: int, workdir: Path, max_tensor_bytes: int) -> dict:
    from ctac.errors import CtacError
    from ctac.importer import import_model
    from ctac.weights import forget_stores

    rng = random.Random(seed * 1_000_003 + index)
    entry = rng.choice(ENTRIES)
    kind = rng.choice(list(MUTATIONS))
    root = workdir / f"case{index}"
    case = Case(root, entry)
    model = _original(entry)
    blob = MUTATIONS[kind](rng, model, case)
    case.path.write_bytes(model.SerializeToString() if blob is None else blob)
    result = {"case": index, "model": entry["file"], "kind": kind}
    _install_hook()
    _OPENED.clear()
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    tracemalloc.start()
    tracemalloc.reset_peak()
    start = time.perf_counter()
    _WATCHING[0] = True
    try:
        signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
        imported = import_model(case.path, case.shapes, max_tensor_bytes)
        if kind in PIPELINE_KINDS:
            _exercise(imported, case, max_tensor_bytes)
        signal.setitimer(signal.ITIMER_REAL, 0)
        result["outcome"] = "ok"
        del imported
    except CtacError as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        result["outcome"] = "ctac_error"
        result["message"] = str(exc)[:300]
    except CaseTimeout:
        result["outcome"] = "FAIL"
        result["why"] = f"over {TIME_LIMIT} s"
    except BaseException as exc:  # noqa: BLE001 - any other exception is the bug we look for
        signal.setitimer(signal.ITIMER_REAL, 0)
        result["outcome"] = "FAIL"
        result["why"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        result["traceback"] = traceback.format_exc()[-2000:]
    finally:
        _WATCHING[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        forget_stores()
    result["seconds"] = round(elapsed, 3)
    result["peak_bytes"] = peak
    if elapsed > TIME_LIMIT and result["outcome"] != "FAIL":
        result["outcome"], result["why"] = "FAIL", f"took {elapsed:.1f} s"
    if peak > ALLOCATION_LIMIT and result["outcome"] != "FAIL":
        result["outcome"], result["why"] = "FAIL", f"allocated {peak} bytes"
    folder = case.folder.resolve()
    for opened in _OPENED:
        target = Path(opened)
        target = (target if target.is_absolute() else Path.cwd() / target).resolve()
        inside_case = target == root.resolve() or root.resolve() in target.parents
        if (inside_case and folder not in target.parents) or target == Path("/etc/passwd"):
            result["outcome"], result["why"] = "FAIL", f"opened {opened} outside the model folder"
            break
    shutil.rmtree(root, ignore_errors=True)
    return result


def _exercise(imported, case: Case, max_tensor_bytes: int) -> None:
    """What `ctac eval`, `ctac compile` and `ctac run -o` do after the import: canonicalize, the
    reference evaluator on random (or --input) inputs, lowering, the program loader's checks, the
    interpreter and the .npz writer, whose archive must load back with the same names."""
    import io

    from ctac.emit import check_loadable, program_from_module
    from ctac.hw import load_hardware
    from ctac.passes.lower_to_isa import lower_module
    from ctac.pipeline import run_passes
    from ctac.run import load_inputs, npz_bytes
    from ctac.runtime.evaluator import evaluate, random_inputs
    from ctac.runtime.interpreter import run_program
    from ctac.runtime.program import decode_program, encode_program

    module = imported.module
    run_passes(module, "onnx-canonicalize")
    inputs = random_inputs(module)
    if case.input_flag:
        inputs.update(load_inputs([case.input_flag], inputs))
    with np.errstate(all="ignore"):
        outputs = evaluate(module, inputs, max_tensor_bytes)
    _check_npz(outputs, npz_bytes(outputs), io)
    hw = load_hardware(None)
    capacities = {b.index: b.capacity for b in hw.buffers}
    program = program_from_module(lower_module(module, hw))
    blob = encode_program(program)
    check_loadable(program, blob, capacities)
    program = decode_program(blob, hw.digest, capacities)
    names = {s.name for s in program.inputs}
    outputs, _ = run_program(program, capacities, {k: v for k, v in inputs.items() if k in names})
    _check_npz(outputs, npz_bytes(outputs), io)


def _check_npz(outputs: dict, blob: bytes, io) -> None:
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        if sorted(archive.files) != sorted(outputs):
            raise AssertionError(f"npz names {archive.files} != outputs {list(outputs)}")


def run(cases: int, seed: int, max_tensor_bytes: int = FUZZ_MAX_TENSOR_BYTES) -> dict:
    results = []
    with tempfile.TemporaryDirectory(prefix="ctac-fuzz-import-") as work:
        for index in range(cases):
            results.append(run_case(index, seed, Path(work), max_tensor_bytes))
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for result in results:
        by_kind[result["kind"]][result["outcome"]] += 1
    failures = [r for r in results if r["outcome"] == "FAIL"]
    return {
        "cases": cases,
        "seed": seed,
        "max_tensor_bytes": max_tensor_bytes,
        "time_limit_s": TIME_LIMIT,
        "allocation_limit_bytes": ALLOCATION_LIMIT,
        "failures": len(failures),
        "max_seconds": max((r["seconds"] for r in results), default=0.0),
        "max_peak_bytes": max((r["peak_bytes"] for r in results), default=0),
        "by_kind": {kind: dict(counts) for kind, counts in sorted(by_kind.items())},
        "failed_cases": failures,
    }


def print_table(report: dict) -> None:
    print(f"{'mutation':<20} {'cases':>6} {'ok':>6} {'error':>6} {'FAIL':>6}")
    print("-" * 48)
    for kind, counts in report["by_kind"].items():
        total = sum(counts.values())
        print(
            f"{kind:<20} {total:>6} {counts.get('ok', 0):>6} {counts.get('ctac_error', 0):>6} "
            f"{counts.get('FAIL', 0):>6}"
        )
    print("-" * 48)
    print(
        f"{report['cases']} cases, {report['failures']} failures; slowest "
        f"{report['max_seconds']:.2f} s, largest peak {report['max_peak_bytes'] / 2**20:.1f} MiB"
    )
    for failure in report["failed_cases"][:20]:
        print(f"  case {failure['case']} {failure['kind']} {failure['model']}: {failure['why']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tensor-bytes", type=int, default=FUZZ_MAX_TENSOR_BYTES)
    parser.add_argument("--out", type=Path, default=RESULTS / "fuzz_import.json")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report = run(args.cases, args.seed, args.max_tensor_bytes)
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
