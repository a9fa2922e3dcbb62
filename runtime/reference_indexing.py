"""numpy semantics of ScatterND, ScatterElements and Resize (registered in runtime/reference.py's
SEMANTICS table; reference.py imports this module at its end so the registration happens).

Scatters apply their updates in index order, so a duplicated index under reduction add/mul/
max/min combines every update exactly as ONNX's sequential definition does (`ufunc.at`); under
reduction none ONNX leaves duplicates undefined and the last update wins here.

Resize is separable: each resized axis is one (out x in) interpolation matrix (nearest, linear
or cubic, with antialias, exclude_outside and every coordinate transformation mode), applied
axis by axis. The same functions give the lowering (passes/lower_to_isa/indexing.py) its index
maps and matrices, so the compiled program and the golden model cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ctac.dialects import onnx as ox
from ctac.errors import CtacError
from ctac.runtime.reference import semantics

Array = np.ndarray

_AT = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _wrap(indices: Array, sizes: Array, what: str) -> Array:
    """Negative indices count from the end; anything outside [-size, size) is an error."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size and ((indices < -sizes).any() or (indices >= sizes).any()):
        raise CtacError(f"{what}: an index is outside its axis")
    return np.where(indices < 0, indices + sizes, indices)


def scatter_nd_targets(data_shape: tuple[int, ...], indices: Array) -> Array:
    """Per index tuple of a ScatterND, the row of data (viewed as (prod(data_shape[:depth]),
    rest)) that it updates."""
    depth = indices.shape[-1]
    tuples = np.asarray(indices, dtype=np.int64).reshape(-1, depth)
    tuples = _wrap(tuples, np.asarray(data_shape[:depth], dtype=np.int64), "onnx.ScatterND")
    return np.ravel_multi_index(tuple(tuples.T), data_shape[:depth]).reshape(-1)


def scatter_elements_targets(data_shape: tuple[int, ...], indices: Array, axis: int) -> Array:
    """Per element of `indices`, the flat position in data that it updates (row-major)."""
    axis = axis % len(data_shape)
    along = _wrap(indices, np.int64(data_shape[axis]), "onnx.ScatterElements")
    coordinates = list(np.indices(indices.shape, dtype=np.int64))
    coordinates[axis] = along
    return np.ravel_multi_index(tuple(coordinates), data_shape).reshape(-1)


def scatter_flat(
    data: Array, targets: Array, updates: Array, reduction: str, what: str
) -> list[Array]:
    """data with rows `targets` of data viewed as (rows, row elements) combined with `updates`."""
    if reduction not in ("none", *_AT):
        raise CtacError(f"{what}: unknown reduction '{reduction}'")
    out = np.array(data, copy=True)
    values = updates.reshape(len(targets), -1).astype(out.dtype)
    rows = out.reshape(-1, values.shape[1])
    if reduction == "none":
        rows[targets] = values  # numpy assigns in order: with duplicates the last update wins
    else:
        _AT[reduction].at(rows, targets, values)
    return [out]


@semantics(ox.ScatterNDOp)
def _scatter_nd(op: ox.ScatterNDOp, data: Array, indices: Array, updates: Array) -> list[Array]:
    targets = scatter_nd_targets(data.shape, indices)
    return scatter_flat(data, targets, updates, op.str_attr("reduction", "none"), op.name)


@semantics(ox.ScatterElementsOp)
def _scatter_elements(
    op: ox.ScatterElementsOp, data: Array, indices: Array, updates: Array
) -> list[Array]:
    targets = scatter_elements_targets(data.shape, indices, op.int_attr("axis", 0))
    return scatter_flat(data, targets, updates, op.str_attr("reduction", "none"), op.name)


# ---------------------------------------------------------------------------------------------
# Resize
# ---------------------------------------------------------------------------------------------

COORDINATE_MODES = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_crop_and_resize",
)
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@dataclass(frozen=True)
class AxisResize:
    """One resized axis: in_size -> out_size at `scale`, roi (start, end) for tf_crop_and_resize."""

    axis: int
    in_size: int
    out_size: int
    scale: float
    roi: tuple[float, float]


def _optional(array: Array | None) -> Array | None:
    """ONNX writes an absent roi/scales/sizes as an empty tensor as often as an empty name."""
    return None if array is None or np.asarray(array).size == 0 else np.asarray(array)


