"""The ONNX Attention conformance cases (opsets 23-25), plain and `_expanded`: each becomes one
cta.attention (plain ones through ONNX's function body, both through detect-attention) and
evaluates to the expected outputs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from ctac.errors import CtacError
from ctac.importer import import_model
from ctac.passes.detect_attention import detect_attention
from ctac.pipeline import run_passes
from ctac.runtime.evaluator import evaluate

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from onnx.backend.test.case.node import collect_testcases

    CASES = {c.name: c for c in collect_testcases() if c.name.startswith("test_attention")}

BF16 = "bfloat16 tensors: numpy has no bfloat16, so the reference evaluator cannot run them"
PROBABILITIES = "the softmax probabilities are a graph output (qk_matmul_output_mode=3)"


def expected_failure(name: str) -> tuple[str, str] | None:
    """(reason, the error message fragment for plain cases) for cases ctac cannot fuse."""
    if "bf16" in name:
        return BF16, "BFLOAT16 is not supported"
    if (
        "qk_matmul_softmax" in name
        or "output_mode3" in name
        or name.startswith("test_attention_local_window_gqa_rank4_mask")
    ):
        return PROBABILITIES, "qk_matmul_output_mode=3"
    return None


def _params():
    for name in sorted(CASES):
        failure = expected_failure(name)
        marks = [pytest.mark.xfail(reason=failure[0], strict=True)] if failure else []
        yield pytest.param(name, marks=marks, id=name.removeprefix("test_attention"))


def test_the_suite_is_there() -> None:
    assert len(CASES) == 186
    assert sum(expected_failure(name) is None for name in CASES) >= 160


@pytest.mark.parametrize("name", list(_params()))
def test_conformance_case(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    path = tmp_path / f"{name}.onnx"
    onnx.save(case.model, str(path))
    imported = import_model(path)
    run_passes(imported.module, "onnx-canonicalize")
    reports, refused = detect_attention(imported.module, verify=True)
    names = [op.name for op in imported.module.walk()]
    assert refused == []
    assert names.count("cta.attention") == 1 and "onnx.Softmax" not in names
    inputs = {
        value.name: array
        for value, array in zip(case.model.graph.input, case.data_sets[0][0], strict=True)
    }
    outputs = list(evaluate(imported.module, inputs).values())
    for got, expected in zip(outputs, case.data_sets[0][1], strict=True):
        tolerance = 3e-3 if expected.dtype == np.float16 else 1e-4
        np.testing.assert_allclose(
            got.astype(np.float64), expected.astype(np.float64), atol=tolerance, rtol=tolerance
        )


@pytest.mark.parametrize(
    "name", [n for n in sorted(CASES) if expected_failure(n) and not n.endswith("_expanded")]
)
def test_unsupported_cases_fail_clearly(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.onnx"
    onnx.save(CASES[name].model, str(path))
    _, fragment = expected_failure(name)
    with pytest.raises(CtacError, match=fragment.replace("(", r"\(")):
        import_model(path)
