"""Attention over compressed tokens (cta.compressed_attention, made by cta-compress): query
centroids attend to count-weighted key centroids; the block-causal form adds each block's raw
keys. Sizes that depend on the clusters formed are recorded as dynamic fields."""

from __future__ import annotations

from ctac.dialects import cta
from ctac.dialects import onnx as ox
from ctac.passes.lower_to_isa.attention import (
    AttentionShape,
    KeyTile,
    QueryTile,
    attention_tiles,
    emit_attention_tiles,
)
from ctac.passes.lower_to_isa.compression import cluster_of
from ctac.passes.lower_to_isa.core import Lowering, lowering
from ctac.passes.lower_to_isa.memory import Unsupported, elements, split_ranges


@lowering(cta.CompressedAttentionOp)
def lower_compressed_attention(lowering: Lowering, op: cta.CompressedAttentionOp) -> None:
    """Query centroids over count-weighted key centroids, tiled over both like exact attention
    (attention.py); every tile is sized by the clusters formed (a dynamic field with the tile's
    first cluster row as offset), so the cost model charges m_q x m_k, not n x n, and a tile
    wholly past the clusters costs nothing."""
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
    shape = _shape(op, head_dim, value_dim)
    tq, tk = attention_tiles(lowering, q_len, kv_len, shape)
    q_clusters = lowering.cluster_instructions.get(cluster_of(op.query), [])
    k_clusters = lowering.cluster_instructions.get(cluster_of(op.key), [])
    tiles = []
    for b in range(batch):
        for h in range(heads):
            kv = h // group
            q_seq = _sequence_index(ox.shape_of(op.query), b, h, len(q_clusters))
            k_seq = _sequence_index(ox.shape_of(op.key), b, kv, len(k_clusters))
            q_cluster = q_clusters[q_seq] if q_seq is not None else None
            k_cluster = k_clusters[k_seq] if k_seq is not None else None
            kv_base = (b * kv_heads + kv) * kv_len
            count_base = counts.address + _counts_row(ox.shape_of(op.counts), b, kv) * kv_len
            keys = [
                KeyTile(
                    k.address + (kv_base + k0) * head_dim, v.address + (kv_base + k0) * value_dim,
                    cols, counts=count_base + k0, cluster=k_cluster, cluster_offset=k0,
                )
                for k0, cols in split_ranges(kv_len, tk)
            ]  # fmt: skip
            for q0, rows in split_ranges(q_len, tq):
                tiles.append(QueryTile(
                    q.address + ((b * heads + h) * q_len + q0) * head_dim, rows,
                    out.address + ((b * heads + h) * q_len + q0) * value_dim, keys,
                    cluster=q_cluster, cluster_offset=q0,
                ))  # fmt: skip
    emit_attention_tiles(lowering, shape, tiles, tq, tk)


