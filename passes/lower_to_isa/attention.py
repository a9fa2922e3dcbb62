"""Exact and ELSA attention (cta.attention): per (batch, head), per block of queries, S = Q K^T,
SOFTMAX, O = P V."""

from __future__ import annotations

import numpy as np

from ctac.dialects import cta
from ctac.dialects import onnx as ox
from ctac.passes.lower_to_isa.core import PREPARE, Lowering, dynamic_field, lowering
from ctac.passes.lower_to_isa.memory import ACC, ACT, VEC, WGT, Tensor, Unsupported, split_ranges


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
) -> None:
    """O = P V for one head: probabilities in ACT, values in WGT, the output into ACC."""
    lowering.emit(
        "GEMM", dst=ACC, dst_addr=o_address, a=ACT, a_addr=p_address, b=WGT, b_addr=v_address,
        m=rows, k=keys, n=value_dim,
    )  # fmt: skip


@lowering(cta.AttentionOp)
def lower_attention(lowering: Lowering, op: cta.AttentionOp) -> None:
    """Per (batch, head), per block of queries: S = Q K^T (GEMM, K transposed), P = SOFTMAX(S)
    with scale, softcap, mask and causal frontier, O = P V (GEMM)."""
    q, k, v = (lowering.tensor(x) for x in (op.query, op.key, op.value))
    out = lowering.tensors[op.output]
    batch, heads, q_len, head_dim = ox.shape_of(op.query)
    kv_heads, kv_len = ox.shape_of(op.key)[1], ox.shape_of(op.key)[2]
    value_dim = ox.shape_of(op.value)[3]
    group = heads // kv_heads
    if kv_len * (head_dim + value_dim) > lowering.half[WGT]:
        raise Unsupported(
            f"keys and values of {kv_len} tokens do not fit half of wgt; key tiling is not implemented"
        )
    # Q and P share an act half, S and O an acc half, an additive mask block a vec half.
    rows = min(
        q_len,
        lowering.half[ACC] // (kv_len + value_dim),
        lowering.half[ACT] // (kv_len + head_dim),
        lowering.half[VEC] // (kv_len + 1),
    )
    if rows < 1:
        raise Unsupported(f"one query row over {kv_len} keys does not fit the buffer halves")
    kind = op.str_attr("mask_kind", "none")
    elsa_bits = op.int_attr("elsa_bits", 0)
    if elsa_bits and kind == "additive":
        raise Unsupported("ELSA filtering of an attention with an additive mask")
    mask = lowering.tensor(op.mask) if op.mask is not None else None
    mask_shape = ox.shape_of(op.mask) if op.mask is not None else ()
    causal = bool(op.int_attr("causal", 0))
    offset = op.int_attr("causal_offset", kv_len - q_len)
    planes = key_codes = 0
    if elsa_bits:
        planes = lowering.persistent(head_dim * elsa_bits)
        lowering.load(VEC, planes, lowering.hash_planes[op], head_dim, elsa_bits, elsa_bits)
        key_codes = lowering.persistent(kv_len)
    kept = lowering.persistent_top  # the hash planes and key codes live through every batch
    lowering.pipeline.ordered = True  # K and V live through a head's query tiles
    for b in range(batch):
        key_row = None
        if kind == "key_padding":
            key_row = lowering.persistent(kv_len)
            lowering.load(VEC, key_row, mask.address + b * kv_len, 1, kv_len, kv_len)
        for h in range(heads):
            lowering.next_stage()
            kv = h // group
            k_address = lowering.slot(WGT)
            v_address = k_address + kv_len * head_dim
            lowering.load(
                WGT,
                k_address,
                k.address + (b * kv_heads + kv) * kv_len * head_dim,
                kv_len,
                head_dim,
                head_dim,
            )
            lowering.load(
                WGT,
                v_address,
                v.address + (b * kv_heads + kv) * kv_len * value_dim,
                kv_len,
                value_dim,
                value_dim,
            )
            if elsa_bits:
                lowering.emit(
                    "HASH",
                    dst=VEC,
                    dst_addr=key_codes,
                    src=WGT,
                    src_addr=k_address,
                    proj=VEC,
                    proj_addr=planes,
                    rows=kv_len,
                    cols=head_dim,
                    bits=elsa_bits,
                )
            for q0, count in split_ranges(q_len, rows):
                lowering.next_stage()
                q_address = lowering.slot(ACT)
                s_address = lowering.slot(ACC)
                lowering.load(
                    ACT,
                    q_address,
                    q.address + ((b * heads + h) * q_len + q0) * head_dim,
                    count,
                    head_dim,
                    head_dim,
                )
                selection = None
                if elsa_bits:
                    q_codes, elsa_mask = lowering.slot(VEC), lowering.slot(VEC) + count
                    lowering.emit(
                        "HASH",
                        dst=VEC,
                        dst_addr=q_codes,
                        src=ACT,
                        src_addr=q_address,
                        proj=VEC,
                        proj_addr=planes,
                        rows=count,
                        cols=head_dim,
                        bits=elsa_bits,
                    )
                    selection = lowering.emit(
                        "ELSA_SELECT", dst=VEC, dst_addr=elsa_mask, q=VEC, q_addr=q_codes, k=VEC, k_addr=key_codes,
                        keys=VEC, keys_addr=key_row or 0, has_keys=int(key_row is not None), rows=count, cols=kv_len,
                        bits=elsa_bits, threshold=op.float_attr("elsa_threshold"), causal=int(causal), row0=q0,
                        causal_offset=offset,
                    )  # fmt: skip
                emit_scores(lowering, s_address, q_address, k_address, count, head_dim, kv_len)
                dynamic_field(lowering, "n", selection)
                mask_mode, mask_address = "none", 0
                if selection is not None:
                    mask_mode, mask_address = "additive", elsa_mask
                elif kind == "key_padding":
                    mask_mode, mask_address = "keys", key_row
                elif kind == "additive":
                    mask_mode, mask_address = "additive", lowering.slot(VEC)
                    _load_broadcast_block(
                        lowering,
                        mask,
                        mask_shape,
                        (batch, heads, q_len, kv_len),
                        (b, h, q0),
                        count,
                        mask_address,
                    )
                p_address = lowering.slot(ACT) + count * head_dim
                lowering.emit(
                    "SOFTMAX", dst=ACT, dst_addr=p_address, src=ACC, src_addr=s_address, rows=count, cols=kv_len,
                    scale=op.float_attr("scale"), softcap=op.float_attr("softcap", 0.0), mask=mask_mode,
                    mask_buf=VEC, mask_addr=mask_address, causal=int(causal), row0=q0, causal_offset=offset,
                )  # fmt: skip
                dynamic_field(lowering, "cols", selection)
                o_address = s_address + count * kv_len
                if o_address + count * value_dim > lowering.slot(ACC) + lowering.half[ACC]:
                    o_address = lowering.slot(ACC)
                emit_weighted_values(
                    lowering, o_address, p_address, v_address, count, kv_len, value_dim
                )
                dynamic_field(lowering, "k", selection)
                lowering.store(
                    ACC,
                    o_address,
                    out.address + ((b * heads + h) * q_len + q0) * value_dim,
                    count,
                    value_dim,
                    value_dim,
                )
        lowering.persistent_top = kept


