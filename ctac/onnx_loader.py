"""Loading an ONNX file without trusting it.

External data may only come from files inside the model's own folder (after resolving symlinks),
every tensor must fit the bytes its file holds, and no tensor may exceed a size cap. Problems raise
CtacError naming the tensor or file and the fix.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, external_data_helper, numpy_helper

from ctac.errors import CtacError

DEFAULT_MAX_TENSOR_BYTES = 4 * 1024**3


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
