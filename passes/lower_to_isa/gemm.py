"""GEMM-shaped ops: MatMul, Gemm and projections into head layout (cta.project: one GEMM across
heads), tiled to the PE array and software-pipelined (pipeline.py); conv.py lowers Conv and
ConvTranspose onto the same GEMMs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ctac.dialects import cta
from ctac.dialects import onnx as ox
from ctac.passes.lower_to_isa.compression import cluster_of
from ctac.passes.lower_to_isa.core import Emitted, Lowering, dynamic_field, lowering
from ctac.passes.lower_to_isa.memory import (
    ACC,
    ACT,
    VEC,
    WGT,
    Tensor,
    Unsupported,
    elements,
    split_ranges,
)
from ctac.passes.lower_to_isa.precision import int8_gemm


def _round_down(value: int, multiple: int) -> int:
    return value if value <= multiple else value - value % multiple


def gemm_tiles(
    lowering: Lowering, m: int, k: int, n: int, n_step: int | None = None
) -> tuple[int, int, int]:
    """Tile sizes (tm, tk, tn) whose A, B and C tiles each fit half a buffer."""
    half_a, half_b, half_c = lowering.half[ACT], lowering.half[WGT], lowering.half[ACC]
    rows = lowering.hw.view().pe_rows
    # Weight stationary: each (R x C) weight fold costs 2R + C - 2 fill cycles plus one per row of
    # A, so tall A tiles amortise the fill (512 rows: 84% of peak; 256: 73%).
    tm = min(m, 512)
    tk = min(k, max(1, half_a // tm))
    tk = _round_down(tk, rows) if tk < k else tk
    if n_step is not None:
        tn = n_step
        if tk * tn > half_b:
            tk = max(1, half_b // tn)
    else:
        tn = min(n, max(1, half_b // tk), max(1, half_c // tm))
        tn = _round_down(tn, lowering.hw.view().pe_cols) if tn < n else tn
    if tm * tn > half_c:
        tm = max(1, half_c // tn)
    if tm * tk > half_a or tk * tn > half_b or tm * tn > half_c:
        raise Unsupported(f"no GEMM tiling fits the buffers for {m}x{k}x{n}")
    return tm, tk, tn


@dataclass
class GemmPlan:
    """A 2-D GEMM C (m x n) = A (m x k) @ B (k x n), with DRAM addressing given by callbacks."""

    m: int
    k: int
    n: int
    load_a: Callable[[int, int, int, int, int], None]  # (buffer address, m0, tm, k0, tk)
    load_b: Callable[[int, int, int, int, int], None]  # (buffer address, k0, tk, n0, tn)
    store_c: Callable[[int, int, int, int, int], None]  # (buffer address, m0, tm, n0, tn)
    transpose_b: bool = False
    bias: Tensor | None = None  # a (n,) row in DRAM
    bias_offset: int = 0
    n_step: int | None = None
    # The CLUSTER_READ whose cluster count is the number of rows of A that matter (A is a
    # cluster table, rows >= m unused): GEMMs, A loads and C stores are sized by it, so a row
    # tile past the clusters costs nothing. load_a and store_c then emit one instruction each.
    clusters: Emitted | None = None
    # Both operands (and the bias) are integers the PE array's integer mode multiplies exactly
    # (precision.py): the GEMMs run with int8=1.
    int8: bool = False


def emit_gemm(lowering: Lowering, *plans: GemmPlan) -> None:
    """C = A @ B (+ bias) for each plan (all of one shape: a batch of GEMMs), tiled (tm, tk, tn)
    and software-pipelined: per tile, A (once per row of tiles when k fits one tile), B and the
    bias come in through double-buffered slots, the GEMM accumulates over k into a C slot that
    alternates per output tile, and C is stored after its last k step."""
    first = plans[0]
    tm, tk, tn = gemm_tiles(lowering, first.m, first.k, first.n, first.n_step)
    single_k = tk >= first.k
    regions = dict(lowering.region_top)  # the slots are free again once the loop is emitted
    a_slots = lowering.stream(ACT, tm * min(tk, first.k))
    b_slots = lowering.stream(WGT, tk * tn)
    c_slots = lowering.stream(ACC, tm * tn)
    bias_slots = lowering.stream(VEC, tn) if any(p.bias is not None for p in plans) else None
    lowering.pipeline.drain()  # a loop of its own (conv runs one after its patch copies)
    for plan in plans:
        for m0, rows in split_ranges(plan.m, tm):
            a_address = None
            for n0, cols in split_ranges(plan.n, tn):
                c_address = c_slots.next()
                bias_address = 0
                for k0, depth in split_ranges(plan.k, tk):
                    lowering.next_stage()
                    if plan.bias is not None and k0 == 0:
                        bias_address = bias_slots.next()
                        source = plan.bias.address + plan.bias_offset + n0
                        lowering.load(VEC, bias_address, source, 1, cols, cols)
                    if a_address is None or not single_k:
                        a_address = a_slots.next()
                        plan.load_a(a_address, m0, rows, k0, depth)
                        dynamic_field(lowering, "rows", plan.clusters, m0)
                    b_address = b_slots.next()
                    plan.load_b(b_address, k0, depth, n0, cols)
                    lowering.emit(
                        "GEMM",
                        dst=ACC, dst_addr=c_address, a=ACT, a_addr=a_address, b=WGT, b_addr=b_address,
                        m=rows, k=depth, n=cols, accumulate=int(k0 > 0), transpose_b=int(plan.transpose_b),
                        has_bias=int(plan.bias is not None and k0 == 0), bias=VEC, bias_addr=bias_address,
                        int8=int(plan.int8),
                    )  # fmt: skip
                    dynamic_field(lowering, "m", plan.clusters, m0)
                plan.store_c(c_address, m0, rows, n0, cols)
                dynamic_field(lowering, "rows", plan.clusters, m0)
    lowering.pipeline.drain()
    lowering.region_top = regions


def dense_loader(lowering: Lowering, buffer: int, base: int, row_length: int):
    """Loads (rows x cols) blocks of a row-major (.. x row_length) matrix at `base`."""

    def load(address: int, r0: int, rows: int, c0: int, cols: int) -> None:
        lowering.load(buffer, address, base + r0 * row_length + c0, rows, cols, row_length)

    return load


def dense_storer(lowering: Lowering, base: int, row_length: int):
    def store(address: int, r0: int, rows: int, c0: int, cols: int) -> None:
        lowering.store(ACC, address, base + r0 * row_length + c0, rows, cols, row_length)

    return store


@lowering(ox.MatMulOp)
def lower_matmul(lowering: Lowering, op: ox.MatMulOp) -> None:
    a_shape, b_shape, out_shape = ox.shape_of(op.A), ox.shape_of(op.B), ox.shape_of(op.Y)
    a, b, out = lowering.tensor(op.A), lowering.tensor(op.B), lowering.tensors[op.Y]
    if len(a_shape) < 2 or len(b_shape) < 2:
        raise Unsupported("1-D MatMul operands")
    m, k = a_shape[-2], a_shape[-1]
    n = b_shape[-1]
    int8 = int8_gemm(op.A, op.B)
    if len(b_shape) == 2:
        rows = elements(a_shape[:-1])
        emit_gemm(
            lowering,
            GemmPlan(
                rows,
                k,
                n,
                dense_loader(lowering, ACT, a.address, k),
                dense_loader(lowering, WGT, b.address, n),
                dense_storer(lowering, out.address, n),
                int8=int8,
            ),
        )
        return
    batch = out_shape[:-2]
    a_index = _batch_map(a_shape[:-2], batch)
    b_index = _batch_map(b_shape[:-2], batch)
    plans = [
        GemmPlan(
            m,
            k,
            n,
            dense_loader(lowering, ACT, a.address + int(a_index[index]) * m * k, k),
            dense_loader(lowering, WGT, b.address + int(b_index[index]) * k * n, n),
            dense_storer(lowering, out.address + index * m * n, n),
            int8=int8,
        )
        for index in range(elements(batch))
    ]
    emit_gemm(lowering, *plans)


def _batch_map(shape: tuple[int, ...], batch: tuple[int, ...]) -> np.ndarray:
    """For each flat index of `batch`, the flat index into the broadcast `shape`."""
    padded = (1,) * (len(batch) - len(shape)) + tuple(shape)
    return np.broadcast_to(np.arange(elements(padded)).reshape(padded), batch).reshape(-1)


@lowering(ox.GemmOp)
def lower_gemm(lowering: Lowering, op: ox.GemmOp) -> None:
    if (
        op.int_attr("transA", 0)
        or op.float_attr("alpha", 1.0) != 1.0
        or op.float_attr("beta", 1.0) != 1.0
    ):
        raise Unsupported("Gemm with transA, alpha or beta")
    a, b, out = lowering.tensor(op.A), lowering.tensor(op.B), lowering.tensors[op.Y]
    m, k = ox.shape_of(op.A)
    transpose = bool(op.int_attr("transB", 0))
    n = ox.shape_of(op.B)[0 if transpose else 1]
    bias = None
    if op.C is not None:
        if ox.shape_of(op.C) not in ((n,), (1, n)):
            raise Unsupported(f"Gemm bias of shape {ox.shape_of(op.C)}")
        bias = lowering.tensor(op.C)

    def load_b(address: int, k0: int, depth: int, n0: int, cols: int) -> None:
        if transpose:
            lowering.load(WGT, address, b.address + n0 * k + k0, cols, depth, k)
        else:
            lowering.load(WGT, address, b.address + k0 * n + n0, depth, cols, n)

    emit_gemm(
        lowering,
        GemmPlan(
            m,
            k,
            n,
            dense_loader(lowering, ACT, a.address, k),
            load_b,
            dense_storer(lowering, out.address, n),
            transpose,
            bias,
            int8=int8_gemm(op.A, op.B, op.C),
        ),
    )


@lowering(cta.ProjectOp)
def lower_project(lowering: Lowering, op: cta.ProjectOp) -> None:
    if len(ox.shape_of(op.input)) == 4:
        lower_per_head_project(lowering, op)
        return
    x, w, out = lowering.tensor(op.input), lowering.tensor(op.weight), lowering.tensors[op.output]
    batch, seq, hidden = ox.shape_of(op.input)
    heads, head_dim = op.int_attr("heads"), op.int_attr("head_dim")
    start, end = op.column_range()
    width = ox.shape_of(op.weight)[1]
    bias = lowering.tensor(op.bias) if op.bias is not None else None

    def head_storer(b: int):
        """Stores a C tile spanning several heads straight into (batch, heads, seq, head_dim):
        one STORE per head, reading that head's column block of the tile."""

        def store(address: int, s0: int, rows: int, n0: int, cols: int) -> None:
            c0 = n0
            while c0 < n0 + cols:
                head, within = divmod(c0, head_dim)
                span = min(head_dim - within, n0 + cols - c0)
                target = out.address + ((b * heads + head) * seq + s0) * head_dim + within
                lowering.store(ACC, address + c0 - n0, target, rows, span, head_dim, cols)
                c0 += span

        return store

    int8 = int8_gemm(op.input, op.weight, op.bias)
    plans = [
        GemmPlan(
            seq, hidden, end - start,
            dense_loader(lowering, ACT, x.address + b * seq * hidden, hidden),
            lambda address, k0, depth, n0, cols: lowering.load(WGT, address, w.address + k0 * width + start + n0, depth, cols, width),
            head_storer(b), bias=bias, bias_offset=start, int8=int8,
        )
        for b in range(batch)
    ]  # fmt: skip
    emit_gemm(lowering, *plans)


