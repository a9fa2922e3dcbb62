"""Which model inputs a random run sets to zeros rather than drawing: a naming convention shared
by the evaluator (random inputs of a module) and `ctac run` (random inputs of a program). Kept
apart from both so that running a program file imports neither xDSL nor the evaluator."""

from __future__ import annotations

import numpy as np

# Inputs whose neutral value is zero, not a random draw: an additive float mask or attention
# bias (0: nothing masked) and token types (segment 0).
NEUTRAL_FLOAT_INPUTS = ("mask", "bias")
NEUTRAL_INT_INPUTS = ("token_type",)


def neutral_input(name: str, dtype: np.dtype) -> bool:
    """Whether random inputs give this input zeros (see NEUTRAL_*_INPUTS)."""
    lowered = name.lower()
    names = NEUTRAL_FLOAT_INPUTS if dtype.kind == "f" else NEUTRAL_INT_INPUTS
    return any(part in lowered for part in names)
