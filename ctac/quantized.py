"""Quantized ONNX graphs as the float ops that compute them.

onnxruntime's quantizer writes three forms: dynamic (DynamicQuantizeLinear on activations,
MatMulInteger, DequantizeLinear of int8 embedding tables), static QDQ (QuantizeLinear ->
DequantizeLinear pairs around float ops) and QOperator (QLinearMatMul and com.microsoft
QLinearAdd / QLinearMul / QLinearSoftmax). Each op here becomes the standard nodes of its ONNX
definition (onnx/docs/Operators.md; onnxruntime's ContribOperators.md for the com.microsoft ones):

    DequantizeLinear(x, scale, zp)   = (x - zp) * scale          (per tensor or along `axis`)
    QuantizeLinear(x, scale, zp)     = saturate(round(x / scale) + zp)   (round half to even)
    MatMulInteger(a, b, a_zp, b_zp)  = (a - a_zp) @ (b - b_zp)    (int32)
    ConvInteger(x, w, x_zp, w_zp)    = Conv(x - x_zp, w - w_zp)    (int32)
    QLinearMatMul / QLinearConv / QLinearAdd / QLinearMul / QLinearSoftmax
                                     = QuantizeLinear(op(DequantizeLinear(inputs)))
    (QLinearMatMul as saturate(round((a - a_zp) @ (b - b_zp) * (a_scale * b_scale / y_scale))
     + y_zp): the integer product first, requantised as onnxruntime's kernel does)

The integers travel as floats (int8 and uint8 values, and int8 x int8 products summed over the
inner dimension, are exact in float32 while the sum stays below 2^24: 1,040 terms of the largest
product, far more in practice), so the importer builds them with ops ctac already lowers;
DynamicQuantizeLinear has an ONNX function body made of these ops and Round. A MatMul whose
operands are such integers (MatMulInteger's, QLinearMatMul's) runs on the accelerator's int8
GEMM mode (passes/lower_to_isa/precision.py). Scales and zero
points must be constants or graph values of the documented shapes; int4, float8 and blocked
quantization (block_size) are refused by name.
"""

from __future__ import annotations

import numpy as np
import onnx

from ctac.contrib_fused import NodeBuilder, TypeOf

FLOAT32 = onnx.TensorProto.FLOAT
RANGES = {
    np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255),
    np.dtype(np.int16): (-32768, 32767), np.dtype(np.uint16): (0, 65535),
}  # fmt: skip


def _float_of(nodes: NodeBuilder, scale: str) -> int:
    """The ONNX element type computations run in: the scale's (float32 or float16)."""
    dtype = np.dtype(nodes.type_of(scale)[1])
    if dtype.kind != "f":
        raise nodes.fail(f"scale '{scale}' must be a float tensor, got {dtype}")
    nodes.dtype = dtype
    return onnx.helper.np_dtype_to_tensor_dtype(dtype)


def _along(nodes: NodeBuilder, value: str, like: str, axis: int, what: str) -> str:
    """A scale or zero point that is a scalar, or 1-D along `axis` of `like`, shaped to
    broadcast over `like`."""
    shape = nodes.shape(value)
    if len(shape) == 0 or int(np.prod(shape)) == 1:
        return value
    if len(shape) != 1:
        raise nodes.fail(f"{what} of shape {list(shape)}: blocked quantization is not supported")
    if axis == -1:  # along the last axis: broadcasts as it is (`like` may not be built yet)
        return value
    rank = len(nodes.shape(like))
    axis %= rank
    if nodes.shape(like)[axis] != shape[0]:
        raise nodes.fail(
            f"{what} has {shape[0]} entries but axis {axis} of '{like}' has "
            f"{nodes.shape(like)[axis]}"
        )
    target = [1] * rank
    target[axis] = shape[0]
    return nodes.add("Reshape", [value, nodes.constant(np.array(target, np.int64))])


def _refuse_blocks(nodes: NodeBuilder) -> None:
    if nodes.attributes.get("block_size", 0):
        raise nodes.fail("blocked quantization (block_size) is not supported")


