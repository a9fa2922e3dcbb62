"""onnx-canonicalize: `onnx` dialect in, `onnx` dialect out (named apart from xDSL's generic
`canonicalize`, which ctac-opt also offers).

Two stages of xDSL RewritePatterns, each driven by a PatternRewriteWalker with a
GreedyRewritePatternApplier to a fixed point (the walker sweeps the function again until a sweep
changes nothing); the applier's own dead-code elimination removes every op whose results are
unused (all onnx ops are `Pure`):
1. clean-up (passes/patterns_fold.py): fold what constants and static shapes determine into
   `onnx.Constant` (FoldConstants), drop Identity and inference-mode Dropout, and forward ops
   that do nothing (x + 0, x * 1, Cast to its own type, Reshape back to an earlier shape...).
2. recognition: the decomposed LayerNorm and RMSNorm (passes/patterns_layer_norm.py) and GELU,
   Erf and Tanh forms (passes/patterns_gelu.py), each becoming one op; a MatMul of dequantized
   operands as the integers' MatMul scaled after (passes/patterns_quant.py).
Recognition runs on the cleaned-up graph: its matchers follow single users and read constant
operands, which an Identity in the chain or a not-yet-folded epsilon would hide.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriteWalker,
    RewritePattern,
)
from xdsl.transforms.dead_code_elimination import is_trivially_dead

from ctac.passes.match import scalar_of
from ctac.passes.patterns_fold import (
    FOLD_ELEMENTS,
    FoldConstants,
    ForwardIdentity,
    RemoveNoOp,
    simplified_value,
)
from ctac.passes.patterns_gelu import GeluErf, GeluTanh, match_gelu_erf, match_gelu_tanh
from ctac.passes.patterns_layer_norm import LayerNorm, RMSNorm, match_layer_norm, match_rms_norm
from ctac.passes.patterns_quant import FactorDequantizedMatMul


def cleanup_patterns(module: ModuleOp) -> list[RewritePattern]:
    """Stage 1, in priority order (the applier takes the first that rewrites an op)."""
    return [ForwardIdentity(), FoldConstants(module), RemoveNoOp()]


def recognition_patterns() -> list[RewritePattern]:
    """Stage 2."""
    # LayerNorm before RMSNorm: a LayerNorm's Div is also an RMSNorm of the centred input.
    return [LayerNorm(), RMSNorm(), GeluErf(), GeluTanh(), FactorDequantizedMatMul()]


def to_fixed_point(module: ModuleOp, patterns: list[RewritePattern]) -> bool:
    """Apply `patterns` (first match wins per op; unused pure ops erased) until a sweep over
    the module changes nothing; True if anything changed."""
    walker = PatternRewriteWalker(GreedyRewritePatternApplier(patterns), apply_recursively=True)
    return walker.rewrite_module(module)


def canonicalize(module: ModuleOp) -> bool:
    """Run both stages on `module` in place; True if anything changed."""
    changed = to_fixed_point(module, cleanup_patterns(module))
    return to_fixed_point(module, recognition_patterns()) or changed


def remove_dead_ops(function: func.FuncOp) -> None:
    """Erase every side-effect-free op whose results are unused, in one backward sweep (users
    go before the ops they read, so a dead chain goes at once). For passes that are not pattern
    driven (detect-attention, cta-compress)."""
    for op in reversed(list(function.body.block.ops)):
        if is_trivially_dead(op):
            function.body.block.erase_op(op)


@dataclass(frozen=True)
class CanonicalizePass(ModulePass):
    """Fold shapes and constants, drop Identity/Dropout, recognise LayerNorm, RMSNorm, GELU."""

    name = "onnx-canonicalize"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        canonicalize(op)


__all__ = [
    "FOLD_ELEMENTS",
    "CanonicalizePass",
    "canonicalize",
    "cleanup_patterns",
    "match_gelu_erf",
    "match_gelu_tanh",
    "match_layer_norm",
    "match_rms_norm",
    "recognition_patterns",
    "remove_dead_ops",
    "scalar_of",
    "simplified_value",
    "to_fixed_point",
]
