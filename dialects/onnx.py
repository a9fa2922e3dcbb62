"""The `onnx` dialect: ONNX operators as IRDL ops over statically shaped tensors.

Each op keeps ONNX's input order and names; ONNX attributes become properties with ONNX's names.
Inputs that older opsets passed as attributes (axes of Squeeze/Unsqueeze/Reduce*, split of Split)
are always operands here: the importer moves them, so passes see one form.

Two ops are ctac's own: `onnx.Weight` names an entry of the weight store (large initializers stay
out of the IR) and `onnx.Constant` carries small values inline.

Custom syntax, shared by all ops::

    %y = onnx.Slice %x, %starts, %ends, steps %st {attr = ...} : (types) -> type

Required operands come first; a present optional operand is written `name %value`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from xdsl.dialects.builtin import (
    AnyFloat,
    ArrayAttr,
    BFloat16Type,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    Float16Type,
    Float32Type,
    Float64Type,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    Signedness,
    StringAttr,
    TensorType,
    i64,
)
from xdsl.ir import Attribute, Dialect, SSAValue, TypeAttribute
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    OptOperandDef,
    VarOperandDef,
    VarResultDef,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

# ---------------------------------------------------------------------------------------------
# Element types: ONNX <-> xDSL <-> numpy
# ---------------------------------------------------------------------------------------------

_NUMPY_OF_TYPE: list[tuple[Attribute, np.dtype]] = [
    (Float32Type(), np.dtype(np.float32)),
    (Float16Type(), np.dtype(np.float16)),
    (Float64Type(), np.dtype(np.float64)),
    (IntegerType(64), np.dtype(np.int64)),
    (IntegerType(32), np.dtype(np.int32)),
    (IntegerType(16), np.dtype(np.int16)),
    (IntegerType(8), np.dtype(np.int8)),
    (IntegerType(8, Signedness.UNSIGNED), np.dtype(np.uint8)),
    (IntegerType(1), np.dtype(np.bool_)),
]


def numpy_dtype(element_type: Attribute) -> np.dtype:
    """The numpy dtype that holds values of an xDSL element type."""
    for candidate, dtype in _NUMPY_OF_TYPE:
        if candidate == element_type:
            return dtype
    if isinstance(element_type, BFloat16Type):
        raise VerifyException("bfloat16 tensors are not supported by the numpy reference")
    raise VerifyException(f"unsupported element type {element_type}")


def element_type_of(dtype: np.dtype) -> Attribute:
    """The xDSL element type for a numpy dtype."""
    dtype = np.dtype(dtype)
    for candidate, known in _NUMPY_OF_TYPE:
        if known == dtype:
            return candidate
    raise VerifyException(f"unsupported numpy dtype {dtype}")


def tensor_type(shape: Sequence[int], element_type: Attribute) -> TensorType:
    return TensorType(element_type, list(shape))


def dense_from_numpy(array: np.ndarray) -> DenseIntOrFPElementsAttr:
    """A dense elements attribute holding `array` (stored as raw little-endian bytes)."""
    from xdsl.dialects.builtin import BytesAttr

    array = np.asarray(array)
    if not array.flags.c_contiguous:
        array = array.copy()
    element = element_type_of(array.dtype)
    if array.dtype == np.bool_:
        array = array.astype(np.int8)
    return DenseIntOrFPElementsAttr(
        tensor_type(array.shape, element),
        BytesAttr(array.astype(array.dtype.newbyteorder("<")).tobytes()),
    )


def numpy_from_dense(attr: DenseIntOrFPElementsAttr) -> np.ndarray:
    """The numpy array a dense elements attribute holds."""
    element = attr.get_element_type()
    dtype = numpy_dtype(element)
    shape = attr.get_shape()
    storage = np.int8 if dtype == np.bool_ else dtype
    flat = np.frombuffer(attr.data.data, dtype=np.dtype(storage).newbyteorder("<"))
    count = int(np.prod(shape)) if shape else 1
    if flat.size == 1 and count != 1:
        flat = np.broadcast_to(flat, (count,))
    array = flat.reshape(shape).astype(dtype)
    return array


def print_dense(printer: Printer, attr: DenseIntOrFPElementsAttr) -> None:
    """Print a dense attribute so that it parses back to the same bits.

    xDSL prints a non-finite float splat or element as an integer bit pattern (0xff800000), which
    its parser then reads as a number; the hex-string form round-trips exactly.
    """
    if isinstance(attr.get_element_type(), AnyFloat):
        values = numpy_from_dense(attr)
        if not np.isfinite(values).all():
            printer.print_string(f'dense<"0x{attr.data.data.hex().upper()}"> : ')
            printer.print_attribute(attr.type)
            return
    printer.print_attribute(attr)


def shape_of(value: SSAValue) -> tuple[int, ...]:
    value_type = value.type
    if not isinstance(value_type, TensorType):
        raise VerifyException(f"expected a tensor, got {value_type}")
    return tuple(value_type.get_shape())


def element_of(value: SSAValue) -> Attribute:
    value_type = value.type
    assert isinstance(value_type, TensorType)
    return value_type.get_element_type()


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...] | None:
    """numpy/ONNX multidirectional broadcast of static shapes, or None when they do not broadcast."""
    rank = max((len(s) for s in shapes), default=0)
    result = []
    for axis in range(rank):
        dims = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0}
        dims.discard(1)
        if len(dims) > 1:
            return None
        result.append(dims.pop() if dims else 1)
    return tuple(result)


# ---------------------------------------------------------------------------------------------
# The shared op base: syntax and property helpers
# ---------------------------------------------------------------------------------------------


class OnnxOp(IRDLOperation):
    """Base of every op of the dialect: custom syntax and typed access to properties."""

    def int_attr(self, name: str, default: int | None = None) -> int | None:
        attr = self.properties.get(name)
        return default if attr is None else attr.value.data  # type: ignore[union-attr]

    def float_attr(self, name: str, default: float | None = None) -> float | None:
        attr = self.properties.get(name)
        return default if attr is None else attr.value.data  # type: ignore[union-attr]

    def str_attr(self, name: str, default: str | None = None) -> str | None:
        attr = self.properties.get(name)
        return default if attr is None else attr.data  # type: ignore[union-attr]

    def ints_attr(self, name: str, default: Sequence[int] | None = None) -> tuple[int, ...] | None:
        attr = self.properties.get(name)
        if attr is None:
            return None if default is None else tuple(default)
        return tuple(attr.get_values())  # type: ignore[union-attr]

    def print(self, printer: Printer) -> None:
        definition = type(self).get_irdl_definition()
        items: list[tuple[str | None, SSAValue]] = []
        for (name, operand_definition), group in zip(
            definition.operands, self.operand_groups(), strict=True
        ):
            if isinstance(operand_definition, OptOperandDef):
                items.extend((name, value) for value in group)
            else:
                items.extend((None, value) for value in group)
        for index, (keyword, value) in enumerate(items):
            printer.print_string(", " if index else " ")
            if keyword is not None:
                printer.print_string(f"{keyword} ")
            printer.print_operand(value)
        shown = {k: v for k, v in self.properties.items() if k != "operandSegmentSizes"}
        shown.update(self.attributes)
        if shown:
            printer.print_string(" {")
            for index, (key, attr) in enumerate(shown.items()):
                printer.print_string(f"{', ' if index else ''}{key} = ")
                if isinstance(attr, DenseIntOrFPElementsAttr):
                    print_dense(printer, attr)
                else:
                    printer.print_attribute(attr)
            printer.print_string("}")
        printer.print_string(" : (")
        printer.print_list([v.type for v in self.operands], printer.print_attribute)
        printer.print_string(") -> ")
        if len(self.results) == 1:
            printer.print_attribute(self.results[0].type)
        else:
            printer.print_string("(")
            printer.print_list([r.type for r in self.results], printer.print_attribute)
            printer.print_string(")")

    def operand_groups(self) -> list[list[SSAValue]]:
        definition = type(self).get_irdl_definition()
        groups = []
        for name, operand_definition in definition.operands:
            value = getattr(self, name)
            if isinstance(operand_definition, VarOperandDef | OptOperandDef):
                if value is None:
                    groups.append([])
                elif isinstance(value, SSAValue):
                    groups.append([value])
                else:
                    groups.append(list(value))
            else:
                groups.append([value])
        return groups

    @classmethod
    def parse(cls, parser: Parser) -> OnnxOp:
        definition = cls.get_irdl_definition()
        positional = []
        keyworded: dict[str, object] = {}
        optional_names = [n for n, d in definition.operands if isinstance(d, OptOperandDef)]
        start = parser.pos
        first = True
        while True:
            if not first and parser.parse_optional_punctuation(",") is None:
                break
            keyword = parser.parse_optional_keyword_in(optional_names) if optional_names else None
            operand = parser.parse_optional_unresolved_operand()
            if operand is None:
                if keyword is not None or not first:
                    parser.raise_error("expected an operand")
                break
            first = False
            if keyword is not None:
                keyworded[keyword] = operand
            else:
                positional.append(operand)
        shown = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        function_type = parser.parse_function_type()
        ordered = []
        groups: list[list[object]] = []
        remaining = list(positional)
        for name, operand_definition in definition.operands:
            if isinstance(operand_definition, OptOperandDef):
                group = [keyworded.pop(name)] if name in keyworded else []
            elif isinstance(operand_definition, VarOperandDef):
                group, remaining = remaining, []
            else:
                if not remaining:
                    parser.raise_error(f"{cls.name}: missing operand '{name}'", start, parser.pos)
                group, remaining = [remaining[0]], remaining[1:]
            groups.append(group)
            ordered.extend(group)
        if remaining:
            parser.raise_error(f"{cls.name}: too many operands", start, parser.pos)
        resolved = iter(parser.resolve_operands(ordered, function_type.inputs.data, start))
        operands = []
        for (_, operand_definition), group in zip(definition.operands, groups, strict=True):
            values = [next(resolved) for _ in group]
            if isinstance(operand_definition, VarOperandDef | OptOperandDef):
                operands.append(values)
            else:
                operands.append(values[0])
        properties = {k: v for k, v in shown.items() if k in definition.properties}
        attributes = {k: v for k, v in shown.items() if k not in definition.properties}
        return cls.build(
            operands=operands,
            result_types=_result_groups(definition, list(function_type.outputs.data)),
            properties=properties,
            attributes=attributes,
        )

    def verify_(self) -> None:
        self.verify_onnx()

    def verify_onnx(self) -> None:
        """ONNX's own rules for this op (ranks, broadcast, attribute ranges)."""


