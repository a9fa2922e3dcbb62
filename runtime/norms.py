"""numpy semantics of RMSNormalization (ONNX opset 23), registered in runtime/reference.py's
SEMANTICS table; a module of its own because reference.py is past its size budget.

RMSNorm is LayerNorm without the mean: x / sqrt(mean(x^2) + epsilon) * scale over the axes from
`axis` on. T5 (and LLaMA-style models) normalise with it; canonicalize builds the op from the
exporters' decomposed form (passes/patterns_layer_norm.py).
"""

from __future__ import annotations

import numpy as np

from ctac.dialects import onnx as ox
from ctac.runtime.reference import Array, semantics


def rms_norm(x: Array, scale: Array, axis: int, epsilon: float) -> Array:
    """x / sqrt(mean(x^2 over axes axis..) + epsilon) * scale, computed in float64 (the
    reference is exact; the result is cast by the caller)."""
    axes = tuple(range(axis % x.ndim, x.ndim))
    x64 = x.astype(np.float64)
    mean_square = (x64 * x64).mean(axis=axes, keepdims=True)
    return x64 / np.sqrt(mean_square + epsilon) * scale


@semantics(ox.RMSNormalizationOp)
def _rms_norm(op: ox.RMSNormalizationOp, x: Array, scale: Array) -> list[Array]:
    return [rms_norm(x, scale, op.int_attr("axis", -1), op.float_attr("epsilon", 1e-5))]