def lower_per_head_project(lowering: Lowering, op: cta.ProjectOp) -> None:
    """A per-head input (B, H, rows, E), e.g. the layer input pooled over each head's key
    clusters: one GEMM (rows x E x head_dim) per (batch, head) with that head's weight columns.
    When the rows are a cluster table, each GEMM is sized by the clusters its table holds."""
    x, w, out = lowering.tensor(op.input), lowering.tensor(op.weight), lowering.tensors[op.output]
    batch, heads, rows, hidden = ox.shape_of(op.input)
    head_dim = op.int_attr("head_dim")
    start, _ = op.column_range()
    width = ox.shape_of(op.weight)[1]
    bias = lowering.tensor(op.bias) if op.bias is not None else None
    readouts = lowering.cluster_instructions.get(cluster_of(op.input), [])

    def weight_loader(column: int):
        def load(address: int, k0: int, depth: int, n0: int, cols: int) -> None:
            source = w.address + k0 * width + column + n0
            lowering.load(WGT, address, source, depth, cols, width)

        return load

    plans = []
    for b in range(batch):
        for h in range(heads):
            table = b * heads + h
            column = start + h * head_dim
            plans.append(GemmPlan(
                rows, hidden, head_dim,
                dense_loader(lowering, ACT, x.address + table * rows * hidden, hidden),
                weight_loader(column),
                dense_storer(lowering, out.address + table * rows * head_dim, head_dim),
                bias=bias, bias_offset=column,
                clusters=readouts[table] if len(readouts) == batch * heads else None,
            ))  # fmt: skip
    emit_gemm(lowering, *plans)
