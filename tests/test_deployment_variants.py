"""all-MiniLM-L6-v2 as people deploy it (issue 14, acceptance 1): the variants
scripts/make_deployment_variants.py makes with onnxruntime's own tools from the real weights.

Each compiles; float variants equal onnxruntime within 1e-4 on the fp32 machine, the fp16 one
within 2e-3 relative (on the default fp16 machine), quantized ones match ctac's reference
evaluator (their integer semantics) on the accelerator; every attention layer is detected. The
files are made on the machine (they need the `export` extra and are never committed): absent,
the tests skip. What does not hold yet is marked xfail(strict) with the measured reason.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

CACHE = Path(os.environ.get("CTAC_CACHE") or Path.home() / ".cache" / "ctac")
LENGTH = 64
FLOAT = ("plain", "ort_o1", "ort_o2", "mean_pooling")
QUANTIZED = ("dynamic_int8", "qdq_int8", "qoperator_int8")


def _path(name: str) -> Path:
    path = (
        CACHE / "all_minilm_l6_v2.onnx" if name == "plain" else CACHE / "variants" / f"{name}.onnx"
    )
    if not path.is_file():
        pytest.skip(f"{path} not made (scripts/export_test_models.py --minilm, "
                    "scripts/make_deployment_variants.py)")  # fmt: skip
    return path


def _feeds() -> dict[str, np.ndarray]:
    """Token ids inside the vocabulary, [CLS] ... [SEP], a padded quarter."""
    ids = np.random.default_rng(0).integers(1000, 30000, (1, LENGTH))
    ids[0, 0], ids[0, -1] = 101, 102
    mask = np.ones((1, LENGTH), np.int64)
    mask[0, LENGTH * 3 // 4 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _compile(path: Path, precision: str):
    from ctac import api

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layers kept exact: said by compile, not tested here
        return api.compile(path, {name: [1, LENGTH] for name in _feeds()}, precision=precision)


def _detected(path: Path) -> tuple[int, list[str]]:
    from ctac.importer import import_model
    from ctac.onnx_loader import DEFAULT_MAX_TENSOR_BYTES
    from ctac.passes.detect_attention import detect_attention
    from ctac.pipeline import run_passes

    imported = import_model(str(path), {n: [1, LENGTH] for n in _feeds()}, DEFAULT_MAX_TENSOR_BYTES)
    run_passes(imported.module, "onnx-canonicalize")
    reports, refused = detect_attention(imported.module, verify=True)
    return len(reports), refused


@pytest.mark.parametrize("name", FLOAT)
def test_float_variants_equal_onnxruntime_on_the_fp32_machine(name: str) -> None:
    from ctac import api

    path = _path(name)
    result = api.run(_compile(path, "fp32"), _feeds(), check=True)
    assert result.max_abs_err is not None and result.max_abs_err <= 1e-4
    assert _detected(path)[0] == 6


def test_the_fp16_variant_is_within_2e3_relative() -> None:
    """ort_o2_fp16 (onnxruntime runs it in float16) on ctac's default fp16 machine."""
    from ctac import api

    path = _path("ort_o2_fp16")
    result = api.run(_compile(path, "fp16"), _feeds(), check=True)
    output = next(iter(result.outputs.values()))
    assert result.max_abs_err <= 2e-3 * float(np.abs(output).max())
    assert _detected(path)[0] == 6


def _against_reference(path: Path) -> tuple[float, float]:
    """(max abs error, min row cosine) of the fp32 accelerator against ctac's reference
    evaluator of the imported module (the quantized ops' integer semantics)."""
    from ctac import api
    from ctac.importer import import_model
    from ctac.onnx_loader import DEFAULT_MAX_TENSOR_BYTES
    from ctac.pipeline import run_passes
    from ctac.runtime.evaluator import evaluate

    imported = import_model(str(path), {n: [1, LENGTH] for n in _feeds()}, DEFAULT_MAX_TENSOR_BYTES)
    run_passes(imported.module, "onnx-canonicalize")
    reference = np.asarray(next(iter(evaluate(imported.module, _feeds()).values())))
    run = api.run(_compile(path, "fp32"), _feeds())
    output = next(iter(run.outputs.values()))
    a, b = output.reshape(-1, output.shape[-1]), reference.reshape(-1, output.shape[-1])
    cosines = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(np.abs(a - b).max()), float(cosines.min())


@pytest.mark.parametrize(
    "name",
    [
        "dynamic_int8",
        "qdq_int8",
        "qoperator_int8",
    ],
)
def test_quantized_variants_keep_their_integer_semantics(name: str) -> None:
    error, cosine = _against_reference(_path(name))
    assert error <= 1e-4 and cosine >= 0.9999


def test_qoperator_attention_is_detected() -> None:
    """(dynamic_int8 and qdq_int8: tests/test_quantized_attention.py)"""
    found, refused = _detected(_path("qoperator_int8"))
    assert found == 6, refused
