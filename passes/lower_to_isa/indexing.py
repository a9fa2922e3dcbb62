"""ScatterND, ScatterElements and Resize.

Scatter with constant indices (the common case: indices folded at fixed shapes) is DMA at
addresses known at compile time, for every reduction. Data is viewed as rows (ScatterND: the
slices its index tuples pick; ScatterElements: single elements) and each output row is either a
copy of its data row, the last update aimed at it (reduction none), or its data row combined
with each update aimed at it, in index order (add/mul/max/min: one VEC per update, so
duplicates combine exactly as ONNX's sequential definition). Consecutive output rows whose
sources are consecutive too merge into one run: LOAD, VEC per update, STORE. Every output
element is written once and nothing reads the output, so no DRAM ordering is needed.

Scatter with run-time indices works on chip when data fits a buffer half: the index rows are
linearised on the vector unit (negative indices wrapped), then SCATTER_ADD adds the updates
(reduction add) or the updates less the rows they replace, read by GATHER_BUF (reduction none:
ONNX requires its indices to be distinct, which is what makes that subtraction exact).

Resize with constant scales/sizes/roi is separable (runtime/reference_indexing.py builds the
same per-axis maps the golden model applies): a nearest axis is strided DMA (each run of output
positions copies a run of input positions; repeated runs load once and store several times), a
linear or cubic axis is a GEMM with the axis's (out x in) interpolation matrix as a constant of
the data segment. Axes after the first go through a DRAM temporary of the arena.
"""

from __future__ import annotations

import numpy as np
from xdsl.ir import SSAValue

from ctac.dialects import onnx as ox
from ctac.passes.lower_to_isa.core import PREPARE, Lowering, lowering
from ctac.passes.lower_to_isa.gemm import GemmPlan, dense_loader, dense_storer, emit_gemm
from ctac.passes.lower_to_isa.memory import (
    ACT,
    VEC,
    WGT,
    Tensor,
    Unsupported,
    elements,
    split_ranges,
)
from ctac.runtime.reference_indexing import (
    nearest_map,
    resize_axes,
    resize_matrix,
    resize_shape,
    scatter_elements_targets,
    scatter_nd_targets,
)
from ctac.weights import store_for_module

MAX_FIELD = 32768  # rows/cols are 16-bit fields: pieces stay well inside them
MAX_RUNS = 1 << 16  # a scatter needing more DMA runs than this is refused, not compiled slowly
EXACT_INDEX = 1 << 24  # float32 holds every integer index below this exactly
_VEC_OP = {"add": "add", "mul": "mul", "max": "max", "min": "min"}


def constant_array(lowering: Lowering, value: SSAValue) -> np.ndarray | None:
    """The values of a constant or weight operand, None for a run-time value."""
    owner = value.owner
    if isinstance(owner, ox.ConstantOp):
        return owner.to_numpy()
    if isinstance(owner, ox.WeightOp):
        store = store_for_module(lowering.module)
        return None if store is None else np.asarray(store.get(owner.ref.data))
    return None


# ---------------------------------------------------------------------------------------------
# Scatter
# ---------------------------------------------------------------------------------------------


def _scatter_view(op: ox.ScatterNDOp | ox.ScatterElementsOp) -> tuple[int, int]:
    """(rows, row elements) of data as the scatter addresses it."""
    shape = ox.shape_of(op.data)
    if isinstance(op, ox.ScatterNDOp):
        depth = ox.shape_of(op.indices)[-1]
        return elements(shape[:depth]), elements(shape[depth:])
    return elements(shape), 1


def _targets(op: ox.ScatterNDOp | ox.ScatterElementsOp, indices: np.ndarray) -> np.ndarray:
    """The output row each update row goes to (data viewed as by _scatter_view)."""
    shape = ox.shape_of(op.data)
    if isinstance(op, ox.ScatterNDOp):
        return scatter_nd_targets(shape, indices)
    return scatter_elements_targets(shape, indices, op.int_attr("axis", 0))


