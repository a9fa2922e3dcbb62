"""Attention tiled over queries and keys with an online softmax (FlashAttention's running max
and sum), for exact and ELSA attention (cta.attention) and, through `emit_attention_tiles`,
attention over compressed tokens (compressed_attention.py).

Per query tile (tq rows of one batch and head) and per key tile (tk keys) the software pipeline
(pipeline.py) runs five stages: 0 load K (and Q on a query tile's first key tile); 1 S = Q K^T,
load the tile's mask and counts; 2 SOFTMAX_ONLINE (running max, sum and the rescale of the
output so far, copied out of the state), load V; 3 O = O * rescale + P V; 4 store O after the
last key tile. Q, O and the running statistics alternate per query tile, everything else per
step, so any length compiles whenever one tile fits: the limit is DRAM, not a buffer.

A quantized attention (cta.attention's fake_quant) rounds its stages with VEC ops in the order
of the QuantizeLinear -> DequantizeLinear ops it replaces (Div, Round, Add, Clip, Sub, Mul): the
scores in ACC after S = Q K^T (scaling them, and adding the mask, there too when a later stage
rounds them), the probabilities in ACT after the softmax, which then takes all keys in one tile
so they are normalised before they are rounded, and the output (QOperator's requantized P.V) in
ACC after the last key tile, before it is stored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ctac.dialects import cta
from ctac.dialects import onnx as ox
from ctac.passes.lower_to_isa.core import PREPARE, Emitted, Lowering, dynamic_field, lowering
from ctac.passes.lower_to_isa.memory import ACC, ACT, VEC, WGT, Tensor, Unsupported, split_ranges
from ctac.runtime.compression import hash_planes


def emit_scores(
    lowering: Lowering,
    s_address: int,
    q_address: int,
    k_address: int,
    rows: int,
    head_dim: int,
    keys: int,
) -> None:
    """S = Q K^T for one head: query rows in ACT, keys in WGT (read transposed), scores into ACC."""
    lowering.emit(
        "GEMM", dst=ACC, dst_addr=s_address, a=ACT, a_addr=q_address, b=WGT, b_addr=k_address,
        m=rows, k=head_dim, n=keys, transpose_b=1,
    )  # fmt: skip


def emit_weighted_values(
    lowering: Lowering,
    o_address: int,
    p_address: int,
    v_address: int,
    rows: int,
    keys: int,
    value_dim: int,
    accumulate: bool = False,
) -> None:
    """O (+)= P V for one head: probabilities in ACT, values in WGT, the output into ACC."""
    lowering.emit(
        "GEMM", dst=ACC, dst_addr=o_address, a=ACT, a_addr=p_address, b=WGT, b_addr=v_address,
        m=rows, k=keys, n=value_dim, accumulate=int(accumulate),
    )  # fmt: skip


@dataclass
class KeyTile:
    """One tile of keys for a query tile: DRAM addresses of its first key and value rows, and
    what decides which of its keys each query sees."""

    keys: int
    values: int
    cols: int
    causal_offset: int | None = None  # row r sees tile columns j <= r + causal_offset
    key_mask: int | None = None  # DRAM address of a (1 x cols) 0/1 key validity row
    counts: int | None = None  # DRAM address of a (1 x cols) row of cluster counts
    additive: Callable[[int], None] | None = None  # loads the (rows x cols) bias to a vec address
    cluster: Emitted | None = None  # the CLUSTER whose count of key clusters sizes this tile
    cluster_offset: int = 0  # the tile's first cluster row


@dataclass
class QueryTile:
    queries: int  # DRAM address of the first query row
    rows: int
    output: int  # DRAM address of the first output row
    key_tiles: list[KeyTile]
    cluster: Emitted | None = None  # the CLUSTER whose count of query clusters sizes this tile
    cluster_offset: int = 0
    elsa_key_row: int | None = None  # ELSA: DRAM address of the key validity row (all keys)


@dataclass
class AttentionShape:
    head_dim: int
    value_dim: int
    scale: float
    softcap: float = 0.0
    additive: bool = False  # some key tile has an additive (rows x cols) mask
    elsa_bits: int = 0
    elsa_threshold: float = 0.0
    elsa_planes: int = 0  # vec address of the hash planes (persistent)
    counts: bool = False
    # cta.quant_stages of a quantized attention: stage -> (step, zero, low, high)
    quant: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)

    @property
    def manual_scale(self) -> bool:
        """The scale is applied by a VEC op (a later stage rounds the scaled scores)."""
        return "scaled" in self.quant or "masked" in self.quant


def attention_tiles(
    lowering: Lowering, q_len: int, kv_len: int, shape: AttentionShape
) -> tuple[int, int]:
    """(tq, tk): the largest query and key tiles whose double-buffered slots fit every buffer,
    keys first (fewer rescales), then queries (fewer K/V reloads); multiples of the PE rows when
    they split a sequence."""
    rows = lowering.hw.view().pe_rows
    half = lowering.half
    d, dv = shape.head_dim, shape.value_dim
    # Rounded probabilities must be normalised first: one key tile holds every key.
    whole = "probs" in shape.quant
    for tk in (kv_len,) if whole else (512, 256, 128, 64, 32, 16, 8, 4, 2, 1):
        tk = min(tk, kv_len)
        if tk * (d + dv) > half[WGT]:
            continue
        vec_rows = (
            (tk if shape.additive or shape.elsa_bits else 0) + 4 + (3 if shape.elsa_bits else 0)
        )
        vec_fixed = (
            (0 if shape.additive or shape.elsa_bits else tk)
            + tk
            + (2 * tk if shape.elsa_bits else 0)
        )
        tq = min(
            q_len,
            half[ACT] // (d + tk),
            half[ACC] // (tk + dv),
            max(0, half[VEC] - vec_fixed) // max(vec_rows, 1),
        )
        if tq >= min(q_len, rows) or (tq >= 1 and (tk == 1 or whole)):
            if tq < q_len and tq > rows:
                tq -= tq % rows
            return tq, tk
    if whole:
        raise Unsupported(
            f"quantized probabilities need all {kv_len} keys of a query row in one tile, which "
            "does not fit the buffers"
        )
    raise Unsupported(f"one query row over one key of width {d} + {dv} does not fit the buffers")


def emit_attention_tiles(
    lowering: Lowering, shape: AttentionShape, tiles: list[QueryTile], tq: int, tk: int
) -> None:
    """The key-tiled, software-pipelined attention loop over `tiles` (see the module doc)."""
    d, dv = shape.head_dim, shape.value_dim
    masked = shape.additive or shape.elsa_bits
    q_slots, p_slots = lowering.stream(ACT, tq * d), lowering.stream(ACT, tq * tk)
    k_slots, v_slots = lowering.stream(WGT, tk * d), lowering.stream(WGT, tk * dv)
    s_slots, o_slots = lowering.stream(ACC, tq * tk), lowering.stream(ACC, tq * dv)
    mask_slots = lowering.stream(VEC, tq * tk if masked else tk)
    count_slots = lowering.stream(VEC, tk)
    state_slots = lowering.stream(VEC, 3 * tq)
    # The next key tile's softmax rewrites the state's rescale column (stage 2) before this
    # tile's O * rescale (stage 3) runs, so each step copies its rescale out.
    rescale_slots = lowering.stream(VEC, tq)
    code_slots = lowering.stream(VEC, tq + 2 * tk) if shape.elsa_bits else None
    # ELSA over several key tiles: a query tile's codes and nearest distances (per query tile).
    query_codes = lowering.stream(VEC, 2 * tq) if shape.elsa_bits else None
    pipeline = lowering.pipeline
    pipeline.drain()

    def sized_by_queries(field_name: str, tile: QueryTile) -> None:
        dynamic_field(lowering, field_name, tile.cluster, tile.cluster_offset)

    def sized_by_keys(field_name: str, key: KeyTile) -> None:
        dynamic_field(lowering, field_name, key.cluster, key.cluster_offset)

    def key_side(field_name: str, tile: QueryTile, key: KeyTile) -> None:
        """Sized by the key clusters, and skipped with a query tile past the query clusters."""
        sized_by_keys(field_name, key)
        dynamic_field(lowering, "", tile.cluster, tile.cluster_offset)

    for tile in tiles:
        rows = tile.rows
        q_address, o_address, state = q_slots.next(), o_slots.next(), state_slots.next()
        last_index = len(tile.key_tiles) - 1
        scanned = None
        if shape.elsa_bits and last_index > 0:
            # ELSA's nearest-key fallback needs each row's nearest distance over all its keys:
            # a scan over the key tiles first (K loaded and hashed twice).
            scanned = query_codes.next()
            for index, key in enumerate(tile.key_tiles):
                lowering.next_stage()
                pipeline.stage(0)
                k_address = k_slots.next()
                lowering.load(WGT, k_address, key.keys, key.cols, d, d)
                if index == 0:
                    lowering.load(ACT, q_address, tile.queries, rows, d, d)
                pipeline.stage(1)
                _elsa_selection(lowering, shape, tile, key, q_address, k_address, 0,
                                code_slots.next(), "scan", scanned, first=index == 0)  # fmt: skip
        for index, key in enumerate(tile.key_tiles):
            cols, first, last = key.cols, index == 0, index == last_index
            lowering.next_stage()
            pipeline.stage(0)
            k_address = k_slots.next()
            lowering.load(WGT, k_address, key.keys, cols, d, d)
            key_side("rows", tile, key)
            if first and scanned is None:
                lowering.load(ACT, q_address, tile.queries, rows, d, d)
                sized_by_queries("rows", tile)
            pipeline.stage(1)
            mask_mode, mask_address, selection = "none", mask_slots.next(), None
            if shape.elsa_bits:
                selection = _elsa_selection(
                    lowering, shape, tile, key, q_address, k_address, mask_address,
                    code_slots.next(), "select" if scanned is not None else "whole", scanned,
                )  # fmt: skip
                mask_mode = "additive"
            elif key.additive is not None:
                key.additive(mask_address)
                mask_mode = "additive"
            elif key.key_mask is not None:
                lowering.load(VEC, mask_address, key.key_mask, 1, cols, cols)
                key_side("cols", tile, key)
                mask_mode = "keys"
            counts_address = count_slots.next()
            if key.counts is not None:
                lowering.load(VEC, counts_address, key.counts, 1, cols, cols)
                key_side("cols", tile, key)
            s_address = s_slots.next()
            emit_scores(lowering, s_address, q_address, k_address, rows, d, cols)
            sized_by_queries("m", tile)
            sized_by_keys("n", key)
            dynamic_field(lowering, "n", selection)  # ELSA scores only its candidates

            def sized(tile: QueryTile = tile, key: KeyTile = key) -> None:
                sized_by_queries("rows", tile)
                sized_by_keys("cols", key)

            if shape.quant:
                mask_mode = _quantize_scores(
                    lowering, shape, s_address, mask_mode, mask_address, rows, cols, sized
                )
            pipeline.stage(2)
            p_address = p_slots.next()
            lowering.emit(
                "SOFTMAX_ONLINE", dst=ACT, dst_addr=p_address, src=ACC, src_addr=s_address,
                rows=rows, cols=cols, scale=1.0 if shape.manual_scale else shape.scale,
                softcap=shape.softcap, mask=mask_mode,
                mask_addr=mask_address, has_counts=int(key.counts is not None),
                counts_addr=counts_address, causal=int(key.causal_offset is not None),
                causal_offset=key.causal_offset or 0, state_addr=state, first=int(first),
                last=int(last),
            )  # fmt: skip
            sized_by_queries("rows", tile)
            sized_by_keys("cols", key)
            dynamic_field(lowering, "cols", selection)
            if "probs" in shape.quant:
                _fake_quantize(lowering, ACT, p_address, rows, cols, shape.quant["probs"], sized)
            rescale = rescale_slots.next()
            if not first:
                lowering.vec("copy", VEC, rescale, (0, 0), rows, 1, b=(VEC, state + 2 * rows),
                             bcast="full")  # fmt: skip
                sized_by_queries("rows", tile)
                sized_by_keys("", key)
            v_address = v_slots.next()
            lowering.load(WGT, v_address, key.values, cols, dv, dv)
            key_side("rows", tile, key)
            pipeline.stage(3)
            if not first:
                lowering.vec("mul", ACC, o_address, (ACC, o_address), rows, dv,
                             b=(VEC, rescale), bcast="col")  # fmt: skip
                sized_by_queries("rows", tile)
                sized_by_keys("", key)
            emit_weighted_values(lowering, o_address, p_address, v_address, rows, cols, dv,
                                 accumulate=not first)  # fmt: skip
            sized_by_queries("m", tile)
            sized_by_keys("k", key)
            dynamic_field(lowering, "k", selection)
            if last:
                pipeline.stage(4)
                if "output" in shape.quant:  # the normalised output, rounded before the store
                    _fake_quantize(lowering, ACC, o_address, rows, dv, shape.quant["output"],
                                   lambda tile=tile: sized_by_queries("rows", tile))  # fmt: skip
                lowering.store(ACC, o_address, tile.output, rows, dv, dv)
                sized_by_queries("rows", tile)
    pipeline.drain()


def _fake_quantize(
    lowering: Lowering,
    buffer: int,
    address: int,
    rows: int,
    cols: int,
    quant: tuple[float, float, float, float],
    sized: Callable[[], None],
) -> None:
    """x -> (clip(round(x / step) + zero, low, high) - zero) * step in place, op by op as
    ctac/quantized.py builds QuantizeLinear -> DequantizeLinear (so it rounds what they round)."""
    step, zero, low, high = quant
    tile = (buffer, address)
    for op, imm in (("div", step), ("round", 0.0), ("add", zero), ("max", low), ("min", high),
                    ("sub", zero), ("mul", step)):  # fmt: skip
        lowering.vec(op, buffer, address, tile, rows, cols, imm=imm)
        sized()


def _quantize_scores(
    lowering: Lowering,
    shape: AttentionShape,
    s_address: int,
    mask_mode: str,
    mask_address: int,
    rows: int,
    cols: int,
    sized: Callable[[], None],
) -> str:
    """The score stages on S in ACC; the softmax's mask mode after them ('none' when the mask
    was added here, before the masked scores are rounded)."""
    quant = shape.quant
    if "scores" in quant:
        _fake_quantize(lowering, ACC, s_address, rows, cols, quant["scores"], sized)
    if shape.manual_scale:
        lowering.vec("mul", ACC, s_address, (ACC, s_address), rows, cols, imm=shape.scale)
        sized()
    if "scaled" in quant:
        _fake_quantize(lowering, ACC, s_address, rows, cols, quant["scaled"], sized)
    if "masked" not in quant:
        return mask_mode
    if mask_mode == "additive":
        lowering.vec("add", ACC, s_address, (ACC, s_address), rows, cols,
                     b=(VEC, mask_address), bcast="full")  # fmt: skip
        sized()
    elif mask_mode != "none":
        raise Unsupported("rounded masked scores with a key or causal mask (only additive masks)")
    _fake_quantize(lowering, ACC, s_address, rows, cols, quant["masked"], sized)
    return "none"


@lowering(cta.AttentionOp)
def lower_attention(lowering: Lowering, op: cta.AttentionOp) -> None:
    """Exact (or ELSA-filtered) attention per (batch, head, query tile, key tile); a causal query
    tile skips the key tiles wholly beyond its frontier."""
    q, k, v = (lowering.tensor(x) for x in (op.query, op.key, op.value))
    out = lowering.tensors[op.output]
    batch, heads, q_len, head_dim = ox.shape_of(op.query)
    kv_heads, kv_len = ox.shape_of(op.key)[1], ox.shape_of(op.key)[2]
    value_dim = ox.shape_of(op.value)[3]
    group = heads // kv_heads
    kind = op.str_attr("mask_kind", "none")
    elsa_bits = op.int_attr("elsa_bits", 0)
    if elsa_bits and kind == "additive":
        raise Unsupported("ELSA filtering of an attention with an additive mask")
    quant = cta.quant_stages(op) or {}
    if elsa_bits and quant:
        raise Unsupported("ELSA filtering of a quantized attention")
    if "masked" in quant and (op.int_attr("causal", 0) or kind == "key_padding"):
        # detect-attention turns these into an additive mask: the rounding keeps them finite
        raise Unsupported("rounded masked scores with a key or causal mask (only additive masks)")
    mask = lowering.tensor(op.mask) if op.mask is not None else None
    mask_shape = ox.shape_of(op.mask) if op.mask is not None else ()
    causal = bool(op.int_attr("causal", 0))
    offset = op.int_attr("causal_offset", kv_len - q_len)
    shape = AttentionShape(
        head_dim, value_dim, op.float_attr("scale"), op.float_attr("softcap", 0.0),
        additive=kind == "additive", elsa_bits=elsa_bits,
        elsa_threshold=op.float_attr("elsa_threshold") if elsa_bits else 0.0, quant=quant,
    )  # fmt: skip
    tq, tk = attention_tiles(lowering, q_len, kv_len, shape)
    if elsa_bits:
        shape.elsa_planes = lowering.persistent(head_dim * elsa_bits)
        lowering.load(VEC, shape.elsa_planes, lowering.hash_planes[op], head_dim, elsa_bits,
                      elsa_bits)  # fmt: skip
    tiles = []
    for b in range(batch):
        for h in range(heads):
            kv_base = (b * kv_heads + h // group) * kv_len
            for q0, rows in split_ranges(q_len, tq):
                end = kv_len
                if causal:  # keys past the last row's frontier are never seen
                    end = max(1, min(kv_len, q0 + rows + offset))
                keys = []
                for k0, cols in split_ranges(end, tk):
                    additive = None
                    if kind == "additive":
                        additive = _broadcast_block_loader(
                            lowering, mask, mask_shape, (batch, heads, q_len, kv_len),
                            (b, h, q0, k0), rows, cols,
                        )  # fmt: skip
                    keys.append(KeyTile(
                        k.address + (kv_base + k0) * head_dim, v.address + (kv_base + k0) * value_dim,
                        cols, causal_offset=q0 + offset - k0 if causal else None,
                        key_mask=mask.address + b * kv_len + k0 if kind == "key_padding" else None,
                        additive=additive,
                    ))  # fmt: skip
                tiles.append(QueryTile(
                    q.address + ((b * heads + h) * q_len + q0) * head_dim, rows,
                    out.address + ((b * heads + h) * q_len + q0) * value_dim, keys,
                    elsa_key_row=mask.address + b * kv_len if kind == "key_padding" else None,
                ))  # fmt: skip
    emit_attention_tiles(lowering, shape, tiles, tq, tk)


def _elsa_selection(
    lowering: Lowering,
    shape: AttentionShape,
    tile: QueryTile,
    key: KeyTile,
    q_address: int,
    k_address: int,
    mask_address: int,
    codes: int,
    phase: str = "whole",
    scanned: int | None = None,
    first: bool = False,
) -> Emitted:
    """ELSA's candidate filter for a query tile over one key tile: hash the keys (and the
    queries, unless a scan already did), then ELSA_SELECT: "whole" when the tile holds all the
    query's keys; over several tiles "scan" (each row's nearest visible distance, kept at
    scanned + rows) and then "select" per tile. The additive mask is 0 for a candidate, -inf
    otherwise."""
    rows, cols, bits = tile.rows, key.cols, shape.elsa_bits
    k_codes = codes + rows
    q_codes = scanned if scanned is not None else codes
    hashes = [(WGT, k_address, cols, k_codes)]
    if scanned is None or (phase == "scan" and first):
        hashes.insert(0, (ACT, q_address, rows, q_codes))
    for source, address, count, target in hashes:
        lowering.emit("HASH", dst=VEC, dst_addr=target, src=source, src_addr=address, proj=VEC,
                      proj_addr=shape.elsa_planes, rows=count, cols=shape.head_dim, bits=bits)  # fmt: skip
    key_row = 0
    if key.key_mask is not None:
        key_row = k_codes + cols
        lowering.load(VEC, key_row, key.key_mask, 1, cols, cols)
    return lowering.emit(
        "ELSA_SELECT", dst=VEC, dst_addr=mask_address, q=VEC, q_addr=q_codes, k=VEC, k_addr=k_codes,
        keys=VEC, keys_addr=key_row, has_keys=int(key.key_mask is not None), rows=rows, cols=cols,
        bits=bits, threshold=shape.elsa_threshold, causal=int(key.causal_offset is not None),
        row0=0, causal_offset=key.causal_offset or 0, phase=phase, first=int(first),
        nearest_addr=(scanned + rows) if scanned is not None else 0,
    )  # fmt: skip


def _broadcast_block_loader(
    lowering: Lowering,
    tensor: Tensor,
    shape: tuple[int, ...],
    full: tuple[int, int, int, int],
    position: tuple[int, int, int, int],
    rows: int,
    cols: int,
) -> Callable[[int], None]:
    """Loads rows [q0, q0 + rows) x keys [k0, k0 + cols) of the (b, h) score block of a mask
    broadcast to `full` into a vec address."""
    padded = (1,) * (4 - len(shape)) + tuple(shape)
    b, h, q0, k0 = position
    if padded[3] not in (1, full[3]):
        raise Unsupported(f"mask shape {shape}")
    if padded[3] == 1 and full[3] > 1:
        raise Unsupported("a mask broadcast along the key axis")
    strides = [int(np.prod(padded[i + 1 :])) for i in range(4)]
    base = (
        tensor.address
        + (b if padded[0] > 1 else 0) * strides[0]
        + (h if padded[1] > 1 else 0) * strides[1]
        + (q0 if padded[2] > 1 else 0) * strides[2]
        + k0
    )
    row_stride = strides[2] if padded[2] > 1 else 0

    def load(address: int) -> None:
        lowering.load(VEC, address, base, rows, cols, row_stride)

    return load


def _prepare_elsa(lowering: Lowering, op: cta.AttentionOp) -> None:
    bits = op.int_attr("elsa_bits", 0)
    if bits:
        planes = hash_planes(ox.shape_of(op.query)[3], bits, op.int_attr("elsa_seed", 0))
        lowering.hash_planes[op] = lowering.add_data(planes)


PREPARE[cta.AttentionOp] = _prepare_elsa
