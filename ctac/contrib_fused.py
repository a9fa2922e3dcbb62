"""onnxruntime's fused com.microsoft ops, rewritten to the standard ONNX nodes they stand for.

onnxruntime's transformers optimizer (and optimum's O2-O4, which call it) fuse a BERT, GPT-2 or
ViT graph into SkipLayerNormalization, EmbedLayerNormalization, BiasGelu, FastGelu, FusedMatMul,
BiasAdd and Attention nodes. ctac imports attention straight to `cta.attention` (ctac/contrib.py);
every other fused op here becomes the plain ONNX nodes of its definition (onnxruntime's contrib
op documentation, docs/ContribOperators.md), which the importer then builds one by one with
ONNX's own shape inference, and canonicalize recognises again as LayerNormalization, GELU and
(SkipSimplifiedLayerNormalization's) RMSNormalization.

Attention's mask_index comes in formats cta.attention does not take (a key-padding 0/1 matrix
(batch, keys) or an additive bias): 1-D end positions (batch) or end and start positions
(2 x batch), and 3-D per-query masks (batch, queries, keys). `attention_mask_nodes` turns them
into the 0/1 matrix, or the additive bias onnxruntime itself adds ((1 - mask) x
mask_filter_value), before the Attention node is built.

Every decomposition returns nodes in opset >= 17 form (LayerNormalization; ReduceSum and
Unsqueeze take their axes as inputs), so the importer builds them at that opset.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ctac.errors import CtacError

TypeOf = Callable[[str], tuple[tuple[int, ...], np.dtype]]  # a built value's shape and dtype
DECOMPOSED_OPSET = 17  # the opset the nodes below are written for (at least)
MASK_FILTER_VALUE = -10000.0  # onnxruntime's default for Attention's mask_filter_value


class NodeBuilder:
    """Nodes of one decomposition, with names derived from the fused node's (unique in the
    graph: onnxruntime and exporters do not use the `/ctac.` prefix)."""

    def __init__(self, node: onnx.NodeProto, type_of: TypeOf) -> None:
        self.node = node
        self.type_of = type_of
        self.dtype = np.dtype(np.float32)  # of the float scalars `scalar` makes
        self.prefix = f"/ctac.{node.op_type}.{node.name or node.output[0]}"
        self.nodes: list[onnx.NodeProto] = []
        self.attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def input(self, position: int) -> str:
        return self.node.input[position] if position < len(self.node.input) else ""

    def fail(self, message: str) -> CtacError:
        label = f"{self.node.op_type} node '{self.node.name or self.node.output[0]}'"
        return CtacError(f"{label}: {message}")

    def add(self, op_type: str, inputs: list[str], output: str = "", **attributes) -> str:
        output = output or f"{self.prefix}/{op_type}_{len(self.nodes)}"
        self.nodes.append(
            helper.make_node(
                op_type, inputs, [output], name=f"{self.prefix}/{len(self.nodes)}", **attributes
            )
        )
        return output

    def arange(self, count: int) -> str:
        """0 .. count-1 (int64) as a Range node: a large Constant would have to live in the
        model's weight store, which holds only the file's own tensors."""
        scalars = [self.constant(np.int64(v)) for v in (0, count, 1)]
        return self.add("Range", scalars)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.type_of(name)[0]

    def scalar(self, value: float) -> str:
        """A float scalar in the element type of the values it meets (float16 models)."""
        return self.constant(np.array(value, dtype=self.dtype))

    def float_like(self, name: str) -> str:
        """Scalars from here on take `name`'s element type; returns name."""
        self.dtype = np.dtype(self.type_of(name)[1])
        return name

    def constant(self, array: np.ndarray) -> str:
        """A small constant (scalars, axes; see arange for large ones)."""
        output = f"{self.prefix}/const_{len(self.nodes)}"
        tensor = numpy_helper.from_array(np.asarray(array), output)
        self.nodes.append(
            helper.make_node("Constant", [], [output], name=output + "_node", value=tensor)
        )
        return output

    def output(self, position: int) -> str:
        """The fused node's output name at `position` ('' when absent)."""
        return self.node.output[position] if position < len(self.node.output) else ""

    def refuse_used_outputs(self, positions: dict[int, str], used: set[str]) -> None:
        for position, name in positions.items():
            if self.output(position) and self.output(position) in used:
                raise self.fail(f"output '{name}' is used, which ctac does not support")

    def sum_of(self, terms: list[str], output: str = "") -> str:
        total = terms[0]
        for i, term in enumerate(terms[1:], start=1):
            total = self.add("Add", [total, term], output if i == len(terms) - 1 else "")
        return total


