"""Shared fixtures: the committed test models and valid inputs for them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from ctac.hw import load_hardware, with_precision

TESTS = Path(__file__).resolve().parent
MODELS = TESTS / "models"
MANIFEST = json.loads((MODELS / "manifest.json").read_text())
MODEL_ENTRIES = [m for m in MANIFEST["models"] if not m.get("skipped")]

# Tolerances per precision. ctac's default machine stores tensors in fp16 (ctac/hw.py), which
# moves outputs ~1e-3 from onnxruntime's float32; the tests that check the compiler's arithmetic
# to 1e-4 (against onnxruntime or the reference evaluator) compile for the fp32 machine, as
# `ctac compile --precision fp32` does, where only float32 rounding differs.
FP32_HW = with_precision(load_hardware(None), "fp32")
# fp16 storage against float32 references, from tests/test_fp16.py's measurement on every test
# model: max abs error 3e-3 to 9e-3 on outputs of magnitude up to ~5, every row cosine >= 0.999999.
# The bounds leave ~2x room and still fail on a real bug (a wrong element moves an output by O(1)).
FP16_ATOL = 2e-2
FP16_MIN_COSINE = 0.9999


def fp32_same_capacity(text: str) -> str:
    """A config's TOML for the fp32 machine whose buffers and cluster table hold as many
    elements as the fp16 config's (element_bytes 4 and twice the KiB): for tests whose subject is
    tiling at given element capacities, checked against the reference to float32 rounding."""
    text = text.replace("element_bytes = { value = 2,", "element_bytes = { value = 4,")
    for key in ("size_kib", "table_kib"):
        text = re.sub(
            rf"{key} = {{ value = ([0-9.e+-]+)",
            lambda match, key=key: f"{key} = {{ value = {2 * float(match.group(1))!r}",
            text,
        )
    return text


def shape_flags(entry: dict) -> dict[str, list[int]]:
    return {name: spec["shape"] for name, spec in entry["inputs"].items()}


def manifest_inputs(entry: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid inputs: token ids inside the vocabulary, a padding mask with a padded tail on the
    last row, normal pixels."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for name, spec in entry["inputs"].items():
        shape = spec["shape"]
        if spec["kind"] == "token_ids":
            inputs[name] = rng.integers(0, spec["vocab_size"], size=shape).astype(np.int64)
        elif spec["kind"] == "attention_mask":
            mask = np.ones(shape, dtype=np.int64)
            mask[-1, shape[-1] * 3 // 4 :] = 0
            inputs[name] = mask
        else:
            inputs[name] = rng.standard_normal(shape).astype(spec["dtype"])
    return inputs


@pytest.fixture(params=MODEL_ENTRIES, ids=[m["file"].removesuffix(".onnx") for m in MODEL_ENTRIES])
def model_entry(request: pytest.FixtureRequest) -> dict:
    return request.param