def _load_broadcast_block(
    lowering: Lowering,
    tensor: Tensor,
    shape: tuple[int, ...],
    full: tuple[int, int, int, int],
    position: tuple[int, int, int],
    rows: int,
    address: int,
) -> None:
    """Load rows [q0, q0+rows) of the (b, h) score block of a mask broadcast to `full`."""
    padded = (1,) * (4 - len(shape)) + tuple(shape)
    b, h, q0 = position
    cols = full[3]
    if padded[3] not in (1, cols):
        raise Unsupported(f"mask shape {shape}")
    strides = [int(np.prod(padded[i + 1 :])) for i in range(4)]
    base = (
        tensor.address
        + (b if padded[0] > 1 else 0) * strides[0]
        + (h if padded[1] > 1 else 0) * strides[1]
    )
    if padded[3] == 1 and cols > 1:
        raise Unsupported("a mask broadcast along the key axis")
    row_stride = strides[2] if padded[2] > 1 else 0
    lowering.load(
        VEC, address, base + (q0 if padded[2] > 1 else 0) * strides[2], rows, cols, row_stride
    )


def _prepare_elsa(lowering: Lowering, op: cta.AttentionOp) -> None:
    from ctac.runtime.compression import hash_planes

    bits = op.int_attr("elsa_bits", 0)
    if bits:
        planes = hash_planes(ox.shape_of(op.query)[3], bits, op.int_attr("elsa_seed", 0)).astype(
            np.float32
        )
        lowering.data.append((lowering.data_top, planes.size, None, planes))
        lowering.hash_planes[op] = lowering.data_top
        lowering.data_top += planes.size


PREPARE[cta.AttentionOp] = _prepare_elsa
