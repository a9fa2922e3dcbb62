"""cta-compress: `onnx` + `cta` (`cta.attention`, `cta.project`) in, `onnx` + `cta` out with
`cta.cluster` / `cta.pool` / `cta.compressed_attention` / `cta.recover` in place of attention.

Every `cta.attention` whose mask is `none` or `key_padding` is rewritten (an `additive` mask is a
per (query, key) bias that no clustering can share, so those are left exact and reported).
Two placements (`granularity`):

- `input`: when Q, K and V are `cta.project`s of one input X (self-attention, not causal), X is
  clustered once per sequence (with tau_q for the queries, and with tau_kv for keys/values when
  it differs) and the projections run on the centroid tables: exact by linearity, and the
  projections shrink by n/m too.
- `head` (default; also the fallback for cross-attention, inputs that are not projections, and
  causal attention): queries and keys are clustered per (sequence, head) after projection, each
  with its own threshold; values are averaged over the keys' clusters (`cta.pool`), which is
  exact when the keys repeat exactly. With `values=pooled-input` and V a `cta.project` of X
  (not causal), X itself is pooled over each head's key clusters and projected per head instead:
  the same value table by linearity (mean(X) W + b = mean(X W + b) over a cluster), but the V
  projection runs on the m_k used rows of each head rather than on all n tokens.
  With `keys=shared` (not causal) the keys of all heads are clustered together: one clustering
  per sequence over each token's concatenated H*d key features (`onnx.Transpose` + `onnx.Reshape`
  to (B, n, H*d) around one `cta.cluster`), so key ids and counts are (B, n), shared by the
  heads; a head's centroids are its columns of the concatenated centroids, and V is pooled over
  the same ids. Queries keep their per-head clustering.

Padding (`key_padding` masks) never merges with real tokens and carries no weight: the mask goes
to every `cta.cluster` whose tokens it describes. Causal attention uses the block-causal scheme
(docs/compression.md): keys are clustered inside blocks of `block` positions; a query sees the
clusters of earlier blocks and the raw keys of its own block up to itself, and queries are not
clustered, so no query ever sees a later position.

Per-layer thresholds: `layer_scale` multiplies both thresholds of the i-th attention (in program
order; the last factor repeats). The options are written `tau-q=0.3` etc. in `ctac-opt -p`.
The defaults (tau-q 0.5, tau-kv 0.3, 4 hash bits, hash-leader, per head) are the setting measured
without loss on all-MiniLM-L6-v2 (docs/compression.md); queries tolerate coarser clusters than keys.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    DenseArrayBase,
    Float32Type,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    f64,
    i64,
)
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from ctac.dialects import cta
from ctac.dialects import onnx as ox
from ctac.errors import CtacError
from ctac.passes.canonicalize import remove_dead_ops

GRANULARITIES = ("head", "input")
# How the head placement forms the value table: pool the projected V (`project`), or pool the
# layer input X per head and project the pooled rows (`pooled-input`; needs V = cta.project(X)).
VALUE_FORMS = ("project", "pooled-input")
# How the head placement clusters keys: per (sequence, head), or once per sequence over the
# concatenated keys of all heads (`shared`: one table per layer, ids/counts shared by the heads).
KEY_FORMS = ("per-head", "shared")


@dataclass(frozen=True)
class CompressOptions:
    """Everything that decides how one attention is compressed."""

    tau_q: float = 0.5
    tau_kv: float = 0.3
    hash_bits: int = 4
    method: str = "hash-leader"
    seed: int = 0
    granularity: str = "head"
    block: int = 64
    max_clusters: int = 0
    values: str = "project"
    keys: str = "per-head"
    # > 0: a token is compared only with the `window` clusters its bucket opened last, so the
    # cluster unit's work per token is bounded (docs/compression.md, "Bounded clustering").
    window: int = 0
    # > 0 (head placement, per-head keys, not causal): the `keep_top` keys of each (sequence,
    # head) with the largest estimated attention mass stay out of clustering (`cta.keep_top`).
    keep_top: int = 0

    def check(self) -> None:
        if self.method not in cta.CLUSTER_METHODS:
            raise CtacError(
                f"cta-compress: unknown method '{self.method}' "
                f"(known: {', '.join(cta.CLUSTER_METHODS)})"
            )
        if self.granularity not in GRANULARITIES:
            raise CtacError(
                f"cta-compress: granularity must be one of {', '.join(GRANULARITIES)}, "
                f"got '{self.granularity}'"
            )
        if not (self.tau_q >= 0 and self.tau_kv >= 0):
            raise CtacError("cta-compress: tau-q and tau-kv must be >= 0")
        if not 0 <= self.hash_bits <= cta.MAX_HASH_BITS:
            raise CtacError(f"cta-compress: hash-bits must be in [0, {cta.MAX_HASH_BITS}]")
        if self.values not in VALUE_FORMS:
            raise CtacError(
                f"cta-compress: values must be one of {', '.join(VALUE_FORMS)}, got '{self.values}'"
            )
        if self.keys not in KEY_FORMS:
            raise CtacError(
                f"cta-compress: keys must be one of {', '.join(KEY_FORMS)}, got '{self.keys}'"
            )
        if self.block < 1:
            raise CtacError("cta-compress: block must be >= 1")
        if self.max_clusters < 0:
            raise CtacError("cta-compress: max-clusters must be >= 0")
        if self.keep_top < 0:
            raise CtacError("cta-compress: keep-top must be >= 0")
        if not 0 <= self.window <= cta.MAX_WINDOW:
            raise CtacError(f"cta-compress: window must be in [0, {cta.MAX_WINDOW}]")


@dataclass
class CompressionReport:
    """What happened to one attention layer."""

    layer: str
    placement: str  # input | head | causal-head | skipped
    tau_q: float
    tau_kv: float
    reason: str = ""


def _shape(value: SSAValue) -> tuple[int, ...]:
    return ox.shape_of(value)


def _cluster(
    tokens: SSAValue,
    mask: SSAValue | None,
    tau: float,
    options: CompressOptions,
    source: str,
    role: str,
    block: int = 0,
    alone: SSAValue | None = None,
    rows: int = 0,
) -> cta.ClusterOp:
    """A clustering of `tokens`' first `rows` positions (0: all of them)."""
    shape = _shape(tokens)
    if rows:
        shape = (*shape[:-2], rows, shape[-1])
    element = ox.element_of(tokens)
    properties = {
        "method": StringAttr(options.method),
        "tau": FloatAttr(tau, f64),
        "hash_bits": IntegerAttr(options.hash_bits, i64),
        "seed": IntegerAttr(options.seed, i64),
    }
    if options.max_clusters:
        properties["max_clusters"] = IntegerAttr(options.max_clusters, i64)
    if options.window:
        properties["window"] = IntegerAttr(options.window, i64)
    if block:
        properties["block"] = IntegerAttr(block, i64)
    return cta.ClusterOp.build(
        operands=[
            tokens,
            [mask] if mask is not None else [],
            [alone] if alone is not None else [],
        ],
        result_types=[
            TensorType(element, list(shape)),
            TensorType(Float32Type(), list(shape[:-1])),
            TensorType(i64, list(shape[:-1])),
        ],
        properties=properties,
        attributes={"ctac.source": StringAttr(source), "ctac.role": StringAttr(role)},
    )