def resize_axes(
    op: ox.ResizeOp,
    shape: tuple[int, ...],
    roi: Array | None,
    scales: Array | None,
    sizes: Array | None,
) -> list[AxisResize]:
    """The axes Resize changes (identity axes left out), per the ONNX definition: scales give
    floor(in * scale); sizes give the scale out / in, or with keep_aspect_ratio_policy
    not_larger / not_smaller one common scale and round-half-up sizes."""
    rank = len(shape)
    axes = [a % rank for a in (op.ints_attr("axes") or range(rank))]
    roi, scales, sizes = _optional(roi), _optional(scales), _optional(sizes)
    if (scales is None) == (sizes is None):
        raise CtacError(f"{op.name}: exactly one of scales and sizes must be given")
    given = (scales if scales is not None else sizes).reshape(-1)
    if len(given) != len(axes):
        raise CtacError(f"{op.name}: {len(given)} scales/sizes for {len(axes)} axes")
    starts = dict.fromkeys(range(rank), 0.0)
    ends = dict.fromkeys(range(rank), 1.0)
    if roi is not None:
        values = [float(v) for v in roi.reshape(-1)]
        if len(values) != 2 * len(axes):
            raise CtacError(f"{op.name}: roi needs {2 * len(axes)} values")
        for i, axis in enumerate(axes):
            starts[axis], ends[axis] = values[i], values[len(axes) + i]
    scale = {a: 1.0 for a in range(rank)}
    out = dict(enumerate(shape))
    if scales is not None:
        for axis, value in zip(axes, given, strict=True):
            if not value > 0:
                raise CtacError(f"{op.name}: scale {value} is not positive")
            scale[axis] = float(value)
            out[axis] = int(math.floor(shape[axis] * float(value)))
    else:
        for axis, value in zip(axes, given, strict=True):
            scale[axis], out[axis] = int(value) / shape[axis], int(value)
        policy = op.str_attr("keep_aspect_ratio_policy", "stretch")
        if policy in ("not_larger", "not_smaller"):
            common = (min if policy == "not_larger" else max)(scale[a] for a in axes)
            for axis in axes:
                scale[axis], out[axis] = common, int(common * shape[axis] + 0.5)
        elif policy != "stretch":
            raise CtacError(f"{op.name}: unknown keep_aspect_ratio_policy '{policy}'")
    changed = []
    for axis in axes:
        identity = (
            math.isclose(scale[axis], 1.0)
            and out[axis] == shape[axis]
            and math.isclose(starts[axis], 0.0)
            and math.isclose(ends[axis], 1.0)
        )
        if not identity:
            roi_pair = (starts[axis], ends[axis])
            changed.append(AxisResize(axis, shape[axis], out[axis], scale[axis], roi_pair))
    return changed


def resize_shape(shape: tuple[int, ...], axes: list[AxisResize]) -> tuple[int, ...]:
    out = list(shape)
    for each in axes:
        out[each.axis] = each.out_size
    return tuple(out)


