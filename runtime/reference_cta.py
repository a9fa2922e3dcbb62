"""numpy semantics of the cta dialect's ops (the golden model; registered in reference.py's
SEMANTICS table): exact attention with its optional projections and fake quantizers, and the
compression ops, whose algorithms are runtime/compression.py's."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from xdsl.dialects.builtin import StringAttr

from ctac.dialects import cta
from ctac.runtime import compression
from ctac.runtime.elsa import candidates
from ctac.runtime.reference import Array, semantics

# ---------------------------------------------------------------------------------------------
# cta dialect
# ---------------------------------------------------------------------------------------------


def attention(
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None,
    *,
    num_heads: int,
    kv_heads: int,
    scale: float,
    causal: bool,
    mask_kind: str,
    causal_offset: int | None = None,
    softcap: float = 0.0,
    elsa: tuple[int, float, int] | None = None,
    fake_quant: dict[str, tuple[float, float, float, float]] | None = None,
) -> Array:
    """softmax(q k^T * scale + mask) v per head; a query row with no visible key gives zeros.
    With `elsa` = (bits, threshold, seed), each query keeps only its candidate keys
    (runtime/elsa.py). With `fake_quant` (cta.AttentionOp's stages), the computation runs in
    q's float type, op by op as the QuantizeLinear/DequantizeLinear graph it replaces does, so
    each rounding sees the value the graph rounds."""
    group = num_heads // kv_heads
    if group > 1:
        k = np.repeat(k, group, axis=1)
        v = np.repeat(v, group, axis=1)
    stages = fake_quant or {}
    dtype = q.dtype if stages else np.dtype(np.float64)
    quantize = _fake_quantizer(stages, dtype)
    # `scores` is this function's own array from the first matmul on: the elementwise steps
    # work in place (the same values; a long sequence's L x L float64 tensors made one per
    # step were most of a proof's memory).
    scores = quantize("scores", np.matmul(q.astype(dtype), np.swapaxes(k.astype(dtype), -1, -2)))
    scores *= dtype.type(scale)
    scores = quantize("scaled", scores)
    if softcap > 0:
        scores = softcap * np.tanh(scores / softcap)
    visible = None
    if mask_kind == "additive":
        if np.broadcast_shapes(scores.shape, mask.shape) == scores.shape:
            scores += mask.astype(dtype)
        else:  # a mask that widens the scores (batch 1 queries, a mask per sequence)
            scores = scores + mask.astype(dtype)
    elif mask_kind == "key_padding":
        visible = (np.asarray(mask) != 0)[:, None, None, :]
    if causal:
        q_len, k_len = q.shape[2], k.shape[2]
        offset = k_len - q_len if causal_offset is None else causal_offset
        rows = np.arange(q_len)[:, None] + offset
        lower = np.arange(k_len)[None, :] <= rows
        visible = lower if visible is None else visible & lower
    if elsa is not None:
        shape = scores.shape
        full = np.ones(shape, dtype=bool) if visible is None else np.broadcast_to(visible, shape)
        visible = candidates(q, k, full, *elsa)
    scores = quantize("masked", scores)
    if visible is not None:
        if np.broadcast_shapes(scores.shape, visible.shape) != scores.shape:
            scores = np.broadcast_to(scores, np.broadcast_shapes(scores.shape, visible.shape))
            scores = scores.copy()
        np.copyto(scores, -np.inf, where=~visible)
    peak = np.max(scores, axis=-1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    scores -= peak
    weights = np.exp(scores, out=scores)
    total = weights.sum(axis=-1, keepdims=True)
    # rows with no visible key (or a NaN) give zeros
    probabilities = np.divide(weights, total, out=weights, where=total > 0)
    np.copyto(probabilities, 0.0, where=~(total > 0))
    return quantize("output", np.matmul(quantize("probs", probabilities), v.astype(dtype)))


def _fake_quantizer(
    stages: dict[str, tuple[float, float, float, float]], dtype: np.dtype
) -> Callable[[str, Array], Array]:
    """x -> (clip(round(x / step) + zero, low, high) - zero) * step at the stages given, in
    the order of ops ctac/quantized.py builds (Div, Round, Add, Clip, Sub, Mul)."""

    def quantize(stage: str, x: Array) -> Array:
        if stage not in stages:
            return x
        step, zero, low, high = (dtype.type(value) for value in stages[stage])
        integers = np.clip(np.round(x / step) + zero, low, high)
        return (integers - zero) * step

    return quantize


@semantics(cta.AttentionOp)
def _attention(
    op: cta.AttentionOp, q: Array, k: Array, v: Array, mask: Array | None
) -> list[Array]:
    return [
        attention(
            q,
            k,
            v,
            mask,
            num_heads=op.int_attr("num_heads"),
            kv_heads=op.int_attr("kv_heads"),
            scale=op.float_attr("scale"),
            causal=bool(op.int_attr("causal", 0)),
            mask_kind=op.str_attr("mask_kind", "none"),
            causal_offset=op.int_attr("causal_offset"),
            softcap=op.float_attr("softcap", 0.0),
            fake_quant=cta.quant_stages(op),
            elsa=(
                op.int_attr("elsa_bits"),
                op.float_attr("elsa_threshold"),
                op.int_attr("elsa_seed", 0),
            )
            if op.int_attr("elsa_bits")
            else None,
        )
    ]


def project(
    x: Array, w: Array, b: Array | None, heads: int, head_dim: int, columns: tuple[int, int]
) -> Array:
    """x (B, S, E) -> (B, heads, S, head_dim); a per-head x (B, heads, S, E) projects head h's
    rows with head h's columns only."""
    start, end = columns
    if x.ndim == 4:
        per_head = w[:, start:end].reshape(w.shape[0], heads, head_dim)
        y = np.einsum("bhse,ehd->bhsd", x, per_head)
        if b is not None:
            y = y + b[start:end].reshape(heads, 1, head_dim)
        return y
    y = x @ w[:, start:end]
    if b is not None:
        y = y + b[start:end]
    batch, seq = x.shape[0], x.shape[1]
    return y.reshape(batch, seq, heads, head_dim).transpose(0, 2, 1, 3)


@semantics(cta.ProjectOp)
def _project(op: cta.ProjectOp, x: Array, w: Array, b: Array | None) -> list[Array]:
    return [project(x, w, b, op.int_attr("heads"), op.int_attr("head_dim"), op.column_range())]


# ---------------------------------------------------------------------------------------------
# cta compression ops (algorithms in runtime/compression.py)
# ---------------------------------------------------------------------------------------------


@semantics(cta.ClusterOp)
def _cluster(
    op: cta.ClusterOp, tokens: Array, mask: Array | None, alone: Array | None = None
) -> list[Array]:
    source, role = op.attributes.get("ctac.source"), op.attributes.get("ctac.role")
    label = "/".join(a.data if isinstance(a, StringAttr) else "" for a in (source, role))
    rows = cta.clustered_positions(op)  # all positions, or a causal attention's prefix
    tokens = tokens[..., :rows, :]
    mask = mask[..., :rows] if mask is not None else None
    alone = alone[..., :rows] if alone is not None else None
    result = compression.cluster(
        tokens,
        mask,
        method=op.str_attr("method"),
        tau=op.float_attr("tau"),
        hash_bits=op.int_attr("hash_bits"),
        seed=op.int_attr("seed"),
        max_clusters=op.int_attr("max_clusters", 0),
        block=op.int_attr("block", 0),
        window=op.int_attr("window", 0),
        label=label,
        alone=alone,
    )
    return [result.centroids, result.counts, result.ids]


@semantics(cta.KeepTopOp)
def _keep_top(op: cta.KeepTopOp, q: Array, k: Array, mask: Array | None) -> list[Array]:
    return [compression.keep_top(q, k, op.int_attr("k"), mask)]


@semantics(cta.PoolOp)
def _pool(op: cta.PoolOp, tokens: Array, ids: Array) -> list[Array]:
    return [compression.pool(tokens[..., : ids.shape[-1], :], ids)]  # ids of a prefix: its tokens


@semantics(cta.RecoverOp)
def _recover(op: cta.RecoverOp, rows: Array, ids: Array) -> list[Array]:
    return [compression.recover(rows, ids)]


@semantics(cta.CompressedAttentionOp)
def _compressed_attention(
    op: cta.CompressedAttentionOp,
    q: Array,
    k: Array,
    v: Array,
    counts: Array,
    key_tokens: Array | None,
    value_tokens: Array | None,
    mask: Array | None,
) -> list[Array]:
    return [
        compression.compressed_attention(
            q,
            k,
            v,
            counts,
            key_tokens,
            value_tokens,
            mask,
            num_heads=op.int_attr("num_heads"),
            kv_heads=op.int_attr("kv_heads"),
            scale=op.float_attr("scale"),
            softcap=op.float_attr("softcap", 0.0),
            causal=bool(op.int_attr("causal", 0)),
            causal_offset=op.int_attr("causal_offset"),
            block=op.int_attr("block", 0),
        )
    ]
