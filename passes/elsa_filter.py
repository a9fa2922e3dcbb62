"""elsa-filter: `cta` in, `cta` out. Marks every `cta.attention` for ELSA-style candidate
filtering (runtime/elsa.py), the baseline mode `ctac compile --attention elsa` runs on the same
accelerator: each query attends exactly, but only to keys whose hashed angle estimate passes
`threshold` (estimated cosine), with `bits` sign-random-projection bits."""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, ModuleOp, f64, i64
from xdsl.passes import ModulePass

from ctac.dialects import cta
from ctac.errors import CtacError


@dataclass(frozen=True)
class ElsaFilterPass(ModulePass):
    name = "elsa-filter"

    bits: int = 16
    threshold: float = 0.5
    seed: int = 0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if not 1 <= self.bits <= 32:
            raise CtacError(f"elsa-filter: bits must be in [1, 32], got {self.bits}")
        if not -1.0 <= self.threshold <= 1.0:
            raise CtacError(
                f"elsa-filter: threshold is an estimated cosine in [-1, 1], got {self.threshold}"
            )
        for attention in op.walk():
            if isinstance(attention, cta.AttentionOp):
                attention.properties["elsa_bits"] = IntegerAttr(self.bits, i64)
                attention.properties["elsa_threshold"] = FloatAttr(self.threshold, f64)
                attention.properties["elsa_seed"] = IntegerAttr(self.seed, i64)
