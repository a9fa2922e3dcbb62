"""Attention over compressed tokens (cta.compressed_attention, made by cta-compress): query
centroids attend to count-weighted key centroids; the block-causal form adds each block's raw
keys. Sizes that depend on the clusters formed are recorded as dynamic fields."""

from __future__ import annotations

import numpy as np

from ctac.dialects import cta
from ctac.dialects import onnx as ox
from ctac.passes.lower_to_isa.attention import emit_scores, emit_weighted_values
from ctac.passes.lower_to_isa.compression import cluster_of
from ctac.passes.lower_to_isa.core import PREPARE, Lowering, dynamic_field, lowering
from ctac.passes.lower_to_isa.memory import ACC, ACT, VEC, WGT, Unsupported, split_ranges


@lowering(cta.CompressedAttentionOp)
def lower_compressed_attention(lowering: Lowering, op: cta.CompressedAttentionOp) -> None:
    """Attention of query centroids over count-weighted key centroids; every size that depends
    on the clusters is recorded as dynamic, so the cost model charges m_q x m_k, not n x n."""
    if op.int_attr("causal", 0) or op.key_tokens is not None:
        lower_block_causal_attention(lowering, op)
        return
    if op.mask is not None:
        raise Unsupported(
            "a key mask on non-causal compressed attention (padding is in the counts)"
        )
    q, k, v = (lowering.tensor(x) for x in (op.query, op.key, op.value))
    counts, out = lowering.tensor(op.counts), lowering.tensors[op.output]
    batch, heads, q_len, head_dim = ox.shape_of(op.query)
    kv_heads, kv_len = ox.shape_of(op.key)[1], ox.shape_of(op.key)[2]
    value_dim = ox.shape_of(op.value)[3]
    group = heads // kv_heads
    counts_shape = ox.shape_of(op.counts)
    if (
        kv_len * (head_dim + value_dim) > lowering.half[WGT]
        or q_len * (kv_len + value_dim) > lowering.half[ACC]
        or q_len * (head_dim + kv_len) > lowering.half[ACT]
        or kv_len > lowering.half[VEC]
    ):
        raise Unsupported(f"{kv_len} compressed keys do not fit the buffers")
    q_clusters = lowering.cluster_instructions.get(cluster_of(op.query), [])
    k_clusters = lowering.cluster_instructions.get(cluster_of(op.key), [])
    for b in range(batch):
        for h in range(heads):
            lowering.next_stage()
            kv = h // group
            q_seq = _sequence_index(ox.shape_of(op.query), b, h, len(q_clusters))
            k_seq = _sequence_index(ox.shape_of(op.key), b, kv, len(k_clusters))
            q_cluster = q_clusters[q_seq] if q_seq is not None else None
            k_cluster = k_clusters[k_seq] if k_seq is not None else None
            k_address = lowering.slot(WGT)
            v_address = k_address + kv_len * head_dim
            q_address, s_address = lowering.slot(ACT), lowering.slot(ACC)
            count_row = lowering.slot(VEC)
            count_base = (
                counts.address
                + (b * counts_shape[1] + (kv if len(counts_shape) == 3 else 0)) * kv_len
                if len(counts_shape) == 3
                else counts.address + b * kv_len
            )
            lowering.load(
                WGT,
                k_address,
                k.address + (b * kv_heads + kv) * kv_len * head_dim,
                kv_len,
                head_dim,
                head_dim,
            )
            dynamic_field(lowering, "rows", k_cluster)
            lowering.load(
                WGT,
                v_address,
                v.address + (b * kv_heads + kv) * kv_len * value_dim,
                kv_len,
                value_dim,
                value_dim,
            )
            dynamic_field(lowering, "rows", k_cluster)
            lowering.load(VEC, count_row, count_base, 1, kv_len, kv_len)
            lowering.load(
                ACT,
                q_address,
                q.address + (b * heads + h) * q_len * head_dim,
                q_len,
                head_dim,
                head_dim,
            )
            dynamic_field(lowering, "rows", q_cluster)
            emit_scores(lowering, s_address, q_address, k_address, q_len, head_dim, kv_len)
            dynamic_field(lowering, "m", q_cluster)
            dynamic_field(lowering, "n", k_cluster)
            p_address = q_address + q_len * head_dim
            lowering.emit(
                "SOFTMAX", dst=ACT, dst_addr=p_address, src=ACC, src_addr=s_address, rows=q_len, cols=kv_len,
                scale=op.float_attr("scale"), softcap=op.float_attr("softcap", 0.0), has_counts=1, counts=VEC, counts_addr=count_row,
            )  # fmt: skip
            dynamic_field(lowering, "rows", q_cluster)
            dynamic_field(lowering, "cols", k_cluster)
            o_address = s_address + q_len * kv_len
            if o_address + q_len * value_dim > lowering.slot(ACC) + lowering.half[ACC]:
                o_address = lowering.slot(ACC)
            emit_weighted_values(
                lowering, o_address, p_address, v_address, q_len, kv_len, value_dim
            )
            dynamic_field(lowering, "m", q_cluster)
            dynamic_field(lowering, "k", k_cluster)
            lowering.store(
                ACC,
                o_address,
                out.address + (b * heads + h) * q_len * value_dim,
                q_len,
                value_dim,
                value_dim,
            )
            dynamic_field(lowering, "rows", q_cluster)


