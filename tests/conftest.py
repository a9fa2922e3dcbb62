"""Shared fixtures: the committed test models and valid inputs for them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
MODELS = TESTS / "models"
MANIFEST = json.loads((MODELS / "manifest.json").read_text())
MODEL_ENTRIES = [m for m in MANIFEST["models"] if not m.get("skipped")]


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
