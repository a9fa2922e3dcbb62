"""cta.keep_top on the accelerator: per (sequence, head) the ranks of the keys kept out of
clustering (cta-compress `keep-top`).

Per sequence (acc/vec slots alternating per sequence, tiles of tokens through act):
  query tiles  LOAD Q, GEMM qsum (1 x d) (+)= w (1 x rows) @ Q (rows x d), w the tile's key
               mask (self-attention with a mask) or ones
  key tiles    LOAD K, GEMM scores[p0:p0+rows] = K @ qsum^T; after the last, TOPK of the n scores
               (over the valid keys) and a STORE of the rank row
The sum of the valid queries replaces their mean: a positive factor does not change the ranking,
so the division is saved (the reference, runtime/compression.py `keep_top`, uses the mean; the
ranks differ only where two scores agree to rounding).
"""

from __future__ import annotations

from ctac.dialects import cta
from ctac.dialects import onnx as ox
from ctac.passes.lower_to_isa.core import Lowering, lowering
from ctac.passes.lower_to_isa.memory import ACC, ACT, VEC, Unsupported, split_ranges

MAX_ROWS = (1 << 16) - 1  # the row and column fields are 16 bits


@lowering(cta.KeepTopOp)
def lower_keep_top(lowering: Lowering, op: cta.KeepTopOp) -> None:
    """Two GEMMs per tile of queries / keys, then one TOPK per (sequence, head)."""
    batch, heads, nq, dim = ox.shape_of(op.query)
    n = ox.shape_of(op.key)[2]
    keep = op.int_attr("k")
    if n > MAX_ROWS or keep > MAX_ROWS:
        raise Unsupported(f"keep_top over {n} keys (at most {MAX_ROWS})")
    tile = min(lowering.half[ACT] // dim, max(nq, n), MAX_ROWS)
    if tile < 1:
        raise Unsupported(f"a token of {dim} features does not fit half of act")
    query, key = lowering.tensor(op.query), lowering.tensor(op.key)
    mask = lowering.tensor(op.mask) if op.mask is not None else None
    out = lowering.tensors[op.output]
    # The mask weighs the queries only when it describes them (self-attention).
    masked_queries = mask is not None and nq == n
    token_slots = lowering.stream(ACT, tile * dim)
    sum_slots, score_slots = lowering.stream(ACC, dim), lowering.stream(ACC, n)
    valid_slots, rank_slots = lowering.stream(VEC, n), lowering.stream(VEC, n)
    ones = lowering.stream(VEC, tile, depth=1).next() if not masked_queries else 0
    wrote_ones = False
    for sequence in range(batch * heads):
        b = sequence // heads
        qsum, scores = sum_slots.next(), score_slots.next()
        valid, rank = valid_slots.next(), rank_slots.next()
        for index, (p0, rows) in enumerate(split_ranges(nq, tile)):
            lowering.next_stage()
            source = token_slots.next()
            lowering.load(ACT, source, query.address + (sequence * nq + p0) * dim, rows, dim, dim)
            if mask is not None and index == 0:  # the whole key mask row, read by every tile
                lowering.load(VEC, valid, mask.address + b * n, 1, n, n)
            if not masked_queries and not wrote_ones:
                lowering.vec("copy", VEC, ones, (0, 0), 1, tile, bcast="imm", imm=1.0)
                wrote_ones = True
            weights = valid + p0 if masked_queries else ones
            lowering.emit(
                "GEMM", dst=ACC, dst_addr=qsum, a=VEC, a_addr=weights, b=ACT, b_addr=source,
                m=1, k=rows, n=dim, accumulate=int(index > 0),
            )  # fmt: skip
        tiles = list(split_ranges(n, tile))
        for index, (p0, rows) in enumerate(tiles):
            lowering.next_stage()
            source = token_slots.next()
            lowering.load(ACT, source, key.address + (sequence * n + p0) * dim, rows, dim, dim)
            # K @ qsum^T (rows x 1, laid out like a row): one weight fold of d x 1 through which
            # the keys stream, instead of ceil(rows / C) folds for qsum @ K^T.
            lowering.emit(
                "GEMM", dst=ACC, dst_addr=scores + p0, a=ACT, a_addr=source, b=ACC, b_addr=qsum,
                m=rows, k=dim, n=1,
            )  # fmt: skip
            if index < len(tiles) - 1:
                continue
            lowering.emit(
                "TOPK", dst=VEC, dst_addr=rank, src=ACC, src_addr=scores, valid_addr=valid,
                has_valid=int(mask is not None), cols=n, k=keep,
            )  # fmt: skip
            lowering.store(VEC, rank, out.address + sequence * n, 1, n, n)
