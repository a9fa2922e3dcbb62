"""Data movement: Gather (embedding lookup), Transpose and Concat by strided DMA."""

from __future__ import annotations

import numpy as np

from ctac.dialects import onnx as ox
from ctac.passes.lower_to_isa.core import Lowering, lowering
from ctac.passes.lower_to_isa.elementwise import lower_elementwise, operand_plan
from ctac.passes.lower_to_isa.memory import ACT, VEC, Unsupported, elements, split_ranges


@lowering(ox.GatherOp)
def lower_gather(lowering: Lowering, op: ox.GatherOp) -> None:
    data_shape = ox.shape_of(op.data)
    if op.int_attr("axis", 0) % len(data_shape) != 0:
        raise Unsupported("Gather along an axis other than 0")
    table, out = lowering.tensor(op.data), lowering.tensors[op.output]
    table_rows, columns = data_shape[0], elements(data_shape[1:])
    count = elements(ox.shape_of(op.indices))
    index_plan = operand_plan(lowering, op.indices, ox.shape_of(op.indices))
    if columns > lowering.half[ACT]:
        raise Unsupported(f"gathered rows of {columns} elements do not fit a buffer half")
    budget = min(lowering.half[ACT] // max(columns, 1), lowering.half[VEC])
    for r0, rows in split_ranges(count, max(1, budget)):
        lowering.next_stage()
        index_address, target = lowering.slot(VEC), lowering.slot(ACT)
        if index_plan.mode == "imm":
            lowering.vec(
                "copy", VEC, index_address, (0, 0), rows, 1, bcast="imm", imm=index_plan.imm
            )
        else:
            lowering.load(VEC, index_address, lowering.tensor(op.indices).address + r0, rows, 1, 1)
        lowering.emit(
            "GATHER", dst=ACT, dst_addr=target, table=table.address, idx=VEC, idx_addr=index_address,
            rows=rows, cols=columns, table_rows=table_rows,
        )  # fmt: skip
        lowering.store(ACT, target, out.address + r0 * columns, rows, columns, columns)


@lowering(ox.TransposeOp)
def lower_transpose(lowering: Lowering, op: ox.TransposeOp) -> None:
    """Moves 2-D blocks with strided DMA. Either each output block (last two output axes) is a
    strided slice of the input (loaded with a row stride, or loaded transposed and turned with a
    VEC transpose), or each input block (last two input axes) lands in the output with a row
    stride; whichever needs fewer blocks."""
    in_shape, perm = ox.shape_of(op.data), op.permutation()
    out_shape = ox.shape_of(op.transposed)
    x, out = lowering.tensor(op.data), lowering.tensors[op.transposed]
    rank = len(in_shape)
    if rank < 2:
        lower_elementwise(lowering, op, "copy", [op.data])
        return
    in_strides = [elements(in_shape[i + 1 :]) for i in range(rank)]
    out_strides = [elements(out_shape[i + 1 :]) for i in range(rank)]
    # Output position of each input axis.
    where = {axis: position for position, axis in enumerate(perm)}
    input_major = perm[-1] == rank - 1 and elements(in_shape[:-2]) < elements(out_shape[:-2])
    if input_major:
        rows, cols = in_shape[-2], in_shape[-1]
        outer_axes = list(range(rank - 2))
        outer_shape = in_shape[:-2]
        row_stride_out = out_strides[where[rank - 2]]
    else:
        rows, cols = out_shape[-2], out_shape[-1]
        outer_axes = list(perm[:-2])
        outer_shape = out_shape[:-2]
    # Blocks larger than a buffer half move in chunks of whole rows (of the block being stored).
    limit = min(lowering.half[ACT], lowering.half[VEC])
    step = rows if rows * cols <= limit else limit // cols
    if step < 1:
        raise Unsupported(f"a {rows}x{cols} transposed block does not fit a buffer half")
    for index in range(elements(outer_shape)):
        position = [int(p) for p in np.unravel_index(index, outer_shape)] if outer_shape else []
        for r0, count in split_ranges(rows, step):
            lowering.next_stage()
            tile, target = lowering.slot(ACT), lowering.slot(VEC)
            if input_major:
                source = x.address + index * rows * cols + r0 * cols
                destination = out.address + sum(
                    p * out_strides[where[a]] for p, a in zip(position, outer_axes, strict=True)
                )
                lowering.load(ACT, tile, source, count, cols, cols)
                lowering.store(
                    ACT, tile, destination + r0 * row_stride_out, count, cols, row_stride_out
                )
                continue
            base = x.address + sum(
                p * in_strides[a] for p, a in zip(position, outer_axes, strict=True)
            )
            row_axis, col_axis = perm[-2], perm[-1]
            if in_strides[col_axis] == 1:
                lowering.load(
                    ACT, tile, base + r0 * in_strides[row_axis], count, cols, in_strides[row_axis]
                )
                source_buffer, source = ACT, tile
            elif in_strides[row_axis] == 1:
                lowering.load(ACT, tile, base + r0, cols, count, in_strides[col_axis])
                lowering.vec("transpose", VEC, target, (ACT, tile), cols, count)
                source_buffer, source = VEC, target
            else:
                raise Unsupported(
                    f"transpose {list(perm)}: neither output axis is contiguous in the input"
                )
            lowering.store(
                source_buffer,
                source,
                out.address + index * rows * cols + r0 * cols,
                count,
                cols,
                cols,
            )


@lowering(ox.ConcatOp)
def lower_concat(lowering: Lowering, op: ox.ConcatOp) -> None:
    out_shape = ox.shape_of(op.concat_result)
    axis = op.int_attr("axis") % len(out_shape)
    out = lowering.tensors[op.concat_result]
    outer = elements(out_shape[:axis])
    out_inner = elements(out_shape[axis:])
    offset = 0
    for value in op.inputs:
        shape = ox.shape_of(value)
        inner = elements(shape[axis:])
        plan = operand_plan(lowering, value, shape)
        source = lowering.tensor(value) if plan.mode != "imm" else None
        # rows and cols are 16-bit fields: a long run moves in 32768-element pieces
        for c0, width in split_ranges(inner, min(lowering.half[ACT], 32768)):
            for r0, rows in split_ranges(outer, max(1, lowering.half[ACT] // width)):
                lowering.next_stage()
                tile = lowering.slot(ACT)
                if source is None:
                    lowering.vec("copy", ACT, tile, (0, 0), rows, width, bcast="imm", imm=plan.imm)
                else:
                    lowering.load(ACT, tile, source.address + r0 * inner + c0, rows, width, inner)
                lowering.store(
                    ACT, tile, out.address + r0 * out_inner + offset + c0, rows, width, out_inner
                )
        offset += inner