def _centre(nodes: NodeBuilder, x: str, zero: str, element: int) -> str:
    """x - zero in the float type `element` (`zero` already shaped to broadcast, or '')."""
    value = nodes.add("Cast", [x], to=element)
    if zero:
        value = nodes.add("Sub", [value, nodes.add("Cast", [zero], to=element)])
    return value


def _saturate(nodes: NodeBuilder, value: str, target: np.dtype, output: str) -> str:
    """A rounded value clipped to `target`'s range and cast to it."""
    low, high = RANGES[target]
    value = nodes.add("Clip", [value, nodes.scalar(low), nodes.scalar(high)])
    return nodes.add("Cast", [value], output, to=onnx.helper.np_dtype_to_tensor_dtype(target))


def dequantize(
    nodes: NodeBuilder, x: str, scale: str, zero: str, axis: int, output: str = ""
) -> str:
    """(x - zero) * scale in the scale's float type."""
    element = _float_of(nodes, scale)
    shaped = _along(nodes, zero, x, axis, "zero point") if zero else ""
    value = _centre(nodes, x, shaped, element)
    return nodes.add("Mul", [value, _along(nodes, scale, x, axis, "scale")], output)


def quantize(
    nodes: NodeBuilder, x: str, scale: str, zero: str, axis: int, target: np.dtype, output: str
) -> str:
    """saturate(round(x / scale) + zero) as `target` (an 8- or 16-bit integer type)."""
    if target not in RANGES:
        raise nodes.fail(f"quantizing to {target} is not supported (8- and 16-bit integers are)")
    element = _float_of(nodes, scale)
    value = nodes.add("Round", [nodes.add("Div", [x, _along(nodes, scale, x, axis, "scale")])])
    if zero:
        shifted = nodes.add("Cast", [_along(nodes, zero, x, axis, "zero point")], to=element)
        value = nodes.add("Add", [value, shifted])
    return _saturate(nodes, value, target, output)


def _zero_dtype(nodes: NodeBuilder, zero: str) -> np.dtype:
    if zero:
        return np.dtype(nodes.type_of(zero)[1])
    to = nodes.attributes.get("output_dtype", 0)
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(to)) if to else np.dtype(np.uint8)


def _dequantize_linear(nodes: NodeBuilder, used: set[str]) -> None:
    _refuse_blocks(nodes)
    x, scale, zero = (nodes.input(i) for i in range(3))
    if np.dtype(nodes.type_of(x)[1]) not in (*RANGES, np.dtype(np.int32)):
        raise nodes.fail(f"dequantizing {nodes.type_of(x)[1]} is not supported")
    dequantize(nodes, x, scale, zero, int(nodes.attributes.get("axis", 1)), nodes.output(0))


def _quantize_linear(nodes: NodeBuilder, used: set[str]) -> None:
    _refuse_blocks(nodes)
    if nodes.attributes.get("saturate", 1) != 1:
        raise nodes.fail("saturate=0 (float8) is not supported")
    x, scale, zero = (nodes.input(i) for i in range(3))
    axis = int(nodes.attributes.get("axis", 1))
    quantize(nodes, x, scale, zero, axis, _zero_dtype(nodes, zero), nodes.output(0))


def _matmul_integer(nodes: NodeBuilder, used: set[str]) -> None:
    a, b, a_zero, b_zero = (nodes.input(i) for i in range(4))
    product = nodes.add(
        "MatMul",
        [
            _centre(nodes, a, _matrix_scale(nodes, a_zero, True) if a_zero else "", FLOAT32),
            _centre(nodes, b, b_zero, FLOAT32),
        ],
    )
    nodes.add("Cast", [product], nodes.output(0), to=onnx.TensorProto.INT32)


def _matrix_scale(nodes: NodeBuilder, scale: str, per_row: bool) -> str:
    """A QLinearMatMul scale or zero point: scalar, or 1-D per row of a / per column of b."""
    shape = nodes.shape(scale)
    if per_row and len(shape) == 1 and shape[0] > 1:
        return nodes.add("Unsqueeze", [scale, nodes.constant(np.array([-1], np.int64))])
    return scale


