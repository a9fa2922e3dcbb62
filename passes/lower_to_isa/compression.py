"""Pooling (cta.pool) and recovery (cta.recover) over cluster tables of any length.

A cluster table has a row per token (n rows, m of them used), too many to keep on chip for long
sequences, so both ops work through windows of table rows, each a tile of a buffer:
- pool: per window of output rows, the token tiles are streamed and SCATTER_ADD (window=1)
  accumulates only the tokens whose cluster falls in the window, then a division by the members
  and a STORE. Clusters from cta.cluster are numbered by first token, so the members of row r sit
  at positions >= r: a window's token tiles start at the tile holding its first row.
- recover: per tile of tokens, the table is streamed in windows and GATHER_BUF (window=1) fills
  the rows whose cluster falls in the window. A token at position p belongs to a row <= p, so a
  tile's windows stop at its last position.
With one window (the table fits a buffer tile) neither op needs the window mode. Work on table
rows is sized by the clusters formed (dynamic, with the window's first row as offset, so a
window past the last cluster is skipped); the tokens themselves are streamed at their nominal size.
The clustering itself is in clustering.py."""

from __future__ import annotations

from xdsl.ir import SSAValue

from ctac.dialects import cta
from ctac.dialects import onnx as ox
from ctac.passes.lower_to_isa.core import Emitted, Lowering, dynamic_field, lowering
from ctac.passes.lower_to_isa.memory import ACC, ACT, VEC, WGT, Unsupported, elements, split_ranges

MAX_ROWS = (1 << 16) - 1  # the row fields are 16 bits


def cluster_of(value: SSAValue) -> cta.ClusterOp | None:
    """The cta.cluster whose clusters index `value`'s rows (through projections and pooling)."""
    for _ in range(4):
        owner = value.owner
        if isinstance(owner, cta.ClusterOp):
            return owner
        if isinstance(owner, cta.ProjectOp):
            value = owner.input
        elif isinstance(owner, cta.PoolOp):
            value = owner.ids
        elif (shared := _shared_key_centroids(owner)) is not None:
            return shared
        else:
            return None
    return None


def _shared_key_centroids(owner: object) -> cta.ClusterOp | None:
    """cta-compress `keys=shared`: per-head centroids (B, H, n, d) made by Transpose(0, 2, 1, 3)
    of Reshape((B, n, H, d)) of a clustering's (B, n, H*d) centroids keep the table's rows as
    their rows, so that clustering (per sequence) sizes the attention's key tiles."""
    if not isinstance(owner, ox.TransposeOp) or owner.permutation() != (0, 2, 1, 3):
        return None
    split = owner.data.owner
    if not isinstance(split, ox.ReshapeOp):
        return None
    cluster = split.data.owner
    if not isinstance(cluster, cta.ClusterOp) or split.data is not cluster.centroids:
        return None
    b, n, width = ox.shape_of(split.data)
    shape = ox.shape_of(split.reshaped)
    if len(shape) != 4 or shape[:2] != (b, n) or shape[2] * shape[3] != width:
        return None
    return cluster


def _ids_row(lead: tuple[int, ...], ids_lead: tuple[int, ...], sequence: int) -> int:
    """The row of the ids ((..., n), or (batch, n) shared by the heads) for `sequence` of lead;
    also the row of shared pool tokens (batch, n, d) under per-head ids."""
    if tuple(ids_lead) == tuple(lead):
        return sequence
    if len(ids_lead) == 1 and lead and ids_lead[0] == lead[0]:
        return sequence // (elements(lead) // lead[0])
    raise Unsupported(f"ids of shape {ids_lead} do not index rows with leading dims {lead}")


def _clusters(lowering: Lowering, ids: SSAValue, row: int) -> Emitted | None:
    """The instruction whose count of clusters sizes the table rows of ids row `row`."""
    found = lowering.cluster_instructions.get(cluster_of(ids), [])
    return found[row] if row < len(found) else None


def _by_first_token(ids: SSAValue) -> bool:
    """ids straight from cta.cluster: a token's row is never after its position."""
    return isinstance(ids.owner, cta.ClusterOp)


