"""Compressed attention (cta-compress output): CLUSTER per sequence, pooling, attention over
count-weighted centroids (and block-causal), recovery; work sized by clusters is recorded as
dynamic so the cost model charges what the data decided."""

from __future__ import annotations

import numpy as np
from xdsl.ir import SSAValue

from ctac.dialects import cta
from ctac.dialects import onnx as ox
from ctac.passes.lower_to_isa.core import PREPARE, Lowering, lowering
from ctac.passes.lower_to_isa.memory import ACC, ACT, VEC, WGT, Unsupported, elements, split_ranges


def _sequences(shape: tuple[int, ...]) -> int:
    return elements(shape[:-2])


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
        else:
            return None
    return None


def _prepare_cluster(lowering: Lowering, op: cta.ClusterOp) -> None:
    from ctac.runtime.compression import hash_planes

    method = op.str_attr("method")
    if method not in ("hash-leader", "leader") or op.int_attr("max_clusters", 0):
        return
    bits = op.int_attr("hash_bits") if method == "hash-leader" else 0
    if bits:
        dim = ox.shape_of(op.tokens)[-1]
        planes = hash_planes(dim, bits, op.int_attr("seed")).astype(np.float32)
        address = lowering.data_top
        lowering.data.append((address, planes.size, None, planes))
        lowering.data_top += planes.size
        lowering.hash_planes[op] = address


PREPARE[cta.ClusterOp] = _prepare_cluster


@lowering(cta.ClusterOp)
def lower_cluster(lowering: Lowering, op: cta.ClusterOp) -> None:
    """Per sequence (and per block of positions, for causal attention): LOAD tokens, HASH into
    buckets, CLUSTER, then STORE centroids, counts and ids. A block's clusters live in the rows
    of that block, so its ids are offset by the block's first row."""
    method = op.str_attr("method")
    if method not in ("hash-leader", "leader") or op.int_attr("max_clusters", 0):
        raise Unsupported(
            f"clustering method '{method}' (or max_clusters) has no CLUSTER form; use hash-leader"
        )
    shape = ox.shape_of(op.tokens)
    n, dim = shape[-2], shape[-1]
    block = op.int_attr("block", 0) or n
    bits = op.int_attr("hash_bits") if method == "hash-leader" else 0
    if (
        n * dim > lowering.half[ACT]
        or 3 * n + n * dim > lowering.half[VEC]
        or n * dim > lowering.half[WGT]
    ):
        raise Unsupported(f"{n} tokens of {dim} features do not fit the buffers")
    tokens = lowering.tensor(op.tokens)
    centroids, counts, ids = (lowering.tensors[r] for r in op.results)
    mask = lowering.tensor(op.mask) if op.mask is not None else None
    lead = shape[:-2]
    planes = None
    if bits:
        planes = lowering.persistent(dim * bits)
        lowering.load(VEC, planes, lowering.hash_planes[op], dim, bits, bits)
    indices = lowering.cluster_instructions.setdefault(op, [])
    for sequence in range(_sequences(shape)):
        lowering.next_stage()
        source, base = lowering.slot(ACT), lowering.slot(VEC)
        codes, valid, count_row, id_column = base, base + n, base + 2 * n, base + 3 * n
        table = lowering.slot(WGT)
        lowering.load(ACT, source, tokens.address + sequence * n * dim, n, dim, dim)
        if planes is not None:
            lowering.emit(
                "HASH",
                dst=VEC,
                dst_addr=codes,
                src=ACT,
                src_addr=source,
                proj=VEC,
                proj_addr=planes,
                rows=n,
                cols=dim,
                bits=bits,
            )
        else:
            lowering.vec("copy", VEC, codes, (0, 0), n, 1, bcast="imm", imm=0.0)
        if mask is not None:
            batch = int(np.unravel_index(sequence, lead)[0]) if lead else 0
            lowering.load(VEC, valid, mask.address + batch * n, n, 1, 1)
        for start, rows in split_ranges(n, block):
            cluster = lowering.emit(
                "CLUSTER", src=ACT, src_addr=source + start * dim, codes=VEC, codes_addr=codes + start,
                valid=VEC, valid_addr=valid + start, has_valid=int(mask is not None), centroids=WGT,
                centroids_addr=table + start * dim, counts=VEC, counts_addr=count_row + start, ids=VEC,
                ids_addr=id_column + start, rows=rows, cols=dim, threshold=op.float_attr("tau"),
            )  # fmt: skip
            if block == n:
                indices.append(cluster)
            if start:
                lowering.vec(
                    "add",
                    VEC,
                    id_column + start,
                    (VEC, id_column + start),
                    rows,
                    1,
                    bcast="imm",
                    imm=float(start),
                )
        lowering.store(WGT, table, centroids.address + sequence * n * dim, n, dim, dim)
        if block == n:
            lowering.dynamic_last("rows", indices[-1])
        lowering.store(VEC, count_row, counts.address + sequence * n, 1, n, n)
        lowering.store(VEC, id_column, ids.address + sequence * n, n, 1, 1)


