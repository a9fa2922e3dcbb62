"""The `cta` dialect: attention as one op, and the projections that feed it.

- `cta.project`: a linear projection of a (batch, seq, hidden) input into heads,
  `transpose(reshape(x @ w[:, c0:c1] + b[c0:c1], (B, S, heads, head_dim)), (0, 2, 1, 3))`.
  Keeping x and the weights as operands lets the compression pass cluster x before projecting.
  A per-head input (batch, heads, seq, hidden) projects each head's rows with its own columns.
- `cta.attention`: softmax(q k^T * scale + mask) v per head, with key/value heads shared by
  groups of query heads (GQA/MQA), an optional causal mask, and a mask operand of one of three
  kinds: none, `key_padding` (a (batch, kv_seq) 0/1 tensor: 0 = padding), `additive` (a float
  tensor broadcast to (batch, heads, q_seq, kv_seq) added to the scores).
- Compression (CTA): `cta.cluster` (tokens -> padded centroid table, counts, per-token ids),
  `cta.pool` (means of other tokens over those clusters: values follow keys),
  `cta.compressed_attention` (attention over centroids, each weighted by its count) and
  `cta.recover` (every token gathers its cluster's row). Shapes stay static: a clustering of n
  tokens is an n-row table of which only the rows with count > 0 are used (m of them).

Syntax: the shared `onnx`-dialect form (`name %value` for present optional operands).
"""

from __future__ import annotations

