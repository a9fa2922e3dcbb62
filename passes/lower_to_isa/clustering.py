"""Clustering on the accelerator (cta.cluster): tokens stream through in tiles, HASH gives each
its bucket, CLUSTER clusters each tile against the cluster unit's table, which persists across
the tiles of a sequence, and CLUSTER_READ reads the finished table out in tiles.

A unit is what one table clusters: a sequence, or a block of positions of a causal clustering
(`block`). Per tile of tokens (act; codes, validity and ids in vec):
  stage 0  LOAD the tokens (and the tile's rows of the key mask)
  stage 1  HASH (codes), CLUSTER per unit the tile holds (first=1 on a unit's first tokens), the
           block offset added to a causal block's ids, and CLUSTER_READ of every unit the tile
           completes when the unit fits one tile (centroids to wgt, counts to vec)
  stage 2  STORE ids (and those centroids and counts)
A unit longer than a tile is clustered over several tiles and read out after its last one, in
tiles of rows of their own (CLUSTER_READ at stage 1, STOREs at stage 2). The table lives in the
cluster unit, not in a buffer: its SRAM holds `resident` rows, later rows spill to a DRAM scratch
region that CLUSTER and CLUSTER_READ stream themselves (docs/compression.md). So any length
compiles whenever a tile of one token fits; the partition is the reference's
(runtime/compression.py), rows numbered by first token.

Order: the table is the unit's state, so every cluster-unit instruction stays at stage 1, where
the skewed schedule keeps program order across tiles (a table is read out before the next unit's
first=1). The pipeline's dependence check sees buffers only; this is what keeps the table right.

Dynamic sizes: CLUSTER's `scan` is its own measured comparisons per token and `table_rows` the
unit's clusters (a bound on the rows before the chunk); CLUSTER_READ's rows and the centroid
STOREs are the clusters less the tile's first row (a tile past the last cluster is skipped).
The consumers (pool, compressed attention, recover) size their work by a sequence's first
CLUSTER_READ: `lowering.cluster_instructions[op][sequence]` (non-causal clusterings), or a causal
block's: `lowering.block_readouts[op][sequence, block start]`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from xdsl.ir import SSAValue

from ctac.dialects import cta
from ctac.dialects import onnx as ox
from ctac.passes.lower_to_isa.core import PREPARE, Emitted, Lowering, lowering
from ctac.passes.lower_to_isa.memory import ACT, VEC, WGT, Unsupported, elements, split_ranges
from ctac.runtime import isa
from ctac.runtime.compression import hash_planes

MAX_ROWS = (1 << 16) - 1  # the row fields are 16 bits


def _prepare_cluster(lowering: Lowering, op: cta.ClusterOp) -> None:
    method = op.str_attr("method")
    if method not in ("hash-leader", "leader") or op.int_attr("max_clusters", 0):
        return
    bits = op.int_attr("hash_bits") if method == "hash-leader" else 0
    if bits:
        dim = ox.shape_of(op.tokens)[-1]
        lowering.hash_planes[op] = lowering.add_data(hash_planes(dim, bits, op.int_attr("seed")))


PREPARE[cta.ClusterOp] = _prepare_cluster


@dataclass(frozen=True)
class Segment:
    """The tokens [start, start + rows) of a sequence, inside the unit [unit, unit + size)."""

    sequence: int
    unit: int
    size: int
    start: int
    rows: int

    @property
    def first(self) -> bool:
        return self.start == self.unit

    @property
    def last(self) -> bool:
        return self.start + self.rows == self.unit + self.size


def plan_tiles(sequences: int, n: int, unit: int, tile: int) -> list[list[Segment]]:
    """Tiles of at most `tile` consecutive tokens (sequences back to back, as in DRAM): units
    that fit a tile are packed whole, a longer unit gets tiles of its own."""
    tiles: list[list[Segment]] = []
    current: list[Segment] = []
    for sequence in range(sequences):
        for start, size in split_ranges(n, unit):
            if size > tile:
                if current:
                    tiles.append(current)
                    current = []
                tiles += [[Segment(sequence, start, size, start + p, rows)]
                          for p, rows in split_ranges(size, tile)]  # fmt: skip
                continue
            if sum(s.rows for s in current) + size > tile:
                tiles.append(current)
                current = []
            current.append(Segment(sequence, start, size, start, size))
    if current:
        tiles.append(current)
    return tiles


def table_rows_resident(lowering: Lowering, dim: int, unit: int) -> int:
    """Rows of a `dim`-feature table the cluster unit's SRAM holds (the rest spill to DRAM)."""
    capacity = isa.cluster_table_capacity(lowering.hw.view(), dim)
    if capacity < 1:
        raise Unsupported(f"one table row of {dim} features does not fit the cluster unit's table")
    return min(unit, capacity)