@lowering(cta.PoolOp)
def lower_pool(lowering: Lowering, op: cta.PoolOp) -> None:
    """Per sequence: value rows summed into their cluster's row (SCATTER_ADD), divided by members."""
    shape = ox.shape_of(op.tokens)
    n, dim = shape[-2], shape[-1]
    tokens, ids, out = (
        lowering.tensor(op.tokens),
        lowering.tensor(op.ids),
        lowering.tensors[op.output],
    )
    clusters = lowering.cluster_instructions.get(cluster_of(op.ids), [])
    for sequence in range(_sequences(shape)):
        lowering.next_stage()
        source, sums, base = lowering.slot(ACT), lowering.slot(ACC), lowering.slot(VEC)
        id_column, ones, members = base, base + n, base + 2 * n
        lowering.load(ACT, source, tokens.address + sequence * n * dim, n, dim, dim)
        lowering.load(VEC, id_column, ids.address + sequence * n, n, 1, 1)
        lowering.vec("copy", ACC, sums, (0, 0), n, dim, bcast="imm", imm=0.0)
        lowering.vec("copy", VEC, ones, (0, 0), n, 1, bcast="imm", imm=1.0)
        lowering.vec("copy", VEC, members, (0, 0), n, 1, bcast="imm", imm=0.0)
        lowering.emit(
            "SCATTER_ADD",
            dst=ACC,
            dst_addr=sums,
            src=ACT,
            src_addr=source,
            idx=VEC,
            idx_addr=id_column,
            rows=n,
            cols=dim,
            dst_rows=n,
        )
        lowering.emit(
            "SCATTER_ADD",
            dst=VEC,
            dst_addr=members,
            src=VEC,
            src_addr=ones,
            idx=VEC,
            idx_addr=id_column,
            rows=n,
            cols=1,
            dst_rows=n,
        )
        lowering.vec("max", VEC, members, (VEC, members), n, 1, bcast="imm", imm=1.0)
        lowering.vec("div", ACC, sums, (ACC, sums), n, dim, b=(VEC, members), bcast="col")
        if sequence < len(clusters):
            lowering.dynamic_last("rows", clusters[sequence])
        lowering.store(ACC, sums, out.address + sequence * n * dim, n, dim, dim)
        if sequence < len(clusters):
            lowering.dynamic_last("rows", clusters[sequence])


@lowering(cta.RecoverOp)
def lower_recover(lowering: Lowering, op: cta.RecoverOp) -> None:
    """Per sequence: every token takes its cluster's row (GATHER_BUF of the cluster table)."""
    shape = ox.shape_of(op.output)
    n, dim = shape[-2], shape[-1]
    rows_tensor, ids, out = (
        lowering.tensor(op.rows),
        lowering.tensor(op.ids),
        lowering.tensors[op.output],
    )
    row_count = ox.shape_of(op.rows)[-2]
    clusters = lowering.cluster_instructions.get(cluster_of(op.ids), [])
    for sequence in range(_sequences(shape)):
        lowering.next_stage()
        table, id_column, target = lowering.slot(ACT), lowering.slot(VEC), lowering.slot(WGT)
        lowering.load(
            ACT, table, rows_tensor.address + sequence * row_count * dim, row_count, dim, dim
        )
        if sequence < len(clusters):
            lowering.dynamic_last("rows", clusters[sequence])
        lowering.load(VEC, id_column, ids.address + sequence * n, n, 1, 1)
        lowering.emit(
            "GATHER_BUF",
            dst=WGT,
            dst_addr=target,
            src=ACT,
            src_addr=table,
            idx=VEC,
            idx_addr=id_column,
            rows=n,
            cols=dim,
            src_rows=row_count,
        )
        lowering.store(WGT, target, out.address + sequence * n * dim, n, dim, dim)
