"""lower-to-isa: `onnx` + `cta` dialects in, `ctaisa` dialect out.

Every op left after detection (and compression) becomes tiles of CTA-ISA instructions:
- DRAM (memory.py, core.py): weights and constants form the data segment (by weight-store name,
  small constants inline), inputs and outputs get their own regions, intermediate activations
  share an arena whose regions are reused after their last reader; Reshape/Flatten/Squeeze/
  Unsqueeze alias.
- Buffers: each of act/wgt/acc is split in two halves used alternately, so the DMA of the next
  tile can overlap the compute of the current one; `vec` keeps a persistent area for rows reused
  by a whole op (LayerNorm gamma/beta, masks, broadcast operands). No tile is larger than its half.
- One module per op family registers its lowerings with `@lowering`: gemm (MatMul, Gemm,
  projections), conv (Conv by im2col, ConvTranspose), elementwise (and row-wise norms, softmax, reductions), movement
  (Gather, Transpose, Concat), indexing (ScatterND/ScatterElements, Resize), attention (exact and ELSA), clustering (tiled HASH + CLUSTER
  against the cluster unit's table), compression (pooling, recovery), compressed_attention
  (attention over clusters, block-causal); pipeline.py orders
  every tiled loop (software pipelining) and memory.Stream gives each tile its slots.
- An op that cannot be lowered is collected; one error lists every such node.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from ctac.hw import Hardware, load_hardware
from ctac.passes.legalize import legalize, needs_legalizing

# The op-family modules register their lowerings on import.
from ctac.passes.lower_to_isa import (  # noqa: F401
    attention,
    clustering,
    compressed_attention,
    compression,
    conv,
    elementwise,
    gemm,
    indexing,
    keep_top,
    movement,
)
from ctac.passes.lower_to_isa.core import DRAM_ATTRIBUTE, HW_ATTRIBUTE, POLICY_ATTRIBUTE, Lowering


@dataclass(frozen=True)
class LowerToIsaPass(ModulePass):
    """Lower a detected (and possibly compressed) module to CTA-ISA instructions."""

    name = "lower-to-isa"

    hw: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        lowered = lower_module(op, load_hardware(self.hw or None))
        op.body.detach_block(0)
        op.body.add_block(lowered.body.detach_block(0))
        op.attributes.clear()
        op.attributes.update(lowered.attributes)


def lower_module(module: ModuleOp, hw: Hardware) -> ModuleOp:
    """A new ctaisa module for `module` (which is left unchanged): ops the ISA has no lowering
    for but can compute another way are first rewritten on a copy (passes/legalize.py)."""
    return lowering_of(module, hw).run()


def lowered(module: ModuleOp, hw: Hardware) -> Lowering:
    """The finished lowering of `module` (its instructions, data and symbols as records):
    what `ctac compile` makes a program of without building the ctaisa module."""
    lowering = lowering_of(module, hw)
    lowering.lower()
    return lowering


def lowering_of(module: ModuleOp, hw: Hardware) -> Lowering:
    if needs_legalizing(module):
        module = module.clone()
        legalize(module)
    return Lowering(module, hw)


# What the driver (ctac/emit.py, ctac/frontend.py, ctac/pipeline.py) uses; the op-family modules
# and memory planning are internal.
__all__ = [
    "DRAM_ATTRIBUTE",
    "HW_ATTRIBUTE",
    "POLICY_ATTRIBUTE",
    "LowerToIsaPass",
    "lower_module",
    "lowered",
]