from xdsl.dialects.builtin import (
    AnyFloat,
    DenseArrayBase,
    Float32Type,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    i64,
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

from ctac.dialects.onnx import OnnxOp, _fail, broadcast_shapes, element_of, shape_of

MASK_KINDS = ("none", "key_padding", "additive")


@irdl_op_definition
class ProjectOp(OnnxOp):
    """`%q = cta.project %x, %w, bias %b {heads = 4 : i64, head_dim = 16 : i64, columns = [0, 64]}`

    x (batch, seq, hidden) -> (batch, heads, seq, head_dim), every head from the same rows. A
    per-head input x (batch, heads, seq, hidden) (cta-compress `values=pooled-input`: the layer
    input pooled over each head's key clusters) gives head h from its own rows x[:, h] and its
    own columns [start + h * head_dim, start + (h + 1) * head_dim).
    """

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
        if len(x) not in (3, 4) or len(w) != 2:
            _fail(
                self,
                f"input must be (batch, seq, hidden) or (batch, heads, seq, hidden) and weight "
                f"2-D, got {x} and {w}",
            )
        if len(x) == 4 and x[1] != heads:
            _fail(self, f"a per-head input has {x[1]} heads, the projection {heads}")
        if w[0] != x[-1]:
            _fail(self, f"weight rows {w[0]} differ from the input's hidden size {x[-1]}")
        if not 0 <= start < end <= w[1] or end - start != heads * head_dim:
            _fail(self, f"columns [{start}, {end}) must select heads x head_dim of {w[1]} columns")
        if self.bias is not None and shape_of(self.bias) != (w[1],):
            _fail(self, f"bias shape {shape_of(self.bias)} should be ({w[1]},)")
        expected = (x[0], heads, x[-2], head_dim)
        if shape_of(self.output) != expected:
            _fail(self, f"result shape {shape_of(self.output)} should be {expected}")


def _verify_heads(op: OnnxOp, rows: str) -> tuple[tuple[int, ...], ...]:
    """The checks cta.attention and cta.compressed_attention share: (batch, heads, `rows`, dim)
    query, key and value whose head counts, head dim and batch agree with the op's properties."""
    q, k, v = shape_of(op.query), shape_of(op.key), shape_of(op.value)
    heads, kv_heads = op.int_attr("num_heads"), op.int_attr("kv_heads")
    head_dim = op.int_attr("head_dim")
    if len(q) != 4 or len(k) != 4 or len(v) != 4:
        _fail(op, f"query, key and value must be (batch, heads, {rows}, dim)")
    if q[1] != heads or k[1] != kv_heads or v[1] != kv_heads:
        _fail(op, f"head counts {q[1]}/{k[1]}/{v[1]} differ from {heads}/{kv_heads}")
    if kv_heads < 1 or heads % kv_heads:
        _fail(op, f"num_heads {heads} is not a multiple of kv_heads {kv_heads}")
    if q[3] != head_dim or k[3] != head_dim:
        _fail(op, f"query/key head dim {q[3]}/{k[3]} differs from head_dim {head_dim}")
    if k[2] != v[2] or q[0] != k[0] or k[0] != v[0]:
        _fail(op, f"key {k} and value {v} do not pair up with query {q}")
    return q, k, v


@irdl_op_definition
class AttentionOp(OnnxOp):
    """`%o = cta.attention %q, %k, %v, mask %m {num_heads, kv_heads, head_dim, scale, causal, mask_kind}`

    q: (B, num_heads, Sq, head_dim); k: (B, kv_heads, Sk, head_dim); v: (B, kv_heads, Sk, Dv);
    result: (B, num_heads, Sq, Dv). Query head h reads key/value head h // (num_heads / kv_heads).
    With softcap c > 0 the scaled scores become c * tanh(scores / c) before the mask.
    A causal mask lets query i see keys j <= i + causal_offset (default Sk - Sq: the last query
    sees every key, as with a KV cache; ONNX Attention without past uses 0).
    `fake_quant` (statically quantized QDQ and QOperator graphs) holds, per stage of
    QUANT_STAGES (the raw scores Q K^T, the scaled scores, the masked scores, the probabilities,
    the output P V per element before the heads are merged), four numbers (step, zero, low,
    high): that stage's values x become (clip(round(x / step) + zero, low, high) - zero) * step,
    a QuantizeLinear -> DequantizeLinear pair; step 0 = not quantized. The output stage's four
    may be left off (16 numbers).
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
    # ELSA-style filtering (the baseline mode): only keys whose hashed angle estimate passes.
    elsa_bits = opt_prop_def(IntegerAttr)
    elsa_threshold = opt_prop_def(FloatAttr)
    elsa_seed = opt_prop_def(IntegerAttr)
    fake_quant = opt_prop_def(DenseArrayBase)
    traits = traits_def(Pure())
    irdl_options = (AttrSizedOperandSegments(as_property=True),)

    def verify_onnx(self) -> None:
        q, k, v = _verify_heads(self, "seq")
        heads = self.int_attr("num_heads")
        if self.fake_quant is not None:
            stages = quant_stages(self)
            if stages is None:
                _fail(
                    self,
                    f"fake_quant must hold 4 numbers per stage of {QUANT_STAGES} (the last "
                    "may be left off)",
                )
            for stage, (step, _, low, high) in stages.items():
                if not step > 0 or not low <= high:
                    _fail(self, f"fake_quant stage '{stage}' needs step > 0 and low <= high")
            if self.float_attr("softcap", 0.0):
                _fail(self, "fake_quant and softcap cannot be combined")
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


QUANT_STAGES = ("scores", "scaled", "masked", "probs", "output")


def quant_stages(op: AttentionOp) -> dict[str, tuple[float, float, float, float]] | None:
    """The quantized stages of `op.fake_quant` ({} without it; None if malformed)."""
    if op.fake_quant is None:
        return {}
    values = [float(v) for v in op.fake_quant.get_values()]
    if len(values) not in (4 * len(QUANT_STAGES) - 4, 4 * len(QUANT_STAGES)):
        return None
    values += [0.0] * (4 * len(QUANT_STAGES) - len(values))  # no output stage
    stages = {}
    for index, stage in enumerate(QUANT_STAGES):
        step, zero, low, high = values[4 * index : 4 * index + 4]
        if step != 0.0:
            stages[stage] = (step, zero, low, high)
    return stages


# ---------------------------------------------------------------------------------------------
# Compression (passes/cta_compress.py; numpy meaning in runtime/compression.py)
# ---------------------------------------------------------------------------------------------

CLUSTER_METHODS = ("hash-leader", "leader", "hash-spread", "spread")
MAX_HASH_BITS = 30
# Open clusters a token may be compared with per group (the IR's bound; CLUSTER takes up to 63).
MAX_WINDOW = 255


def _is_float(value) -> bool:
    return isinstance(element_of(value), AnyFloat)


def _fits_rows(
    op: OnnxOp, what: str, shape: tuple[int, ...], lead: tuple[int, ...], n: int
) -> None:
    """A per-token tensor given per sequence: lead + (n,), or (lead[0], n) shared by the heads."""
    if shape != (*lead, n) and not (len(shape) == 2 and lead and shape == (lead[0], n)):
        shared = (lead[0], n) if lead else (n,)
        _fail(op, f"{what} shape {shape} should be {(*lead, n)} or {shared}")


def is_block_prefix(rows: int, n: int, block: int) -> bool:
    """Whether a table of `rows` rows may stand for `n` positions in blocks of `block`: all of
    them, or a prefix of whole blocks (a causal attention's compressed prefix)."""
    return rows == n or (block > 0 and 0 < rows < n and rows % block == 0)


def clustered_positions(op: ClusterOp) -> int:
    """How many leading positions of each sequence `op` clusters: its results' rows (all n
    positions, or a causal attention's compressed prefix)."""
    shape = shape_of(op.ids)
    return shape[-1] if shape else 0


@irdl_op_definition
class ClusterOp(OnnxOp):
    """`%c, %n, %id = cta.cluster %x, mask %m {method = "hash-leader", tau = 0.2 : f64, hash_bits = 8 : i64, seed = 0 : i64}`

    Groups the rows of tokens (..., n, d) per leading index (one clustering per sequence, or per
    sequence and head). Results: centroids (..., n, d), a padded table whose rows >= m are zero;
    counts (..., n) f32, the valid tokens each row stands for (0 = unused or padding-only);
    ids (..., n) i64, each token's row. The optional mask ((..., n) or (batch, n); nonzero = real
    token) keeps padding apart. `block` > 0: clusters never span blocks of that many positions and
    block c's clusters sit in rows [c*block, (c+1)*block) (causal attention). `max_clusters` > 0
    caps the clusters of each sequence (or block). `window` > 0: a token is compared only with
    the `window` most recently opened clusters of its group (hash bucket), which bounds the
    clustering work per token (docs/compression.md, "Bounded clustering"). Results with P < n
    rows (P a multiple of `block`) cluster only the first P positions: a causal attention's
    compressed prefix, whose later blocks stay raw keys (the cost-aware policy's choice).
    """

    name = "cta.cluster"
    tokens = operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    # Optional per-token flags ((..., n) or (batch, n), integer; nonzero = keep this token in a
    # cluster of its own), e.g. the ranks of `cta.keep_top` (cta-compress `keep-top`).
    alone = opt_operand_def(TensorType)
    centroids = result_def(TensorType)
    counts = result_def(TensorType)
    ids = result_def(TensorType)
    method = prop_def(StringAttr)
    tau = prop_def(FloatAttr)
    hash_bits = prop_def(IntegerAttr)
    seed = prop_def(IntegerAttr)
    max_clusters = opt_prop_def(IntegerAttr)
    block = opt_prop_def(IntegerAttr)
    window = opt_prop_def(IntegerAttr)
    traits = traits_def(Pure())
    irdl_options = (AttrSizedOperandSegments(as_property=True),)

    def verify_onnx(self) -> None:
        x = shape_of(self.tokens)
        if len(x) < 2 or not _is_float(self.tokens):
            _fail(self, f"tokens must be a float tensor (..., n, d), got {x}")
        lead, n = x[:-2], x[-2]
        rows = clustered_positions(self)
        block = self.int_attr("block", 0)
        if not is_block_prefix(rows, n, block):
            _fail(self, f"results cluster {rows} of {n} positions: only a prefix of whole blocks")
        clustered = (*lead, rows, x[-1])
        if shape_of(self.centroids) != clustered or element_of(self.centroids) != element_of(
            self.tokens
        ):
            _fail(self, f"centroids must have the tokens' type, shape {clustered}")
        if shape_of(self.counts) != (*lead, rows) or not isinstance(
            element_of(self.counts), Float32Type
        ):
            _fail(self, f"counts must be f32 of shape {(*lead, rows)}")
        if shape_of(self.ids) != (*lead, rows) or element_of(self.ids) != i64:
            _fail(self, f"ids must be i64 of shape {(*lead, rows)}")
        if self.mask is not None:
            _fits_rows(self, "mask", shape_of(self.mask), lead, n)
            if _is_float(self.mask):
                _fail(self, "the mask must be an integer or boolean tensor (nonzero = real token)")
        if self.alone is not None:
            _fits_rows(self, "alone", shape_of(self.alone), lead, n)
            if _is_float(self.alone):
                _fail(self, "alone must be an integer or boolean tensor (nonzero = alone)")
        if self.str_attr("method") not in CLUSTER_METHODS:
            _fail(self, f"method must be one of {CLUSTER_METHODS}")
        tau = self.float_attr("tau")
        if not tau >= 0 or tau == float("inf"):
            _fail(self, f"tau must be a finite number >= 0, got {tau}")
        if not 0 <= self.int_attr("hash_bits") <= MAX_HASH_BITS:
            _fail(self, f"hash_bits must be in [0, {MAX_HASH_BITS}]")
        if self.int_attr("max_clusters", 0) < 0 or self.int_attr("block", 0) < 0:
            _fail(self, "max_clusters and block must be >= 0")
        if not 0 <= self.int_attr("window", 0) <= MAX_WINDOW:
            _fail(self, f"window must be in [0, {MAX_WINDOW}]")


@irdl_op_definition
class KeepTopOp(OnnxOp):
    """`%rank = cta.keep_top %q, %k, mask %m {k = 4 : i64}`: the keys each (sequence, head)
    keeps out of clustering (cta-compress `keep-top`: "attention sinks" stay exact).

    q (B, H, nq, d), k (B, H, n, d). score_j = qbar . k_j, qbar the mean of the head's valid
    queries (all of them when none is); result (B, H, n) i64: 1..K for the K valid keys of largest
    score in descending order (ties: earliest position), 0 for the rest. The optional key_padding
    mask (B, n) excludes padded keys, and padded queries from qbar when nq == n (self-attention).
    A separate op rather than a mode of `cta.cluster`: it reads the queries as well as the keys,
    and its result is one more `alone` operand of the keys' clustering, whose semantics stay
    those of a grouping (a kept key only gets a group of its own)."""

    name = "cta.keep_top"
    query = operand_def(TensorType)
    key = operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    output = result_def(TensorType)
    k = prop_def(IntegerAttr)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        q, k = shape_of(self.query), shape_of(self.key)
        if len(q) != 4 or len(k) != 4 or q[:2] != k[:2] or q[3] != k[3]:
            _fail(self, f"query (B, H, nq, d) and key (B, H, n, d) must agree, got {q} and {k}")
        if not (_is_float(self.query) and _is_float(self.key)):
            _fail(self, "query and key must be float tensors")
        if self.mask is not None and (shape_of(self.mask) != (k[0], k[2]) or _is_float(self.mask)):
            _fail(self, f"the key_padding mask must be an integer tensor {(k[0], k[2])}")
        if self.int_attr("k") < 1:
            _fail(self, "k must be >= 1")
        if shape_of(self.output) != k[:3] or element_of(self.output) != i64:
            _fail(self, f"result must be i64 of shape {k[:3]}")


@irdl_op_definition
class PoolOp(OnnxOp):
    """`%vc = cta.pool %v, %ids`: the mean of the tokens (..., n, d) of each cluster, in the
    table layout of `cta.cluster` (rows nobody uses are zero). Values follow their keys' clusters.
    ids: (..., n), or (batch, n) shared by the heads. Tokens (batch, n, d) shared by the heads
    with per-head ids (batch, heads, n) give one table per (batch, head): (batch, heads, n, d)
    (the layer input pooled over each head's key clusters, cta-compress `values=pooled-input`).
    ids of P < n positions (a clustered prefix) pool the first P tokens: (..., P, d)."""

    name = "cta.pool"
    tokens = operand_def(TensorType)
    ids = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        x, ids = shape_of(self.tokens), shape_of(self.ids)
        if len(x) < 2 or not ids:
            _fail(self, f"tokens must be (..., n, d) and ids (..., n), got {x} and {ids}")
        if not 0 < ids[-1] <= x[-2]:
            _fail(self, f"ids cover {ids[-1]} positions of the {x[-2]} tokens")
        x = (*x[:-2], ids[-1], x[-1])  # the pooled positions: all, or a clustered prefix
        expected = x
        if len(x) == 3 and len(ids) == 3 and (ids[0], ids[2]) == x[:2]:
            expected = (x[0], ids[1], x[1], x[2])  # shared tokens, per-head ids
        else:
            _fits_rows(self, "ids", ids, x[:-2], x[-2])
        if element_of(self.ids) != i64:
            _fail(self, "ids must be i64")
        if shape_of(self.output) != expected:
            _fail(self, f"result shape {shape_of(self.output)} should be {expected}")


@irdl_op_definition
class RecoverOp(OnnxOp):
    """`%o = cta.recover %rows, %ids`: out[..., i, :] = rows[..., ids[..., i], :], a pure gather
    giving every token its cluster's row. rows: (..., m, d); ids: (..., n) or (batch, n)."""

    name = "cta.recover"
    rows = operand_def(TensorType)
    ids = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        rows, ids = shape_of(self.rows), shape_of(self.ids)
        if len(rows) < 2 or not ids:
            _fail(self, f"rows must be (..., m, d) and ids (..., n), got {rows} and {ids}")
        lead, n = rows[:-2], ids[-1]
        _fits_rows(self, "ids", ids, lead, n)
        if element_of(self.ids) != i64:
            _fail(self, "ids must be i64")
        if shape_of(self.output) != (*lead, n, rows[-1]):
            _fail(self, f"result shape {shape_of(self.output)} should be {(*lead, n, rows[-1])}")


@irdl_op_definition
class CompressedAttentionOp(OnnxOp):
    """`%o = cta.compressed_attention %qc, %kc, %vc, %counts {num_heads, kv_heads, head_dim, scale}`

    Query rows q (B, num_heads, mq, D) attend over key/value centroids k (B, kv_heads, mk, D),
    v (B, kv_heads, mk, Dv), each weighted by its count: softmax_j(q.k_j * scale + log c_j) v_j,
    counts (B, mk) or (B, kv_heads, mk); a count of 0 gets no weight. Result (B, num_heads, mq, Dv).
    Causal (`causal = 1`): q has one row per query token, k/v/counts are a `block`-clustered table
    of the kv_seq keys, and `key_tokens`/`value_tokens` (the raw keys and values, same shapes as
    k/v) plus an optional key_padding `mask` (B, kv_seq) serve each query's own block exactly:
    query i (key position p = i + causal_offset, default kv_seq - q_seq) sees the cluster rows of
    blocks before p's block and the raw keys from its block's start to p. A table of P < kv_seq
    rows (the first P / block blocks clustered, `cta.cluster` of a prefix) stops there: a query
    sees the cluster rows of the blocks before min(its block, P / block) and the raw keys after.
    """

    name = "cta.compressed_attention"
    query = operand_def(TensorType)
    key = operand_def(TensorType)
    value = operand_def(TensorType)
    counts = operand_def(TensorType)
    key_tokens = opt_operand_def(TensorType)
    value_tokens = opt_operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    output = result_def(TensorType)
    num_heads = prop_def(IntegerAttr)
    kv_heads = prop_def(IntegerAttr)
    head_dim = prop_def(IntegerAttr)
    scale = prop_def(FloatAttr)
    causal = opt_prop_def(IntegerAttr)
    causal_offset = opt_prop_def(IntegerAttr)
    softcap = opt_prop_def(FloatAttr)
    block = opt_prop_def(IntegerAttr)
    traits = traits_def(Pure())
    irdl_options = (AttrSizedOperandSegments(as_property=True),)

    def verify_onnx(self) -> None:
        q, k, v = _verify_heads(self, "rows")
        heads, kv_heads = self.int_attr("num_heads"), self.int_attr("kv_heads")
        counts = shape_of(self.counts)
        if counts not in ((k[0], k[2]), (k[0], kv_heads, k[2])) or not _is_float(self.counts):
            _fail(self, f"counts must be float of shape {(k[0], k[2])} or {(k[0], kv_heads, k[2])}")
        causal = bool(self.int_attr("causal", 0))
        extras = (self.key_tokens, self.value_tokens, self.mask)
        if not causal and any(e is not None for e in extras):
            _fail(self, "key_tokens, value_tokens and mask are for causal attention only")
        if causal:
            if self.key_tokens is None or self.value_tokens is None:
                _fail(self, "causal attention needs key_tokens and value_tokens")
            raw_k, raw_v = shape_of(self.key_tokens), shape_of(self.value_tokens)
            kv_seq = raw_k[2] if len(raw_k) == 4 else -1
            if raw_k != (*k[:2], kv_seq, k[3]) or raw_v != (*v[:2], kv_seq, v[3]):
                _fail(self, f"key_tokens/value_tokens must be shaped like key {k} and value {v}")
            block = self.int_attr("block", 0)
            if not is_block_prefix(k[2], kv_seq, block):
                _fail(self, f"a table of {k[2]} rows for {kv_seq} keys: a prefix of whole blocks")
            if self.mask is not None and shape_of(self.mask) != (k[0], kv_seq):
                _fail(self, f"the key_padding mask must be {(k[0], kv_seq)}")
        if self.int_attr("block", 0) < 0:
            _fail(self, "block must be >= 0")
        if shape_of(self.output) != (q[0], heads, q[2], v[3]):
            _fail(
                self, f"result shape {shape_of(self.output)} should be {(q[0], heads, q[2], v[3])}"
            )


Cta = Dialect(
    "cta",
    [ProjectOp, AttentionOp, ClusterOp, KeepTopOp, PoolOp, RecoverOp, CompressedAttentionOp],
    [],
)
