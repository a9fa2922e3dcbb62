"""ONNX protobuf -> `onnx` dialect module, built directly (never printed and parsed).

Steps: load (external data only from the model's folder), onnx.checker, fix symbolic input
dimensions from --shape, onnx shape inference, then one op per node. Large initializers become
`onnx.Weight` references to the weight store; small ones stay inline as `onnx.Constant`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    f32,
    i64,
)
from xdsl.ir import Attribute, Block, Region, SSAValue
from xdsl.irdl import OptOperandDef, VarOperandDef, VarResultDef

from ctac.contrib import CONTRIB_DOMAIN, CONTRIB_OPS, ContribBuilder
from ctac.contrib_fused import DECOMPOSED_OPSET, DECOMPOSITIONS, attention_mask_nodes, decompose
from ctac.decompositions import STANDARD_DECOMPOSITIONS, decompose_standard
from ctac.dialects import onnx as onnx_dialect
from ctac.errors import CtacError
from ctac.functions import check_limits, expand, has_function
from ctac.model_interface import apply_input_shapes, select_outputs
from ctac.onnx_loader import DEFAULT_MAX_TENSOR_BYTES, checkable_skeleton, load_onnx_lazy
from ctac.positions import derived_positions_error, longer_than_positions
from ctac.quantized import CONTRIB_QUANTIZED_OPS, QUANTIZED_OPS, decompose_quantized
from ctac.runtime.evaluator import check_value_sizes, module_values, operand_arrays
from ctac.runtime.reference import SEMANTICS, shape_op_result
from ctac.weights import WeightStore, constant_node_value, register_store

# Tensors up to this many elements (and splats of any size) are printed inline; others stay in
# the weight store.
INLINE_ELEMENTS = 16
# Values up to this size are tracked as known constants so shape arithmetic can be evaluated.
KNOWN_ELEMENTS = 1 << 16
NAME_ATTRIBUTE = "onnx.name"


@dataclass
class ImportedModel:
    module: ModuleOp
    store: WeightStore
    input_names: list[str]
    output_names: list[str]


_ONNX_TO_ELEMENT = {
    onnx.TensorProto.FLOAT: onnx_dialect.element_type_of(np.float32),
    onnx.TensorProto.FLOAT16: onnx_dialect.element_type_of(np.float16),
    onnx.TensorProto.DOUBLE: onnx_dialect.element_type_of(np.float64),
    onnx.TensorProto.INT64: onnx_dialect.element_type_of(np.int64),
    onnx.TensorProto.INT32: onnx_dialect.element_type_of(np.int32),
    onnx.TensorProto.INT16: onnx_dialect.element_type_of(np.int16),
    onnx.TensorProto.INT8: onnx_dialect.element_type_of(np.int8),
    onnx.TensorProto.UINT8: onnx_dialect.element_type_of(np.uint8),
    onnx.TensorProto.BOOL: onnx_dialect.element_type_of(np.bool_),
}


def element_type_of_onnx(data_type: int, where: str) -> Attribute:
    element = _ONNX_TO_ELEMENT.get(data_type)
    if element is None:
        name = (
            onnx.TensorProto.DataType.Name(data_type)
            if data_type in onnx.TensorProto.DataType.values()
            else str(data_type)
        )
        raise CtacError(f"{where}: element type {name} is not supported")
    return element


def _node_label(node: onnx.NodeProto) -> str:
    return f"'{node.name or node.output[0]}' ({node.op_type})"


_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.$-]")
_NUMBER_SUFFIX = re.compile(r"_(\d+)$")


def ssa_name(onnx_name: str) -> str:
    """A readable SSA name for an ONNX value name ('/enc/layer.0/Add_output_0' -> 'enc_layer.0_Add')."""
    name = onnx_name.strip("/").removesuffix("_output_0")
    name = _NAME_CHARS.sub("_", name)
    if not name or name[0].isdigit():
        name = "v" + name
    # xDSL drops a trailing `_<digits>` from name hints (it reserves it for uniquing), which
    # would turn every `val_123` of a dynamo export into `val`: keep the number as `.123`.
    return _NUMBER_SUFFIX.sub(r".\1", name)


def _convert_attribute(node: onnx.NodeProto, attribute: onnx.AttributeProto) -> Attribute:
    kind = attribute.type
    where = f"node {_node_label(node)}, attribute '{attribute.name}'"
    if node.op_type == "Cast" and attribute.name == "to":
        return element_type_of_onnx(attribute.i, where)
    if kind == onnx.AttributeProto.INT:
        return IntegerAttr(attribute.i, i64)
    if kind == onnx.AttributeProto.FLOAT:
        return FloatAttr(attribute.f, f32)
    if kind == onnx.AttributeProto.STRING:
        return StringAttr(attribute.s.decode("utf-8", errors="replace"))
    if kind == onnx.AttributeProto.INTS:
        return DenseArrayBase.from_list(i64, list(attribute.ints))
    if kind == onnx.AttributeProto.FLOATS:
        return DenseArrayBase.from_list(f32, list(attribute.floats))
    if kind == onnx.AttributeProto.TENSOR:
        array = numpy_helper.to_array(attribute.t)
        element_type_of_onnx(attribute.t.data_type, where)
        return onnx_dialect.dense_from_numpy(array)
    raise CtacError(
        f"{where}: attribute kind {onnx.AttributeProto.AttributeType.Name(kind)} is not supported"
    )


# Inputs that older opsets passed as attributes: (op type, attribute) -> operand position.
_ATTRIBUTE_INPUTS = {
    ("Squeeze", "axes"): 1,
    ("Unsqueeze", "axes"): 1,
    ("ReduceMean", "axes"): 1,
    ("ReduceSum", "axes"): 1,
    ("ReduceMax", "axes"): 1,
    ("ReduceMin", "axes"): 1,
    ("Split", "split"): 1,
}


def _is_splat(array: np.ndarray) -> bool:
    if array.size <= 1 or array.flat[-1] != array.flat[0] or array.flat[1] != array.flat[0]:
        return False  # (at once for weights, without reading them all)
    return bool((array == array.flat[0]).all())


class _GraphBuilder:
    def __init__(
        self,
        model: onnx.ModelProto,
        store: WeightStore,
        max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
    ) -> None:
        self.model = model
        self.max_tensor_bytes = max_tensor_bytes
        self.graph = model.graph
        self.store = store
        self.block: Block | None = None
        self.values: dict[str, SSAValue] = {}
        self.known: dict[SSAValue, np.ndarray] = {}
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)

    def input_type(self, value: onnx.ValueInfoProto) -> TensorType:
        tensor = value.type.tensor_type
        element = element_type_of_onnx(tensor.elem_type, f"input '{value.name}'")
        return TensorType(element, [d.dim_value for d in tensor.shape.dim])

    def infer_output_types(self, node: onnx.NodeProto, outputs: list[str]) -> list[TensorType]:
        """Static result types from ONNX's per-node inference, fed the constants known so far."""
        try:
            schema = onnx.defs.get_schema(node.op_type, self.opset, node.domain)
        except onnx.defs.SchemaError:
            raise CtacError(
                f"node {_node_label(node)}: {node.op_type} does not exist in opset {self.opset}"
            ) from None
        input_types = {n: self.type_proto(self.values[n]) for n in node.input if n}
        input_data = {
            n: numpy_helper.from_array(self.known[self.values[n]], n)
            for n in node.input
            if n and self.values[n] in self.known
        }
        try:
            inferred = onnx.shape_inference.infer_node_outputs(
                schema, node, input_types, input_data, opset_imports=self.opset_imports()
            )
        except (
            onnx.shape_inference.InferenceError,
            onnx.checker.ValidationError,
            RuntimeError,
            ValueError,
            TypeError,
            UnicodeDecodeError,
        ) as exc:
            raise CtacError(
                f"node {_node_label(node)}: ONNX shape inference failed: {exc}"
            ) from None
        types = []
        for name in outputs:
            proto = inferred.get(name)
            tensor = proto.tensor_type if proto is not None else None
            if (
                tensor is None
                or not tensor.HasField("shape")
                or not all(d.HasField("dim_value") for d in tensor.shape.dim)
            ):
                raise CtacError(
                    f"node {_node_label(node)}: the shape of '{name}' cannot be made static "
                    "(it depends on input values); ctac compiles for fixed shapes only"
                )
            element = element_type_of_onnx(tensor.elem_type, f"node {_node_label(node)}")
            types.append(TensorType(element, [d.dim_value for d in tensor.shape.dim]))
        return types

    def opset_imports(self) -> list[onnx.OperatorSetIdProto]:
        """The model's opsets, the default domain's at self.opset (raised while building the
        nodes of a fused op, ctac/contrib_fused.py)."""
        others = [o for o in self.model.opset_import if o.domain not in ("", "ai.onnx")]
        return [onnx.helper.make_opsetid("", self.opset), *others]

    def check_sizes(self, values: Sequence[SSAValue], where: str) -> None:
        check_value_sizes(values, self.max_tensor_bytes, where)

    def type_proto(self, value: SSAValue) -> onnx.TypeProto:
        return onnx.helper.make_tensor_type_proto(
            onnx.helper.np_dtype_to_tensor_dtype(
                onnx_dialect.numpy_dtype(onnx_dialect.element_of(value))
            ),
            list(onnx_dialect.shape_of(value)),
        )

    def remember_constant(self, op: onnx_dialect.OnnxOp) -> None:
        """Evaluate an op whose operands are all known small constants (shape arithmetic)."""
        if isinstance(op, onnx_dialect.ShapeOp):
            self.known[op.shape] = shape_op_result(op)
            return
        if isinstance(op, onnx_dialect.ConstantOp):
            self.known[op.output] = op.to_numpy()
            return
        if not all(v in self.known for v in op.operands):
            return
        if any(int(np.prod(onnx_dialect.shape_of(r))) > KNOWN_ELEMENTS for r in op.results):
            return
        arrays = operand_arrays(op, self.known)
        try:
            with np.errstate(all="ignore"):
                results = SEMANTICS[type(op)](op, *arrays)
        except (ValueError, TypeError, IndexError, OverflowError, ZeroDivisionError) as exc:
            raise CtacError(
                f"op '{op.results[0].name_hint}' ({op.name}): its constant inputs cannot be "
                f"evaluated ({type(exc).__name__}: {exc}); the model is inconsistent"
            ) from None
        for result, array in zip(op.results, results, strict=True):
            self.known[result] = np.asarray(array).astype(
                onnx_dialect.numpy_dtype(onnx_dialect.element_of(result))
            )

    def check_supported(self) -> None:
        unsupported = []
        for node in self.graph.node:
            supported = (
                node.domain in ("", "ai.onnx")
                and (
                    node.op_type in onnx_dialect.OP_BY_ONNX_TYPE
                    or node.op_type in QUANTIZED_OPS
                    or node.op_type in STANDARD_DECOMPOSITIONS
                    or has_function(node, self.opset)
                )
            ) or (
                node.domain == CONTRIB_DOMAIN
                and (
                    node.op_type in CONTRIB_OPS
                    or node.op_type in DECOMPOSITIONS
                    or node.op_type in CONTRIB_QUANTIZED_OPS
                )
            )
            if not supported:
                domain = f"{node.domain}." if node.domain not in ("", "ai.onnx") else ""
                unsupported.append(f"'{node.name or node.output[0]}' ({domain}{node.op_type})")
        if unsupported:
            raise CtacError(
                f"{len(unsupported)} node(s) use operators ctac does not support: "
                + ", ".join(unsupported)
            )

    def build_contrib(self, node: onnx.NodeProto, depth: int = 0) -> None:
        """onnxruntime's fused attention ops, straight to cta ops (ctac/contrib.py); its other
        fused ops as the standard nodes they stand for (ctac/contrib_fused.py)."""

        type_of = self.type_reader(node)
        if node.op_type in DECOMPOSITIONS or node.op_type in CONTRIB_QUANTIZED_OPS:
            table = decompose if node.op_type in DECOMPOSITIONS else decompose_quantized
            self.build_inner(table(node, type_of, self.used_names), depth)
            return
        if node.op_type == "Attention" and (converted := attention_mask_nodes(node, type_of)):
            inner, node = converted
            self.build_inner(inner, depth)
        inputs = [self.operand(n, node) if n else None for n in node.input]
        builder = ContribBuilder(node, inputs, self.add, self.used_names)
        results = CONTRIB_OPS[node.op_type](builder)
        for name, value in zip(node.output, results, strict=False):
            if name:
                value.name_hint = ssa_name(name)
                self.values[name] = value

    def type_reader(self, node: onnx.NodeProto):
        """name -> (static shape, numpy dtype) of a value built before `node`."""

        def type_of(name: str) -> tuple[tuple[int, ...], np.dtype]:
            value = self.operand(name, node)
            element = onnx_dialect.element_of(value)
            return tuple(onnx_dialect.shape_of(value)), onnx_dialect.numpy_dtype(element)

        return type_of

    def build_inner(self, inner: list[onnx.NodeProto], depth: int) -> None:
        """The standard nodes a fused or quantized op stands for (ctac/contrib_fused.py,
        ctac/quantized.py), built at the opset they are written for."""
        self.used_names.update(name for each in inner for name in each.input)
        opset = self.opset
        self.opset = max(opset, DECOMPOSED_OPSET)
        try:
            for each in inner:
                self.build_node(each, depth + 1)
        finally:
            self.opset = opset

    def build_from_function(self, node: onnx.NodeProto, depth: int) -> None:
        """An op ctac has no op for, replaced by the function body ONNX defines for it."""
        if depth > 4 or not has_function(node, self.opset):
            raise CtacError(f"node {_node_label(node)}: {node.op_type} is not supported")
        check_limits(node, self.used_names)
        input_types = [self.type_proto(self.operand(n, node)) for n in node.input if n]
        body = expand(node, self.opset, input_types)
        self.used_names.update(name for inner in body for name in inner.input)
        for inner in body:
            self.build_node(inner, depth + 1)

    def add(self, op: onnx_dialect.OnnxOp) -> onnx_dialect.OnnxOp:
        assert self.block is not None
        self.block.add_op(op)
        return op

    def constant_value(self, name: str, array: np.ndarray, where: str) -> SSAValue:
        element_type_of_onnx(onnx.helper.np_dtype_to_tensor_dtype(array.dtype), where)
        if array.size <= INLINE_ELEMENTS or _is_splat(array):
            op = onnx_dialect.ConstantOp.from_numpy(array)
        else:
            result_type = onnx_dialect.tensor_type(
                array.shape, onnx_dialect.element_type_of(array.dtype)
            )
            op = onnx_dialect.WeightOp.build(
                properties={"ref": StringAttr(name)}, result_types=[result_type]
            )
        self.add(op)
        op.results[0].name_hint = ssa_name(name)
        if array.size <= KNOWN_ELEMENTS:
            self.known[op.results[0]] = array
        return op.results[0]

    def operand(self, name: str, node: onnx.NodeProto) -> SSAValue:
        value = self.values.get(name)
        if value is None:
            raise CtacError(f"node {_node_label(node)} reads '{name}', which no node produces")
        return value

    def build_node(self, node: onnx.NodeProto, depth: int = 0) -> None:
        if node.domain == CONTRIB_DOMAIN:
            self.build_contrib(node, depth)
            return
        if node.op_type in QUANTIZED_OPS:
            inner = decompose_quantized(node, self.type_reader(node), self.used_names)
            self.build_inner(inner, depth)
            return
        if node.op_type in STANDARD_DECOMPOSITIONS:
            inner = decompose_standard(node, self.type_reader(node), self.used_names)
            self.build_inner(inner, depth)
            return
        if node.op_type not in onnx_dialect.OP_BY_ONNX_TYPE:
            self.build_from_function(node, depth)
            return
        if node.op_type == "Constant":
            self.values[node.output[0]] = self.constant_value(
                node.output[0], constant_node_value(node), f"node {_node_label(node)}"
            )
            return
        if node.op_type == "Softmax" and self.opset < 13:
            raise CtacError(
                f"node {_node_label(node)}: Softmax before opset 13 flattens its input; "
                "re-export the model with opset 13 or newer"
            )
        if node.op_type == "Resize" and self.opset < 11:
            raise CtacError(  # opset 10's inputs are (X, scales): no roi, no coordinate modes
                f"node {_node_label(node)}: Resize before opset 11 is not supported; "
                "re-export the model with opset 11 or newer"
            )
        op_class = onnx_dialect.OP_BY_ONNX_TYPE[node.op_type]
        definition = op_class.get_irdl_definition()
        inputs = list(node.input)
        properties: dict[str, Attribute] = {}
        for attribute in node.attribute:
            moved = _ATTRIBUTE_INPUTS.get((node.op_type, attribute.name))
            if moved is not None:
                while len(inputs) <= moved:
                    inputs.append("")
                array = np.array(list(attribute.ints), dtype=np.int64)
                constant_name = f"{node.output[0]}__{attribute.name}"
                self.values[constant_name] = self.constant_value(constant_name, array, "")
                inputs[moved] = constant_name
                continue
            if attribute.name not in definition.properties:
                raise CtacError(
                    f"node {_node_label(node)}: attribute '{attribute.name}' is not supported"
                )
            properties[attribute.name] = _convert_attribute(node, attribute)
        operands: list = []
        position = 0
        for operand_name, operand_definition in definition.operands:
            if isinstance(operand_definition, VarOperandDef) and not isinstance(
                operand_definition, OptOperandDef
            ):
                operands.append([self.operand(n, node) for n in inputs[position:] if n])
                position = len(inputs)
                continue
            name = inputs[position] if position < len(inputs) else ""
            position += 1
            if isinstance(operand_definition, OptOperandDef):
                operands.append([self.operand(name, node)] if name else [])
            elif not name:
                raise CtacError(
                    f"node {_node_label(node)}: required input '{operand_name}' is missing"
                )
            else:
                operands.append(self.operand(name, node))
        if any(inputs[position:]):
            raise CtacError(f"node {_node_label(node)} has more inputs than {node.op_type} takes")
        result_definitions = definition.results
        variadic = any(isinstance(d, VarResultDef) for _, d in result_definitions)
        outputs = list(node.output) if variadic else list(node.output[: len(result_definitions)])
        used = self.used_names
        for extra in node.output[len(outputs) :]:
            if extra and extra in used:
                raise CtacError(
                    f"node {_node_label(node)}: its optional output '{extra}' is used, "
                    "which ctac does not support"
                )
        result_types = self.infer_output_types(node, outputs)
        op = op_class.build(
            operands=operands,
            result_types=[result_types] if variadic else result_types,
            properties=properties,
        )
        self.add(op)
        for name, result in zip(outputs, op.results, strict=True):
            result.name_hint = ssa_name(name)
            self.values[name] = result
        # Before remember_constant or any later pass can allocate a value of this size.
        self.check_sizes(op.results, f"node {_node_label(node)}: ")
        self.remember_constant(op)

    def build(self, input_names: list[str]) -> ModuleOp:
        self.used_names = {name for node in self.graph.node for name in node.input}
        self.used_names.update(o.name for o in self.graph.output)
        by_name = {v.name: v for v in self.graph.input}
        input_types = [self.input_type(by_name[name]) for name in input_names]
        self.block = Block(arg_types=input_types)
        for name, argument in zip(input_names, self.block.args, strict=True):
            argument.name_hint = ssa_name(name)
            self.values[name] = argument
        self.check_sizes(self.block.args, "input: ")
        initializer_names = set(input_names)
        for tensor in self.graph.initializer:
            if tensor.name in initializer_names:
                continue
            where = f"initializer '{tensor.name}'"
            element_type_of_onnx(tensor.data_type, where)
            array = self.store.preloaded(tensor.name)
            if array is None:
                array = numpy_helper.to_array(tensor)
            self.values[tensor.name] = self.constant_value(tensor.name, array, where)
        for node in self.graph.node:
            self.build_node(node)
        output_names = [o.name for o in self.graph.output]
        results = [self.operand(name, self.graph.node[-1]) for name in output_names]
        self.block.add_op(func.ReturnOp(*results))
        function = func.FuncOp(
            "main",
            (input_types, [r.type for r in results]),
            Region(self.block),
            arg_attrs=ArrayAttr(
                [DictionaryAttr({NAME_ATTRIBUTE: StringAttr(n)}) for n in input_names]
            ),
            res_attrs=ArrayAttr(
                [DictionaryAttr({NAME_ATTRIBUTE: StringAttr(n)}) for n in output_names]
            ),
        )
        module = ModuleOp([function])
        # Ops built another way (onnxruntime's fused ops, function bodies) are covered here.
        check_value_sizes(module_values(module), self.max_tensor_bytes)
        self.store.attach(module)
        return module