def lower_block_causal_attention(lowering: Lowering, op: cta.CompressedAttentionOp) -> None:
    """Block-causal compressed attention (docs/compression.md): a query at position p in block
    b = p // B sees the cluster rows of blocks before b (rows [0, b * B) of the centroid tensors,
    count-weighted; unused rows have count 0) and the raw keys b * B <= j <= p. Query tiles lie
    inside one block, so each runs plain key tiles over [0, b * B) of the centroids and causal
    key tiles over its own block's raw keys: no mask in memory. A key tile over an earlier block
    is sized by the clusters that block formed (its CLUSTER_READ), so the cost model charges
    m_j rows of block j, not `block`. With a table of P < kv_len rows (a compressed prefix of
    P / B blocks), a query past it sees the prefix's clusters and raw keys from P on."""
    if op.key_tokens is None or op.value_tokens is None:
        raise Unsupported("block-causal compressed attention needs the raw keys and values")
    q, k, v = (lowering.tensor(x) for x in (op.query, op.key, op.value))
    raw_k, raw_v = lowering.tensor(op.key_tokens), lowering.tensor(op.value_tokens)
    counts, out = lowering.tensor(op.counts), lowering.tensors[op.output]
    mask = lowering.tensor(op.mask) if op.mask is not None else None
    batch, heads, q_len, head_dim = ox.shape_of(op.query)
    kv_heads, kv_len = ox.shape_of(op.key_tokens)[1], ox.shape_of(op.key_tokens)[2]
    table = ox.shape_of(op.key)[2]  # cluster rows: kv_len, or a prefix of whole blocks
    value_dim = ox.shape_of(op.value)[3]
    group = heads // kv_heads
    block = op.int_attr("block", 0) or kv_len
    compressed_blocks = -(-table // block)
    offset = op.int_attr("causal_offset", kv_len - q_len)
    shape = _shape(op, head_dim, value_dim)
    tq, tk = attention_tiles(lowering, min(q_len, block), kv_len, shape)
    key_clustering = cluster_of(op.key)
    readouts = lowering.block_readouts.get(key_clustering, {})
    sequences = elements(ox.shape_of(key_clustering.tokens)[:-2]) if key_clustering else 0
    tiles = []
    for b in range(batch):
        for h in range(heads):
            kv_base = (b * kv_heads + h // group) * kv_len  # raw keys and values
            table_base = (b * kv_heads + h // group) * table  # cluster rows
            sequence = _sequence_index(ox.shape_of(op.key), b, h // group, sequences)
            count_base = counts.address + _counts_row(ox.shape_of(op.counts), b, h // group) * table
            for first, end, current in _query_blocks(q_len, kv_len, block, offset):
                if current is not None:  # blocks past the table stay raw keys
                    current = min(current, compressed_blocks)
                for q0, rows in split_ranges(end - first, tq):
                    q0 += first
                    last_position = q0 + rows - 1 + offset
                    keys = []
                    for first_row in range(0, (current or 0) * block, block):
                        # Each earlier block's clusters fill its first rows: tiles sized by them.
                        readout = readouts.get((sequence, first_row))
                        keys += [
                            KeyTile(
                                k.address + (table_base + first_row + k0) * head_dim,
                                v.address + (table_base + first_row + k0) * value_dim, cols,
                                counts=count_base + first_row + k0, cluster=readout,
                                cluster_offset=k0,
                            )
                            for k0, cols in split_ranges(block, tk)
                        ]  # fmt: skip
                    start = current * block if current is not None else 0
                    stop = max(start + 1, min(kv_len, last_position + 1))
                    for k0, cols in split_ranges(stop - start, tk):
                        k0 += start
                        keys.append(KeyTile(
                            raw_k.address + (kv_base + k0) * head_dim,
                            raw_v.address + (kv_base + k0) * value_dim, cols,
                            causal_offset=q0 + offset - k0,
                            key_mask=mask.address + b * kv_len + k0 if mask is not None else None,
                        ))  # fmt: skip
                    tiles.append(QueryTile(
                        q.address + ((b * heads + h) * q_len + q0) * head_dim, rows,
                        out.address + ((b * heads + h) * q_len + q0) * value_dim, keys,
                    ))  # fmt: skip
    emit_attention_tiles(lowering, shape, tiles, tq, tk)


def _query_blocks(q_len: int, kv_len: int, block: int, offset: int):
    """(first query, end, block) runs of queries that see the same blocks: block None for the
    queries before the first key (position < 0), which see nothing."""
    index = 0
    while index < q_len:
        position = index + offset
        if position < 0:
            end = min(q_len, -offset)
            yield index, end, None
        else:
            current = min(position, kv_len - 1) // block
            last_block = (kv_len - 1) // block
            end = q_len if current == last_block else min(q_len, (current + 1) * block - offset)
            yield index, end, current
        index = end


def _counts_row(counts_shape: tuple[int, ...], b: int, kv_head: int) -> int:
    """Row of the counts tensor for (batch, kv head): (B, kv_heads, n) per head, (B, n) per input."""
    return b * counts_shape[1] + kv_head if len(counts_shape) == 3 else b


def _shape(op: cta.CompressedAttentionOp, head_dim: int, value_dim: int) -> AttentionShape:
    return AttentionShape(
        head_dim, value_dim, op.float_attr("scale"), op.float_attr("softcap", 0.0), counts=True
    )


def _sequence_index(shape: tuple[int, ...], b: int, h: int, known: int) -> int | None:
    """Which clustered sequence row (b, h) of a (B, H, n, d) tensor came from (per head or per input)."""
    if known == shape[0] * shape[1]:
        return b * shape[1] + h
    if known == shape[0]:
        return b
    return None
