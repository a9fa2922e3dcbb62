"""Loading an ONNX file without trusting it.

External data may only come from files inside the model's own folder (after resolving symlinks),
every tensor must fit the bytes its file holds, and no tensor may exceed a size cap. Problems raise
CtacError naming the tensor or file and the fix.
"""

from __future__ import annotations

import math
import mmap
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, external_data_helper, numpy_helper

from ctac.errors import CtacError
from ctac.limits import DEFAULT_MAX_TENSOR_BYTES
from ctac.mapped import register as register_mapping


def _tensor_byte_size(tensor: TensorProto) -> int:
    # Python integers: np.prod would wrap around for hostile dims like [2**40, 2**40].
    count = math.prod(tensor.dims)
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        itemsize = 1
    return count * itemsize


def _node_tensors(nodes) -> Iterator[TensorProto]:
    for node in nodes:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield attribute.sparse_tensor.values
                yield attribute.sparse_tensor.indices
            for sparse in attribute.sparse_tensors:
                yield sparse.values
                yield sparse.indices
            if attribute.HasField("g"):
                yield from _graph_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _graph_tensors(subgraph)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    yield from _node_tensors(graph.node)


def _all_tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    """Every tensor of the model: initializers (dense and sparse), node attributes, subgraphs and
    the nodes of local functions."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node)


def _check_external_data(model: onnx.ModelProto, model_dir: Path, max_tensor_bytes: int) -> None:
    root = model_dir.resolve()
    for tensor in _all_tensors(model):
        if any(d < 0 for d in tensor.dims):
            raise CtacError(f"tensor '{tensor.name}' has a negative dimension {list(tensor.dims)}")
        size = _tensor_byte_size(tensor)
        if size > max_tensor_bytes:
            raise CtacError(
                f"tensor '{tensor.name}' declares {size} bytes, over the cap of "
                f"{max_tensor_bytes}; raise it with --max-tensor-bytes if the model is genuine"
            )
        if not external_data_helper.uses_external_data(tensor):
            continue
        try:
            _check_location(tensor, root, size)
        except (OSError, ValueError) as exc:
            raise CtacError(
                f"tensor '{tensor.name}': bad external data reference ({exc})"
            ) from None


def _external_fields(tensor: TensorProto) -> tuple[str, int, int | None]:
    """location, offset, length of an external tensor, parsed without trusting them."""
    fields = {entry.key: entry.value for entry in tensor.external_data}
    try:
        offset = int(fields.get("offset") or 0)
        length = int(fields["length"]) if fields.get("length") else None
    except ValueError:
        raise CtacError(
            f"tensor '{tensor.name}': external data offset/length are not integers"
        ) from None
    return fields.get("location", ""), offset, length


def _check_location(tensor: TensorProto, root: Path, size: int) -> None:
    location, offset, length = _external_fields(tensor)
    if "\0" in location:
        raise CtacError(f"tensor '{tensor.name}': external data location contains NUL")
    if not location or os.path.isabs(location) or location.startswith(("/", "\\")):
        raise CtacError(
            f"tensor '{tensor.name}': external data location '{location}' must be a path "
            "relative to the model's folder"
        )
    target = (root / location).resolve()
    if target != root and root not in target.parents:
        raise CtacError(
            f"tensor '{tensor.name}': external data '{location}' points outside the model's "
            f"folder {root}; move the data file next to the model"
        )
    if not target.is_file():
        raise CtacError(f"tensor '{tensor.name}': external data file '{location}' not found")
    length = length if length is not None else size
    if offset < 0 or length < 0 or offset + length > target.stat().st_size:
        raise CtacError(
            f"tensor '{tensor.name}': external data '{location}' holds "
            f"{target.stat().st_size} bytes, fewer than offset {offset} + length {length}"
        )
    if length != size:
        raise CtacError(
            f"tensor '{tensor.name}' needs {size} bytes but its external data has {length}"
        )


def load_onnx(
    path: str | os.PathLike[str], max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES
) -> onnx.ModelProto:
    """Read and check an ONNX model, external data included (only from the model's folder)."""
    path = Path(path)
    if path.is_dir():
        raise CtacError(f"'{path}' is a directory; give the .onnx file inside it")
    if not path.is_file():
        raise CtacError(f"model file '{path}' not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise CtacError(
            f"'{path}' is not a readable ONNX model (truncated or corrupt protobuf: {exc})"
        ) from None
    if not model.HasField("graph") or not model.graph.node:
        raise CtacError(f"'{path}' holds no ONNX graph (empty, truncated or not an ONNX file)")
    _check_external_data(model, path.parent, max_tensor_bytes)
    try:
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError) as exc:
        raise CtacError(f"cannot read external data of '{path}': {exc}") from None
    for tensor in _all_tensors(model):
        _check_tensor_data(tensor)
    return model


