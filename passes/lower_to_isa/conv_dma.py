"""DRAM -> DRAM data movement through the act buffer for conv.py's im2col: tiled copies,
fills, strided gathers (a column step by a one-column STORE over a loaded band), and the
zero-spaced placement of an image into a padded or zero-inserted scratch."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

from ctac.passes.lower_to_isa.core import Lowering
from ctac.passes.lower_to_isa.memory import ACT, VEC, split_ranges

# rows and cols of LOAD/STORE (and VEC) are 16-bit fields.
MAX_DIM = 65535


def two_d(values: tuple[int, ...] | list[int], pad: int) -> tuple[int, ...]:
    """Spatial values with at least two axes: a 1-D convolution's get a leading `pad`."""
    return tuple(values) if len(values) >= 2 else (pad, *values)


def tiles(
    lowering: Lowering, rows: int, cols: int, budget: int | None = None
) -> Iterator[tuple[int, int, int, int]]:
    """(r0, nr, c0, nc) blocks covering a rows x cols matrix, each of at most `budget` elements
    (an act half) and fitting the 16-bit rows/cols fields: bands of whole rows, or pieces of
    one row when a row is wider."""
    budget = lowering.half[ACT] if budget is None else budget
    width = min(cols, budget, MAX_DIM)
    if width == cols:
        for r0, count in split_ranges(rows, max(1, min(budget // cols, MAX_DIM))):
            yield r0, count, 0, cols
        return
    for row in range(rows):
        for c0, count in split_ranges(cols, width):
            yield row, 1, c0, count


def copy_block(
    lowering: Lowering,
    source: int,
    source_stride: int,
    target: int,
    target_stride: int,
    rows: int,
    cols: int,
) -> None:
    """A rows x cols block DRAM -> DRAM through act (one LOAD and STORE per tile)."""
    for r0, count, c0, width in tiles(lowering, rows, cols):
        lowering.next_stage()
        tile = lowering.slot(ACT)
        lowering.load(ACT, tile, source + r0 * source_stride + c0, count, width, source_stride)
        lowering.store(ACT, tile, target + r0 * target_stride + c0, count, width, target_stride)


def fill(lowering: Lowering, target: int, count: int, value: float) -> None:
    """`count` DRAM elements from `target` set to `value` (a VEC copy, then STOREs)."""
    width = min(count, lowering.half[ACT], MAX_DIM)
    position = 0
    while position < count:
        left = count - position
        rows, cols = (min(left // width, lowering.half[ACT] // width), width)
        if rows == 0:
            rows, cols = 1, left
        lowering.next_stage()
        tile = lowering.slot(ACT)
        # Two stages like the copy tiles these fills share loops with (VEC in the LOAD's
        # place): a three-stage tile among them would store after the next tile reuses its slot.
        lowering.pipeline.stage(0)
        lowering.vec("copy", ACT, tile, (0, 0), rows, cols, bcast="imm", imm=value)
        lowering.pipeline.stage(1)
        lowering.store(ACT, tile, target + position, rows, cols, cols)
        position += rows * cols


def gather(
    lowering: Lowering,
    source: int,
    source_end: int,
    row_stride: int,
    step: int,
    rows: int,
    cols: int,
    target: int,
) -> None:
    """target (rows x cols, dense) = source[r * row_stride + c * step]. With step > 1 a band
    is loaded whole (cols * step elements per row) and a one-column STORE keeps every step-th
    element; the band's last row would read up to step - 1 elements past its end, so where
    that passes `source_end` the last row is gathered element by element instead."""
    if step == 1:
        copy_block(lowering, source, row_stride, target, cols, rows, cols)
        return
    budget = lowering.half[ACT]
    band = min(rows, budget // (cols * step), MAX_DIM // cols) if cols * step <= MAX_DIM else 0
    if band >= 1:
        for r0, count in split_ranges(rows, band):
            start = source + r0 * row_stride
            tail = start + (count - 1) * row_stride + cols * step > source_end
            whole = count - 1 if tail else count
            if whole:
                lowering.next_stage()
                tile = lowering.slot(ACT)
                lowering.load(ACT, tile, start, whole, cols * step, row_stride)
                lowering.store(ACT, tile, target + r0 * cols, whole * cols, 1, 1, step)
            if tail:
                gather_row(
                    lowering, start + whole * row_stride, step, cols, target + (r0 + whole) * cols
                )
        return
    for row in range(rows):
        gather_row(lowering, source + row * row_stride, step, cols, target + row * cols)


def gather_row(lowering: Lowering, source: int, step: int, cols: int, target: int) -> None:
    """One strided row: a LOAD whose `rows` are the elements (row stride = step)."""
    for c0, count in split_ranges(cols, min(lowering.half[ACT], MAX_DIM)):
        lowering.next_stage()
        tile = lowering.slot(ACT)
        lowering.load(ACT, tile, source + c0 * step, count, 1, step)
        lowering.store(ACT, tile, target + c0, 1, count, count)


def row_major_strides(extent: tuple[int, ...]) -> list[int]:
    return [math.prod(extent[i + 1 :]) for i in range(len(extent))]


def place(
    lowering: Lowering,
    source: int,
    shape: tuple[int, ...],
    target: int,
    extent: tuple[int, ...],
    offset: list[int] | tuple[int, ...],
    step: tuple[int, ...],
) -> None:
    """Copy one image (channels, spatial...) into a zeroed scratch of `extent`: element i of
    each axis lands at offset + i * step; positions outside the extent are dropped (a
    ConvTranspose's negative padding crops)."""
    channels, spatial = shape[0], shape[1:]
    extent2, spatial2 = two_d(extent, 1), two_d(spatial, 1)
    offset2, step2 = two_d(tuple(offset), 0), two_d(step, 1)
    kept = []
    for n, e, o, s in zip(spatial2, extent2, offset2, step2, strict=True):
        first = -(o // s) if o < 0 else 0  # the first element at or after position 0
        last = min(n, (e - 1 - o) // s + 1) if e - 1 - o >= 0 else 0
        kept.append((first, last - first))
    if any(count <= 0 for _, count in kept):
        return
    in_strides, out_strides = row_major_strides(spatial2), row_major_strides(extent2)
    plane_in, plane_out = math.prod(spatial2), math.prod(extent2)
    (row_first, rows), (col_first, cols) = kept[-2], kept[-1]
    for c in range(channels):
        for outer in itertools.product(*(range(f, f + k) for f, k in kept[:-2])):
            src = (
                source + c * plane_in + sum(i * s for i, s in zip(outer, in_strides, strict=False))
            )
            dst = (
                target
                + c * plane_out
                + sum(
                    (o + i * s) * t
                    for i, o, s, t in zip(outer, offset2, step2, out_strides, strict=False)
                )
            )
            src += row_first * in_strides[-2] + col_first
            dst += (offset2[-2] + row_first * step2[-2]) * out_strides[-2]
            dst += offset2[-1] + col_first * step2[-1]
            if step2[-1] == 1:
                copy_block(
                    lowering, src, in_strides[-2], dst, step2[-2] * out_strides[-2], rows, cols
                )
                continue
            spread(
                lowering,
                src,
                in_strides[-2],
                dst,
                step2[-2] * out_strides[-2],
                step2[-1],
                rows,
                cols,
            )


def spread(
    lowering: Lowering,
    source: int,
    source_stride: int,
    target: int,
    target_stride: int,
    step: int,
    rows: int,
    cols: int,
) -> None:
    """target[r * target_stride + c * step] = source[r * source_stride + c] (step > 1), leaving
    the elements between as they are (zero). Per tile the rows are interleaved with zeros on
    chip: a (step x n) matrix whose first row is the tile and the rest zero, VEC-transposed to
    (n x step), is each row's elements `step` apart; one STORE writes all the rows."""
    budget = min(lowering.half[ACT], lowering.half[VEC], MAX_DIM) // step
    for r0, count, c0, width in tiles(lowering, rows, cols, budget):
        lowering.next_stage()
        tile, spaced = lowering.slot(ACT), lowering.slot(VEC)
        flat = count * width
        lowering.load(ACT, tile, source + r0 * source_stride + c0, count, width, source_stride)
        lowering.vec("copy", ACT, tile + flat, (0, 0), step - 1, flat, bcast="imm", imm=0.0)
        lowering.vec("transpose", VEC, spaced, (ACT, tile), step, flat)
        # Row r of the tile is spaced[r * width * step ...]: its last element ends the row.
        lowering.store(
            VEC, spaced, target + r0 * target_stride + c0 * step, count,
            (width - 1) * step + 1, target_stride, width * step,
        )  # fmt: skip