def _prepare_block_causal(lowering: Lowering, op: cta.CompressedAttentionOp) -> None:
    """The block-causal visibility is static: an additive (q x (clusters + raw keys)) mask."""
    if not (op.int_attr("causal", 0) or op.key_tokens is not None):
        return
    from ctac.runtime.compression import causal_visibility

    q_len, kv_len = ox.shape_of(op.query)[2], ox.shape_of(op.key)[2]
    clusters, raw = causal_visibility(
        q_len, kv_len, op.int_attr("block", 0), op.int_attr("causal_offset")
    )
    mask = np.where(np.concatenate([clusters, raw], axis=1), 0.0, -np.inf).astype(np.float32)
    lowering.data.append((lowering.data_top, mask.size, None, mask))
    lowering.hash_planes[op] = lowering.data_top
    lowering.data_top += mask.size


PREPARE[cta.CompressedAttentionOp] = _prepare_block_causal


def lower_block_causal_attention(lowering: Lowering, op: cta.CompressedAttentionOp) -> None:
    """Per (batch, head): keys = [key centroids of earlier blocks ; raw keys of the own block],
    one GEMM over both, a SOFTMAX whose additive mask is the static block-causal visibility and
    whose column weights are [cluster counts ; key validity], then P @ [pooled values ; values].
    Sizes are charged nominally (the visible clusters vary per query block)."""
    if op.key_tokens is None or op.value_tokens is None:
        raise Unsupported("block-causal compressed attention needs the raw keys and values")
    q, k, v = (lowering.tensor(x) for x in (op.query, op.key, op.value))
    raw_k, raw_v = lowering.tensor(op.key_tokens), lowering.tensor(op.value_tokens)
    counts, out = lowering.tensor(op.counts), lowering.tensors[op.output]
    mask = lowering.tensor(op.mask) if op.mask is not None else None
    batch, heads, q_len, head_dim = ox.shape_of(op.query)
    kv_heads, kv_len = ox.shape_of(op.key)[1], ox.shape_of(op.key)[2]
    value_dim = ox.shape_of(op.value)[3]
    group = heads // kv_heads
    width = 2 * kv_len
    if width * (head_dim + value_dim) > lowering.half[WGT]:
        raise Unsupported(f"{kv_len} key centroids plus {kv_len} raw keys do not fit half of wgt")
    rows = min(
        q_len,
        lowering.half[ACC] // (width + value_dim),
        lowering.half[ACT] // (width + head_dim),
        (lowering.half[VEC] - width) // width,
    )
    if rows < 1:
        raise Unsupported(f"one query row over {width} keys does not fit the buffer halves")
    visibility = lowering.hash_planes[op]
    counts_shape = ox.shape_of(op.counts)
    lowering.pipeline.ordered = True  # keys and values live through a head's query blocks
    for b in range(batch):
        for h in range(heads):
            lowering.next_stage()
            kv = h // group
            keys, values = lowering.slot(WGT), lowering.slot(WGT) + width * head_dim
            key_base = (b * kv_heads + kv) * kv_len
            lowering.load(WGT, keys, k.address + key_base * head_dim, kv_len, head_dim, head_dim)
            lowering.load(
                WGT,
                keys + kv_len * head_dim,
                raw_k.address + key_base * head_dim,
                kv_len,
                head_dim,
                head_dim,
            )
            lowering.load(
                WGT, values, v.address + key_base * value_dim, kv_len, value_dim, value_dim
            )
            lowering.load(
                WGT,
                values + kv_len * value_dim,
                raw_v.address + key_base * value_dim,
                kv_len,
                value_dim,
                value_dim,
            )
            weights = lowering.slot(VEC)
            count_base = counts.address + (
                (b * counts_shape[1] + kv) * kv_len if len(counts_shape) == 3 else b * kv_len
            )
            lowering.load(VEC, weights, count_base, 1, kv_len, kv_len)
            if mask is not None:
                lowering.load(VEC, weights + kv_len, mask.address + b * kv_len, 1, kv_len, kv_len)
            else:
                lowering.vec("copy", VEC, weights + kv_len, (0, 0), 1, kv_len, bcast="imm", imm=1.0)
            for q0, count in split_ranges(q_len, rows):
                q_address, s_address = lowering.slot(ACT), lowering.slot(ACC)
                block_mask = weights + width
                lowering.load(
                    ACT,
                    q_address,
                    q.address + ((b * heads + h) * q_len + q0) * head_dim,
                    count,
                    head_dim,
                    head_dim,
                )
                lowering.load(VEC, block_mask, visibility + q0 * width, count, width, width)
                emit_scores(lowering, s_address, q_address, keys, count, head_dim, width)
                p_address = q_address + count * head_dim
                lowering.emit(
                    "SOFTMAX", dst=ACT, dst_addr=p_address, src=ACC, src_addr=s_address, rows=count, cols=width,
                    scale=op.float_attr("scale"), softcap=op.float_attr("softcap", 0.0), mask="additive", mask_buf=VEC,
                    mask_addr=block_mask, has_counts=1, counts=VEC, counts_addr=weights,
                )  # fmt: skip
                o_address = s_address + count * width
                emit_weighted_values(
                    lowering, o_address, p_address, values, count, width, value_dim
                )
                lowering.store(
                    ACC,
                    o_address,
                    out.address + ((b * heads + h) * q_len + q0) * value_dim,
                    count,
                    value_dim,
                    value_dim,
                )


def _sequence_index(shape: tuple[int, ...], b: int, h: int, known: int) -> int | None:
    """Which clustered sequence row (b, h) of a (B, H, n, d) tensor came from (per head or per input)."""
    if known == shape[0] * shape[1]:
        return b * shape[1] + h
    if known == shape[0]:
        return b
    return None
