"""Bias terms classified by evaluating them on probe inputs: key-padding mask, causal pattern or
an additive mask that stays (passes/detect_attention.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import BlockArgument, Operation, SSAValue

from ctac.dialects import onnx as ox
from ctac.passes.attention_graph import static_shape
from ctac.passes.attention_scores import (
    MASKED_BELOW,
    Scores,
)
from ctac.runtime.evaluator import evaluate_values

# ---------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------


def _arguments_reached(values: list[SSAValue], limit: int = 5000) -> set[BlockArgument] | None:
    """Block arguments the values depend on (None if the cone is too large to inspect)."""
    found: set[BlockArgument] = set()
    seen: set[SSAValue] = set()
    stack = list(values)
    while stack:
        value = stack.pop()
        if value in seen:
            continue
        seen.add(value)
        if len(seen) > limit:
            return None
        if isinstance(value, BlockArgument):
            found.add(value)
        elif isinstance(value.owner, Operation):
            stack.extend(value.owner.operands)
    return found


def _bias_of(scores: Scores, bindings: dict[SSAValue, np.ndarray], module: ModuleOp) -> np.ndarray:
    terms = [*scores.bias_terms, *(m.condition for m in scores.where_masks)]
    arrays = evaluate_values(terms, bindings, module) if terms else []
    total = np.zeros((), dtype=np.float64)
    for array, factor in zip(arrays[: len(scores.bias_terms)], scores.bias_factors, strict=True):
        total = total + array.astype(np.float64) * factor
    for mask, condition in zip(scores.where_masks, arrays[len(scores.bias_terms) :], strict=True):
        keep = condition if mask.keep_when else np.logical_not(condition)
        total = total + np.where(keep, 0.0, -np.inf)
    return total


def _visible_pattern(
    batch_mask: np.ndarray | None, q_len: int, k_len: int, causal_offset: int | None
) -> np.ndarray:
    visible = np.ones((1, 1, q_len, k_len), dtype=bool)
    if batch_mask is not None:
        visible = visible & (batch_mask != 0)[:, None, None, :]
    if causal_offset is not None:
        rows = np.arange(q_len)[:, None] + causal_offset
        visible = visible & (np.arange(k_len)[None, :] <= rows)
    return visible


def _matches(bias: np.ndarray, visible: np.ndarray) -> bool:
    bias, visible = np.broadcast_arrays(bias, visible)
    return bool(np.all(np.where(visible, np.abs(bias) <= 1e-6, bias <= MASKED_BELOW)))


def probe_mask(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A random 0/1 padding mask whose first position is always valid (no empty rows)."""
    mask = rng.integers(0, 2, size=shape)
    mask[..., 0] = 1
    return mask.astype(dtype)


@dataclass
class MaskDecision:
    kind: str  # none | key_padding | additive
    causal_offset: int | None  # None: not causal; else query i sees keys j <= i + offset
    operand: SSAValue | None
    form: str


def classify_mask(
    scores: Scores, batch: int, q_len: int, k_len: int, module: ModuleOp, rng: np.random.Generator
) -> MaskDecision | None:
    if not scores.bias_terms and not scores.where_masks:
        return MaskDecision("none", None, None, "no mask")
    leaves = [*scores.bias_terms, *(m.condition for m in scores.where_masks)]
    arguments = _arguments_reached(leaves)
    if arguments is None:
        return None
    # Bottom-right aligned causal (decoders, KV caches) first, then top-left (ONNX Attention).
    causal_offsets = [None, k_len - q_len] + ([0] if k_len != q_len else [])
    if not arguments:
        bias = _bias_of(scores, {}, module)
        for offset in causal_offsets:
            if _matches(bias, _visible_pattern(None, q_len, k_len, offset)):
                form = "constant zero mask" if offset is None else "constant causal mask"
                return MaskDecision("none", offset, None, form)
    if len(arguments) == 1:
        (argument,) = arguments
        dtype = ox.numpy_dtype(ox.element_of(argument))
        if static_shape(argument) == (batch, k_len) and dtype.kind in "iub":
            for offset in causal_offsets:
                probes = [probe_mask(rng, (batch, k_len), dtype) for _ in range(4)]
                if all(
                    _matches(
                        _bias_of(scores, {argument: mask}, module),
                        _visible_pattern(mask, q_len, k_len, offset),
                    )
                    for mask in probes
                ):
                    form = "padding mask" + ("" if offset is None else " + causal")
                    return MaskDecision("key_padding", offset, argument, form)
    return MaskDecision("additive", None, None, "additive bias")