def _source_coordinates(op: ox.ResizeOp, each: AxisResize) -> tuple[Array, Array | None]:
    """x_original of every output position and, for tf_crop_and_resize, which fall outside."""
    mode = op.str_attr("coordinate_transformation_mode", "half_pixel")
    y = np.arange(each.out_size, dtype=np.float64)
    length, scale = each.in_size, each.scale
    resized = scale * length  # ONNX's output_width: the unrounded output length
    outside = None
    if mode == "align_corners":
        x = np.zeros_like(y) if resized == 1 else y * (length - 1) / (resized - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_crop_and_resize":
        start, end = each.roi
        if resized == 1:
            x = np.full_like(y, (end - start) * (length - 1) / 2)
        else:
            x = y * (end - start) * (length - 1) / (resized - 1)
        x = x + start * (length - 1)
        outside = (x < 0) | (x > length - 1)
    elif mode == "pytorch_half_pixel":
        x = np.full_like(y, -0.5) if resized == 1 else (y + 0.5) / scale - 0.5
    elif mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif mode == "half_pixel_symmetric":
        offset = length / 2 * (1 - each.out_size / resized)
        x = offset + (y + 0.5) / scale - 0.5
    else:
        raise CtacError(f"{op.name}: unknown coordinate_transformation_mode '{mode}'")
    return x, outside


def _coefficients(op: ox.ResizeOp, ratio: Array, scale: float) -> Array:
    """(positions, taps) kernel weights; ratio in (0, 1] is the distance past the left tap."""
    mode = op.str_attr("mode", "nearest")
    antialias = bool(op.int_attr("antialias", 0))
    if mode == "nearest":
        if antialias:
            raise CtacError(f"{op.name}: antialias applies to linear and cubic modes only")
        nearest = op.str_attr("nearest_mode", "round_prefer_floor")
        right = {
            "round_prefer_floor": ratio > 0.5,
            "round_prefer_ceil": ratio >= 0.5,
            "floor": np.zeros_like(ratio, dtype=bool),
            "ceil": np.ones_like(ratio, dtype=bool),
        }.get(nearest)
        if right is None:
            raise CtacError(f"{op.name}: unknown nearest_mode '{nearest}'")
        right = right | (ratio == 1.0)  # x_original on a pixel: that pixel
        return np.stack([~right, right], axis=1).astype(np.float64)
    # Antialias widens the kernel by 1 / scale when downsampling (taps first .. 1 - first
    # around the left pixel); without it linear has 2 taps and cubic 4.
    shrink = min(scale, 1.0) if antialias else 1.0
    support = {"linear": 1, "cubic": 2}.get(mode)
    if support is None:
        raise CtacError(f"{op.name}: unknown mode '{mode}'")
    first = int(math.floor(-support / shrink) + 1)
    taps = np.arange(first, 2 - first, dtype=np.float64)
    distance = np.abs((taps[None, :] - ratio[:, None]) * shrink)
    if mode == "linear":
        weights = np.clip(1 - distance, 0, 1)
    else:
        a = op.float_attr("cubic_coeff_a", -0.75)
        near = ((a + 2) * distance - (a + 3)) * distance * distance + 1
        far = ((a * distance - 5 * a) * distance + 8 * a) * distance - 4 * a
        weights = np.where(distance <= 1, near, np.where(distance < 2, far, 0.0))
    if antialias:
        weights = weights / weights.sum(axis=1, keepdims=True)
    return weights


def resize_matrix(op: ox.ResizeOp, each: AxisResize) -> tuple[Array, Array | None]:
    """(out_size x in_size) interpolation matrix of one axis, and the output positions that take
    extrapolation_value instead (tf_crop_and_resize outside the roi), or None."""
    x, outside = _source_coordinates(op, each)
    floor = np.floor(x)
    ratio = np.where(x == floor, 1.0, x - floor)
    weights = _coefficients(op, ratio, each.scale)
    taps = weights.shape[1]
    # The `taps` pixels nearest x (ties to the lower ones), as ONNX's edge-padded neighbours.
    pad = -(-taps // 2)
    padded = x + pad
    base = np.floor(padded)
    fraction = padded - base
    if taps % 2 == 0:
        offset = np.where(fraction == 0, -(taps // 2), -(taps // 2) + 1)
    else:
        low = -((taps - 1) // 2)
        offset = np.where(fraction <= 0.5, low, low + 1)
    start = base.astype(np.int64) + offset
    neighbours = start[:, None] + np.arange(taps)[None, :] - pad
    if op.int_attr("exclude_outside", 0):
        weights = np.where((neighbours < 0) | (neighbours >= each.in_size), 0.0, weights)
        total = weights.sum(axis=1, keepdims=True)
        weights = weights / np.where(total == 0, 1.0, total)
    matrix = np.zeros((each.out_size, each.in_size), dtype=np.float64)
    rows = np.repeat(np.arange(each.out_size), taps)
    np.add.at(matrix, (rows, np.clip(neighbours, 0, each.in_size - 1).reshape(-1)), weights.ravel())
    if outside is not None and not outside.any():
        outside = None
    return matrix, outside


def nearest_map(matrix: Array) -> Array | None:
    """The input index each output position copies, when every row is one-hot (nearest)."""
    picked = np.argmax(matrix, axis=1)
    one_hot = (matrix[np.arange(len(matrix)), picked] == 1.0) & ((matrix != 0).sum(axis=1) == 1)
    return picked if one_hot.all() else None


@semantics(ox.ResizeOp)
def _resize(
    op: ox.ResizeOp, x: Array, roi: Array | None, scales: Array | None, sizes: Array | None
) -> list[Array]:
    axes = resize_axes(op, x.shape, roi, scales, sizes)
    expected = ox.shape_of(op.Y)
    if resize_shape(x.shape, axes) != expected:
        raise CtacError(
            f"{op.name}: scales/sizes give shape {resize_shape(x.shape, axes)}, "
            f"the result type says {expected}"
        )
    fill = op.float_attr("extrapolation_value", 0.0)
    result = x
    for each in axes:
        matrix, outside = resize_matrix(op, each)
        picked = nearest_map(matrix) if outside is None else None
        if picked is not None:
            result = np.take(result, picked, axis=each.axis)  # exact, any dtype
            continue
        moved = np.moveaxis(result.astype(np.float64), each.axis, -1) @ matrix.T
        if outside is not None:
            moved = np.where(outside, fill, moved)
        result = np.moveaxis(moved, -1, each.axis)
    if np.issubdtype(x.dtype, np.integer) and result.dtype != x.dtype:
        info = np.iinfo(x.dtype)
        result = np.clip(np.round(result), info.min, info.max)
    return [np.asarray(result).astype(x.dtype)]
