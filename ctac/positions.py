"""A sequence longer than the model's position table, refused at import with the lengths.

Two forms of learned positions:

- constant position ids (BERT's `position_ids` buffer, GPT-2's `arange`): a sequence longer than
  the table makes ONNX shape inference fail deep in the graph (an Expand or a Gather); the
  importer then asks `longer_than_positions` for the error to give instead.
- position ids computed from the token ids (RoBERTa, XLM-R: `cumsum(ids != pad) * (ids != pad)
  + pad`): shapes infer at any length, and a gather past the table's end would only fail when
  the program runs. `derived_positions_error` bounds the largest index such a computation can
  reach (interval arithmetic from the input shapes, through CumSum) and compares it with the
  table's rows, before the model is built.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from ctac.errors import CtacError
from ctac.weights import constant_node_value

# Names of learned position tables (BERT's position_embeddings, GPT-2's wpe, BART's and OPT's
# embed_positions) and the rows each keeps before its first position (BART and OPT: 2).
POSITION_TABLES = (("position_embeddings", 0), ("wpe", 0), ("embed_positions", 2))

# Ops whose result is a boolean (0 or 1) whatever their operands.
_BOOLEAN_OPS = {
    "Not", "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor",
    "IsNaN", "IsInf",
}  # fmt: skip
# Ops whose values are a subset of their first operand's (bounds pass through).
_MOVES_VALUES = {
    "Identity", "Unsqueeze", "Squeeze", "Reshape", "Expand", "Flatten", "Transpose", "Slice",
    "Gather", "GatherElements", "Tile", "Concat",
}  # fmt: skip
# Elementwise ops whose result has the broadcast shape of their operands.
_ELEMENTWISE = _BOOLEAN_OPS | {"Cast", "Add", "Sub", "Mul", "Neg", "Max", "Min", "Where"}
# Constants larger than this are not read for bounds (position arithmetic uses scalars).
_MAX_CONSTANT_ELEMENTS = 1 << 16


def _sequence_input(
    graph: onnx.GraphProto, shapes: Mapping[str, list[int]]
) -> tuple[int, str] | None:
    """(length, name) of the longest 2-D integer input: token ids, masks, positions."""
    integer = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
    sequences = [
        (dims[-1], value.name)
        for value in graph.input
        if (dims := shapes.get(value.name)) is not None
        and len(dims) == 2
        and value.type.tensor_type.elem_type in integer
    ]
    return max(sequences) if sequences else None


def longer_than_positions(
    graph: onnx.GraphProto, shapes: Mapping[str, list[int]], cause: str
) -> CtacError | None:
    """The error for a --shape sequence longer than a position table of the model (2-D
    initializers named like one), or None; `cause` is the import failure it explains."""
    sequence = _sequence_input(graph, shapes)
    if sequence is None:
        return None
    length, name = sequence
    for tensor in graph.initializer:
        parts = re.split(r"[./:]", tensor.name)
        for marker, offset in POSITION_TABLES:
            if len(tensor.dims) != 2 or marker not in parts:
                continue
            positions = tensor.dims[0] - offset
            if length > positions:
                rows = f"{tensor.dims[0]} rows" + (
                    f", the first {offset} an offset" if offset else ""
                )
                first = cause.strip().splitlines()[0] if cause.strip() else ""
                return CtacError(
                    f"{name}: {length} tokens > the model's {positions} positions (position "
                    f"table '{tensor.name}' has {rows}); use --shape {name}=Bx{positions} or "
                    f"fewer tokens (import failed with: {first})"
                )
    return None


class _Bounds:
    """Interval bounds of a graph's integer values, from its static input shapes and constants:
    (lowest, highest, longest CumSum on the way) per value, None where not bounded (an input's
    values, an op not modelled)."""

    def __init__(self, graph: onnx.GraphProto, arrays: Mapping[str, np.ndarray]) -> None:
        self.producer = {out: node for node in graph.node for out in node.output if out}
        self.initializers = {tensor.name: tensor for tensor in graph.initializer}
        self.arrays = arrays
        self.inputs = {
            value.name: value for value in graph.input if value.name not in self.initializers
        }
        self.memo: dict[str, tuple[float, float, int] | None] = {}

    def constant(self, name: str) -> np.ndarray | None:
        """A constant's value: an initializer or a Constant node's, when small."""
        if name in self.initializers:
            tensor = self.initializers[name]
            if int(np.prod(tensor.dims, dtype=np.int64)) > _MAX_CONSTANT_ELEMENTS:
                return None
            if name in self.arrays:
                return np.asarray(self.arrays[name])
            try:
                return numpy_helper.to_array(tensor)
            except (ValueError, TypeError, OSError):  # external or stripped data
                return None
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            try:
                value = constant_node_value(node)
            except CtacError:
                return None
            return value if value.size <= _MAX_CONSTANT_ELEMENTS else None
        return None

    def shape(self, name: str, depth: int = 0) -> list[int] | None:
        """The static shape of an input, a constant or an elementwise op's result."""
        if name in self.inputs:
            dims = self.inputs[name].type.tensor_type.shape.dim
            if all(dim.HasField("dim_value") for dim in dims):
                return [dim.dim_value for dim in dims]
            return None
        if name in self.initializers:
            return list(self.initializers[name].dims)
        value = self.constant(name)
        if value is not None:
            return list(value.shape)
        node = self.producer.get(name)
        if node is None or node.op_type not in _ELEMENTWISE or depth > 64:
            return None
        operands = [self.shape(i, depth + 1) for i in node.input if i]
        if any(shape is None for shape in operands):
            return None
        try:
            return list(np.broadcast_shapes(*(tuple(shape) for shape in operands)))
        except ValueError:
            return None

    def bounds(self, name: str, depth: int = 0) -> tuple[float, float, int] | None:
        if name not in self.memo:
            self.memo[name] = self._bounds(name, depth) if depth <= 64 else None
        return self.memo[name]

    def _bounds(self, name: str, depth: int) -> tuple[float, float, int] | None:
        value = self.constant(name)
        if value is not None:
            if value.size == 0 or value.dtype.kind not in "biuf":
                return None
            return float(value.min()), float(value.max()), 0
        if name in self.inputs:
            elem = self.inputs[name].type.tensor_type.elem_type
            return (0.0, 1.0, 0) if elem == onnx.TensorProto.BOOL else None
        node = self.producer.get(name)
        if node is None:
            return None
        op = node.op_type
        if op in _BOOLEAN_OPS:
            return 0.0, 1.0, 0
        operands = [self.bounds(i, depth + 1) if i else None for i in node.input]
        first = operands[0] if operands else None
        if op == "Cast":
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            if to == onnx.TensorProto.BOOL:
                return 0.0, 1.0, 0
            # float -> int truncates toward zero: the bounds widen to whole numbers
            return None if first is None else (np.floor(first[0]), np.ceil(first[1]), first[2])
        if op in _MOVES_VALUES:
            if op == "Concat":
                if any(bound is None for bound in operands):
                    return None
                return _union(operands)
            return first
        if op == "Where":
            return None if None in operands[1:3] else _union(operands[1:3])
        if op == "Neg":
            return None if first is None else (-first[1], -first[0], first[2])
        if op in ("Add", "Sub", "Mul", "Max", "Min"):
            if len(operands) < 2 or any(bound is None for bound in operands):
                return None
            result = operands[0]
            for other in operands[1:]:
                result = _arithmetic(op, result, other)
            return result
        if op == "CumSum":
            return self._cumsum(node, first)
        return None

    def _cumsum(self, node: onnx.NodeProto, first) -> tuple[float, float, int] | None:
        """Prefix sums of k values in [lo, hi]: k from 1 to the axis' length L (0 to L - 1
        when exclusive)."""
        axis = self.constant(node.input[1]) if len(node.input) > 1 else None
        shape = self.shape(node.input[0])
        if first is None or axis is None or axis.size != 1 or shape is None:
            return None
        length = shape[int(axis.reshape(-1)[0]) % len(shape)] if shape else 1
        exclusive = any(a.name == "exclusive" and a.i for a in node.attribute)
        fewest, most = (0, length - 1) if exclusive else (min(1, length), length)
        lo, hi, seen = first
        low = min(fewest * lo, most * lo)
        high = max(fewest * hi, most * hi)
        return float(low), float(high), max(seen, length)


