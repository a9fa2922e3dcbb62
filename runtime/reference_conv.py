"""numpy semantics of Conv and ConvTranspose (the golden model; registered in reference.py's
SEMANTICS table), and the geometry both the reference and the lowering read: the begin/end
padding each op's attributes (auto_pad, pads, output_shape, output_padding) resolve to."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from ctac.dialects import onnx as ox
from ctac.errors import CtacError
from ctac.runtime.reference import Array, semantics

_AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")


def _auto_pad(op: ox.OnnxOp) -> str:
    mode = op.str_attr("auto_pad", "NOTSET")
    if mode not in _AUTO_PADS:
        raise CtacError(f"{op.name}: auto_pad={mode} is not one of {list(_AUTO_PADS)}")
    return mode


def conv_pads(
    op: ox.ConvOp, spatial_in: Sequence[int], kernel: Sequence[int]
) -> tuple[list[int], list[int]]:
    """(begin, end) padding per spatial axis of a Conv: explicit pads, none for VALID, or
    SAME_UPPER/SAME_LOWER's split of the padding that makes the output ceil(in / stride)
    (the odd element at the end for UPPER, at the start for LOWER)."""
    spatial = len(spatial_in)
    strides = op.ints_attr("strides", [1] * spatial)
    dilations = op.ints_attr("dilations", [1] * spatial)
    mode = _auto_pad(op)
    if mode in ("NOTSET", "VALID"):
        pads = op.ints_attr("pads", [0] * (2 * spatial)) if mode == "NOTSET" else [0] * 2 * spatial
        return list(pads[:spatial]), list(pads[spatial:])
    begin, end = [], []
    for size, k, s, d in zip(spatial_in, kernel, strides, dilations, strict=True):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        low = total // 2 if mode == "SAME_UPPER" else total - total // 2
        begin.append(low)
        end.append(total - low)
    return begin, end


def conv_transpose_geometry(
    op: ox.ConvTransposeOp, spatial_in: Sequence[int], kernel: Sequence[int]
) -> tuple[list[int], list[int]]:
    """(begin padding, output extent) per spatial axis of a ConvTranspose, as the ONNX spec
    (and its reference implementation) resolve pads, output_padding, output_shape and auto_pad:
    explicit pads crop the full output; SAME_* split the padding that gives output_shape
    (default in * stride) - UPPER puts the larger half at the end; without pads or SAME_* the
    output starts at the full output's first element and output_shape, when given, sets its
    extent."""
    spatial = len(spatial_in)
    strides = op.ints_attr("strides", [1] * spatial)
    dilations = op.ints_attr("dilations", [1] * spatial)
    extra = op.ints_attr("output_padding", [0] * spatial)
    requested = op.ints_attr("output_shape")
    mode = _auto_pad(op)
    full = [
        s * (n - 1) + e + (k - 1) * d + 1
        for n, k, s, d, e in zip(spatial_in, kernel, strides, dilations, extra, strict=True)
    ]
    if requested is not None and len(requested) != spatial:
        requested = requested[-spatial:]  # some exporters write the full (N, C, ...) shape
    if mode in ("SAME_UPPER", "SAME_LOWER") and op.ints_attr("pads") is None:
        wanted = requested or [n * s for n, s in zip(spatial_in, strides, strict=True)]
        begin = []
        for size, target in zip(full, wanted, strict=True):
            total = size - target
            begin.append(total // 2 if mode == "SAME_UPPER" else total - total // 2)
        return begin, list(wanted)
    pads = op.ints_attr("pads", [0] * (2 * spatial)) if mode == "NOTSET" else [0] * 2 * spatial
    if requested is not None:
        return list(pads[:spatial]), list(requested)
    return list(pads[:spatial]), [size - pads[i] - pads[i + spatial] for i, size in enumerate(full)]


@semantics(ox.ConvOp)
def _conv(op: ox.ConvOp, x: Array, w: Array, b: Array | None) -> list[Array]:
    spatial = x.ndim - 2
    strides = op.ints_attr("strides", [1] * spatial)
    dilations = op.ints_attr("dilations", [1] * spatial)
    begin, end = conv_pads(op, x.shape[2:], w.shape[2:])
    group = op.int_attr("group", 1)
    padded = np.pad(x, [(0, 0), (0, 0)] + list(zip(begin, end, strict=True)))
    kernel = w.shape[2:]
    window = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    windows = np.lib.stride_tricks.sliding_window_view(padded, window, axis=tuple(range(2, x.ndim)))
    index = (slice(None), slice(None))
    index += tuple(slice(None, None, s) for s in strides)
    index += tuple(slice(None, None, d) for d in dilations)
    windows = windows[index]  # N, C, out..., k...
    out_channels = w.shape[0]
    per_group_in = w.shape[1]
    per_group_out = out_channels // group
    results = []
    for g in range(group):
        patch = windows[:, g * per_group_in : (g + 1) * per_group_in]
        weights = w[g * per_group_out : (g + 1) * per_group_out]
        # Contract channels and kernel axes: patch N,C,O...,K... with weights M,C,K...
        patch_axes = [1, *range(2 + spatial, 2 + 2 * spatial)]
        weight_axes = [1, *range(2, 2 + spatial)]
        contracted = np.tensordot(patch, weights, axes=(patch_axes, weight_axes))
        results.append(np.moveaxis(contracted, -1, 1))
    result = np.concatenate(results, axis=1)
    if b is not None:
        result = result + b.reshape((1, -1) + (1,) * spatial)
    return [result]


@semantics(ox.ConvTransposeOp)
def _conv_transpose(op: ox.ConvTransposeOp, x: Array, w: Array, b: Array | None) -> list[Array]:
    """y[n, g*Mg + m, i*s + k*d - begin] += x[n, g*Cg + c, i] * w[g*Cg + c, m, k]: each input
    element spreads its kernel over the output; positions outside [0, out) are dropped."""
    spatial = x.ndim - 2
    strides = op.ints_attr("strides", [1] * spatial)
    dilations = op.ints_attr("dilations", [1] * spatial)
    kernel = w.shape[2:]
    begin, out_shape = conv_transpose_geometry(op, x.shape[2:], kernel)
    group = op.int_attr("group", 1)
    batch, channels = x.shape[:2]
    per_group_in, per_group_out = channels // group, w.shape[1]
    result = np.zeros((batch, per_group_out * group, *out_shape), dtype=np.float64)
    for g in range(group):
        xs = x[:, g * per_group_in : (g + 1) * per_group_in].astype(np.float64)
        ws = w[g * per_group_in : (g + 1) * per_group_in].astype(np.float64)
        target = result[:, g * per_group_out : (g + 1) * per_group_out]
        for offset in itertools.product(*(range(k) for k in kernel)):
            keep, place = [], []
            for axis in range(spatial):
                positions = (
                    np.arange(x.shape[2 + axis]) * strides[axis]
                    + offset[axis] * dilations[axis]
                    - begin[axis]
                )
                inside = (positions >= 0) & (positions < out_shape[axis])
                keep.append(np.flatnonzero(inside))
                place.append(positions[inside])
            if any(len(k) == 0 for k in keep):
                continue
            # (N, Cg, in...) x (Cg, Mg) -> (N, Mg, in...) for this kernel offset
            contribution = np.einsum("nc...,cm->nm...", xs, ws[(slice(None), slice(None), *offset)])
            selected = contribution[(slice(None), slice(None), *np.ix_(*keep))]
            # Distinct positions per axis (stride >= 1), so a fancy-indexed += adds each once.
            target[(slice(None), slice(None), *np.ix_(*place))] += selected
    if b is not None:
        result = result + b.reshape((1, -1) + (1,) * spatial)
    return [result.astype(x.dtype)]
