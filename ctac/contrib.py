"""com.microsoft Attention and MultiHeadAttention, imported straight to `cta.attention`.

onnxruntime's own fused ops (what its transformers optimizer writes) carry the whole attention
in one node; ctac maps each to `cta.project` / layout ops and one `cta.attention`. Inputs and
attributes it cannot express raise CtacError naming them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    f64,
    i64,
)
from xdsl.ir import Operation, SSAValue

from ctac.dialects import cta
from ctac.dialects import onnx as ox
from ctac.errors import CtacError

CONTRIB_DOMAIN = "com.microsoft"


class ContribBuilder:
    """Builds the ops for one contrib node. `add` inserts an op; `constant` makes a constant."""

    def __init__(
        self,
        node: onnx.NodeProto,
        inputs: list[SSAValue | None],
        add: Callable[[Operation], Operation],
        used_outputs: set[str],
    ) -> None:
        self.node = node
        self.inputs = inputs + [None] * 10
        self.add = add
        self.used = used_outputs
        self.attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        self.label = f"{node.op_type} node '{node.name or node.output[0]}'"
        self.new_kv_len: int | None = None

    def fail(self, message: str) -> CtacError:
        return CtacError(f"{self.label}: {message}")

    def refuse_inputs(self, positions: dict[int, str]) -> None:
        for position, name in positions.items():
            if self.inputs[position] is not None:
                raise self.fail(f"input '{name}' is not supported by cta.attention")

    def refuse_attributes(self, allowed: set[str]) -> None:
        for name, value in self.attributes.items():
            if name not in allowed and value not in (0, 0.0, b"", []):
                raise self.fail(f"attribute {name}={value} is not supported by cta.attention")

    def refuse_outputs(self, first: int) -> None:
        for name in self.node.output[first:]:
            if name and name in self.used:
                raise self.fail(f"output '{name}' is not supported (only the attention output is)")

    def constant(self, array: np.ndarray) -> SSAValue:
        return self.add(ox.ConstantOp.from_numpy(np.asarray(array))).results[0]

    def reshape(self, value: SSAValue, shape: list[int]) -> SSAValue:
        op = ox.ReshapeOp.build(
            operands=[value, self.constant(np.array(shape, dtype=np.int64))],
            result_types=[TensorType(ox.element_of(value), shape)],
        )
        return self.add(op).results[0]

    def transpose(self, value: SSAValue, perm: list[int]) -> SSAValue:
        shape = [ox.shape_of(value)[p] for p in perm]
        op = ox.TransposeOp.build(
            operands=[value],
            result_types=[TensorType(ox.element_of(value), shape)],
            properties={"perm": DenseArrayBase.from_list(i64, perm)},
        )
        return self.add(op).results[0]

    def to_heads(self, value: SSAValue, heads: int) -> SSAValue:
        """(B, S, heads*d) -> (B, heads, S, d)."""
        batch, seq, width = ox.shape_of(value)
        if width % heads:
            raise self.fail(f"hidden size {width} is not a multiple of num_heads {heads}")
        return self.transpose(
            self.reshape(value, [batch, seq, heads, width // heads]), [0, 2, 1, 3]
        )

    def from_heads(self, value: SSAValue) -> SSAValue:
        """(B, heads, S, d) -> (B, S, heads*d)."""
        batch, heads, seq, dim = ox.shape_of(value)
        return self.reshape(self.transpose(value, [0, 2, 1, 3]), [batch, seq, heads * dim])

    def bias_slice(self, bias: SSAValue, value: SSAValue, start: int, end: int) -> SSAValue:
        piece = ox.SliceOp.build(
            operands=[
                bias,
                self.constant(np.array([start], np.int64)),
                self.constant(np.array([end], np.int64)),
                [],
                [],
            ],
            result_types=[TensorType(ox.element_of(bias), [end - start])],
        )
        sliced = self.add(piece).results[0]
        add = ox.AddOp.build(operands=[value, sliced], result_types=[value.type])
        return self.add(add).results[0]

    def attention(
        self, q: SSAValue, k: SSAValue, v: SSAValue, padding: SSAValue | None, bias: SSAValue | None
    ) -> SSAValue:
        batch, heads, q_len, head_dim = ox.shape_of(q)
        kv_heads, kv_len = ox.shape_of(k)[1], ox.shape_of(k)[2]
        if padding is not None and bias is not None:
            raise self.fail("a key padding mask together with an attention bias is not supported")
        if padding is not None and ox.shape_of(padding) != (batch, kv_len):
            raise self.fail(
                f"mask shape {ox.shape_of(padding)} is not supported; only a (batch, "
                f"kv_sequence) 0/1 mask {(batch, kv_len)} is"
            )
        scale = float(self.attributes.get("scale", 0.0)) or 1.0 / math.sqrt(head_dim)
        properties = {
            "num_heads": IntegerAttr(heads, i64),
            "kv_heads": IntegerAttr(kv_heads, i64),
            "head_dim": IntegerAttr(head_dim, i64),
            "scale": FloatAttr(scale, f64),
        }
        if self.attributes.get("unidirectional", 0):
            properties["causal"] = IntegerAttr(1, i64)
            new_keys = self.new_kv_len if self.new_kv_len is not None else kv_len
            if new_keys != q_len:
                # onnxruntime's CPU kernel gives results matching no causal alignment here.
                raise self.fail(
                    f"unidirectional with {q_len} queries and {new_keys} new keys "
                    "(causal cross-attention) is not supported"
                )
        mask = padding if padding is not None else bias
        if mask is not None:
            properties["mask_kind"] = StringAttr(
                "key_padding" if padding is not None else "additive"
            )
        result_shape = [batch, heads, q_len, ox.shape_of(v)[3]]
        op = cta.AttentionOp.build(
            operands=[q, k, v, [mask] if mask is not None else []],
            result_types=[TensorType(ox.element_of(q), result_shape)],
            properties=properties,
            attributes={
                "ctac.source": StringAttr(self.node.name or self.node.output[0]),
                "ctac.form": StringAttr(f"{CONTRIB_DOMAIN}.{self.node.op_type}"),
            },
        )
        op.verify()
        return self.add(op).results[0]


def build_attention(builder: ContribBuilder) -> list[SSAValue]:
    """com.microsoft.Attention(input, weights, bias, mask_index, past, attention_bias)."""
    builder.refuse_inputs({4: "past", 6: "past_sequence_length"})
    builder.refuse_attributes(
        {"num_heads", "qkv_hidden_sizes", "unidirectional", "scale", "mask_filter_value"}
    )
    builder.refuse_outputs(1)
    x, weight, bias, mask, _, attention_bias = builder.inputs[:6]
    heads = int(builder.attributes["num_heads"])
    hidden = ox.shape_of(weight)[1]
    sizes = list(builder.attributes.get("qkv_hidden_sizes", [])) or [hidden // 3] * 3
    if len(ox.shape_of(x)) != 3 or sum(sizes) != hidden:
        raise builder.fail(
            f"input {ox.shape_of(x)} / weights {ox.shape_of(weight)} are not supported"
        )
    if bias is not None and ox.shape_of(bias) != (hidden,):
        raise builder.fail(f"bias shape {ox.shape_of(bias)} should be ({hidden},)")
    batch, seq, _ = ox.shape_of(x)
    projected = []
    start = 0
    for size in sizes:
        if size % heads:
            raise builder.fail(f"hidden size {size} is not a multiple of num_heads {heads}")
        op = cta.ProjectOp.build(
            operands=[x, weight, [bias] if bias is not None else []],
            result_types=[TensorType(ox.element_of(x), [batch, heads, seq, size // heads])],
            properties={
                "heads": IntegerAttr(heads, i64),
                "head_dim": IntegerAttr(size // heads, i64),
                "columns": DenseArrayBase.from_list(i64, [start, start + size]),
            },
        )
        projected.append(builder.add(op).results[0])
        start += size
    result = builder.attention(*projected, mask, attention_bias)
    return [builder.from_heads(result)]


def build_multi_head_attention(builder: ContribBuilder) -> list[SSAValue]:
    """com.microsoft.MultiHeadAttention(query, key, value, bias, key_padding_mask, attention_bias,
    past_key, past_value) with 3-D query and 3-D or 4-D (B, N, L, H) key/value."""
    builder.refuse_inputs({8: "past_sequence_length", 9: "cache_indirection"})
    builder.refuse_attributes({"num_heads", "unidirectional", "scale", "mask_filter_value"})
    query, key, value, bias, padding, attention_bias, past_key, past_value = builder.inputs[:8]
    heads = int(builder.attributes["num_heads"])
    if key is None or value is None or len(ox.shape_of(query)) != 3:
        raise builder.fail("packed query/key/value inputs are not supported")
    q3 = query
    width = ox.shape_of(query)[2]
    if bias is not None:
        total = ox.shape_of(bias)[0]
        value_width = total - 2 * width
        if len(ox.shape_of(key)) != 3:
            raise builder.fail("bias with 4-D key/value is not supported")
        q3 = builder.bias_slice(bias, q3, 0, width)
        key = builder.bias_slice(bias, key, width, 2 * width)
        value = builder.bias_slice(bias, value, 2 * width, 2 * width + value_width)
    q = builder.to_heads(q3, heads)
    k = builder.to_heads(key, heads) if len(ox.shape_of(key)) == 3 else key
    v = builder.to_heads(value, heads) if len(ox.shape_of(value)) == 3 else value
    presents: list[SSAValue] = []
    for past, current in ((past_key, k), (past_value, v)):
        if past is None:
            presents.append(current)
            continue
        shape = list(ox.shape_of(current))
        shape[2] += ox.shape_of(past)[2]
        concat = ox.ConcatOp.build(
            operands=[[past, current]],
            result_types=[TensorType(ox.element_of(current), shape)],
            properties={"axis": IntegerAttr(2, i64)},
        )
        presents.append(builder.add(concat).results[0])
    builder.new_kv_len = ox.shape_of(k)[2]
    k, v = presents
    if len(builder.node.output) > 3 and builder.node.output[3] in builder.used:
        raise builder.fail("output 'qk' is not supported (only the attention output is)")
    result = builder.attention(q, k, v, padding, attention_bias)
    return [builder.from_heads(result), *presents]


CONTRIB_OPS: dict[str, Callable[[ContribBuilder], list[SSAValue]]] = {
    "Attention": build_attention,
    "MultiHeadAttention": build_multi_head_attention,
}