def _gelu_erf(nodes: NodeBuilder, x: str, output: str) -> None:
    """0.5 x (1 + erf(x / sqrt 2)), the form canonicalize turns back into Gelu."""
    scaled = nodes.add("Div", [x, nodes.scalar(math.sqrt(2.0))])
    erf = nodes.add("Erf", [scaled])
    one_plus = nodes.add("Add", [erf, nodes.scalar(1.0)])
    product = nodes.add("Mul", [x, one_plus])
    nodes.add("Mul", [product, nodes.scalar(0.5)], output)


def _gelu_tanh(nodes: NodeBuilder, x: str, output: str) -> None:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    cube = nodes.add("Pow", [x, nodes.scalar(3.0)])
    cubic = nodes.add("Mul", [cube, nodes.scalar(0.044715)])
    inner = nodes.add("Add", [x, cubic])
    scaled = nodes.add("Mul", [inner, nodes.scalar(math.sqrt(2 / math.pi))])
    tanh = nodes.add("Tanh", [scaled])
    one_plus = nodes.add("Add", [tanh, nodes.scalar(1.0)])
    product = nodes.add("Mul", [x, one_plus])
    nodes.add("Mul", [product, nodes.scalar(0.5)], output)


def _bias_gelu(nodes: NodeBuilder, used: set[str]) -> None:
    """BiasGelu(A, B) = Gelu(A + B), the erf form."""
    x = nodes.add("Add", [nodes.input(0), nodes.input(1)])
    _gelu_erf(nodes, x, nodes.output(0))


def _fast_gelu(nodes: NodeBuilder, used: set[str]) -> None:
    """FastGelu(X, bias?) = the tanh approximation of Gelu(X + bias)."""
    x = nodes.input(0)
    if nodes.input(1):
        x = nodes.add("Add", [x, nodes.input(1)])
    _gelu_tanh(nodes, x, nodes.output(0))


def _bias_add(nodes: NodeBuilder, used: set[str]) -> None:
    """BiasAdd(X, bias, skip) = X + bias + skip."""
    nodes.sum_of([nodes.input(0), nodes.input(1), nodes.input(2)], nodes.output(0))


def _layer_norm(nodes: NodeBuilder, x: str, gamma: str, beta: str, output: str) -> None:
    epsilon = float(nodes.attributes.get("epsilon", 1e-12))
    inputs = [x, gamma] + ([beta] if beta else [])
    nodes.add("LayerNormalization", inputs, output, axis=-1, epsilon=epsilon)


def _skip_sum(nodes: NodeBuilder, bias_position: int) -> str:
    """input + skip (+ bias): output 3 (input_skip_bias_sum) when the graph reads it."""
    terms = [nodes.input(0), nodes.input(1)]
    if nodes.input(bias_position):
        terms.append(nodes.input(bias_position))
    return nodes.sum_of(terms, nodes.output(3))


def _skip_layer_norm(nodes: NodeBuilder, used: set[str]) -> None:
    """SkipLayerNormalization(input, skip, gamma, beta?, bias?) = LayerNorm(input + skip + bias);
    output 3 is that sum."""
    nodes.refuse_used_outputs({1: "mean", 2: "inv_std_var"}, used)
    total = _skip_sum(nodes, 4)
    _layer_norm(nodes, total, nodes.input(2), nodes.input(3), nodes.output(0))