@lowering(cta.PoolOp)
def lower_pool(lowering: Lowering, op: cta.PoolOp) -> None:
    """Per sequence and window of output rows: token tiles SCATTER_ADDed into the window's sums
    and member counts (alternating per window), then sums / max(members, 1) and a STORE. Tokens
    (B, n, d) shared by per-head ids (B, H, n) are streamed once per (batch, head) table."""
    shape = ox.shape_of(op.output)
    lead, (n, dim) = shape[:-2], shape[-2:]
    tokens_lead, stride = ox.shape_of(op.tokens)[:-2], ox.shape_of(op.tokens)[-2]
    ids_lead = ox.shape_of(op.ids)[:-1]
    tokens, ids, out = (
        lowering.tensor(op.tokens),
        lowering.tensor(op.ids),
        lowering.tensors[op.output],
    )
    window = min(n, lowering.half[ACC] // dim, MAX_ROWS)
    tile = min(n, lowering.half[ACT] // dim, (lowering.half[VEC] - window) // 3, MAX_ROWS)
    if window < 1 or tile < 1:
        raise Unsupported(f"a row of {dim} features does not fit half of acc and of act")
    windows = list(split_ranges(n, window))
    mode = {"window": int(len(windows) > 1)}
    sum_slots, member_slots = lowering.stream(ACC, window * dim), lowering.stream(VEC, window)
    token_slots, id_slots = lowering.stream(ACT, tile * dim), lowering.stream(VEC, tile)
    ones = lowering.stream(VEC, tile, depth=1).next()  # written once, read by every tile
    ordered = _by_first_token(op.ids)
    wrote_ones = False
    for sequence in range(elements(lead)):
        row = _ids_row(lead, ids_lead, sequence)
        token_row = _ids_row(lead, tokens_lead, sequence)
        clusters = _clusters(lowering, op.ids, row)
        for w0, rows in windows:
            sums, members = sum_slots.next(), member_slots.next()
            tiles = [
                (p0, count) for p0, count in split_ranges(n, tile) if not ordered or p0 + count > w0
            ]
            for index, (p0, count) in enumerate(tiles):
                lowering.next_stage()
                source, column = token_slots.next(), id_slots.next()
                lowering.load(
                    ACT, source, tokens.address + (token_row * stride + p0) * dim, count, dim, dim
                )
                lowering.load(VEC, column, ids.address + row * n + p0, count, 1, 1)
                if not wrote_ones:
                    lowering.vec("copy", VEC, ones, (0, 0), tile, 1, bcast="imm", imm=1.0)
                    wrote_ones = True
                if index == 0:
                    lowering.vec("copy", ACC, sums, (0, 0), rows, dim, bcast="imm", imm=0.0)
                    dynamic_field(lowering, "rows", clusters, w0)
                    lowering.vec("copy", VEC, members, (0, 0), rows, 1, bcast="imm", imm=0.0)
                    dynamic_field(lowering, "rows", clusters, w0)
                # The tokens into the sums, a column of ones into the member counts.
                for dst, dst_addr, src, src_addr, cols in (
                    (ACC, sums, ACT, source, dim),
                    (VEC, members, VEC, ones, 1),
                ):
                    lowering.emit(
                        "SCATTER_ADD", dst=dst, dst_addr=dst_addr, src=src, src_addr=src_addr,
                        idx=VEC, idx_addr=column, rows=count, cols=cols, dst_rows=rows, base=w0,
                        **mode,
                    )  # fmt: skip
                    dynamic_field(lowering, "dst_rows", clusters, w0)
                if index < len(tiles) - 1:
                    continue
                lowering.vec("max", VEC, members, (VEC, members), rows, 1, bcast="imm", imm=1.0)
                dynamic_field(lowering, "rows", clusters, w0)
                lowering.vec(
                    "div", ACC, sums, (ACC, sums), rows, dim, b=(VEC, members), bcast="col"
                )
                dynamic_field(lowering, "rows", clusters, w0)
                lowering.store(ACC, sums, out.address + (sequence * n + w0) * dim, rows, dim, dim)
                dynamic_field(lowering, "rows", clusters, w0)


@lowering(cta.RecoverOp)
def lower_recover(lowering: Lowering, op: cta.RecoverOp) -> None:
    """Per sequence and tile of tokens: the ids, then per window of the table a LOAD and a
    GATHER_BUF into the tile's rows (alternating per token tile), then one STORE."""
    shape = ox.shape_of(op.output)
    lead, (n, dim) = shape[:-2], shape[-2:]
    ids_lead = ox.shape_of(op.ids)[:-1]
    table_rows = ox.shape_of(op.rows)[-2]
    table, ids, out = lowering.tensor(op.rows), lowering.tensor(op.ids), lowering.tensors[op.output]
    window = min(table_rows, lowering.half[ACT] // dim, MAX_ROWS)
    tile = min(n, lowering.half[WGT] // dim, lowering.half[VEC], MAX_ROWS)
    if window < 1 or tile < 1:
        raise Unsupported(f"a row of {dim} features does not fit half of act and of wgt")
    windows = list(split_ranges(table_rows, window))
    mode = {"window": int(len(windows) > 1)}
    window_slots = lowering.stream(ACT, window * dim)
    target_slots, id_slots = lowering.stream(WGT, tile * dim), lowering.stream(VEC, tile)
    ordered = _by_first_token(op.ids)
    for sequence in range(elements(lead)):
        row = _ids_row(lead, ids_lead, sequence)
        clusters = _clusters(lowering, op.ids, row)
        for p0, count in split_ranges(n, tile):
            target, column = target_slots.next(), id_slots.next()
            needed = [(w0, rows) for w0, rows in windows if not ordered or w0 < p0 + count]
            for index, (w0, rows) in enumerate(needed):
                lowering.next_stage()
                if index == 0:
                    lowering.load(VEC, column, ids.address + row * n + p0, count, 1, 1)
                source = window_slots.next()
                lowering.load(
                    ACT, source, table.address + (sequence * table_rows + w0) * dim, rows, dim, dim
                )
                dynamic_field(lowering, "rows", clusters, w0)
                lowering.emit(
                    "GATHER_BUF", dst=WGT, dst_addr=target, src=ACT, src_addr=source, idx=VEC,
                    idx_addr=column, rows=count, cols=dim, src_rows=rows, base=w0, **mode,
                )  # fmt: skip
                dynamic_field(lowering, "src_rows", clusters, w0)
                if index == len(needed) - 1:
                    lowering.store(
                        WGT, target, out.address + (sequence * n + p0) * dim, count, dim, dim
                    )