@lowering(cta.ClusterOp)
def lower_cluster(lowering: Lowering, op: cta.ClusterOp) -> None:
    """Tiles of tokens through HASH and CLUSTER against the unit's table, then CLUSTER_READ."""
    method = op.str_attr("method")
    if method not in ("hash-leader", "leader") or op.int_attr("max_clusters", 0):
        raise Unsupported(
            f"clustering method '{method}' (or max_clusters) has no CLUSTER form; use hash-leader"
        )
    shape = ox.shape_of(op.tokens)
    lead, (stride, dim) = shape[:-2], shape[-2:]  # `stride` tokens per sequence in DRAM
    n = cta.clustered_positions(op)  # of which the first n are clustered (a causal prefix)
    block = op.int_attr("block", 0)
    unit = block if 0 < block < n else n
    if unit > MAX_ROWS:
        raise Unsupported(f"a clustering of {unit} tokens (at most {MAX_ROWS} per table)")
    bits = op.int_attr("hash_bits") if method == "hash-leader" else 0
    window = op.int_attr("window", 0)
    if window > isa.MAX_CLUSTER_WINDOW:
        raise Unsupported(
            f"a window of {window} rows (CLUSTER holds at most {isa.MAX_CLUSTER_WINDOW})"
        )
    resident = table_rows_resident(lowering, dim, unit)
    tile = min(
        lowering.half[ACT] // dim,
        lowering.half[WGT] // dim,
        lowering.half[VEC] // (5 if op.alone is not None else 4),  # (3 + 2) columns x 2 slots
        n,
        MAX_ROWS,
    )
    if tile < 1:
        raise Unsupported(f"a token of {dim} features does not fit half of act and of wgt")
    tokens = lowering.tensor(op.tokens)
    centroids, counts, ids = (lowering.tensors[r] for r in op.results)
    mask = lowering.tensor(op.mask) if op.mask is not None else None
    planes = None
    if bits:
        planes = lowering.persistent(dim * bits)
        lowering.load(VEC, planes, lowering.hash_planes[op], dim, bits, bits)
    token_slots, table_slots = lowering.stream(ACT, tile * dim), lowering.stream(WGT, tile * dim)
    # Codes and validity are read at stage 1; ids and counts written there and stored at stage 2.
    # With `alone` (cta.keep_top's ranks) a third input column: a kept token's code becomes
    # code + rank * 2^bits, a code no other token has, so it sits alone in its group.
    alone = lowering.tensor(op.alone) if op.alone is not None else None
    in_columns = 3 if alone is not None else 2
    in_slots = lowering.stream(VEC, in_columns * tile)
    out_slots = lowering.stream(VEC, 2 * tile)
    spill_size = (unit - resident) * isa.cluster_row_elements(dim)
    spill = lowering.arena.allocate(spill_size) if spill_size else 0
    table = {"cols": dim, "spill": spill, "resident": resident}
    readouts = lowering.cluster_instructions.setdefault(op, []) if unit == n else []
    block_readouts = lowering.block_readouts.setdefault(op, {}) if block > 0 else {}
    continued: list[Emitted] = []  # the current unit's CLUSTERs after its first
    first_readout: list[Emitted] = []  # the current unit's first CLUSTER_READ

    stores: list[tuple[int, int, int, Emitted, int]] = []  # a tile's centroid STOREs

    def read_out(slot: int, counts_at: int, segment: Segment, row0: int, rows: int) -> None:
        """CLUSTER_READ of table rows [row0, row0 + rows) into `slot`; their STORE is queued
        (issued after the tile's last CLUSTER_READ, so stage 2 never passes a later READ)."""
        lowering.emit("CLUSTER_READ", dst=WGT, dst_addr=slot, counts_addr=counts_at, row0=row0,
                      rows=rows, **table)  # fmt: skip
        if row0 == 0:
            first_readout[:] = [lowering.last]
        readout = first_readout[0]
        lowering.dynamic_last("rows", readout, row0)
        if row0 == 0:
            if segment.unit == 0 and unit == n:
                readouts.append(readout)
            if block > 0:
                block_readouts[segment.sequence, segment.unit] = readout
            for cluster in continued:  # rows before each chunk: at most the unit's clusters
                cluster.dynamic.append(("table_rows", readout, 0))
            continued.clear()
        stores.append((slot, segment.sequence * n + segment.unit + row0, rows, readout, row0))

    def store_centroids() -> None:
        for slot, flat, rows, readout, row0 in stores:
            lowering.store(WGT, slot, centroids.address + flat * dim, rows, dim, dim)
            lowering.dynamic_last("rows", readout, row0)
        stores.clear()

    for segments in plan_tiles(elements(lead), n, unit, tile):
        lowering.next_stage()
        head, total = segments[0], sum(s.rows for s in segments)
        flat0 = head.sequence * n + head.start
        source, slot = token_slots.next(), table_slots.next()
        codes, id_column = in_slots.next(), out_slots.next()
        valid, count_row = codes + tile, id_column + tile
        if n == stride:  # sequences back to back in DRAM: one LOAD
            lowering.load(ACT, source, tokens.address + flat0 * dim, total, dim, dim)
        else:  # a prefix of each sequence: a LOAD per sequence the tile spans
            filled = 0
            for sequence, start, rows in sequence_runs(segments):
                address = tokens.address + (sequence * stride + start) * dim
                lowering.load(ACT, source + filled * dim, address, rows, dim, dim)
                filled += rows
        if alone is not None:
            _load_token_column(lowering, op.alone, alone, codes + 2 * tile, segments, lead, stride)
        if mask is not None:
            _load_token_column(lowering, op.mask, mask, valid, segments, lead, stride)
        if planes is not None:
            lowering.emit("HASH", dst=VEC, dst_addr=codes, src=ACT, src_addr=source, proj=VEC,
                          proj_addr=planes, rows=total, cols=dim, bits=bits)  # fmt: skip
        else:
            lowering.vec("copy", VEC, codes, (0, 0), total, 1, bcast="imm", imm=0.0)
        if alone is not None:
            ranks = codes + 2 * tile
            lowering.vec(
                "mul", VEC, ranks, (VEC, ranks), total, 1, bcast="imm", imm=float(1 << bits)
            )
            lowering.vec("add", VEC, codes, (VEC, codes), total, 1, b=(VEC, ranks), bcast="full")
        offset = 0
        for segment in segments:
            before = segment.start - segment.unit
            lowering.emit(
                "CLUSTER", src_addr=source + offset * dim, codes_addr=codes + offset,
                valid_addr=valid + offset, has_valid=int(mask is not None),
                ids_addr=id_column + offset, rows=segment.rows, threshold=op.float_attr("tau"),
                first=int(segment.first), table_rows=min(before, MAX_ROWS),
                scan=min(before + segment.rows - 1, window or MAX_ROWS, MAX_ROWS),
                window=window, **table,
            )  # fmt: skip
            cluster = lowering.last
            lowering.dynamic_last("scan", cluster)
            if not segment.first:
                continued.append(cluster)
            if segment.unit:  # a causal block's rows start at its first position
                lowering.vec("add", VEC, id_column + offset, (VEC, id_column + offset),
                             segment.rows, 1, bcast="imm", imm=float(segment.unit))  # fmt: skip
            if segment.last and segment.size <= tile:
                read_out(slot + offset * dim, count_row + offset, segment, 0, segment.size)
            offset += segment.rows
        lowering.store(VEC, id_column, ids.address + flat0, total, 1, 1)
        store_centroids()
        if segments[-1].size <= tile:  # units read out inline: their counts, all at once
            lowering.store(VEC, count_row, counts.address + flat0, 1, total, total)
            continue
        if not head.last:
            continue
        for row0, rows in split_ranges(head.size, tile):
            lowering.next_stage()
            slot, count_row = table_slots.next(), out_slots.next() + tile
            read_out(slot, count_row, head, row0, rows)
            store_centroids()
            flat = head.sequence * n + head.unit + row0
            lowering.store(VEC, count_row, counts.address + flat, 1, rows, rows)
    if spill_size:
        lowering.arena.release(spill, spill_size)