def _result_groups(definition, types: list[Attribute]) -> list:
    groups = []
    for _, result_definition in definition.results:
        if isinstance(result_definition, VarResultDef):
            groups.append(types)
            types = []
        else:
            groups.append(types.pop(0) if types else None)
    return groups


def _fail(op: OnnxOp, message: str) -> None:
    raise VerifyException(f"{op.name}: {message}")


def _normalize_axis(op: OnnxOp, axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        _fail(op, f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


# ---------------------------------------------------------------------------------------------
# Families of ops
# ---------------------------------------------------------------------------------------------


class UnaryElementwiseOp(OnnxOp):
    X = operand_def(TensorType)
    Y = result_def(TensorType)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        if shape_of(self.X) != shape_of(self.Y):
            _fail(self, f"result shape {shape_of(self.Y)} differs from input {shape_of(self.X)}")


class BinaryElementwiseOp(OnnxOp):
    A = operand_def(TensorType)
    B = operand_def(TensorType)
    C = result_def(TensorType)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        expected = broadcast_shapes(shape_of(self.A), shape_of(self.B))
        if expected is None:
            _fail(self, f"shapes {shape_of(self.A)} and {shape_of(self.B)} do not broadcast")
        if expected != shape_of(self.C):
            _fail(self, f"result shape {shape_of(self.C)} should be the broadcast {expected}")


class VariadicElementwiseOp(OnnxOp):
    data_0 = var_operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        expected = broadcast_shapes(*(shape_of(v) for v in self.data_0))
        if expected is None or expected != shape_of(self.result):
            _fail(self, "inputs do not broadcast to the result shape")


class ReduceOp(OnnxOp):
    data = operand_def(TensorType)
    axes = opt_operand_def(TensorType)
    reduced = result_def(TensorType)
    keepdims = opt_prop_def(IntegerAttr)
    noop_with_empty_axes = opt_prop_def(IntegerAttr)
    traits = traits_def(Pure())
    irdl_options = (AttrSizedOperandSegments(as_property=True),)


def _unary(onnx_name: str) -> type[UnaryElementwiseOp]:
    cls = type(
        f"{onnx_name}Op",
        (UnaryElementwiseOp,),
        {"name": f"onnx.{onnx_name}", "__module__": __name__},
    )
    return irdl_op_definition(cls)


def _binary(onnx_name: str) -> type[BinaryElementwiseOp]:
    cls = type(
        f"{onnx_name}Op",
        (BinaryElementwiseOp,),
        {"name": f"onnx.{onnx_name}", "__module__": __name__},
    )
    return irdl_op_definition(cls)


AbsOp = _unary("Abs")
CeilOp = _unary("Ceil")
ErfOp = _unary("Erf")
ExpOp = _unary("Exp")
FloorOp = _unary("Floor")
IdentityOp = _unary("Identity")
IsNaNOp = _unary("IsNaN")
LogOp = _unary("Log")
NegOp = _unary("Neg")
NotOp = _unary("Not")
ReciprocalOp = _unary("Reciprocal")
ReluOp = _unary("Relu")
RoundOp = _unary("Round")
SigmoidOp = _unary("Sigmoid")
SignOp = _unary("Sign")
SqrtOp = _unary("Sqrt")
TanhOp = _unary("Tanh")

AddOp = _binary("Add")
SubOp = _binary("Sub")
MulOp = _binary("Mul")
DivOp = _binary("Div")
PowOp = _binary("Pow")
EqualOp = _binary("Equal")
GreaterOp = _binary("Greater")
GreaterOrEqualOp = _binary("GreaterOrEqual")
LessOp = _binary("Less")
LessOrEqualOp = _binary("LessOrEqual")
AndOp = _binary("And")
OrOp = _binary("Or")
XorOp = _binary("Xor")


@irdl_op_definition
class ModOp(BinaryElementwiseOp):
    name = "onnx.Mod"
    fmod = opt_prop_def(IntegerAttr)


@irdl_op_definition
class MaxOp(VariadicElementwiseOp):
    name = "onnx.Max"


@irdl_op_definition
class MinOp(VariadicElementwiseOp):
    name = "onnx.Min"


@irdl_op_definition
class SumOp(VariadicElementwiseOp):
    name = "onnx.Sum"


@irdl_op_definition
class ReduceMeanOp(ReduceOp):
    name = "onnx.ReduceMean"


@irdl_op_definition
class ReduceSumOp(ReduceOp):
    name = "onnx.ReduceSum"


@irdl_op_definition
class ReduceMaxOp(ReduceOp):
    name = "onnx.ReduceMax"


@irdl_op_definition
class ReduceMinOp(ReduceOp):
    name = "onnx.ReduceMin"


# ---------------------------------------------------------------------------------------------
# Constants and weights
# ---------------------------------------------------------------------------------------------


@irdl_op_definition
class ConstantOp(OnnxOp):
    """A small tensor held inline: `%c = onnx.Constant dense<[1, 2]> : tensor<2xi64>`."""

    name = "onnx.Constant"
    value = prop_def(DenseIntOrFPElementsAttr)
    output = result_def(TensorType)
    traits = traits_def(Pure())

    @staticmethod
    def from_numpy(array: np.ndarray) -> ConstantOp:
        attr = dense_from_numpy(np.asarray(array))
        return ConstantOp.build(properties={"value": attr}, result_types=[attr.type])

    def to_numpy(self) -> np.ndarray:
        return numpy_from_dense(self.value)

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        print_dense(printer, self.value)

    @classmethod
    def parse(cls, parser: Parser) -> ConstantOp:
        value = parser.parse_attribute()
        if not isinstance(value, DenseIntOrFPElementsAttr):
            parser.raise_error("onnx.Constant expects a dense<...> : tensor<...> value")
        return cls.build(properties={"value": value}, result_types=[value.type])

    def verify_onnx(self) -> None:
        if self.value.type != self.output.type:
            _fail(self, "value type differs from the result type")


@irdl_op_definition
class WeightOp(OnnxOp):
    """A tensor of the weight store, by name: `%w = onnx.Weight "enc.0.q.weight" : tensor<...>`.

    The module's `ctac.weights` attribute says which file the store reads.
    """

    name = "onnx.Weight"
    ref = prop_def(StringAttr)
    output = result_def(TensorType)
    traits = traits_def(Pure())

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_string_literal(self.ref.data)
        printer.print_string(" : ")
        printer.print_attribute(self.output.type)

    @classmethod
    def parse(cls, parser: Parser) -> WeightOp:
        ref = parser.parse_str_literal()
        parser.parse_punctuation(":")
        result_type = parser.parse_type()
        return cls.build(properties={"ref": StringAttr(ref)}, result_types=[result_type])


# ---------------------------------------------------------------------------------------------
# Linear algebra and normalisation
# ---------------------------------------------------------------------------------------------


def matmul_shape(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...] | None:
    """numpy.matmul result shape for static shapes, or None if incompatible."""
    if not a or not b:
        return None
    a2 = (1, *a) if len(a) == 1 else tuple(a)
    b2 = (*b, 1) if len(b) == 1 else tuple(b)
    if a2[-1] != b2[-2]:
        return None
    batch = broadcast_shapes(a2[:-2], b2[:-2])
    if batch is None:
        return None
    shape = (*batch, a2[-2], b2[-1])
    if len(a) == 1:
        shape = shape[:-2] + shape[-1:]
    if len(b) == 1:
        shape = shape[:-1]
    return shape


@irdl_op_definition
class MatMulOp(OnnxOp):
    name = "onnx.MatMul"
    A = operand_def(TensorType)
    B = operand_def(TensorType)
    Y = result_def(TensorType)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        expected = matmul_shape(shape_of(self.A), shape_of(self.B))
        if expected is None:
            _fail(self, f"shapes {shape_of(self.A)} and {shape_of(self.B)} cannot be multiplied")
        if expected != shape_of(self.Y):
            _fail(self, f"result shape {shape_of(self.Y)} should be {expected}")


@irdl_op_definition
class GemmOp(OnnxOp):
    name = "onnx.Gemm"
    A = operand_def(TensorType)
    B = operand_def(TensorType)
    C = opt_operand_def(TensorType)
    Y = result_def(TensorType)
    alpha = opt_prop_def(FloatAttr)
    beta = opt_prop_def(FloatAttr)
    transA = opt_prop_def(IntegerAttr)
    transB = opt_prop_def(IntegerAttr)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        a, b = shape_of(self.A), shape_of(self.B)
        if len(a) != 2 or len(b) != 2:
            _fail(self, "A and B must be matrices")
        m, k = a[::-1] if self.int_attr("transA", 0) else a
        k2, n = b[::-1] if self.int_attr("transB", 0) else b
        if k != k2:
            _fail(self, f"inner dimensions differ ({k} vs {k2})")
        if shape_of(self.Y) != (m, n):
            _fail(self, f"result shape {shape_of(self.Y)} should be {(m, n)}")


@irdl_op_definition
class SoftmaxOp(OnnxOp):
    name = "onnx.Softmax"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    axis = opt_prop_def(IntegerAttr)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        _normalize_axis(self, self.int_attr("axis", -1), len(shape_of(self.input)))
        if shape_of(self.input) != shape_of(self.output):
            _fail(self, "result shape differs from input")


def _verify_norm(op: OnnxOp, x: SSAValue, y: SSAValue, params: tuple) -> None:
    """A normalization over the axes from `axis` on: each (name, value) parameter broadcasts
    to the normalized shape; the result has the input's shape."""
    shape = shape_of(x)
    axis = _normalize_axis(op, op.int_attr("axis", -1), len(shape))
    normalized = shape[axis:]
    for name, value in params:
        if value is not None and broadcast_shapes(normalized, shape_of(value)) != normalized:
            _fail(op, f"{name} shape {shape_of(value)} does not fit {normalized}")
    if shape_of(y) != shape:
        _fail(op, "result shape differs from input")


@irdl_op_definition
class LayerNormalizationOp(OnnxOp):
    name = "onnx.LayerNormalization"
    X = operand_def(TensorType)
    Scale = operand_def(TensorType)
    B = opt_operand_def(TensorType)
    Y = result_def(TensorType)
    axis = opt_prop_def(IntegerAttr)
    epsilon = opt_prop_def(FloatAttr)
    stash_type = opt_prop_def(IntegerAttr)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        _verify_norm(self, self.X, self.Y, (("Scale", self.Scale), ("B", self.B)))


@irdl_op_definition
class RMSNormalizationOp(OnnxOp):
    """ONNX opset 23 RMSNormalization: X / sqrt(mean(X^2) + epsilon) * scale over the axes from
    `axis` on (no mean subtracted, no bias); canonicalize also builds it from T5's decomposed
    RMSNorm (passes/patterns_layer_norm.py)."""

    name = "onnx.RMSNormalization"
    X = operand_def(TensorType)
    scale = operand_def(TensorType)
    Y = result_def(TensorType)
    axis = opt_prop_def(IntegerAttr)
    epsilon = opt_prop_def(FloatAttr)
    stash_type = opt_prop_def(IntegerAttr)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        _verify_norm(self, self.X, self.Y, (("scale", self.scale),))


@irdl_op_definition
class GeluOp(OnnxOp):
    name = "onnx.Gelu"
    X = operand_def(TensorType)
    Y = result_def(TensorType)
    approximate = opt_prop_def(StringAttr)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        if self.str_attr("approximate", "none") not in ("none", "tanh"):
            _fail(self, "approximate must be 'none' or 'tanh'")
        if shape_of(self.X) != shape_of(self.Y):
            _fail(self, "result shape differs from input")


@irdl_op_definition
class ConvOp(OnnxOp):
    name = "onnx.Conv"
    X = operand_def(TensorType)
    W = operand_def(TensorType)
    B = opt_operand_def(TensorType)
    Y = result_def(TensorType)
    auto_pad = opt_prop_def(StringAttr)
    dilations = opt_prop_def(DenseArrayBase)
    group = opt_prop_def(IntegerAttr)
    kernel_shape = opt_prop_def(DenseArrayBase)
    pads = opt_prop_def(DenseArrayBase)
    strides = opt_prop_def(DenseArrayBase)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        x, w = shape_of(self.X), shape_of(self.W)
        if len(x) < 3 or len(w) != len(x):
            _fail(self, f"input rank {len(x)} and weight rank {len(w)} do not form a convolution")
        if x[1] != w[1] * self.int_attr("group", 1):
            _fail(self, f"input channels {x[1]} do not match weight {w[1]} x group")


@irdl_op_definition
class ConvTransposeOp(OnnxOp):
    """ONNX ConvTranspose: W is (C, M/group, k...), the output (N, M, out...)."""

    name = "onnx.ConvTranspose"
    X = operand_def(TensorType)
    W = operand_def(TensorType)
    B = opt_operand_def(TensorType)
    Y = result_def(TensorType)
    auto_pad = opt_prop_def(StringAttr)
    dilations = opt_prop_def(DenseArrayBase)
    group = opt_prop_def(IntegerAttr)
    kernel_shape = opt_prop_def(DenseArrayBase)
    output_padding = opt_prop_def(DenseArrayBase)
    output_shape = opt_prop_def(DenseArrayBase)
    pads = opt_prop_def(DenseArrayBase)
    strides = opt_prop_def(DenseArrayBase)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        x, w, y = shape_of(self.X), shape_of(self.W), shape_of(self.Y)
        group = self.int_attr("group", 1)
        if len(x) < 3 or len(w) != len(x) or len(y) != len(x):
            _fail(self, f"input rank {len(x)} and weight rank {len(w)} do not form a convolution")
        if x[1] != w[0]:
            _fail(self, f"input channels {x[1]} do not match the weight's first axis {w[0]}")
        if group < 1 or x[1] % group or y[1] != w[1] * group:
            _fail(self, f"output channels {y[1]} are not weight {w[1]} x group {group}")


# ---------------------------------------------------------------------------------------------
# Shape manipulation
# ---------------------------------------------------------------------------------------------


@irdl_op_definition
class TransposeOp(OnnxOp):
    name = "onnx.Transpose"
    data = operand_def(TensorType)
    transposed = result_def(TensorType)
    perm = opt_prop_def(DenseArrayBase)
    traits = traits_def(Pure())

    def permutation(self) -> tuple[int, ...]:
        rank = len(shape_of(self.data))
        return self.ints_attr("perm", tuple(reversed(range(rank))))

    def verify_onnx(self) -> None:
        shape = shape_of(self.data)
        perm = self.permutation()
        if sorted(perm) != list(range(len(shape))):
            _fail(self, f"perm {list(perm)} is not a permutation of {len(shape)} axes")
        if tuple(shape[p] for p in perm) != shape_of(self.transposed):
            _fail(self, f"result shape {shape_of(self.transposed)} does not follow perm")


@irdl_op_definition
class ReshapeOp(OnnxOp):
    name = "onnx.Reshape"
    data = operand_def(TensorType)
    shape = operand_def(TensorType)
    reshaped = result_def(TensorType)
    allowzero = opt_prop_def(IntegerAttr)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        if int(np.prod(shape_of(self.data))) != int(np.prod(shape_of(self.reshaped))):
            _fail(self, f"cannot reshape {shape_of(self.data)} to {shape_of(self.reshaped)}")


@irdl_op_definition
class FlattenOp(OnnxOp):
    name = "onnx.Flatten"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    axis = opt_prop_def(IntegerAttr)
    traits = traits_def(Pure())


@irdl_op_definition
class SqueezeOp(OnnxOp):
    name = "onnx.Squeeze"
    data = operand_def(TensorType)
    axes = opt_operand_def(TensorType)
    squeezed = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (AttrSizedOperandSegments(as_property=True),)

    def verify_onnx(self) -> None:
        if int(np.prod(shape_of(self.data))) != int(np.prod(shape_of(self.squeezed))):
            _fail(self, "squeezing must keep the number of elements")


@irdl_op_definition
class UnsqueezeOp(OnnxOp):
    name = "onnx.Unsqueeze"
    data = operand_def(TensorType)
    axes = operand_def(TensorType)
    expanded = result_def(TensorType)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        if int(np.prod(shape_of(self.data))) != int(np.prod(shape_of(self.expanded))):
            _fail(self, "unsqueezing must keep the number of elements")


@irdl_op_definition
class ConcatOp(OnnxOp):
    name = "onnx.Concat"
    inputs = var_operand_def(TensorType)
    concat_result = result_def(TensorType)
    axis = prop_def(IntegerAttr)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        shapes = [shape_of(v) for v in self.inputs]
        if not shapes:
            _fail(self, "needs at least one input")
        rank = len(shapes[0])
        axis = _normalize_axis(self, self.int_attr("axis"), rank)
        for shape in shapes:
            if (
                len(shape) != rank
                or shape[:axis] + shape[axis + 1 :] != shapes[0][:axis] + shapes[0][axis + 1 :]
            ):
                _fail(self, f"input shapes {shapes} differ outside axis {axis}")
        expected = list(shapes[0])
        expected[axis] = sum(s[axis] for s in shapes)
        if tuple(expected) != shape_of(self.concat_result):
            _fail(self, f"result shape {shape_of(self.concat_result)} should be {tuple(expected)}")


@irdl_op_definition
class SliceOp(OnnxOp):
    name = "onnx.Slice"
    data = operand_def(TensorType)
    starts = operand_def(TensorType)
    ends = operand_def(TensorType)
    axes = opt_operand_def(TensorType)
    steps = opt_operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (AttrSizedOperandSegments(as_property=True),)


@irdl_op_definition
class SplitOp(OnnxOp):
    name = "onnx.Split"
    input = operand_def(TensorType)
    split = opt_operand_def(TensorType)
    outputs = var_result_def(TensorType)
    axis = opt_prop_def(IntegerAttr)
    num_outputs = opt_prop_def(IntegerAttr)
    traits = traits_def(Pure())
    irdl_options = (AttrSizedOperandSegments(as_property=True),)

    def verify_onnx(self) -> None:
        shape = shape_of(self.input)
        axis = _normalize_axis(self, self.int_attr("axis", 0), len(shape))
        if sum(shape_of(r)[axis] for r in self.outputs) != shape[axis]:
            _fail(self, "output sizes along the axis do not add up to the input")


@irdl_op_definition
class ShapeOp(OnnxOp):
    name = "onnx.Shape"
    data = operand_def(TensorType)
    shape = result_def(TensorType)
    start = opt_prop_def(IntegerAttr)
    end = opt_prop_def(IntegerAttr)
    traits = traits_def(Pure())


@irdl_op_definition
class ExpandOp(OnnxOp):
    name = "onnx.Expand"
    input = operand_def(TensorType)
    shape = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class GatherOp(OnnxOp):
    name = "onnx.Gather"
    data = operand_def(TensorType)
    indices = operand_def(TensorType)
    output = result_def(TensorType)
    axis = opt_prop_def(IntegerAttr)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        data, indices = shape_of(self.data), shape_of(self.indices)
        axis = _normalize_axis(self, self.int_attr("axis", 0), len(data))
        expected = data[:axis] + indices + data[axis + 1 :]
        if expected != shape_of(self.output):
            _fail(self, f"result shape {shape_of(self.output)} should be {expected}")


@irdl_op_definition
class GatherElementsOp(OnnxOp):
    name = "onnx.GatherElements"
    data = operand_def(TensorType)
    indices = operand_def(TensorType)
    output = result_def(TensorType)
    axis = opt_prop_def(IntegerAttr)
    traits = traits_def(Pure())


@irdl_op_definition
class GatherNDOp(OnnxOp):
    name = "onnx.GatherND"
    data = operand_def(TensorType)
    indices = operand_def(TensorType)
    output = result_def(TensorType)
    batch_dims = opt_prop_def(IntegerAttr)
    traits = traits_def(Pure())


SCATTER_REDUCTIONS = ("none", "add", "mul", "max", "min")


@irdl_op_definition
class ScatterNDOp(OnnxOp):
    name = "onnx.ScatterND"
    data = operand_def(TensorType)
    indices = operand_def(TensorType)
    updates = operand_def(TensorType)
    output = result_def(TensorType)
    reduction = opt_prop_def(StringAttr)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        data, indices, updates = shape_of(self.data), shape_of(self.indices), shape_of(self.updates)
        if self.str_attr("reduction", "none") not in SCATTER_REDUCTIONS:
            _fail(self, f"unknown reduction '{self.str_attr('reduction')}'")
        if not indices or not 1 <= indices[-1] <= len(data):
            _fail(self, f"indices {indices} must end in a depth between 1 and rank {len(data)}")
        expected = indices[:-1] + data[indices[-1] :]
        if updates != expected:
            _fail(self, f"updates shape {updates} should be {expected}")
        if shape_of(self.output) != data:
            _fail(self, "result shape differs from data")


@irdl_op_definition
class ScatterElementsOp(OnnxOp):
    name = "onnx.ScatterElements"
    data = operand_def(TensorType)
    indices = operand_def(TensorType)
    updates = operand_def(TensorType)
    output = result_def(TensorType)
    axis = opt_prop_def(IntegerAttr)
    reduction = opt_prop_def(StringAttr)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        data, indices = shape_of(self.data), shape_of(self.indices)
        _normalize_axis(self, self.int_attr("axis", 0), len(data))
        if self.str_attr("reduction", "none") not in SCATTER_REDUCTIONS:
            _fail(self, f"unknown reduction '{self.str_attr('reduction')}'")
        if indices != shape_of(self.updates) or len(indices) != len(data):
            _fail(self, "indices and updates must have the same shape, of data's rank")
        if shape_of(self.output) != data:
            _fail(self, "result shape differs from data")


@irdl_op_definition
class ResizeOp(OnnxOp):
    """ONNX Resize (opset 11-19): scales or sizes, optional roi and axes."""

    name = "onnx.Resize"
    X = operand_def(TensorType)
    roi = opt_operand_def(TensorType)
    scales = opt_operand_def(TensorType)
    sizes = opt_operand_def(TensorType)
    Y = result_def(TensorType)
    antialias = opt_prop_def(IntegerAttr)
    axes = opt_prop_def(DenseArrayBase)
    coordinate_transformation_mode = opt_prop_def(StringAttr)
    cubic_coeff_a = opt_prop_def(FloatAttr)
    exclude_outside = opt_prop_def(IntegerAttr)
    extrapolation_value = opt_prop_def(FloatAttr)
    keep_aspect_ratio_policy = opt_prop_def(StringAttr)
    mode = opt_prop_def(StringAttr)
    nearest_mode = opt_prop_def(StringAttr)
    traits = traits_def(Pure())
    irdl_options = (AttrSizedOperandSegments(as_property=True),)

    def verify_onnx(self) -> None:
        if self.str_attr("mode", "nearest") not in ("nearest", "linear", "cubic"):
            _fail(self, f"unknown mode '{self.str_attr('mode')}'")
        if len(shape_of(self.Y)) != len(shape_of(self.X)):
            _fail(self, "result rank differs from input")


# ---------------------------------------------------------------------------------------------
# Types, selection and generators
# ---------------------------------------------------------------------------------------------


@irdl_op_definition
class CastOp(OnnxOp):
    name = "onnx.Cast"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    to = prop_def(TypeAttribute)
    saturate = opt_prop_def(IntegerAttr)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        if element_of(self.output) != self.to:
            _fail(self, f"result element type {element_of(self.output)} is not 'to' ({self.to})")
        if shape_of(self.input) != shape_of(self.output):
            _fail(self, "result shape differs from input")


@irdl_op_definition
class CastLikeOp(OnnxOp):
    name = "onnx.CastLike"
    input = operand_def(TensorType)
    target_type = operand_def(TensorType)
    output = result_def(TensorType)
    saturate = opt_prop_def(IntegerAttr)
    traits = traits_def(Pure())


@irdl_op_definition
class WhereOp(OnnxOp):
    name = "onnx.Where"
    condition = operand_def(TensorType)
    X = operand_def(TensorType)
    Y = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())

    def verify_onnx(self) -> None:
        if element_of(self.condition) != IntegerType(1):
            _fail(self, "condition must be a bool tensor")
        expected = broadcast_shapes(shape_of(self.condition), shape_of(self.X), shape_of(self.Y))
        if expected is None or expected != shape_of(self.output):
            _fail(self, "condition, X and Y do not broadcast to the result shape")


@irdl_op_definition
class ClipOp(OnnxOp):
    name = "onnx.Clip"
    input = operand_def(TensorType)
    min = opt_operand_def(TensorType)
    max = opt_operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (AttrSizedOperandSegments(as_property=True),)


@irdl_op_definition
class PadOp(OnnxOp):
    name = "onnx.Pad"
    data = operand_def(TensorType)
    pads = operand_def(TensorType)
    constant_value = opt_operand_def(TensorType)
    axes = opt_operand_def(TensorType)
    output = result_def(TensorType)
    mode = opt_prop_def(StringAttr)
    traits = traits_def(Pure())
    irdl_options = (AttrSizedOperandSegments(as_property=True),)

    def verify_onnx(self) -> None:
        if self.str_attr("mode", "constant") not in ("constant", "reflect", "edge", "wrap"):
            _fail(self, f"unknown mode '{self.str_attr('mode')}'")


@irdl_op_definition
class ConstantOfShapeOp(OnnxOp):
    name = "onnx.ConstantOfShape"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    value = opt_prop_def(DenseIntOrFPElementsAttr)
    traits = traits_def(Pure())


@irdl_op_definition
class RangeOp(OnnxOp):
    name = "onnx.Range"
    start = operand_def(TensorType)
    limit = operand_def(TensorType)
    delta = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())