def _keep_top(attention: cta.AttentionOp, mask: SSAValue | None, keep: int) -> cta.KeepTopOp:
    """Ranks (B, H, n) of the keys kept out of clustering: a separate op feeding `alone` of the
    keys' `cta.cluster`, so the clustering stays a grouping and the ranking (which needs the
    queries) lowers to its own GEMMs and TOPK."""
    b, heads, n, _ = _shape(attention.key)
    return cta.KeepTopOp.build(
        operands=[attention.query, attention.key, [mask] if mask is not None else []],
        result_types=[TensorType(i64, [b, heads, n])],
        properties={"k": IntegerAttr(keep, i64)},
    )


def _pool(tokens: SSAValue, ids: SSAValue) -> cta.PoolOp:
    """The tokens pooled over the clusters `ids`, as many rows as ids has positions."""
    shape = _shape(tokens)
    result = TensorType(ox.element_of(tokens), [*shape[:-2], _shape(ids)[-1], shape[-1]])
    return cta.PoolOp.build(operands=[tokens, ids], result_types=[result])


def _transpose(value: SSAValue, perm: list[int]) -> ox.TransposeOp:
    shape = [_shape(value)[p] for p in perm]
    return ox.TransposeOp.build(
        operands=[value],
        result_types=[TensorType(ox.element_of(value), shape)],
        properties={"perm": DenseArrayBase.from_list(i64, perm)},
    )


