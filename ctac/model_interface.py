"""A model's interface as the user sets it: the shapes its inputs take (`--shape NAME=2x128`,
applied to the graph's symbolic dimensions) and the values it computes (`--outputs`: the graph
cut down to what computes them). Reads only the ONNX protobuf."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

import onnx

from ctac.errors import CtacError


def parse_shape_flags(flags: Sequence[str]) -> dict[str, list[int]]:
    """`NAME=DxDxD` flags (repeatable, or comma-separated in one flag) -> {name: dims}."""
    shapes: dict[str, list[int]] = {}
    for flag in flags:
        for item in flag.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, dims = item.rpartition("=")
            if not sep or not name:
                raise CtacError(f"--shape '{item}' should look like NAME=2x128")
            try:
                values = [int(d) for d in dims.lower().split("x")] if dims else []
            except ValueError:
                raise CtacError(
                    f"--shape '{item}': dimensions must be integers like 2x128"
                ) from None
            if any(v <= 0 for v in values):
                raise CtacError(f"--shape '{item}': dimensions must be positive")
            shapes[name] = values
    return shapes


def apply_input_shapes(graph: onnx.GraphProto, shapes: Mapping[str, list[int]]) -> list[str]:
    initializer_names = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializer_names]
    names = [i.name for i in inputs]
    unset: list[tuple[str, list[str], str]] = []
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise CtacError(f"--shape names unknown input(s) {unknown}; the model's inputs are {names}")
    for value in inputs:
        if not value.type.HasField("tensor_type"):
            raise CtacError(f"input '{value.name}' is not a tensor")
        shape_proto = value.type.tensor_type.shape
        given = shapes.get(value.name)
        if given is not None:
            if value.type.tensor_type.HasField("shape") and len(shape_proto.dim) != len(given):
                raise CtacError(
                    f"--shape {value.name}={'x'.join(map(str, given))} has rank {len(given)} but "
                    f"input '{value.name}' has rank {len(shape_proto.dim)}"
                )
            for axis, (dim, size) in enumerate(zip(shape_proto.dim, given, strict=False)):
                if dim.HasField("dim_value") and dim.dim_value != size:
                    raise CtacError(
                        f"--shape {value.name}: dimension {axis} is fixed to {dim.dim_value} in "
                        f"the model, not {size}"
                    )
            value.type.tensor_type.ClearField("shape")
            for size in given:
                value.type.tensor_type.shape.dim.add().dim_value = size
            continue
        if not value.type.tensor_type.HasField("shape"):
            raise CtacError(
                f"input '{value.name}' has no shape; pass --shape {value.name}=DxD (one size per axis)"
            )
        symbols = [
            dim.dim_param or f"axis {axis}"
            for axis, dim in enumerate(shape_proto.dim)
            if not dim.HasField("dim_value") or dim.dim_value <= 0
        ]
        if symbols:
            template = "x".join(
                str(d.dim_value)
                if d.HasField("dim_value") and d.dim_value > 0
                else f"<{d.dim_param or '?'}>"
                for d in shape_proto.dim
            )
            unset.append((value.name, symbols, template))
    if unset:
        described = "; ".join(
            f"'{name}' has {', '.join(repr(s) for s in symbols)}" for name, symbols, _ in unset
        )
        flags = ",".join(f"{name}={template}" for name, _, template in unset)
        raise CtacError(
            f"symbolic input dimensions are not set: {described}; pass --shape {flags} "
            "with your sizes in place of each <...>"
        )
    return names


def subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If, Loop, Scan bodies) read from the enclosing graph."""
    names: set[str] = set()
    for attribute in node.attribute:
        graphs = [attribute.g] if attribute.HasField("g") else list(attribute.graphs)
        for graph in graphs:
            inner = {v.name for v in graph.input} | {t.name for t in graph.initializer}
            for inner_node in graph.node:
                names.update(n for n in inner_node.input if n and n not in inner)
                names.update(subgraph_inputs(inner_node) - inner)
                inner.update(inner_node.output)
    return names


def select_outputs(graph: onnx.GraphProto, outputs: Sequence[str]) -> None:
    """Make `outputs` (values the graph computes) the graph's outputs and drop every node they
    do not need (`ctac compile --outputs`): the part of the model that computes them."""
    produced = {name for node in graph.node for name in node.output if name}
    unknown = [name for name in outputs if name not in produced]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(produced), n=3)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise CtacError(
            f"--outputs: no node of the model computes {', '.join(map(repr, unknown))}{hint}; "
            "name node outputs (`ctac compile --emit onnx` shows them as SSA names)"
        )
    if len(set(outputs)) != len(outputs):
        raise CtacError(f"--outputs: {list(outputs)} names a value twice")
    declared = {value.name: value for value in graph.output}
    kept_outputs = [
        declared[name] if name in declared else onnx.ValueInfoProto(name=name) for name in outputs
    ]
    needed = set(outputs)
    kept: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
            needed.update(subgraph_inputs(node))
    del graph.output[:]
    graph.output.extend(kept_outputs)
    del graph.node[:]
    graph.node.extend(reversed(kept))
