"""The `cta` dialect: attention as one op, and the projections that feed it.

- `cta.project`: a linear projection of a (batch, seq, hidden) input into heads,
  `transpose(reshape(x @ w[:, c0:c1] + b[c0:c1], (B, S, heads, head_dim)), (0, 2, 1, 3))`.
  Keeping x and the weights as operands lets the compression pass cluster x before projecting.
- `cta.attention`: softmax(q k^T * scale + mask) v per head, with key/value heads shared by
  groups of query heads (GQA/MQA), an optional causal mask, and a mask operand of one of three
  kinds: none, `key_padding` (a (batch, kv_seq) 0/1 tensor: 0 = padding), `additive` (a float
  tensor broadcast to (batch, heads, q_seq, kv_seq) added to the scores).

Syntax: the shared `onnx`-dialect form (`name %value` for present optional operands).
"""

from __future__ import annotations

from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
)
from xdsl.ir import Dialect
from xdsl.irdl import (
    AttrSizedOperandSegments,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure

from ctac.dialects.onnx import OnnxOp, _fail, broadcast_shapes, shape_of

MASK_KINDS = ("none", "key_padding", "additive")


@irdl_op_definition
class ProjectOp(OnnxOp):
    """`%q = cta.project %x, %w, bias %b {heads = 4 : i64, head_dim = 16 : i64, columns = [0, 64]}`"""

    name = "cta.project"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    output = result_def(TensorType)
    heads = prop_def(IntegerAttr)
    head_dim = prop_def(IntegerAttr)
    columns = prop_def(DenseArrayBase)
    traits = traits_def(Pure())
    irdl_options = (AttrSizedOperandSegments(as_property=True),)

    def column_range(self) -> tuple[int, int]:
        start, end = self.ints_attr("columns")
        return start, end

    def verify_onnx(self) -> None:
        x, w = shape_of(self.input), shape_of(self.weight)
        heads, head_dim = self.int_attr("heads"), self.int_attr("head_dim")
        start, end = self.column_range()
        if len(x) != 3 or len(w) != 2:
            _fail(self, f"input must be (batch, seq, hidden) and weight 2-D, got {x} and {w}")
        if w[0] != x[2]:
            _fail(self, f"weight rows {w[0]} differ from the input's hidden size {x[2]}")
        if not 0 <= start < end <= w[1] or end - start != heads * head_dim:
            _fail(self, f"columns [{start}, {end}) must select heads x head_dim of {w[1]} columns")
        if self.bias is not None and shape_of(self.bias) != (w[1],):
            _fail(self, f"bias shape {shape_of(self.bias)} should be ({w[1]},)")
        if shape_of(self.output) != (x[0], heads, x[1], head_dim):
            _fail(
                self,
                f"result shape {shape_of(self.output)} should be {(x[0], heads, x[1], head_dim)}",
            )


@irdl_op_definition
class AttentionOp(OnnxOp):
    """`%o = cta.attention %q, %k, %v, mask %m {num_heads, kv_heads, head_dim, scale, causal, mask_kind}`

    q: (B, num_heads, Sq, head_dim); k: (B, kv_heads, Sk, head_dim); v: (B, kv_heads, Sk, Dv);
    result: (B, num_heads, Sq, Dv). Query head h reads key/value head h // (num_heads / kv_heads).
    With softcap c > 0 the scaled scores become c * tanh(scores / c) before the mask.
    A causal mask lets query i see keys j <= i + causal_offset (default Sk - Sq: the last query
    sees every key, as with a KV cache; ONNX Attention without past uses 0).
    """

    name = "cta.attention"
    query = operand_def(TensorType)
    key = operand_def(TensorType)
    value = operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    output = result_def(TensorType)
    num_heads = prop_def(IntegerAttr)
    kv_heads = prop_def(IntegerAttr)
    head_dim = prop_def(IntegerAttr)
    scale = prop_def(FloatAttr)
    causal = opt_prop_def(IntegerAttr)
    causal_offset = opt_prop_def(IntegerAttr)
    softcap = opt_prop_def(FloatAttr)
    mask_kind = opt_prop_def(StringAttr)
    traits = traits_def(Pure())
    irdl_options = (AttrSizedOperandSegments(as_property=True),)

    def verify_onnx(self) -> None:
        q, k, v = shape_of(self.query), shape_of(self.key), shape_of(self.value)
        heads, kv_heads = self.int_attr("num_heads"), self.int_attr("kv_heads")
        head_dim = self.int_attr("head_dim")
        if len(q) != 4 or len(k) != 4 or len(v) != 4:
            _fail(self, "query, key and value must be (batch, heads, seq, dim)")
        if q[1] != heads or k[1] != kv_heads or v[1] != kv_heads:
            _fail(self, f"head counts {q[1]}/{k[1]}/{v[1]} differ from {heads}/{kv_heads}")
        if kv_heads < 1 or heads % kv_heads:
            _fail(self, f"num_heads {heads} is not a multiple of kv_heads {kv_heads}")
        if q[3] != head_dim or k[3] != head_dim:
            _fail(self, f"query/key head dim {q[3]}/{k[3]} differs from head_dim {head_dim}")
        if k[2] != v[2] or q[0] != k[0] or k[0] != v[0]:
            _fail(self, f"key {k} and value {v} do not pair up with query {q}")
        kind = self.str_attr("mask_kind", "none")
        if kind not in MASK_KINDS:
            _fail(self, f"mask_kind must be one of {MASK_KINDS}")
        if (kind == "none") != (self.mask is None):
            _fail(self, f"mask_kind '{kind}' and the mask operand disagree")
        if self.mask is not None:
            mask = shape_of(self.mask)
            if kind == "key_padding" and mask != (q[0], k[2]):
                _fail(
                    self, f"a key_padding mask must be (batch, kv_seq) = {(q[0], k[2])}, got {mask}"
                )
            if kind == "additive":
                scores = (q[0], heads, q[2], k[2])
                if len(mask) > 4 or broadcast_shapes(mask, scores) != scores:
                    _fail(self, f"additive mask {mask} does not broadcast to the scores {scores}")
        if shape_of(self.output) != (q[0], heads, q[2], v[3]):
            _fail(
                self, f"result shape {shape_of(self.output)} should be {(q[0], heads, q[2], v[3])}"
            )


Cta = Dialect("cta", [ProjectOp, AttentionOp], [])