def _reshape(value: SSAValue, shape: list[int]) -> tuple[ox.ConstantOp, ox.ReshapeOp]:
    target = ox.ConstantOp.from_numpy(np.array(shape, dtype=np.int64))
    reshape = ox.ReshapeOp.build(
        operands=[value, target.output], result_types=[TensorType(ox.element_of(value), shape)]
    )
    return target, reshape


def _shared_keys(
    keys: SSAValue, mask: SSAValue | None, tau: float, options: CompressOptions, source: str
) -> tuple[list[Operation], SSAValue, cta.ClusterOp]:
    """`keys=shared`: K (B, H, n, d) clustered once per sequence over each token's H*d features.

    Existing ops rather than a new cluster mode: the transposes lower to strided DMA (one block
    per (batch, head)), so CLUSTER, pool, compressed attention and recover need nothing new, and
    the threshold is relative to the concatenated norm. Returns (ops, per-head centroids
    (B, H, n, d), the cluster op, whose counts and ids are (B, n))."""
    b, heads, n, d = _shape(keys)
    tokens = _transpose(keys, [0, 2, 1, 3])  # (B, n, H, d)
    flat_shape, flat = _reshape(tokens.transposed, [b, n, heads * d])
    cluster = _cluster(flat.reshaped, mask, tau, options, source, "kv")
    split_shape, split = _reshape(cluster.centroids, [b, n, heads, d])
    centroids = _transpose(split.reshaped, [0, 2, 1, 3])  # back to (B, H, n, d)
    ops: list[Operation] = [tokens, flat_shape, flat, cluster, split_shape, split, centroids]
    return ops, centroids.transposed, cluster


def _pool_per_head(tokens: SSAValue, ids: SSAValue) -> cta.PoolOp:
    """Tokens (B, n, E) shared by the heads, pooled over per-head ids (B, H, n): (B, H, n, E)."""
    b, n, hidden = _shape(tokens)
    heads = _shape(ids)[1]
    result = TensorType(ox.element_of(tokens), [b, heads, n, hidden])
    return cta.PoolOp.build(operands=[tokens, ids], result_types=[result])


def _head_values(
    attention: cta.AttentionOp, ids: SSAValue, options: CompressOptions
) -> tuple[list[Operation], SSAValue, str]:
    """The value table of the head placement over the keys' clusters `ids`: (ops, table, note).

    `pooled-input`: V = cta.project(X) makes the pooled table mean_c(X) W_v + b_v, exact by
    linearity, so X is pooled per head and only those rows are projected (the lowering sizes that
    GEMM by the clusters formed). Rows >= m of the pooled X are zero, so their projected rows
    hold the bias; their count is 0, so compressed attention gives them no weight."""
    project = attention.value.owner
    if options.values != "pooled-input":
        pool = _pool(attention.value, ids)
        return [pool], pool.output, ""
    if not isinstance(project, cta.ProjectOp) or len(_shape(project.input)) != 3:
        pool = _pool(attention.value, ids)
        note = "values=pooled-input: V is not a cta.project of the layer input, V pooled instead"
        return [pool], pool.output, note
    # Shared key ids (B, n): one pooled X for all heads; per-head ids: one per (batch, head).
    pooled = (
        _pool(project.input, ids) if len(_shape(ids)) == 2 else _pool_per_head(project.input, ids)
    )
    values = _project_on(project, pooled.output)
    return [pooled, values], values.output, "values=pooled-input"


def _recover(rows: SSAValue, ids: SSAValue, name: str | None) -> cta.RecoverOp:
    shape = _shape(rows)
    n = _shape(ids)[-1]
    op = cta.RecoverOp.build(
        operands=[rows, ids],
        result_types=[TensorType(ox.element_of(rows), [*shape[:-2], n, shape[-1]])],
    )
    op.output.name_hint = name
    return op