def _qlinear_matmul(nodes: NodeBuilder, used: set[str]) -> None:
    """The centred integers multiplied first (int32 accumulation, as the definition computes
    it), then the product of the scales (a's per row, b's per column, so they factor out of the
    sum): the MatMul sees integer operands and runs on the accelerator's int8 GEMM mode."""
    a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero = (nodes.input(i) for i in range(8))
    element = _float_of(nodes, y_scale)
    centred = [
        _centre(nodes, a, _matrix_scale(nodes, a_zero, True) if a_zero else "", element),
        _centre(nodes, b, b_zero, element),
    ]
    product = nodes.add("MatMul", centred)
    # Requantised as onnxruntime's kernel does (MLAS): the product times one multiplier
    # a_scale * b_scale / y_scale, rounded half to even, plus y_zero, saturated.
    scales = nodes.add("Mul", [_matrix_scale(nodes, a_scale, True), b_scale])
    value = nodes.add("Mul", [product, nodes.add("Div", [scales, y_scale])])
    value = nodes.add("Round", [value])
    target = _zero_dtype(nodes, y_zero)
    if y_zero:
        value = nodes.add("Add", [value, nodes.add("Cast", [y_zero], to=element)])
    _saturate(nodes, value, target, nodes.output(0))


_CONV_ATTRIBUTES = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


def _centred_conv(nodes: NodeBuilder, x: str, x_zero: str, w: str, w_zero: str, element: int):
    """Conv of the centred integers (x - x_zero, w - w_zero; w's zero point scalar or one per
    output channel), the int32 sum ConvInteger defines, carried as floats: the im2col GEMM
    sees integer operands and runs in the int8 mode."""
    attributes = {k: v for k, v in nodes.attributes.items() if k in _CONV_ATTRIBUTES}
    return nodes.add(
        "Conv",
        [
            _centre(nodes, x, x_zero, element),
            _centre(nodes, w, _along(nodes, w_zero, w, 0, "zero point") if w_zero else "", element),
        ],
        **attributes,
    )


def _conv_integer(nodes: NodeBuilder, used: set[str]) -> None:
    """ConvInteger(x, w, x_zero?, w_zero?) = Conv(x - x_zero, w - w_zero) in int32."""
    x, w, x_zero, w_zero = (nodes.input(i) for i in range(4))
    if x_zero and int(np.prod(nodes.shape(x_zero))) != 1:
        raise nodes.fail("ConvInteger with a zero point per input channel is not supported")
    total = _centred_conv(nodes, x, x_zero, w, w_zero, FLOAT32)
    nodes.add("Cast", [total], nodes.output(0), to=onnx.TensorProto.INT32)


def _qlinear_conv(nodes: NodeBuilder, used: set[str]) -> None:
    """QLinearConv(x, xs, xz, w, ws, wz, ys, yz, B?) = saturate(round((Conv(x - xz, w - wz) + B)
    * (xs * ws / ys)) + yz), as onnxruntime computes it: the integer sum (with the int32 bias,
    whose scale is xs * ws), one multiplier per output channel, rounded half to even."""
    x, x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero, bias = (
        nodes.input(i) for i in range(9)
    )
    if int(np.prod(nodes.shape(x_zero))) != 1:
        raise nodes.fail("QLinearConv with a zero point per input channel is not supported")
    element = _float_of(nodes, y_scale)
    total = _centred_conv(nodes, x, x_zero, w, w_zero, element)
    rank = len(nodes.shape(x))
    if bias:
        channel = [1, -1] + [1] * (rank - 2)
        shaped = nodes.add("Reshape", [bias, nodes.constant(np.array(channel, np.int64))])
        total = nodes.add("Add", [total, nodes.add("Cast", [shaped], to=element)])
    multiplier = nodes.add("Div", [nodes.add("Mul", [x_scale, w_scale]), y_scale])
    if int(np.prod(nodes.shape(w_scale))) > 1:  # per output channel: axis 1 of the result
        channel = [1, -1] + [1] * (rank - 2)
        multiplier = nodes.add("Reshape", [multiplier, nodes.constant(np.array(channel, np.int64))])
    value = nodes.add("Round", [nodes.add("Mul", [total, multiplier])])
    target = _zero_dtype(nodes, y_zero)
    if y_zero:
        value = nodes.add("Add", [value, nodes.add("Cast", [y_zero], to=element)])
    _saturate(nodes, value, target, nodes.output(0))