def _skip_simplified_layer_norm(nodes: NodeBuilder, used: set[str]) -> None:
    """SkipSimplifiedLayerNormalization(input, skip, gamma, bias?) = RMSNorm(input + skip + bias):
    s / sqrt(mean(s^2) + epsilon) x gamma over the last axis; output 3 is the sum. The mean is
    ReduceSum / width (ReduceMean takes axes as an input only from opset 18), a form canonicalize
    recognises as RMSNormalization (passes/patterns_layer_norm.py)."""
    nodes.refuse_used_outputs({1: "mean", 2: "inv_std_var"}, used)
    total = _skip_sum(nodes, 3)
    width = nodes.shape(nodes.input(0))[-1]
    squares = nodes.add("Mul", [total, total])
    summed = nodes.add("ReduceSum", [squares, nodes.constant(np.array([-1], np.int64))], keepdims=1)
    mean = nodes.add("Div", [summed, nodes.scalar(width)])
    epsilon = float(nodes.attributes.get("epsilon", 1e-12))
    shifted = nodes.add("Add", [mean, nodes.scalar(epsilon)])
    normalised = nodes.add("Div", [total, nodes.add("Sqrt", [shifted])])
    nodes.add("Mul", [normalised, nodes.input(2)], nodes.output(0))


def _embed_layer_norm(nodes: NodeBuilder, used: set[str]) -> None:
    """EmbedLayerNormalization(input_ids, segment_ids?, word_embedding, position_embedding,
    segment_embedding?, gamma, beta, mask?, position_ids?) = LayerNorm(word[ids] + position[pos]
    + segment[segment_ids]); mask_index = the sum of each row of mask (int32, zeros without a
    mask); output 2 is the embedding sum."""
    ids, segments, words, positions, segment_table, gamma, beta, mask, position_ids = (
        nodes.input(i) for i in range(9)
    )
    batch, sequence = nodes.shape(ids)
    if not position_ids:
        position_ids = nodes.arange(sequence)
    terms = [nodes.add("Gather", [words, ids]), nodes.add("Gather", [positions, position_ids])]
    if segments and segment_table:
        terms.append(nodes.add("Gather", [segment_table, segments]))
    total = nodes.sum_of(terms, nodes.output(2))
    _layer_norm(nodes, total, gamma, beta, nodes.output(0))
    if nodes.output(1) and nodes.output(1) in used:
        if mask:
            count = nodes.add(
                "ReduceSum", [mask, nodes.constant(np.array([1], np.int64))], keepdims=0
            )
            nodes.add("Cast", [count], nodes.output(1), to=onnx.TensorProto.INT32)
        else:
            zero = numpy_helper.from_array(np.zeros(1, np.int32), "value")
            shape = nodes.constant(np.array([batch], np.int64))
            nodes.add("ConstantOfShape", [shape], nodes.output(1), value=zero)


def _fused_matmul(nodes: NodeBuilder, used: set[str]) -> None:
    """FusedMatMul(A, B) = alpha x op(A) op(B), op transposing the last two axes when transA /
    transB is set."""
    if nodes.attributes.get("transBatchA", 0) or nodes.attributes.get("transBatchB", 0):
        raise nodes.fail("transBatchA / transBatchB are not supported")
    operands = []
    for position, flag in ((0, "transA"), (1, "transB")):
        name = nodes.input(position)
        if nodes.attributes.get(flag, 0):
            rank = len(nodes.shape(name))
            if rank < 2:
                raise nodes.fail(f"{flag} on a rank-{rank} input")
            perm = [*range(rank - 2), rank - 1, rank - 2]
            name = nodes.add("Transpose", [name], perm=perm)
        operands.append(name)
    alpha = float(nodes.attributes.get("alpha", 1.0))
    if alpha == 1.0:
        nodes.add("MatMul", operands, nodes.output(0))
    else:
        product = nodes.add("MatMul", operands)
        nodes.add("Mul", [product, nodes.scalar(alpha)], nodes.output(0))


Decomposition = Callable[[NodeBuilder, set[str]], None]

DECOMPOSITIONS: dict[str, Decomposition] = {
    "BiasGelu": _bias_gelu,
    "FastGelu": _fast_gelu,
    "BiasAdd": _bias_add,
    "SkipLayerNormalization": _skip_layer_norm,
    "SkipSimplifiedLayerNormalization": _skip_simplified_layer_norm,
    "EmbedLayerNormalization": _embed_layer_norm,
    "FusedMatMul": _fused_matmul,
}