def _union(bounds) -> tuple[float, float, int]:
    return (min(b[0] for b in bounds), max(b[1] for b in bounds), max(b[2] for b in bounds))


def _arithmetic(op: str, a, b) -> tuple[float, float, int]:
    seen = max(a[2], b[2])
    if op == "Add":
        return a[0] + b[0], a[1] + b[1], seen
    if op == "Sub":
        return a[0] - b[1], a[1] - b[0], seen
    if op == "Max":
        return max(a[0], b[0]), max(a[1], b[1]), seen
    if op == "Min":
        return min(a[0], b[0]), min(a[1], b[1]), seen
    products = [x * y for x in a[:2] for y in b[:2]]
    return min(products), max(products), seen


def derived_positions_error(
    graph: onnx.GraphProto, arrays: Mapping[str, np.ndarray] | None = None
) -> CtacError | None:
    """The error for a sequence longer than a position table the model indexes with ids it
    computes from its inputs through a CumSum (RoBERTa's `cumsum(mask) * mask + padding_idx`),
    or None. The graph's inputs must have their static shapes (after --shape); `arrays` are the
    initializers whose data the model proto does not hold (onnx_loader.load_onnx_lazy)."""
    analysis = _Bounds(graph, arrays or {})
    for node in graph.node:
        if node.op_type != "Gather" or len(node.input) < 2:
            continue
        table = analysis.initializers.get(node.input[0])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if table is None or len(table.dims) != 2 or axis != 0:
            continue
        bound = analysis.bounds(node.input[1])
        if bound is None or bound[2] == 0:  # not bounded, or not data-derived positions
            continue
        rows = int(table.dims[0])
        highest, length = int(bound[1]), bound[2]
        if highest < rows:
            continue
        # What the ids add to the token count (RoBERTa: padding_idx): a count of n reaches row
        # n + offset, so the table holds rows - 1 - offset positions.
        offset = highest - length
        positions = rows - 1 - offset
        static = {name: shape for name in analysis.inputs if (shape := analysis.shape(name))}
        sequence = _sequence_input(graph, static)
        name = sequence[1] if sequence is not None and sequence[0] == length else "the sequence"
        how = (
            f"the model computes position ids from its inputs, reaching row {highest} at "
            f"{length} tokens"
        )
        if positions < 1:  # not a count plus an offset: no length to suggest
            return CtacError(
                f"{name}: {length} tokens index past the end of position table "
                f"'{table.name}' ({rows} rows; {how}); use fewer tokens"
            )
        flag = f"--shape {name}=Bx{positions}" if name != "the sequence" else f"{positions} tokens"
        return CtacError(
            f"{name}: {length} tokens > the model's {positions} positions (position table "
            f"'{table.name}' has {rows} rows; {how}); use {flag} or fewer tokens"
        )
    return None
