"""Standard ONNX operators ctac runs as other standard operators, decomposed at import.

BatchNormalization in inference mode (a CNN head's normalisation, e.g. after a ViT's
convolutional stem) is a per-channel affine map: y = (x - mean) / sqrt(var + eps) * scale + B
along axis 1. It becomes x * gain + shift with the parameters reshaped to broadcast over the
spatial axes; with constant parameters (the usual export) gain and shift fold to constants in
onnx-canonicalize, leaving one Mul and one Add.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from ctac.contrib_fused import NodeBuilder, TypeOf


def _batch_normalization(nodes: NodeBuilder, used: set[str]) -> None:
    attributes = nodes.attributes
    if attributes.get("training_mode", 0):
        raise nodes.fail(
            "training_mode=1 (batch statistics) is not supported; export for inference"
        )
    nodes.refuse_used_outputs({1: "running_mean", 2: "running_var"}, used)
    x = nodes.float_like(nodes.input(0))
    rank = len(nodes.shape(x))
    if rank < 2:
        raise nodes.fail(f"input of rank {rank}; BatchNormalization needs [N, C, ...]")
    # [C] -> [C, 1, ..., 1]: broadcasts against [N, C, D1, ...] from the right.
    channel_shape = nodes.constant(np.array([-1] + [1] * (rank - 2), dtype=np.int64))

    def per_channel(position: int) -> str:
        return nodes.add("Reshape", [nodes.input(position), channel_shape])

    scale, bias, mean, variance = (per_channel(p) for p in (1, 2, 3, 4))
    epsilon = nodes.scalar(float(attributes.get("epsilon", 1e-5)))
    # y = x * gain + shift, gain = scale / sqrt(var + eps), shift = B - mean * gain: the
    # parameter-only chains fold to constants, leaving two elementwise ops on x.
    gain = nodes.add("Div", [scale, nodes.add("Sqrt", [nodes.add("Add", [variance, epsilon])])])
    shift = nodes.add("Sub", [bias, nodes.add("Mul", [mean, gain])])
    nodes.add("Add", [nodes.add("Mul", [x, gain]), shift], nodes.output(0))


STANDARD_DECOMPOSITIONS: dict[str, Callable[[NodeBuilder, set[str]], None]] = {
    "BatchNormalization": _batch_normalization,
}


def decompose_standard(
    node: onnx.NodeProto, type_of: TypeOf, used: set[str]
) -> list[onnx.NodeProto]:
    """The standard nodes computing `node` (an op in STANDARD_DECOMPOSITIONS)."""
    nodes = NodeBuilder(node, type_of)
    STANDARD_DECOMPOSITIONS[node.op_type](nodes, used)
    return nodes.nodes