@irdl_op_definition
class TriluOp(OnnxOp):
    name = "onnx.Trilu"
    input = operand_def(TensorType)
    k = opt_operand_def(TensorType)
    output = result_def(TensorType)
    upper = opt_prop_def(IntegerAttr)
    traits = traits_def(Pure())


@irdl_op_definition
class CumSumOp(OnnxOp):
    name = "onnx.CumSum"
    x = operand_def(TensorType)
    axis = operand_def(TensorType)
    y = result_def(TensorType)
    exclusive = opt_prop_def(IntegerAttr)
    reverse = opt_prop_def(IntegerAttr)
    traits = traits_def(Pure())


@irdl_op_definition
class DropoutOp(OnnxOp):
    """Inference-mode Dropout (an identity); canonicalize removes it."""

    name = "onnx.Dropout"
    data = operand_def(TensorType)
    ratio = opt_operand_def(TensorType)
    training_mode = opt_operand_def(TensorType)
    output = result_def(TensorType)
    seed = opt_prop_def(IntegerAttr)
    traits = traits_def(Pure())
    irdl_options = (AttrSizedOperandSegments(as_property=True),)


ALL_OPS: list[type[OnnxOp]] = [
    value
    for value in list(globals().values())
    if isinstance(value, type) and issubclass(value, OnnxOp) and "name" in value.__dict__
]

# ONNX op type (default domain) -> op class; ctac's own ops (Weight) are not ONNX op types.
OP_BY_ONNX_TYPE: dict[str, type[OnnxOp]] = {
    op.name.removeprefix("onnx."): op for op in ALL_OPS if op is not WeightOp
}

Onnx = Dialect("onnx", ALL_OPS, [])

__all__ = [
    "ALL_OPS",
    "OP_BY_ONNX_TYPE",
    "ArrayAttr",
    "AnyFloat",
    "Onnx",
    "OnnxOp",
    "i64",
]
