"""The ONNX backend node tests as a peer suite (issue 17).

`onnx.backend.test.case.node.collect_testcases()` filtered to the cases whose ops ctac supports
(an op of the onnx dialect, an op ONNX defines by a function: the importer expands it, or a
quantized op ctac/quantized.py decomposes) - 1,376 of 1,884 with onnx 1.23. Each case runs
twice: through the reference evaluator (import, canonicalize, evaluate: the `ctac eval` path)
and through the accelerator (import, canonicalize, detect attention, lower, encode, the program
loader's checks, the interpreter). Input shapes come from the test data where the graph leaves
them symbolic.

A case must match the expected outputs (the case's rtol/atol, widened for the accelerator's
float32 arithmetic) or be refused with a CtacError whose message matches one of REFUSAL_REASONS.
No wrong result, no internal error; a case listed in onnx_node_suite_passing.json must pass.
With onnx 1.23.2: the evaluator passes 836 and refuses 540, the accelerator passes 545 and
refuses 831 (`python tests/test_onnx_node_suite.py` prints both, with the refusals by reason).
Before issue 17 the 4 negative-axis Flatten cases were wrong in the evaluator; the 21 cases with
a float64 or int16 input or output or a zero-size output, which the compiler now refuses, used
to compile to programs the loader refuses.

    python tests/test_onnx_node_suite.py [--write]   # pass / refusal counts of both sides
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import warnings
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import onnx
import pytest

from ctac.errors import CtacError

# Every refusal must match one of these (message pattern -> why ctac refuses it).
REFUSAL_REASONS: dict[str, str] = {
    r"element type \w+ is not supported": "an element type ctac has no dtype for (strings, "
    "bfloat16, float8, int2/int4, uint16/32/64)",
    r"attribute '[^']+' is not supported": "an attribute the onnx dialect does not model",
    r"cannot be made static": "an output shape that depends on input values",
    r"symbolic input dimensions are not set": "a zero-size input (the test data has a 0 "
    "dimension; ctac's shapes are positive)",
    r"operators ctac does not support|is not supported$": "a node of an operator ctac lacks "
    "(inside a function body)",
    r"no function body here": "an op whose ONNX function body does not apply to these types",
    r"optional output '[^']+' is used": "an optional output ctac does not produce",
    r"is not a tensor": "a sequence or optional input",
    r"asks for the softmax probabilities": "Attention's qk_matmul_output_mode=3 "
    "(ctac/functions.py ATTENTION_LIMITS)",
    r"training mode": "Dropout in training mode",
    r"auto_pad": "Conv auto_pad modes other than NOTSET/VALID",
    # The accelerator only:
    r"cannot be lowered to the CTA-ISA": "an op or shape with no accelerator lowering",
    r"the accelerator's inputs and outputs are": "an input or output dtype the program format "
    "cannot hold (float64, int16, ...: issue 17 class 3)",
    r"with no elements": "a zero-size output (the accelerator cannot load or store it)",
    r"training_mode=1": "BatchNormalization in training mode (batch statistics, updated means)",
}
_REFUSAL = re.compile("|".join(f"(?:{p})" for p in REFUSAL_REASONS))
# The cases that pass today, per side: a case listed here must keep passing (a refusal would be
# a regression). `python tests/test_onnx_node_suite.py --write` regenerates it.
PASSING = Path(__file__).resolve().parent / "onnx_node_suite_passing.json"
TOLERANCE = {"evaluator": (1e-3, 1e-5), "accelerator": (2e-2, 2e-3)}


def _supported(model: onnx.ModelProto) -> bool:
    from ctac.decompositions import STANDARD_DECOMPOSITIONS
    from ctac.dialects import onnx as onnx_dialect
    from ctac.functions import has_function
    from ctac.quantized import QUANTIZED_OPS

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return bool(model.graph.node) and all(
        node.domain in ("", "ai.onnx")
        and (
            node.op_type in onnx_dialect.OP_BY_ONNX_TYPE
            or node.op_type in QUANTIZED_OPS
            or node.op_type in STANDARD_DECOMPOSITIONS
            or has_function(node, opset)
        )
        for node in model.graph.node
    )


@cache
def _cases() -> dict[str, object]:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return {c.name: c for c in cases if c.kind == "node" and c.data_sets and _supported(c.model)}


def _names() -> list[str]:
    return sorted(_cases())


def _arrays(values) -> list:
    """The test data as numpy arrays (some cases store TensorProtos; sequences stay lists)."""
    from onnx import numpy_helper

    return [numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else v for v in values]


def _shapes(model: onnx.ModelProto, inputs: list[np.ndarray]) -> dict[str, list[int]]:
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    return {
        value.name: list(array.shape)
        for value, array in zip(graph_inputs, inputs, strict=False)
        if isinstance(array, np.ndarray) and len(array.shape) and all(d > 0 for d in array.shape)
    }


def _named(model: onnx.ModelProto, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    initializers = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    return dict(zip(names, inputs, strict=False))


def _close(name: str, got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> str | None:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f"output '{name}' has shape {got.shape}, expected {want.shape}"
    if want.dtype.kind in "biu":
        if not np.array_equal(got.astype(want.dtype), want):
            return f"output '{name}' differs (integers)"
        return None
    if want.dtype.kind != "f":
        return f"output '{name}' has dtype {want.dtype}, which the suite cannot compare"
    g, w = got.astype(np.float64), want.astype(np.float64)
    same_nan = np.isnan(g) == np.isnan(w)
    finite = np.isfinite(w)
    ok = same_nan.all() and (np.isinf(w) <= (g == w)).all()
    ok = ok and np.allclose(g[finite], w[finite], rtol=rtol, atol=atol)
    if not ok:
        error = np.max(np.abs(g[finite] - w[finite]), initial=0.0)
        return f"output '{name}' differs: max abs err {error:.3g}"
    return None


def run_case(name: str, side: str) -> tuple[str, str]:
    """('pass' | 'refused' | 'wrong' | 'internal', detail)."""
    from ctac.importer import import_model
    from ctac.pipeline import run_passes
    from ctac.runtime.evaluator import evaluate
    from ctac.weights import forget_stores

    case = _cases()[name]
    inputs, expected = (_arrays(group) for group in case.data_sets[0])
    rtol, atol = TOLERANCE[side]
    rtol, atol = max(rtol, case.rtol), max(atol, case.atol)
    output_names = [o.name for o in case.model.graph.output]
    try:
        with tempfile.TemporaryDirectory(prefix="ctac-node-") as folder:
            path = Path(folder) / "model.onnx"
            onnx.save(case.model, str(path))
            try:
                imported = import_model(path, _shapes(case.model, inputs))
                run_passes(imported.module, "onnx-canonicalize")
                feeds = _named(case.model, inputs)
                with np.errstate(all="ignore"):
                    if side == "evaluator":
                        outputs = evaluate(imported.module, feeds)
                    else:
                        outputs = _accelerate(imported.module, feeds)
            finally:
                forget_stores()
    except CtacError as exc:
        return "refused", str(exc).splitlines()[0]
    except Exception as exc:  # noqa: BLE001 - an internal error is what the suite looks for
        return "internal", f"{type(exc).__name__}: {str(exc)[:300]}"
    for output_name, want in zip(output_names, expected, strict=False):
        if output_name not in outputs:
            return "wrong", f"output '{output_name}' missing"
        problem = _close(output_name, outputs[output_name], want, rtol, atol)
        if problem:
            return "wrong", problem
    return "pass", ""


@cache
def _hardware():
    from conftest import fp32_same_capacity

    from ctac.hw import hardware_from_text, load_hardware

    # The cases' tolerances are float32's: the fp32 machine with the default's tiles.
    text = fp32_same_capacity(load_hardware(None).text)
    return hardware_from_text(text, "default hardware at fp32")


def _accelerate(module, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from ctac.emit import check_loadable, program_from_module
    from ctac.passes.detect_attention import detect_attention
    from ctac.passes.lower_to_isa import lower_module
    from ctac.runtime.interpreter import run_program
    from ctac.runtime.program import decode_program, encode_program

    hw = _hardware()
    detect_attention(module, verify=True)
    program = program_from_module(lower_module(module, hw))
    capacities = {b.index: b.capacity for b in hw.buffers}
    blob = encode_program(program)
    check_loadable(program, blob, capacities)
    program = decode_program(blob, hw.digest, capacities)
    names = {s.name for s in program.inputs}
    outputs, _ = run_program(program, capacities, {k: v for k, v in feeds.items() if k in names})
    return outputs


@cache
def _passing() -> dict[str, set[str]]:
    return {side: set(names) for side, names in json.loads(PASSING.read_text()).items()}


def _check(side: str, name: str) -> None:
    outcome, detail = run_case(name, side)
    assert outcome != "internal", f"{name} ({side}): internal error {detail}"
    assert outcome != "wrong", f"{name} ({side}): wrong result: {detail}"
    if outcome == "refused":
        assert _REFUSAL.search(detail), f"{name} ({side}): refused for an unlisted reason: {detail}"
        assert name not in _passing()[side], f"{name} ({side}) passed before, now: {detail}"


@pytest.mark.parametrize("name", _names())
def test_evaluator(name: str) -> None:
    _check("evaluator", name)


@pytest.mark.parametrize("name", _names())
def test_accelerator(name: str) -> None:
    _check("accelerator", name)


def test_flatten_negative_axis_cases_pass() -> None:
    """Issue 17 class 2: the reference evaluator's negative Flatten axes (these were wrong)."""
    names = [n for n in _names() if n.startswith("test_flatten_negative_axis")]
    assert len(names) == 4
    for name in names:
        assert run_case(name, "evaluator") == ("pass", "")


def main() -> int:
    names = _names()
    print(f"{len(names)} node test cases use only ops ctac supports")
    status = 0
    passing: dict[str, list[str]] = {}
    for side in ("evaluator", "accelerator"):
        counts: Counter = Counter()
        reasons: Counter = Counter()
        passing[side] = []
        for name in names:
            outcome, detail = run_case(name, side)
            counts[outcome] += 1
            if outcome == "pass":
                passing[side].append(name)
            elif outcome == "refused":
                match = _REFUSAL.search(detail)
                reasons[match.group(0) if match else f"UNLISTED: {detail[:80]}"] += 1
                status = status if match else 1
            else:
                status = 1
                print(f"  {side} {outcome}: {name}: {detail}")
        print(f"{side}: {len(names)} cases, " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        for reason, count in reasons.most_common():
            print(f"    refused {count:4}: {reason}")
    if "--write" in sys.argv:
        PASSING.write_text(json.dumps(passing, indent=1) + "\n")
        print(f"wrote {PASSING}")
    return status


if __name__ == "__main__":
    sys.exit(main())