def _qlinear_binary(op_type: str):
    """QLinearAdd / QLinearMul as onnxruntime computes them (MLAS): in float, the centred
    integers times the scale ratios, the output zero point added before rounding
    (add: (a - za) sa/sc + (b - zb) sb/sc + zc; mul: (a - za)(b - zb) sa sb / sc + zc), then
    round half to even and saturate. Adding zc after rounding, as QuantizeLinear does, differs
    on ties whenever zc is odd."""

    def decompose(nodes: NodeBuilder, used: set[str]) -> None:
        a, a_scale, a_zero, b, b_scale, b_zero, c_scale, c_zero = (nodes.input(i) for i in range(8))
        element = _float_of(nodes, c_scale)

        centred_a, centred_b = (
            _centre(nodes, a, a_zero, element),
            _centre(nodes, b, b_zero, element),
        )
        if op_type == "Add":
            ratio_a = nodes.add("Div", [a_scale, c_scale])
            ratio_b = nodes.add("Div", [b_scale, c_scale])
            value = nodes.add(
                "Add",
                [nodes.add("Mul", [centred_a, ratio_a]), nodes.add("Mul", [centred_b, ratio_b])],
            )
        else:
            ratio = nodes.add("Div", [nodes.add("Mul", [a_scale, b_scale]), c_scale])
            value = nodes.add("Mul", [nodes.add("Mul", [centred_a, centred_b]), ratio])
        target = _zero_dtype(nodes, c_zero)
        if c_zero:
            value = nodes.add("Add", [value, nodes.add("Cast", [c_zero], to=element)])
        _saturate(nodes, nodes.add("Round", [value]), target, nodes.output(0))

    return decompose


def _qlinear_softmax(nodes: NodeBuilder, used: set[str]) -> None:
    x, x_scale, x_zero, y_scale, y_zero = (nodes.input(i) for i in range(5))
    rank = len(nodes.shape(x))
    axis = int(nodes.attributes.get("axis", -1)) % rank
    if int(nodes.attributes.get("opset", 13)) < 13 and axis != rank - 1:
        raise nodes.fail("a pre-opset-13 softmax (flattening) over an inner axis is not supported")
    probabilities = nodes.add("Softmax", [dequantize(nodes, x, x_scale, x_zero, 0)], axis=axis)
    quantize(nodes, probabilities, y_scale, y_zero, 0, _zero_dtype(nodes, y_zero),
             nodes.output(0))  # fmt: skip


# Default-domain ops (ONNX has no function body for these) and onnxruntime's QOperator ops.
QUANTIZED_OPS = {
    "DequantizeLinear": _dequantize_linear,
    "QuantizeLinear": _quantize_linear,
    "MatMulInteger": _matmul_integer,
    "QLinearMatMul": _qlinear_matmul,
    "ConvInteger": _conv_integer,
    "QLinearConv": _qlinear_conv,
}
CONTRIB_QUANTIZED_OPS = {
    "QLinearAdd": _qlinear_binary("Add"),
    "QLinearMul": _qlinear_binary("Mul"),
    "QLinearSoftmax": _qlinear_softmax,
}


def decompose_quantized(
    node: onnx.NodeProto, type_of: TypeOf, used: set[str]
) -> list[onnx.NodeProto]:
    """The standard nodes computing a quantized op (QUANTIZED_OPS or CONTRIB_QUANTIZED_OPS)."""
    table = CONTRIB_QUANTIZED_OPS if node.domain == "com.microsoft" else QUANTIZED_OPS
    nodes = NodeBuilder(node, type_of)
    table[node.op_type](nodes, used)
    return nodes.nodes