def scatter_runs(
    targets: np.ndarray, rows: int, reduction: str
) -> list[tuple[int, int, bool, tuple[int, ...]]]:
    """(first output row, rows, reads data, first update row per level) runs covering every
    output row: rows whose data and update sources all continue the previous row's merge.
    Planned per row an update hits, and per stretch of rows none hits (a copy of data): work
    in proportion to the updates, not to data (a ScatterElements views every element as a
    row)."""
    order = np.argsort(targets, kind="stable")  # per target, its updates in index order
    hit_rows, first_hit, hit_counts = np.unique(
        np.asarray(targets)[order], return_index=True, return_counts=True
    )
    runs: list[tuple[int, int, bool, tuple[int, ...]]] = []

    def add(row: int, count: int, reads_data: bool, sources: tuple[int, ...]) -> None:
        if runs:
            first, length, data, starts = runs[-1]
            if data == reads_data and starts == tuple(s - length for s in sources):
                runs[-1] = (first, length + count, data, starts)
                return
        runs.append((row, count, reads_data, sources))
        if len(runs) > MAX_RUNS:
            raise Unsupported(f"the scatter needs more than {MAX_RUNS} DMA runs")

    copied_from = 0  # rows [copied_from, next hit row) keep their data row
    hits = zip(hit_rows.tolist(), first_hit.tolist(), hit_counts.tolist(), strict=True)
    for row, begin, count in hits:
        if row > copied_from:
            add(copied_from, row - copied_from, True, ())
        updates = order[begin : begin + count].tolist()
        sources = tuple(updates[-1:]) if reduction == "none" else tuple(updates)
        add(row, 1, reduction != "none", sources)
        copied_from = row + 1
    if rows > copied_from:
        add(copied_from, rows - copied_from, True, ())
    return runs