def _attention_properties(attention: cta.AttentionOp) -> dict:
    kept = ("num_heads", "kv_heads", "head_dim", "scale", "softcap")
    return {k: v for k, v in attention.properties.items() if k in kept}


def _compressed(
    attention: cta.AttentionOp,
    q: SSAValue,
    k: SSAValue,
    v: SSAValue,
    counts: SSAValue,
    rows: int,
    extra: dict | None = None,
    raw: tuple[SSAValue, SSAValue, SSAValue | None] | None = None,
) -> cta.CompressedAttentionOp:
    b, heads, _, _ = _shape(attention.query)
    dv = _shape(attention.value)[3]
    properties = _attention_properties(attention)
    properties.update(extra or {})
    key_tokens, value_tokens, mask = raw if raw is not None else (None, None, None)
    return cta.CompressedAttentionOp.build(
        operands=[
            q,
            k,
            v,
            counts,
            [key_tokens] if key_tokens is not None else [],
            [value_tokens] if value_tokens is not None else [],
            [mask] if mask is not None else [],
        ],
        result_types=[TensorType(ox.element_of(attention.output), [b, heads, rows, dv])],
        properties=properties,
        attributes={"ctac.source": attention.attributes.get("ctac.source", StringAttr(""))},
    )


def _common_input(attention: cta.AttentionOp) -> SSAValue | None:
    """X when q, k and v are all `cta.project`s of the same X."""
    owners = [attention.query.owner, attention.key.owner, attention.value.owner]
    if not all(isinstance(o, cta.ProjectOp) for o in owners):
        return None
    inputs = {o.input for o in owners}  # type: ignore[union-attr]
    return inputs.pop() if len(inputs) == 1 else None


def _project_on(project: cta.ProjectOp, table: SSAValue) -> cta.ProjectOp:
    bias = [project.bias] if project.bias is not None else []
    op = cta.ProjectOp.build(
        operands=[table, project.weight, bias],
        result_types=[project.output.type],
        properties=dict(project.properties),
    )
    if project.output.name_hint:
        op.output.name_hint = f"{project.output.name_hint}_c"
    return op


def refusal(attention: cta.AttentionOp) -> str | None:
    """Why CTA cannot compress this attention (None: it can)."""
    if attention.str_attr("mask_kind", "none") == "additive":
        return (
            "its mask is additive (a bias per query and key, e.g. a float attention-mask input), "
            "which clustered queries and keys cannot carry; feed a 0/1 key mask instead"
        )
    if attention.fake_quant is not None:
        return (
            "its scores or probabilities are rounded to a quantization grid (a QDQ graph), "
            "which compressed attention does not carry"
        )
    return None


def uncompressible(module: ModuleOp) -> list[tuple[str, str]]:
    """(layer, reason) of every attention of the module CTA cannot compress."""
    found = []
    for op in module.walk():
        if isinstance(op, cta.AttentionOp) and (reason := refusal(op)):
            source = op.attributes.get("ctac.source")
            found.append((source.data if isinstance(source, StringAttr) else "attention", reason))
    return found