def _check_tensor_data(tensor: TensorProto) -> None:
    """The tensor's element type is known and its data holds exactly the declared elements."""
    if tensor.data_type == TensorProto.UNDEFINED or tensor.data_type not in (
        TensorProto.DataType.values()
    ):
        raise CtacError(f"tensor '{tensor.name}' has unknown element type {tensor.data_type}")
    try:
        numpy_helper.to_array(tensor)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, MemoryError) as exc:
        raise CtacError(
            f"tensor '{tensor.name}': its data does not match its type and shape "
            f"{list(tensor.dims)} ({exc})"
        ) from None


# ---------------------------------------------------------------------------------------------
# Loading without copying the weights
# ---------------------------------------------------------------------------------------------

# Raw data of at least this many bytes is left in the file (a read-only view), not parsed.
LAZY_MIN_BYTES = 4096
# Element types whose raw data numpy reads as it is (little-endian, fixed size).
_LAZY_DTYPES = {
    TensorProto.FLOAT: "<f4",
    TensorProto.FLOAT16: "<f2",
    TensorProto.DOUBLE: "<f8",
    TensorProto.INT8: "i1",
    TensorProto.UINT8: "u1",
    TensorProto.INT16: "<i2",
    TensorProto.UINT16: "<u2",
    TensorProto.INT32: "<i4",
    TensorProto.UINT32: "<u4",
    TensorProto.INT64: "<i8",
    TensorProto.UINT64: "<u8",
    TensorProto.BOOL: "?",
}
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9


class _NotPlain(Exception):
    """The protobuf uses something the wire-level scan does not handle: load it the usual way."""


