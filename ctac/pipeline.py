"""The pass registry, the dialect context, and module text I/O shared by `ctac` and `ctac-opt`."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.dialects.func import Func
from xdsl.parser import Parser
from xdsl.passes import ModulePass, PassPipeline
from xdsl.printer import Printer
from xdsl.utils.exceptions import ParseError, VerifyException

from ctac.dialects.cta import Cta
from ctac.dialects.ctaisa import CtaIsa
from ctac.dialects.onnx import Onnx
from ctac.errors import CtacError

PROJECT_DIALECTS = [Onnx, Cta, CtaIsa]


def _canonicalize() -> type[ModulePass]:
    from ctac.passes.canonicalize import CanonicalizePass

    return CanonicalizePass


def _lower_to_isa() -> type[ModulePass]:
    from ctac.passes.lower_to_isa import LowerToIsaPass

    return LowerToIsaPass


def _elsa_filter() -> type[ModulePass]:
    from ctac.passes.elsa_filter import ElsaFilterPass

    return ElsaFilterPass


def _detect_attention() -> type[ModulePass]:
    from ctac.passes.detect_attention import DetectAttentionPass

    return DetectAttentionPass


def _cta_compress() -> type[ModulePass]:
    from ctac.passes.cta_compress import CtaCompressPass

    return CtaCompressPass


def _legalize_for_isa() -> type[ModulePass]:
    from ctac.passes.legalize import LegalizeForIsaPass

    return LegalizeForIsaPass


def _assign_layers() -> type[ModulePass]:
    from ctac.passes.assign_layers import AssignLayersPass

    return AssignLayersPass


# Pass name -> factory returning the pass class (imported lazily, as xdsl-opt expects).
PROJECT_PASSES: dict[str, Callable[[], type[ModulePass]]] = {
    # Not `canonicalize`: that is xDSL's own pass, which ctac-opt keeps under its name.
    "onnx-canonicalize": _canonicalize,
    "detect-attention": _detect_attention,
    "lower-to-isa": _lower_to_isa,
    "elsa-filter": _elsa_filter,
    "cta-compress": _cta_compress,
    "assign-layers": _assign_layers,
    "legalize-for-isa": _legalize_for_isa,
}


def make_context() -> Context:
    context = Context()
    for dialect in (Builtin, Func, *PROJECT_DIALECTS):
        context.load_dialect(dialect)
    return context


def module_text(module: ModuleOp) -> str:
    """The module in custom syntax, exactly as `ctac-opt` prints it."""
    stream = StringIO()
    Printer(stream=stream).print_op(module)
    stream.write("\n")
    return stream.getvalue()


def parse_module(text: str, source_name: str = "<input>") -> ModuleOp:
    try:
        module = Parser(make_context(), text, source_name).parse_module()
        module.verify()
    except ParseError as exc:
        location = exc.span.get_location()
        raise CtacError(
            f"{source_name}:{location.line}:{location.col}: {exc.msg.strip()}"
        ) from None
    except VerifyException as exc:
        raise CtacError(f"{source_name}: the module does not verify: {exc}") from None
    return module


def run_passes(module: ModuleOp, spec: str) -> None:
    """Run a pass pipeline spec such as 'onnx-canonicalize,detect-attention{...}' in place."""
    if not spec:
        return
    try:
        pipeline = PassPipeline.parse_spec(PROJECT_PASSES, spec)
    except Exception as exc:
        raise CtacError(f"bad pass pipeline '{spec}': {exc}") from None
    pipeline.apply(make_context(), module)


def same_module(
    first: ModuleOp, second: ModuleOp, ignored_attributes: tuple[str, ...] = ()
) -> bool:
    """Whether two modules are the same op for op: the same ops in the same blocks, with the same
    names, attributes (but `ignored_attributes` of the modules themselves), properties, operands
    (as the values they refer to), result types and names, and block argument types and names.
    (xDSL's is_structurally_equivalent compares no types, and the compressed forms the CTA
    policy compiles differ from one another in little else: their cluster tensors' shapes.)"""
    if len(first.body.blocks) != len(second.body.blocks):
        return False
    module_attributes = [
        {k: v for k, v in op.attributes.items() if k not in ignored_attributes}
        for op in (first, second)
    ]
    if module_attributes[0] != module_attributes[1] or first.properties != second.properties:
        return False
    values: dict = {}
    blocks = list(zip(first.body.blocks, second.body.blocks, strict=True))
    while blocks:
        block, other_block = blocks.pop()
        if not _same_block_header(block, other_block, values):
            return False
        ops, other_ops = list(block.ops), list(other_block.ops)
        if len(ops) != len(other_ops):
            return False
        for op, other in zip(ops, other_ops, strict=True):
            if not _same_op(op, other, values):
                return False
            for region, other_region in zip(op.regions, other.regions, strict=True):
                if len(region.blocks) != len(other_region.blocks):
                    return False
                blocks.extend(zip(region.blocks, other_region.blocks, strict=True))
    return True


def _same_block_header(block, other, values: dict) -> bool:
    arguments = [(a.type, a.name_hint) for a in block.args]
    if arguments != [(a.type, a.name_hint) for a in other.args]:
        return False
    values.update(zip(block.args, other.args, strict=True))
    return True


def _same_op(op, other, values: dict) -> bool:
    """`op` is `other` given the values already paired (each operand must be defined before its
    use: ops in order, nested blocks after their op)."""
    if (
        op.name != other.name
        or op.attributes != other.attributes
        or op.properties != other.properties
        or len(op.operands) != len(other.operands)
        or len(op.regions) != len(other.regions)
        or op.successors
        or other.successors
        or [(r.type, r.name_hint) for r in op.results]
        != [(r.type, r.name_hint) for r in other.results]
        or any(values.get(a) is not b for a, b in zip(op.operands, other.operands, strict=True))
    ):
        return False
    values.update(zip(op.results, other.results, strict=True))
    return True