@lowering(ox.ScatterNDOp, ox.ScatterElementsOp)
def lower_scatter(lowering: Lowering, op: ox.ScatterNDOp | ox.ScatterElementsOp) -> None:
    reduction = op.str_attr("reduction", "none")
    rows, width = _scatter_view(op)
    indices = constant_array(lowering, op.indices)
    if indices is None:
        _scatter_runtime(lowering, op, reduction, rows, width)
        return
    targets = _targets(op, indices)
    data, updates = lowering.tensor(op.data), lowering.tensor(op.updates)
    out = lowering.tensors[op.output]
    limit = min(lowering.half[ACT], MAX_FIELD)
    for first, count, reads_data, starts in scatter_runs(targets, rows, reduction):
        levels = len(starts) if reads_data else 0
        # each update of a level gets its own part of the wgt slot (no slot reuse in a tile)
        piece = min(limit, lowering.half[WGT] // max(levels, 1))
        if piece < 1:
            raise Unsupported(f"{levels} updates of one element do not fit a buffer half")
        for offset, size in split_ranges(count * width, piece):
            lowering.next_stage()
            tile = lowering.slot(ACT)
            if reads_data:
                lowering.load(ACT, tile, data.address + first * width + offset, 1, size, size)
            else:
                source = updates.address + starts[-1] * width + offset
                lowering.load(ACT, tile, source, 1, size, size)
            for level, start in enumerate(starts[:levels]):
                operand = lowering.slot(WGT, level * piece)
                source = updates.address + start * width + offset
                lowering.load(WGT, operand, source, 1, size, size)
                lowering.vec(
                    _VEC_OP[reduction], ACT, tile, (ACT, tile), 1, size, (WGT, operand), "full"
                )
            lowering.store(ACT, tile, out.address + first * width + offset, 1, size, size)


def _scatter_runtime(lowering: Lowering, op, reduction: str, rows: int, width: int) -> None:
    """Run-time indices: data on chip, index rows linearised on the vector unit, SCATTER_ADD."""
    if reduction not in ("none", "add"):
        raise Unsupported(
            f"reduction {reduction} with run-time indices (only none and add have a scatter "
            "instruction; constant indices lower for every reduction)"
        )
    count = elements(ox.shape_of(op.updates)) // width
    if rows * width > lowering.half[ACT] or count * width > lowering.half[WGT] // 2:
        raise Unsupported("run-time indices need data and updates to fit a buffer half")
    if rows >= MAX_FIELD or count >= MAX_FIELD or rows * width >= EXACT_INDEX:
        raise Unsupported("run-time indices over more rows than the row fields hold")
    data, updates = lowering.tensor(op.data), lowering.tensor(op.updates)
    indices, out = lowering.tensor(op.indices), lowering.tensors[op.output]
    if 3 * count > lowering.half[VEC]:
        raise Unsupported("run-time indices need their index columns to fit a buffer half")
    lowering.next_stage()
    table, source, old = lowering.slot(ACT), lowering.slot(WGT), lowering.slot(WGT, count * width)
    # the linear row index, one index component, and the wrap-around term
    column, component, scratch = (lowering.slot(VEC, i * count) for i in range(3))
    lowering.load(ACT, table, data.address, rows, width, width)
    lowering.load(WGT, source, updates.address, count, width, width)
    shape = ox.shape_of(op.data)
    if isinstance(op, ox.ScatterNDOp):
        depth = ox.shape_of(op.indices)[-1]
        # Horner over the index tuple: row = ((i0 * d1 + i1) * d2 + i2) ..., each i wrapped.
        for axis in range(depth):
            target = column if axis == 0 else component
            lowering.load(VEC, target, indices.address + axis, count, 1, depth)
            _wrap_negative(lowering, target, scratch, count, shape[axis])
            if axis:
                lowering.vec(
                    "mul", VEC, column, (VEC, column), count, 1, bcast="imm", imm=shape[axis]
                )
                lowering.vec("add", VEC, column, (VEC, column), count, 1, (VEC, target), "full")
    else:
        axis = op.int_attr("axis", 0) % len(shape)
        lowering.load(VEC, column, indices.address, count, 1, 1)
        _wrap_negative(lowering, column, scratch, count, shape[axis])
        stride = elements(shape[axis + 1 :])
        lowering.vec("mul", VEC, column, (VEC, column), count, 1, bcast="imm", imm=stride)
        base = lowering.op_data[op]  # each element's flat position with its axis index 0
        lowering.load(VEC, scratch, base, count, 1, 1)
        lowering.vec("add", VEC, column, (VEC, column), count, 1, (VEC, scratch), "full")
    index = {"idx": VEC, "idx_addr": column, "rows": count, "cols": width, "window": 0, "base": 0}
    if reduction == "none":
        lowering.emit(
            "GATHER_BUF", dst=WGT, dst_addr=old, src=ACT, src_addr=table, src_rows=rows, **index
        )
        lowering.vec("sub", WGT, source, (WGT, source), count, width, (WGT, old), "full")
    lowering.emit(
        "SCATTER_ADD", dst=ACT, dst_addr=table, src=WGT, src_addr=source, dst_rows=rows, **index
    )
    lowering.store(ACT, table, out.address, rows, width, width)


def _wrap_negative(lowering: Lowering, column: int, scratch: int, count: int, size: int) -> None:
    """column += size where column < 0 (ONNX's negative indices)."""
    lowering.vec("lt", VEC, scratch, (VEC, column), count, 1, bcast="imm", imm=0.0)
    lowering.vec("mul", VEC, scratch, (VEC, scratch), count, 1, bcast="imm", imm=float(size))
    lowering.vec("add", VEC, column, (VEC, column), count, 1, (VEC, scratch), "full")


def _prepare_scatter_elements(lowering: Lowering, op: ox.ScatterElementsOp) -> None:
    """Run-time ScatterElements indices add to each element's flat position with its axis index
    0, a constant of the data segment."""
    if constant_array(lowering, op.indices) is not None:
        return
    shape, index_shape = ox.shape_of(op.data), ox.shape_of(op.indices)
    axis = op.int_attr("axis", 0) % len(shape)
    coordinates = list(np.indices(index_shape))
    coordinates[axis] = np.zeros(index_shape, dtype=np.int64)
    base = np.ravel_multi_index(tuple(coordinates), shape).reshape(-1)
    lowering.op_data[op] = lowering.add_data(base)


PREPARE[ox.ScatterElementsOp] = _prepare_scatter_elements


# ---------------------------------------------------------------------------------------------
# Resize
# ---------------------------------------------------------------------------------------------


def _resize_steps(lowering: Lowering, op: ox.ResizeOp) -> list[tuple[int, np.ndarray, bool]]:
    """(axis, index map or matrix, is a map) per resized axis, from constant roi/scales/sizes."""
    known = {}
    for name in ("roi", "scales", "sizes"):
        value = getattr(op, name)
        known[name] = None if value is None else constant_array(lowering, value)
        if value is not None and known[name] is None:
            raise Unsupported(f"Resize with run-time {name}")
    if op.int_attr("antialias", 0) and op.str_attr("mode", "nearest") == "nearest":
        raise Unsupported("antialias with mode nearest")
    shape = ox.shape_of(op.X)
    try:
        axes = resize_axes(op, shape, known["roi"], known["scales"], known["sizes"])
    except Exception as exc:  # noqa: BLE001 - the reference's CtacError, as a refusal here
        raise Unsupported(str(exc)) from exc
    if resize_shape(shape, axes) != ox.shape_of(op.Y):
        raise Unsupported("scales/sizes disagree with the result type")
    steps = []
    for each in axes:
        matrix, outside = resize_matrix(op, each)
        if outside is not None:
            raise Unsupported("tf_crop_and_resize with output positions outside the input")
        picked = nearest_map(matrix)
        if picked is None and np.issubdtype(ox.numpy_dtype(ox.element_of(op.X)), np.integer):
            raise Unsupported("linear or cubic Resize of integers (ONNX rounds the result)")
        steps.append((each.axis, picked if picked is not None else matrix, picked is not None))
    return steps


def _prepare_resize(lowering: Lowering, op: ox.ResizeOp) -> None:
    """Interpolation matrices of the linear/cubic axes go into the data segment; the steps are
    kept for the lowering (op_data: steps and matrix addresses)."""
    try:
        steps = _resize_steps(lowering, op)
    except Unsupported:
        return  # the lowering reports it
    addresses = {}
    shape = ox.shape_of(op.X)
    for axis, table, is_map in steps:
        if not is_map:
            # Rows (nothing after the axis) multiply by M^T (in x out); slabs are M @ slab. The
            # shape is the one this step sees: earlier steps may have resized later axes.
            rows = elements(shape[axis + 1 :]) == 1
            addresses[axis] = lowering.add_data(table.T if rows else table)
        shape = shape[:axis] + (len(table),) + shape[axis + 1 :]
    lowering.op_data[op] = (steps, addresses)


PREPARE[ox.ResizeOp] = _prepare_resize


@lowering(ox.ResizeOp)
def lower_resize(lowering: Lowering, op: ox.ResizeOp) -> None:
    prepared = lowering.op_data.get(op)
    # Not prepared: _resize_steps raises the refusal PREPARE set aside.
    steps, matrices = prepared if prepared is not None else (_resize_steps(lowering, op), {})
    out = lowering.tensors[op.Y]
    current = lowering.tensor(op.X)
    if not steps:  # every axis kept: a copy
        _nearest_axis(lowering, current, out, 0, np.arange(current.shape[0]))
        return
    temporaries = []
    shape = current.shape
    for position, (axis, table, is_map) in enumerate(steps):
        shape = shape[:axis] + (len(table),) + shape[axis + 1 :]
        if position == len(steps) - 1:
            target = out
        else:
            target = Tensor(lowering.arena.allocate(elements(shape)), shape)
            temporaries.append(target)
        if is_map:
            _nearest_axis(lowering, current, target, axis, table)
            lowering.pipeline.drain()  # the next axis reads this one's DRAM result
        else:
            _linear_axis(lowering, current, target, axis, matrices[axis])
        current = target
    for temporary in temporaries:
        lowering.arena.release(temporary.address, elements(temporary.shape))


def _nearest_axis(
    lowering: Lowering, source: Tensor, target: Tensor, axis: int, picked: np.ndarray
) -> None:
    """target[.., i, ..] = source[.., picked[i], ..] by strided DMA: each run of output positions
    whose sources are consecutive is one block (outer rows x run * inner), loaded once per
    distinct source run and stored to every output run that repeats it."""
    outer = elements(source.shape[:axis])
    size_in, inner = source.shape[axis], elements(source.shape[axis + 1 :])
    size_out = len(picked)
    runs: dict[tuple[int, int], list[int]] = {}
    start = 0
    for i in range(1, size_out + 1):
        if i == size_out or picked[i] != picked[i - 1] + 1:
            runs.setdefault((int(picked[start]), i - start), []).append(start)
            start = i
    limit = min(lowering.half[ACT], MAX_FIELD)
    for (first, length), destinations in runs.items():
        for c0, cols in split_ranges(length * inner, limit):
            for r0, rows in split_ranges(outer, max(1, min(limit // cols, MAX_FIELD))):
                lowering.next_stage()
                tile = lowering.slot(ACT)
                address = source.address + r0 * size_in * inner + first * inner + c0
                lowering.load(ACT, tile, address, rows, cols, size_in * inner)
                for destination in destinations:
                    address = target.address + r0 * size_out * inner + destination * inner + c0
                    lowering.store(ACT, tile, address, rows, cols, size_out * inner)


def _linear_axis(
    lowering: Lowering, source: Tensor, target: Tensor, axis: int, matrix: int
) -> None:
    """One GEMM with the axis's interpolation matrix (at DRAM address `matrix`): the last axis
    as rows @ M^T, an inner axis as M @ each (in x inner) slab."""
    outer = elements(source.shape[:axis])
    size_in, inner = source.shape[axis], elements(source.shape[axis + 1 :])
    size_out = target.shape[axis]
    if inner == 1:
        plan = GemmPlan(
            outer,
            size_in,
            size_out,
            dense_loader(lowering, ACT, source.address, size_in),
            dense_loader(lowering, WGT, matrix, size_out),
            dense_storer(lowering, target.address, size_out),
        )
        emit_gemm(lowering, plan)
        return
    plans = [
        GemmPlan(
            size_out,
            size_in,
            inner,
            dense_loader(lowering, ACT, matrix, size_in),
            dense_loader(lowering, WGT, source.address + o * size_in * inner, inner),
            dense_storer(lowering, target.address + o * size_out * inner, inner),
        )
        for o in range(outer)
    ]
    emit_gemm(lowering, *plans)
