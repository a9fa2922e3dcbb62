"""The reference evaluator holds only the values still to be used, and the reference attention
and softmax work in place: a long sequence's L x L scores were copied once per elementwise step
and every intermediate was kept to the end (detect-attention's proof of bert_long at 4096 tokens
peaked at 1.7 GB; now 0.67 GB). The values are the same (tests/test_reference.py and every
program test compare them)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from ctac.importer import import_model
from ctac.runtime.evaluator import evaluate, evaluate_values
from ctac.runtime.reference import softmax
from ctac.runtime.reference_cta import attention

SIDE = 512  # a 1 MB float32 value
CHAIN = 8


def chain_model(tmp_path: Path) -> Path:
    """x -> Add -> Mul -> ... (CHAIN elementwise ops) -> y, every value SIDE x SIDE."""
    nodes, previous = [], "x"
    for index in range(CHAIN):
        nodes.append(
            helper.make_node("Add" if index % 2 else "Mul", [previous, "c"], [f"v{index}"])
        )
        previous = f"v{index}"
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [SIDE, SIDE])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [SIDE, SIDE])],
        [helper.make_tensor("c", TensorProto.FLOAT, [], [1.5])],
    )  # fmt: skip
    path = tmp_path / "chain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def peak_bytes(run) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_evaluators_hold_only_live_values(tmp_path: Path) -> None:
    module = import_model(chain_model(tmp_path)).module
    x = np.random.default_rng(0).standard_normal((SIDE, SIDE)).astype(np.float32)
    one = x.nbytes
    expected = x.copy()
    for index in range(CHAIN):
        expected = expected + np.float32(1.5) if index % 2 else expected * np.float32(1.5)
    outputs = {}
    assert peak_bytes(lambda: outputs.update(evaluate(module, {"x": x}))) < 3 * one
    assert np.array_equal(outputs[f"v{CHAIN - 1}"], expected)
    function = next(op for op in module.walk() if op.name == "func.func")
    argument = function.body.block.args[0]
    result = list(function.body.block.ops)[-1].operands[0]
    got = []
    assert peak_bytes(lambda: got.extend(evaluate_values([result], {argument: x}))) < 3 * one
    assert np.array_equal(got[0], expected)


def test_reference_attention_and_softmax_work_in_their_own_array() -> None:
    """One L x L float64 score tensor at a time (and its mask), not one per step."""
    from functools import partial

    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 2, SIDE, 16)) for _ in range(3))
    additive = rng.standard_normal((1, 1, SIDE, SIDE)).astype(np.float32)
    keys = (rng.random((1, SIDE)) < 0.8).astype(np.int64)
    scores = 2 * SIDE * SIDE * 8
    for mask_kind, mask, causal in (("additive", additive, True), ("key_padding", keys, False)):
        run = partial(attention, q, k, v, mask, num_heads=2, kv_heads=2, scale=0.25,
                      causal=causal, mask_kind=mask_kind)  # fmt: skip
        assert peak_bytes(run) < 2 * scores, mask_kind
    x = rng.standard_normal((2, SIDE, SIDE))
    assert peak_bytes(lambda: softmax(x)) < 1.5 * x.nbytes
