"""Conv and ConvTranspose: im2col by strided DMA (conv_dma.py), then the tiled,
software-pipelined GEMM of gemm.py.

A convolution becomes, per image and group, Y_g (Mg x positions) = A_g (Mg x Kg) @ P_g (Kg x
positions), where row (c, k) of the patch matrix P holds input channel c seen through kernel
offset k at every output position. P is built in DRAM scratch by DMA. For each kernel tap one
LOAD reads the window rows of many channels at once (channel planes a whole number of row
strides apart) and one STORE writes each channel's window into its row of P (a column stride s
is a one-column STORE keeping every s-th element of a band loaded s times wider). Forms that
do not batch (rows that are no whole number of row strides, rows wider than a buffer half) are
gathered per channel, band or element.

- Padding: the image is copied into a zero-filled DRAM scratch of the padded extents (the
  borders are written once and stay zero for every image).
- Bias: A gets the bias as an extra column and P an extra row of ones, so the GEMM adds it
  exactly in the accumulator (no pass over the output).
- Groups (depthwise included): one GEMM per group over its own channels and weight rows.
- ConvTranspose is the convolution (stride 1) of the input with stride - 1 zeros inserted
  between its elements and d(k - 1) - pad zeros around it (negative: cropped), with the kernel
  flipped and its in/out channel axes swapped: the zero-inserted image is placed by VEC
  transposes that interleave zeros and row STOREs, the swapped axes by a DMA copy of the
  weight into A, and the flip by reading P's rows in reverse kernel order.
- Tiling: the patch matrix is built for bands of output rows of at most PATCH_LIMIT elements,
  each DMA tile fits an act half, and the GEMM tiles itself to the buffers. Only an act half
  too small for one element is refused.

Patch embeddings (kernel == stride, no padding, one group) keep their own fast path: one LOAD
and STORE per patch row, then out = W @ patches^T.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from ctac.dialects import onnx as ox
from ctac.passes.lower_to_isa.conv_dma import (
    MAX_DIM,
    copy_block,
    fill,
    gather,
    place,
    row_major_strides,
    two_d,
)
from ctac.passes.lower_to_isa.core import Lowering, lowering
from ctac.passes.lower_to_isa.gemm import GemmPlan, dense_loader, dense_storer, emit_gemm
from ctac.passes.lower_to_isa.memory import (
    ACT,
    WGT,
    Tensor,
    Unsupported,
    split_ranges,
)
from ctac.passes.lower_to_isa.precision import int8_gemm, is_int8_operand
from ctac.runtime.reference_conv import conv_pads, conv_transpose_geometry

# DRAM elements of patch matrix built before each batch of GEMMs: bounds the scratch (a 3x3
# conv over 256 channels at 96x96 would need 21M elements at once) while keeping GEMMs wide.
PATCH_LIMIT = 1 << 21


@dataclass
class _Geometry:
    """A convolution as lowered: stride/dilation windows over a source image whose extents
    already include any padding (or ConvTranspose's inserted zeros); spatial tuples have at
    least two axes (a 1-D convolution gets a leading axis of 1)."""

    batch: int
    channels: int
    groups: int
    out_channels: int
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    extent: tuple[int, ...]  # source spatial extents
    out: tuple[int, ...]  # output spatial extents
    flip: bool  # P's rows read the kernel in reverse (ConvTranspose)

    @property
    def per_group_in(self) -> int:
        return self.channels // self.groups

    @property
    def per_group_out(self) -> int:
        return self.out_channels // self.groups

    @property
    def depth(self) -> int:
        """Rows of a group's patch matrix (without the bias row)."""
        return self.per_group_in * math.prod(self.kernel)


def _int8(op: ox.ConvOp | ox.ConvTransposeOp) -> bool:
    """Whether the conv's GEMMs run in the PE array's int8 mode: integer input and weights, and
    a bias (if any) in int8 range too, since it rides as one more column of the weights."""
    return int8_gemm(op.X, op.W) and (op.B is None or is_int8_operand(op.B))


def _check_buffers(lowering: Lowering) -> None:
    """Every DMA tile here moves at least one element through an act half."""
    if lowering.half[ACT] < 1:
        raise Unsupported(
            f"an act buffer half of {lowering.half[ACT]} elements cannot hold one element of "
            "the patch matrix"
        )


def _build_patches(
    lowering: Lowering,
    geometry: _Geometry,
    source: int,
    source_end: int,
    group: int,
    outer: tuple[int, ...],
    row0: int,
    rows: int,
    block: int,
) -> None:
    """The patch matrix of one group for output rows [row0, row0 + rows) at outer output
    position `outer`: row (c, k) of `block` (row length rows * out[-1])."""
    g = geometry
    width = g.out[-1]
    positions = rows * width
    plane = math.prod(g.extent)
    strides = row_major_strides(g.extent)
    taps = math.prod(g.kernel)
    row_stride = g.strides[-2] * strides[-2]
    # With unit column steps and planes a whole number of row strides apart, one LOAD reads the
    # window rows of several channels (rows `per_plane` apart) and one STORE writes each
    # channel's window into its patch row: two instructions per kernel tap and channel chunk.
    per_plane = plane // row_stride if plane % row_stride == 0 else 0
    step = g.strides[-1]
    budget = min(lowering.half[ACT], MAX_DIM * width * step)
    batched = (
        per_plane > 0
        and positions * step <= lowering.half[ACT]
        and positions <= MAX_DIM
        and width * step <= MAX_DIM
        and (step > 1 or per_plane * width <= MAX_DIM)
    )
    for tap, offset in enumerate(itertools.product(*(range(k) for k in g.kernel))):
        if g.flip:  # ConvTranspose: weight tap t meets the window at offset kernel - 1 - t
            offset = tuple(k - 1 - o for k, o in zip(g.kernel, offset, strict=True))
        start = source + group * g.per_group_in * plane
        for axis, o in enumerate(outer):
            start += (o * g.strides[axis] + offset[axis] * g.dilations[axis]) * strides[axis]
        start += (row0 * g.strides[-2] + offset[-2] * g.dilations[-2]) * strides[-2]
        start += offset[-1] * g.dilations[-1]
        channels = g.per_group_in
        # A LOAD of width * step columns reads step - 1 elements past the window's last row:
        # the channels whose window ends too near source_end are gathered one by one below.
        while channels and (
            start + (channels - 1) * plane + (rows - 1) * row_stride + width * step > source_end
        ):
            channels -= 1
        if batched and channels:
            chunk = min(channels, (budget // (width * step) - rows) // per_plane + 1)
            for c0, count in split_ranges(channels, chunk):
                lowering.next_stage()
                tile = lowering.slot(ACT)
                load_rows = (count - 1) * per_plane + rows
                lowering.load(ACT, tile, start + c0 * plane, load_rows, width * step, row_stride)
                target = block + (c0 * taps + tap) * positions
                if step == 1:
                    lowering.store(
                        ACT, tile, target, count, positions, taps * positions, per_plane * width
                    )
                    continue
                for c in range(count):  # every step-th element of the channel's window rows
                    source_tile = tile + c * per_plane * width * step
                    lowering.store(
                        ACT, source_tile, target + c * taps * positions, positions, 1, 1, step
                    )
        else:
            channels = 0
        for c in range(channels, g.per_group_in):
            gather(
                lowering, start + c * plane, source_end, row_stride, g.strides[-1], rows, width,
                block + (c * taps + tap) * positions,
            )  # fmt: skip


@dataclass
class _Unit:
    """One GEMM: a group, an outer output position and a band of output rows."""

    group: int
    outer: tuple[int, ...]
    row0: int
    rows: int


def _convolve(
    lowering: Lowering,
    geometry: _Geometry,
    images: list[tuple[int, int]],
    weights: int,
    bias: bool,
    out: Tensor,
    int8: bool,
) -> None:
    """Y = the convolution of each image (source address, end) with A (out_channels x depth,
    plus a bias column when `bias`) at `weights`, written to `out` image by image."""
    g = geometry
    width = g.depth + int(bias)
    row_positions = g.out[-1]
    per_image = math.prod(g.out)
    band = max(1, min(g.out[-2], PATCH_LIMIT // (width * row_positions)))
    units = [
        _Unit(group, outer, r0, rows)
        for group in range(g.groups)
        for outer in itertools.product(*(range(o) for o in g.out[:-2]))
        for r0, rows in split_ranges(g.out[-2], band)
    ]
    block_size = width * band * row_positions
    per_call = max(1, PATCH_LIMIT // block_size)
    scratch_size = block_size * min(per_call, len(units))
    scratch = lowering.arena.allocate(scratch_size)
    outer_size = g.out[-2] * row_positions
    for image, (source, source_end) in enumerate(images):
        for first in range(0, len(units), per_call):
            batch = units[first : first + per_call]
            lowering.pipeline.drain()
            plans = []
            for slot, unit in enumerate(batch):
                block = scratch + slot * block_size
                positions = unit.rows * row_positions
                _build_patches(
                    lowering, g, source, source_end, unit.group, unit.outer, unit.row0,
                    unit.rows, block,
                )  # fmt: skip
                if bias:
                    fill(lowering, block + g.depth * positions, positions, 1.0)
                flat = (
                    sum(o * math.prod(g.out[axis + 1 : -2]) for axis, o in enumerate(unit.outer))
                    * outer_size
                    + unit.row0 * row_positions
                )
                target = (
                    out.address
                    + (image * g.out_channels + unit.group * g.per_group_out) * per_image
                )
                plans.append(GemmPlan(
                    g.per_group_out, width, positions,
                    dense_loader(lowering, ACT, weights + unit.group * g.per_group_out * width, width),
                    dense_loader(lowering, WGT, block, positions),
                    dense_storer(lowering, target + flat, per_image), int8=int8,
                ))  # fmt: skip
            emit_gemm(lowering, *plans)
    lowering.arena.release(scratch, scratch_size)


def _weights_with_bias(lowering: Lowering, op: ox.ConvOp, depth: int, rows: int) -> tuple[int, int]:
    """(address, size) of A = [W | b] (rows x depth + 1) in DRAM scratch."""
    w, b = lowering.tensor(op.W), lowering.tensor(op.B)
    size = rows * (depth + 1)
    address = lowering.arena.allocate(size)
    copy_block(lowering, w.address, depth, address, depth + 1, rows, depth)
    copy_block(lowering, b.address, 1, address + depth, depth + 1, rows, 1)
    lowering.pipeline.drain()
    return address, size


def _is_patchify(op: ox.ConvOp, x_shape: tuple[int, ...], kernel: tuple[int, ...]) -> bool:
    """A patch embedding (a 1x1 conv is not one: the general path moves whole channel
    planes per DMA instead of one image row each)."""
    return (
        len(x_shape) == 4
        and kernel != (1, 1)
        and tuple(op.ints_attr("strides", [1, 1])) == kernel
        and not any(sum(conv_pads(op, x_shape[2:], kernel), []))
        and all(d == 1 for d in op.ints_attr("dilations", [1, 1]))
        and op.int_attr("group", 1) == 1
    )


@lowering(ox.ConvOp)
def lower_conv(lowering: Lowering, op: ox.ConvOp) -> None:
    _check_buffers(lowering)
    x_shape, w_shape = ox.shape_of(op.X), ox.shape_of(op.W)
    kernel = tuple(w_shape[2:])
    if _is_patchify(op, x_shape, kernel):
        _lower_patchify(lowering, op)
        return
    spatial = len(x_shape) - 2
    begin, end = conv_pads(op, x_shape[2:], kernel)
    padded = tuple(n + b + e for n, b, e in zip(x_shape[2:], begin, end, strict=True))
    strides = tuple(op.ints_attr("strides", [1] * spatial))
    dilations = tuple(op.ints_attr("dilations", [1] * spatial))
    out = tuple(
        (p - d * (k - 1) - 1) // s + 1
        for p, k, s, d in zip(padded, kernel, strides, dilations, strict=True)
    )
    if out != tuple(ox.shape_of(op.Y)[2:]):
        raise Unsupported(f"Conv output {list(ox.shape_of(op.Y)[2:])} is not {list(out)}")
    batch, channels = x_shape[:2]
    geometry = _Geometry(
        batch, channels, op.int_attr("group", 1), w_shape[0], two_d(kernel, 1),
        two_d(strides, 1), two_d(dilations, 1), two_d(padded, 1), two_d(out, 1), flip=False,
    )  # fmt: skip
    x, y = lowering.tensor(op.X), lowering.tensors[op.Y]
    bias = op.B is not None
    int8 = _int8(op)
    weights, weights_size = lowering.tensor(op.W).address, 0
    if bias:
        weights, weights_size = _weights_with_bias(
            lowering, op, geometry.depth, geometry.out_channels
        )
    image = channels * math.prod(x_shape[2:])
    if not any(begin) and not any(end):
        # Windows read the input itself; a band may read past its image into the next one.
        images = [(x.address + n * image, x.address + batch * image) for n in range(batch)]
        _convolve(lowering, geometry, images, weights, bias, y, int8)
    else:
        # The scratch's rows are rounded up to a multiple of the row stride (zero rows no window
        # reads), so channel planes lie a whole number of row strides apart (_build_patches
        # batches channels), and `step` zeros after the last plane absorb its column over-read.
        layout = list(geometry.extent)
        layout[-2] = -(-layout[-2] // geometry.strides[-2]) * geometry.strides[-2]
        geometry.extent = tuple(layout)
        size = channels * math.prod(layout) + geometry.strides[-1]
        scratch = lowering.arena.allocate(size)
        fill(lowering, scratch, size, 0.0)  # the borders stay zero for every image
        per_image = geometry.out_channels * math.prod(out)
        for n in range(batch):
            lowering.pipeline.drain()
            source = x.address + n * image
            place(lowering, source, x_shape[1:], scratch, geometry.extent, begin, (1,) * spatial)
            lowering.pipeline.drain()
            shifted = Tensor(y.address + n * per_image, y.shape)
            _convolve(lowering, geometry, [(scratch, scratch + size)], weights, bias, shifted, int8)
        lowering.arena.release(scratch, size)
    if weights_size:
        lowering.arena.release(weights, weights_size)


@lowering(ox.ConvTransposeOp)
def lower_conv_transpose(lowering: Lowering, op: ox.ConvTransposeOp) -> None:
    _check_buffers(lowering)
    x_shape, w_shape, y_shape = ox.shape_of(op.X), ox.shape_of(op.W), ox.shape_of(op.Y)
    spatial = len(x_shape) - 2
    kernel = tuple(w_shape[2:])
    strides = tuple(op.ints_attr("strides", [1] * spatial))
    dilations = tuple(op.ints_attr("dilations", [1] * spatial))
    begin, out = conv_transpose_geometry(op, x_shape[2:], kernel)
    if tuple(out) != tuple(y_shape[2:]):
        raise Unsupported(f"ConvTranspose output {list(y_shape[2:])} is not {list(out)}")
    groups = op.int_attr("group", 1)
    batch, channels = x_shape[:2]
    per_group_out = w_shape[1]
    extent = tuple(o + d * (k - 1) for o, d, k in zip(out, dilations, kernel, strict=True))
    low = [d * (k - 1) - b for d, k, b in zip(dilations, kernel, begin, strict=True)]
    geometry = _Geometry(
        batch, channels, groups, per_group_out * groups, two_d(kernel, 1), two_d((1,) * spatial, 1),
        two_d(dilations, 1), two_d(extent, 1), two_d(tuple(out), 1), flip=True,
    )  # fmt: skip
    x, w, y = lowering.tensor(op.X), lowering.tensor(op.W), lowering.tensors[op.Y]
    bias = op.B is not None
    # A[g*Mg + m, c*K + k] = W[g*Cg + c, m, k] (+ the bias column): the in/out axes swapped.
    taps = math.prod(kernel)
    width = geometry.depth + int(bias)
    weights_size = geometry.out_channels * width
    weights = lowering.arena.allocate(weights_size)
    per_group_in = geometry.per_group_in
    for channel in range(channels):
        group, c = divmod(channel, per_group_in)
        copy_block(
            lowering, w.address + channel * per_group_out * taps, taps,
            weights + group * per_group_out * width + c * taps, width, per_group_out, taps,
        )  # fmt: skip
    if bias:
        copy_block(
            lowering,
            lowering.tensor(op.B).address,
            1,
            weights + geometry.depth,
            width,
            geometry.out_channels,
            1,
        )
    lowering.pipeline.drain()
    size = channels * math.prod(extent)
    scratch = lowering.arena.allocate(size)
    fill(lowering, scratch, size, 0.0)
    lowering.pipeline.drain()
    image = channels * math.prod(x_shape[2:])
    int8 = _int8(op)
    for n in range(batch):
        place(lowering, x.address + n * image, x_shape[1:], scratch, extent, low, strides)
        lowering.pipeline.drain()
        shifted = Tensor(y.address + n * geometry.out_channels * math.prod(out), y.shape)
        _convolve(lowering, geometry, [(scratch, scratch + size)], weights, bias, shifted, int8)
    lowering.arena.release(scratch, size)
    lowering.arena.release(weights, weights_size)


def _lower_patchify(lowering: Lowering, op: ox.ConvOp) -> None:
    """Patch embedding: kernel == stride, no padding, no dilation, one group. Patches are
    gathered by strided DMA into a (patches x C*kh*kw) matrix (plus a column of ones for the
    bias, which rides in the GEMM as a column of A), then out[n] = W @ patches^T."""
    x_shape, w_shape = ox.shape_of(op.X), ox.shape_of(op.W)
    batch, channels, height, width = x_shape
    out_channels = w_shape[0]
    kh, kw = w_shape[2:]
    ph, pw = height // kh, width // kw
    patches, depth = ph * pw, channels * kh * kw
    bias = op.B is not None
    row = depth + int(bias)
    x, out = lowering.tensor(op.X), lowering.tensors[op.Y]
    weights, weights_size = lowering.tensor(op.W).address, 0
    if bias:
        weights, weights_size = _weights_with_bias(lowering, op, depth, out_channels)
    scratch = lowering.arena.allocate(patches * row)
    if bias:  # the ones column: the patch copies below never write it
        for p0, count in split_ranges(patches, min(lowering.half[ACT], MAX_DIM)):
            lowering.next_stage()
            tile = lowering.slot(ACT)
            lowering.pipeline.stage(0)  # two stages, as the patch copies sharing the loop
            lowering.vec("copy", ACT, tile, (0, 0), count, 1, bcast="imm", imm=1.0)
            lowering.pipeline.stage(1)
            lowering.store(ACT, tile, scratch + p0 * row + depth, count, 1, row)
    int8 = _int8(op)
    for n in range(batch):
        for c in range(channels):
            for i in range(kh):
                for p_row in range(ph):
                    lowering.next_stage()
                    tile = lowering.slot(ACT)
                    source = x.address + ((n * channels + c) * height + p_row * kh + i) * width
                    lowering.load(ACT, tile, source, pw, kw, kw)
                    target = scratch + (p_row * pw) * row + (c * kh + i) * kw
                    lowering.store(ACT, tile, target, pw, kw, row)
        base = out.address + n * out_channels * patches
        emit_gemm(
            lowering,
            GemmPlan(
                out_channels, row, patches,
                dense_loader(lowering, ACT, weights, row),
                lambda address, k0, d, p0, count: lowering.load(WGT, address, scratch + p0 * row + k0, count, d, row),
                dense_storer(lowering, base, patches), transpose_b=True, int8=int8,
            ),
        )  # fmt: skip
    lowering.arena.release(scratch, patches * row)
    if weights_size:
        lowering.arena.release(weights, weights_size)