def import_model(
    path: str | Path,
    shapes: Mapping[str, list[int]] | None = None,
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
    outputs: Sequence[str] | None = None,
) -> ImportedModel:
    """Import an ONNX model file as an `onnx` dialect module with static shapes; with
    `outputs`, only the part of it that computes those values (select_outputs)."""
    path = Path(path)
    # The large initializers stay in the file: `arrays` are read-only views of it, and `model`
    # holds them with empty data (load_onnx_lazy has checked their sizes).
    model, arrays = load_onnx_lazy(path, max_tensor_bytes)
    try:
        # Check the proto without those weights: checking the file made C++ read and parse all
        # of it again (1.2 s on BERT-base). load_onnx_lazy has already refused unsafe or missing
        # external data.
        if arrays:
            onnx.checker.check_model(checkable_skeleton(model, arrays))
        else:
            onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, UnicodeDecodeError, ValueError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
        raise CtacError(f"'{path}' fails the ONNX checker: {first_line}") from None
    if outputs:
        select_outputs(model.graph, outputs)  # after the checker: the model as the file has it
    store = WeightStore(path, model, arrays)
    register_store(store)
    input_names = apply_input_shapes(model.graph, shapes or {})
    # Position ids computed from the token ids (RoBERTa) infer at any length: bound them here.
    too_long = derived_positions_error(model.graph, arrays)
    if too_long is not None:
        raise too_long
    builder = _GraphBuilder(model, store, max_tensor_bytes)
    builder.check_supported()
    try:
        module = builder.build(input_names)
    except CtacError as exc:
        # Most often a sequence longer than the model's position table, which fails deep in
        # shape inference (an Expand or Gather); say so instead, with the original as the cause.
        too_long = longer_than_positions(model.graph, shapes or {}, str(exc))
        if too_long is not None:
            raise too_long from exc
        raise
    try:
        module.verify()
    except Exception as exc:  # a verifier failure here means the ONNX graph is inconsistent
        raise CtacError(f"the imported model does not verify: {exc}") from None
    return ImportedModel(module, store, input_names, [o.name for o in model.graph.output])
