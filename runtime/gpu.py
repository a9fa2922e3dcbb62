"""Roofline model of the GPU baseline (a V100 by default) running the same operations.

Every op of the detected module is one kernel: time = max(FLOPs / peak, bytes / bandwidth) plus
a launch overhead; matrix products use the fp16 tensor-core peak, everything else the fp32 CUDA
core peak; tensors are fp16 in HBM and attention materialises its scores (an unfused kernel
sequence, as exported models run). Energy is time x board power (an upper bound: the GPU's
published TDP). The constants live in the hardware config's [gpu] table with their sources.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation

from ctac.dialects import cta
from ctac.dialects import onnx as ox
from ctac.hw import Hardware

FREE_OPS = (
    ox.ConstantOp,
    ox.WeightOp,
    ox.ReshapeOp,
    ox.FlattenOp,
    ox.SqueezeOp,
    ox.UnsqueezeOp,
    ox.IdentityOp,
)
BYTES = 2  # fp16 tensors


@dataclass
class KernelCost:
    name: str
    flops: float
    bytes: float
    seconds: float


def _size(value) -> int:
    return int(np.prod(ox.shape_of(value))) if ox.shape_of(value) else 1


def op_work(op: Operation) -> tuple[float, float, bool]:
    """(FLOPs, HBM bytes, uses tensor cores) of one op."""
    moved = sum(_size(v) for v in op.operands) + sum(_size(r) for r in op.results)
    if isinstance(op, ox.MatMulOp):
        k = ox.shape_of(op.A)[-1]
        return 2.0 * _size(op.Y) * k, moved * BYTES, True
    if isinstance(op, ox.GemmOp):
        k = ox.shape_of(op.A)[0 if op.int_attr("transA", 0) else 1]
        return 2.0 * _size(op.Y) * k, moved * BYTES, True
    if isinstance(op, cta.ProjectOp):
        start, end = op.column_range()
        # hidden is the last dim of a (B, S, E) or per-head (B, H, S, E) input
        return 2.0 * _size(op.output) * ox.shape_of(op.input)[-1], moved * BYTES, True
    if isinstance(op, ox.ConvOp):
        kernel = _size(op.W) // ox.shape_of(op.W)[0]
        return 2.0 * _size(op.Y) * kernel, moved * BYTES, True
    if isinstance(op, ox.ConvTransposeOp):
        # W (C, M/group, k...): every input element meets M/group x k... weights.
        per_input = _size(op.W) // ox.shape_of(op.W)[0]
        return 2.0 * _size(op.X) * per_input, moved * BYTES, True
    if isinstance(op, cta.AttentionOp):
        batch, heads, q_len, head_dim = ox.shape_of(op.query)
        kv_len, value_dim = ox.shape_of(op.key)[2], ox.shape_of(op.value)[3]
        scores = batch * heads * q_len * kv_len
        flops = 2.0 * scores * (head_dim + value_dim) + 5.0 * scores
        # Q, K, V and the output once; the scores written and read by the softmax and P.V.
        return flops, (moved + 4 * scores) * BYTES, True
    return float(sum(_size(r) for r in op.results)), moved * BYTES, False


def roofline(module: ModuleOp, hw: Hardware) -> tuple[float, float, list[KernelCost]]:
    """(seconds, joules, per-kernel costs) of the module on the GPU baseline."""
    fp16 = hw.number("gpu", "peak_tflops_fp16") * 1e12
    fp32 = hw.number("gpu", "peak_tflops_fp32") * 1e12
    bandwidth = hw.number("gpu", "bandwidth_gb_s") * 1e9
    launch = hw.number("gpu", "kernel_overhead_us") * 1e-6
    power = hw.number("gpu", "power_w")
    kernels = []
    for function in module.ops:
        if not isinstance(function, func.FuncOp):
            continue
        for op in function.body.block.ops:
            if isinstance(op, (func.ReturnOp, *FREE_OPS)):
                continue
            flops, moved, tensor = op_work(op)
            seconds = max(flops / (fp16 if tensor else fp32), moved / bandwidth) + launch
            kernels.append(KernelCost(op.name, flops, moved, seconds))
    seconds = sum(k.seconds for k in kernels)
    return seconds, seconds * power, kernels