def decompose(node: onnx.NodeProto, type_of: TypeOf, used: set[str]) -> list[onnx.NodeProto]:
    """The standard ONNX nodes computing `node` (a com.microsoft op in DECOMPOSITIONS); they
    write the fused node's own output names. `type_of` gives the static shape and numpy dtype
    of a value already built; `used` holds every name some node or graph output reads."""
    nodes = NodeBuilder(node, type_of)
    if np.issubdtype(type_of(node.input[0])[1], np.floating):
        nodes.float_like(node.input[0])  # scalars in the model's float type (fp16 models)
    DECOMPOSITIONS[node.op_type](nodes, used)
    return nodes.nodes


def attention_mask_nodes(
    node: onnx.NodeProto, type_of: TypeOf
) -> tuple[list[onnx.NodeProto], onnx.NodeProto] | None:
    """For a com.microsoft.Attention whose mask_index is 1-D or 3-D: the nodes turning it into a
    (batch, keys) 0/1 int32 mask (1-D: key j is kept when start <= j < end) or into the additive
    attention bias (batch, 1, queries, keys) onnxruntime adds for a 3-D mask, and the Attention
    node reading that instead. None when the mask needs no conversion."""
    if len(node.input) < 4 or not node.input[3]:
        return None
    mask_shape = type_of(node.input[3])[0]
    if len(mask_shape) not in (1, 3):
        return None
    nodes = NodeBuilder(node, type_of)
    batch, sequence, _ = nodes.shape(nodes.float_like(node.input[0]))
    past = node.input[4] if len(node.input) > 4 else ""
    keys = sequence + (nodes.shape(past)[3] if past else 0)
    rewritten = onnx.NodeProto()
    rewritten.CopyFrom(node)
    if len(mask_shape) == 1:
        if mask_shape[0] not in (batch, 2 * batch):
            raise nodes.fail(
                f"1-D mask_index of {mask_shape[0]} entries; onnxruntime takes batch ({batch}) "
                f"end positions or 2 x batch ({2 * batch}) end and start positions"
            )
        mask = nodes.add("Cast", [node.input[3]], to=onnx.TensorProto.INT64)
        column = nodes.add("Unsqueeze", [nodes.arange(keys), nodes.constant(np.array([0]))])
        ends = mask
        if mask_shape[0] == 2 * batch:
            # Gather, not Slice: the accelerator lowers a gather of rows, not a slice of them.
            ends = nodes.add("Gather", [mask, nodes.constant(np.arange(batch))])
        kept = nodes.add(
            "Less", [column, nodes.add("Unsqueeze", [ends, nodes.constant(np.array([1]))])]
        )
        if mask_shape[0] == 2 * batch:
            starts = nodes.add("Gather", [mask, nodes.constant(np.arange(batch, 2 * batch))])
            unsqueezed = nodes.add("Unsqueeze", [starts, nodes.constant(np.array([1]))])
            kept = nodes.add("And", [kept, nodes.add("GreaterOrEqual", [column, unsqueezed])])
        rewritten.input[3] = nodes.add("Cast", [kept], to=onnx.TensorProto.INT32)
        return nodes.nodes, rewritten
    if len(node.input) > 5 and node.input[5]:
        raise nodes.fail("a 3-D mask_index together with attention_bias is not supported")
    filter_value = float(nodes.attributes.get("mask_filter_value", MASK_FILTER_VALUE))
    element = onnx.helper.np_dtype_to_tensor_dtype(nodes.dtype)
    as_float = nodes.add("Cast", [node.input[3]], to=element)
    masked = nodes.add("Sub", [nodes.scalar(1.0), as_float])
    additive = nodes.add("Mul", [masked, nodes.scalar(filter_value)])
    bias = nodes.add("Unsqueeze", [additive, nodes.constant(np.array([1]))])
    while len(rewritten.input) < 6:
        rewritten.input.append("")
    rewritten.input[3] = ""
    rewritten.input[5] = bias
    return nodes.nodes, rewritten