def _varint(buffer, position: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= end or shift > 63:
            raise _NotPlain
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _fields(buffer, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, field start, value start, value end) of a message's fields."""
    position = start
    while position < end:
        tag, value_start = _varint(buffer, position, end)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, value_end = _varint(buffer, value_start, end)
        elif wire == 1:
            value_end = value_start + 8
        elif wire == 5:
            value_end = value_start + 4
        elif wire == 2:
            length, value_start = _varint(buffer, value_start, end)
            value_end = value_start + length
        else:  # groups: not in ONNX
            raise _NotPlain
        if value_end > end:
            raise _NotPlain
        yield number, wire, position, value_start, value_end
        position = value_end


def _strip_raw_data(buffer) -> tuple[bytes, list[tuple[int, int] | None]]:
    """The model's bytes with the raw data of its large top-level initializers left out (an
    empty raw_data in its place), and per initializer where its raw data is (offset, length)."""
    parts: list[bytes] = []
    places: list[tuple[int, int] | None] = []
    graphs = 0
    for number, wire, field_start, value_start, value_end in _fields(buffer, 0, len(buffer)):
        if number != _MODEL_GRAPH or wire != 2:
            parts.append(buffer[field_start:value_end])
            continue
        graphs += 1
        graph: list[bytes] = []
        for g_number, g_wire, g_start, g_value, g_end in _fields(buffer, value_start, value_end):
            if g_number != _GRAPH_INITIALIZER or g_wire != 2:
                graph.append(buffer[g_start:g_end])
                continue
            tensor: list[bytes] = []
            place = None
            for t_number, t_wire, t_start, t_value, t_end in _fields(buffer, g_value, g_end):
                if t_number == _TENSOR_RAW_DATA and t_wire == 2:
                    place = (
                        (t_value, t_end - t_value) if t_end - t_value >= LAZY_MIN_BYTES else None
                    )
                    if place is not None:
                        tensor.append(bytes([(_TENSOR_RAW_DATA << 3) | 2, 0]))
                        continue
                tensor.append(buffer[t_start:t_end])
            places.append(place)
            body = b"".join(tensor)
            graph.append(bytes([(_GRAPH_INITIALIZER << 3) | 2]) + _encode_varint(len(body)) + body)
        body = b"".join(graph)
        parts.append(bytes([(_MODEL_GRAPH << 3) | 2]) + _encode_varint(len(body)) + body)
    if graphs != 1:
        raise _NotPlain
    return b"".join(parts), places


def load_onnx_lazy(
    path: str | os.PathLike[str], max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """load_onnx without copying the weights: the model without the data of its large
    initializers (each holds an empty raw_data: onnx.checker accepts it as it is), and those
    initializers as read-only numpy views of the memory-mapped file (or of their external data
    file). Same checks as load_onnx; a file the scan does not understand is loaded by load_onnx."""
    path = Path(path)
    if sys.byteorder != "little" or not path.is_file():
        return load_onnx(path, max_tensor_bytes), {}
    try:
        with open(path, "rb") as stream:
            mapped = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
            register_mapping(mapped, path.resolve(), stream.fileno())
        skeleton, places = _strip_raw_data(mapped)
        model = onnx.ModelProto.FromString(skeleton)
    except (_NotPlain, DecodeError, ValueError, OSError):
        return load_onnx(path, max_tensor_bytes), {}
    initializers = model.graph.initializer
    names = [tensor.name for tensor in initializers]
    if len(places) != len(initializers) or len(set(names)) != len(names):
        return load_onnx(path, max_tensor_bytes), {}
    if not model.HasField("graph") or not model.graph.node:
        raise CtacError(f"'{path}' holds no ONNX graph (empty, truncated or not an ONNX file)")
    _check_external_data(model, path.parent, max_tensor_bytes)
    views: dict[str, np.ndarray] = {}
    for tensor, place in zip(initializers, places, strict=True):
        if place is None:
            continue
        dtype = _LAZY_DTYPES.get(tensor.data_type)
        if dtype is None or any(d < 0 for d in tensor.dims):
            tensor.raw_data = bytes(mapped[place[0] : place[0] + place[1]])  # the usual route
            continue
        count = math.prod(tensor.dims)
        if count * np.dtype(dtype).itemsize != place[1]:
            raise CtacError(
                f"tensor '{tensor.name}': its data does not match its type and shape "
                f"{list(tensor.dims)} ({place[1]} bytes)"
            )
        views[tensor.name] = _view(mapped, dtype, count, place[0], tensor.dims)
    root = path.parent.resolve()
    for tensor in initializers:
        dtype = _LAZY_DTYPES.get(tensor.data_type)
        if dtype is None or not external_data_helper.uses_external_data(tensor):
            continue
        location, offset, _ = _external_fields(tensor)
        count = math.prod(tensor.dims)
        if count == 0:
            continue
        try:
            array = np.memmap(
                (root / location).resolve(), dtype=dtype, mode="r", offset=offset, shape=(count,)
            )
        except (OSError, ValueError) as exc:
            raise CtacError(f"cannot read external data of '{path}': {exc}") from None
        views[tensor.name] = np.asarray(array).reshape(tuple(tensor.dims))
        views[tensor.name].flags.writeable = False
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT
        tensor.raw_data = b""
    try:
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError) as exc:
        raise CtacError(f"cannot read external data of '{path}': {exc}") from None
    for tensor in initializers:
        if tensor.name not in views:
            _check_tensor_data(tensor)
    for sparse in model.graph.sparse_initializer:
        _check_tensor_data(sparse.values)
        _check_tensor_data(sparse.indices)
    for tensor in _node_tensors(model.graph.node):
        _check_tensor_data(tensor)
    for function in model.functions:
        for tensor in _node_tensors(function.node):
            _check_tensor_data(tensor)
    return model, views


def _view(mapped: mmap.mmap, dtype: str, count: int, offset: int, dims) -> np.ndarray:
    array = np.frombuffer(mapped, dtype=dtype, count=count, offset=offset).reshape(tuple(dims))
    array.flags.writeable = False
    return array


def checkable_skeleton(model: onnx.ModelProto, views: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of load_onnx_lazy's model that onnx.checker accepts: the initializers held as views
    become empty tensors of their type (the checker would refuse their empty data; their sizes
    were checked against their shapes when they were read)."""
    checked = onnx.ModelProto()
    checked.CopyFrom(model)
    for tensor in checked.graph.initializer:
        if tensor.name in views:
            del tensor.dims[:]
            tensor.dims.append(0)
            tensor.ClearField("raw_data")
    return checked