def sequence_runs(segments: list[Segment]) -> list[tuple[int, int, int]]:
    """(sequence, first position, tokens) of each run of a tile's segments from one sequence:
    what one LOAD per sequence brings in."""
    runs = []
    for sequence, run in itertools.groupby(segments, key=lambda s: s.sequence):
        run = list(run)
        runs.append((sequence, run[0].start, sum(s.rows for s in run)))
    return runs


def _load_token_column(
    lowering: Lowering, value: SSAValue, tensor, column: int, segments: list, lead: tuple, n: int
) -> None:
    """One value per token of the tile (a mask or the kept-alone ranks, laid out (..., n) or
    (batch, n)) into the vec column at `column`, a LOAD per sequence the tile spans."""
    offset = 0
    for sequence, start, rows in sequence_runs(segments):
        row = _mask_row(ox.shape_of(value), lead, sequence)
        lowering.load(VEC, column + offset, tensor.address + row * n + start, rows, 1, 1)
        offset += rows


def _mask_row(mask_shape: tuple[int, ...], lead: tuple[int, ...], sequence: int) -> int:
    """The row of a (..., n) or (batch, n) mask that describes sequence `sequence` of `lead`."""
    if tuple(mask_shape[:-1]) == tuple(lead):
        return sequence
    return int(np.unravel_index(sequence, lead)[0]) if lead else 0
