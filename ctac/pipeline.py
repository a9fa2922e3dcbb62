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
