"""Expanding ONNX ops that ctac has no op for, through the function body ONNX defines for them.

ONNX gives many composite ops (Attention, opsets 23-25, among them) a function body in plain ops,
sometimes built for the node's attributes and input types ("context-dependent"). The importer
replaces such a node by that body, so ctac supports it as long as it supports the body's ops;
for Attention, detect-attention then turns the body back into one `cta.attention`, proven
equal on random inputs.
"""

from __future__ import annotations

import onnx
from onnx import FunctionProto, NodeProto, TypeProto

from ctac.errors import CtacError

# Attribute values of ONNX Attention that cta.attention cannot express, with the reason.
# (Modes 1 and 2 expose scores before the softmax: those ops stay beside the fused attention.)
ATTENTION_LIMITS = {
    ("qk_matmul_output_mode", 3): "asks for the softmax probabilities as an extra output; "
    "cta.attention computes them on chip and never writes them out",
}


def _schema(node: NodeProto, opset: int) -> onnx.defs.OpSchema | None:
    try:
        return onnx.defs.get_schema(node.op_type, opset, node.domain)
    except onnx.defs.SchemaError:
        return None


def has_function(node: NodeProto, opset: int) -> bool:
    schema = _schema(node, opset)
    return schema is not None and (schema.has_function or schema.has_context_dependent_function)


def _function_body(
    node: NodeProto, opset: int, input_types: list[TypeProto]
) -> tuple[onnx.defs.OpSchema, FunctionProto]:
    schema = _schema(node, opset)
    if schema is None:
        raise CtacError(f"node '{node.name}': no ONNX schema for {node.op_type} at opset {opset}")
    function = FunctionProto()
    if schema.has_context_dependent_function:
        versions = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
        text = schema.get_context_dependent_function_with_opset_version(
            max(versions) if versions else opset,
            node.SerializeToString(),
            [t.SerializeToString() for t in input_types],
        )
    else:
        versions = [v for v in schema.function_opset_versions if v <= opset]
        text = schema.get_function_with_opset_version(max(versions) if versions else opset)
    if not text:
        raise CtacError(f"node '{node.name}': ONNX gives {node.op_type} no function body here")
    function.ParseFromString(text)
    return schema, function


def check_limits(node: NodeProto, used_outputs: set[str]) -> None:
    """Refuse attributes cta.attention cannot express, naming them."""
    if node.op_type != "Attention":
        return
    scores_output = len(node.output) > 3 and node.output[3] in used_outputs
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        reason = ATTENTION_LIMITS.get((attribute.name, value))
        if reason is not None and scores_output:
            raise CtacError(
                f"Attention node '{node.name or node.output[0]}': {attribute.name}={value} "
                f"{reason}; drop that output to compile the model"
            )


def expand(node: NodeProto, opset: int, input_types: list[TypeProto]) -> list[NodeProto]:
    """The nodes of `node`'s function body, wired to its inputs and outputs."""
    schema, function = _function_body(node, opset, input_types)
    given = {a.name: a for a in node.attribute}
    for name, definition in schema.attributes.items():
        if name not in given and definition.default_value.name:
            given[name] = definition.default_value
    prefix = f"{node.name or node.output[0]}/"
    renames = {formal: actual for formal, actual in zip(function.input, node.input, strict=False)}
    for formal in function.input[len(node.input) :]:
        renames[formal] = ""
    renames.update(zip(function.output, node.output, strict=False))

    def rename(name: str) -> str:
        if not name:
            return ""
        return renames.get(name, prefix + name)

    body = []
    for inner in function.node:
        expanded = NodeProto()
        expanded.CopyFrom(inner)
        expanded.name = prefix + (inner.name or inner.op_type)
        del expanded.input[:]
        expanded.input.extend(rename(n) for n in inner.input)
        del expanded.output[:]
        expanded.output.extend(rename(n) for n in inner.output)
        del expanded.attribute[:]
        for attribute in inner.attribute:
            if attribute.ref_attr_name:
                source = given.get(attribute.ref_attr_name)
                if source is None:
                    continue
                resolved = onnx.AttributeProto()
                resolved.CopyFrom(source)
                resolved.name = attribute.name
                expanded.attribute.append(resolved)
            else:
                expanded.attribute.append(attribute)
        body.append(expanded)
    return body