def causal_prefix(kv_len: int, block: int, compressed_blocks: int = 0) -> int:
    """The key positions a causal attention clusters: its first `compressed_blocks` blocks
    (0: the default), at most every block but the last, whose clusters no query sees (a query
    sees the clusters of the blocks before its own); all kv_len when there is one block."""
    blocks = -(-kv_len // block)
    if blocks <= 1:
        return kv_len
    chosen = compressed_blocks if compressed_blocks > 0 else blocks - 1
    return min(chosen, blocks - 1) * block


def rewrite_attention(
    attention: cta.AttentionOp,
    options: CompressOptions,
    tau_q: float,
    tau_kv: float,
    compressed_blocks: int = 0,
    causal_block: int = 0,
) -> CompressionReport:
    """Replace one `cta.attention` by its compressed form (or leave it and say why); a causal
    one clusters its first `compressed_blocks` key blocks (0: all but the last) of
    `causal_block` positions (0: options.block)."""
    source_attr = attention.attributes.get("ctac.source")
    source = source_attr.data if isinstance(source_attr, StringAttr) else "attention"
    kind = attention.str_attr("mask_kind", "none")
    refused = refusal(attention)
    if refused:
        return CompressionReport(source, "skipped", tau_q, tau_kv, refused)
    mask = attention.mask if kind == "key_padding" else None
    causal = bool(attention.int_attr("causal", 0))
    q_len, kv_len = _shape(attention.query)[2], _shape(attention.key)[2]
    # The key mask also marks padded queries in self-attention (same sequence length).
    query_mask = mask if q_len == kv_len else None
    new_ops: list[Operation] = []
    note = ""
    name = attention.output.name_hint
    x = _common_input(attention)
    if causal:
        block_size = causal_block or options.block
        prefix = causal_prefix(kv_len, block_size, compressed_blocks)
        keys = _cluster(
            attention.key, mask, tau_kv, options, source, "kv", block=block_size, rows=prefix
        )
        values = _pool(attention.value, keys.ids)
        extra = {"causal": IntegerAttr(1, i64), "block": IntegerAttr(block_size, i64)}
        offset = attention.int_attr("causal_offset")
        if offset is not None:
            extra["causal_offset"] = IntegerAttr(offset, i64)
        output = _compressed(
            attention,
            attention.query,
            keys.centroids,
            values.output,
            keys.counts,
            q_len,
            extra,
            raw=(attention.key, attention.value, mask),
        )
        new_ops += [keys, values, output]
        result, placement = output.output, "causal-head"
        if options.values == "pooled-input":
            note = "values=pooled-input: not for causal attention, V pooled instead"
        if options.keys == "shared":
            note = "; ".join(filter(None, [note, "keys=shared: not for causal attention"]))
    elif options.granularity == "input" and x is not None:
        queries = _cluster(x, query_mask, tau_q, options, source, "q" if tau_q != tau_kv else "qkv")
        new_ops.append(queries)
        keys = queries
        if tau_kv != tau_q:
            keys = _cluster(x, mask, tau_kv, options, source, "kv")
            new_ops.append(keys)
        q = _project_on(attention.query.owner, queries.centroids)  # type: ignore[arg-type]
        k = _project_on(attention.key.owner, keys.centroids)  # type: ignore[arg-type]
        v = _project_on(attention.value.owner, keys.centroids)  # type: ignore[arg-type]
        output = _compressed(attention, q.output, k.output, v.output, keys.counts, q_len)
        recovered = _recover(output.output, queries.ids, name)
        new_ops += [q, k, v, output, recovered]
        result, placement = recovered.output, "input"
    else:
        queries = _cluster(attention.query, query_mask, tau_q, options, source, "q")
        if options.keys == "shared":
            key_ops, key_centroids, keys = _shared_keys(
                attention.key, mask, tau_kv, options, source
            )
        elif options.keep_top and _shape(attention.query)[1] == _shape(attention.key)[1]:
            keep = _keep_top(attention, mask, options.keep_top)
            keys = _cluster(attention.key, mask, tau_kv, options, source, "kv", alone=keep.output)
            key_ops, key_centroids = [keep, keys], keys.centroids
        else:
            keys = _cluster(attention.key, mask, tau_kv, options, source, "kv")
            key_ops, key_centroids = [keys], keys.centroids
        value_ops, values, note = _head_values(attention, keys.ids, options)
        output = _compressed(
            attention, queries.centroids, key_centroids, values, keys.counts, q_len
        )
        recovered = _recover(output.output, queries.ids, name)
        new_ops += [queries, *key_ops, *value_ops, output, recovered]
        result, placement = recovered.output, "head"
        if options.keys == "shared":
            note = "; ".join(filter(None, [note, "keys=shared"]))
        if options.keep_top:
            kept = len(key_ops) > 1 and isinstance(key_ops[0], cta.KeepTopOp)
            reason = (
                ""
                if kept
                else " not applied (needs per-head keys and as many key heads as query heads)"
            )
            note = "; ".join(filter(None, [note, f"keep-top={options.keep_top}{reason}"]))
    if options.keep_top and placement != "head":
        note = "; ".join(filter(None, [note, "keep-top: head placement only, not applied"]))
    block = attention.parent_block()
    assert block is not None
    block.insert_ops_before(new_ops, attention)
    for op in new_ops:
        op.verify()
    attention.output.replace_all_uses_with(result)
    result.name_hint = name
    block.erase_op(attention)
    return CompressionReport(source, placement, tau_q, tau_kv, note)


def compress_function(
    function: func.FuncOp,
    options: CompressOptions,
    layer_scale: tuple[float, ...] = (),
    keep_exact: tuple[int, ...] = (),
    compressed_blocks: tuple[int, ...] = (),
    causal_block: tuple[int, ...] = (),
) -> list[CompressionReport]:
    attentions = [op for op in function.body.block.ops if isinstance(op, cta.AttentionOp)]
    reports = []
    for index, attention in enumerate(attentions):
        if index in keep_exact:
            source = attention.attributes.get("ctac.source")
            name = source.data if isinstance(source, StringAttr) else f"attention {index}"
            reports.append(CompressionReport(name, "exact", 0.0, 0.0, "kept exact (keep-exact)"))
            continue
        factor = layer_scale[min(index, len(layer_scale) - 1)] if layer_scale else 1.0
        blocks = compressed_blocks[index] if index < len(compressed_blocks) else 0
        size = causal_block[index] if index < len(causal_block) else 0
        reports.append(
            rewrite_attention(
                attention, options, options.tau_q * factor, options.tau_kv * factor, blocks, size
            )
        )
    remove_dead_ops(function)
    return reports


_OPTION_TYPES = typing.get_type_hints(CompressOptions)


@dataclass(frozen=True)
class CtaCompressPass(ModulePass, CompressOptions):
    """Rewrite `cta.attention` into CTA's cluster / compressed attention / recover form.

    Its options are CompressOptions' fields (`tau-q`, `hash-bits`, ...; inherited, so a new
    option is added in one place) and the two below."""

    name = "cta-compress"

    layer_scale: tuple[float, ...] = field(default=())
    # Attentions (their index in program order) left exact, e.g. where the cost-aware policy
    # (ctac/policy.py) found that compression does not pay.
    keep_exact: tuple[int, ...] = field(default=())
    # Per attention (program order): how many leading key blocks a causal one clusters (0: all
    # but the last), where the policy found that later blocks pay more as raw keys; and the
    # size of its key blocks (0: `block`).
    compressed_blocks: tuple[int, ...] = field(default=())
    causal_block: tuple[int, ...] = field(default=())

    def options(self) -> CompressOptions:
        # Python callers may pass CtaCompressPass(tau_q=1): each value is converted to its
        # field's declared type, so the options compare and print as a spec would give them.
        return CompressOptions(
            **{
                f.name: _OPTION_TYPES[f.name](getattr(self, f.name))
                for f in fields(CompressOptions)
            }
        )

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        cta_compress(
            op,
            self.options(),
            tuple(float(f) for f in self.layer_scale),
            tuple(int(i) for i in self.keep_exact),
            tuple(int(i) for i in self.compressed_blocks),
            tuple(int(i) for i in self.causal_block),
        )


def cta_compress(
    module: ModuleOp,
    options: CompressOptions | None = None,
    layer_scale: tuple[float, ...] = (),
    keep_exact: tuple[int, ...] = (),
    compressed_blocks: tuple[int, ...] = (),
    causal_block: tuple[int, ...] = (),
) -> list[CompressionReport]:
    """Compress every attention of every function; returns one report per attention layer."""
    options = options or CompressOptions()
    options.check()
    if any(not f > 0 for f in layer_scale):
        raise CtacError("cta-compress: layer-scale factors must be > 0")
    if any(b < 0 for b in compressed_blocks):
        raise CtacError("cta-compress: compressed-blocks must be >= 0 (0: all but the last)")
    if any(b < 0 for b in causal_block):
        raise CtacError("cta-compress: causal-block sizes must be >= 0 (0: block)")
    reports: list[CompressionReport] = []
    for function in module.ops:
        if isinstance(function, func.FuncOp):
            reports.extend(
                compress_function(
                    function, options, layer_scale, keep_exact, compressed_blocks, causal_block
                )
            )
    return reports
