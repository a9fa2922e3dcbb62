"""A sequence longer than the model's position table is refused at import, also when the model
computes its position ids from the token ids (RoBERTa: cumsum(ids != pad) * (ids != pad) + pad),
where nothing fails until the program would gather past the table's end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import MODELS
from onnx import TensorProto, helper, numpy_helper

from ctac.cli import main
from ctac.model_interface import apply_input_shapes
from ctac.onnx_loader import load_onnx_lazy
from ctac.positions import derived_positions_error


@pytest.mark.parametrize("model", ["roberta_ts_eager", "roberta_dynamo_eager"])
def test_roberta_longer_than_its_positions_is_one_error(model, tmp_path: Path, capsys) -> None:
    # 130 rows, padding_idx 1: tokens reach row count + 1, so 128 positions
    out = tmp_path / "r.ctab"
    shapes = "input_ids=2x129,attention_mask=2x129"
    assert main(["compile", str(MODELS / f"{model}.onnx"), "--shape", shapes, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: input_ids: 129 tokens > the model's 128")
    assert "'model.embeddings.position_embeddings.weight' has 130 rows" in err
    assert "reaching row 130 at 129 tokens" in err and "--shape input_ids=Bx128" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("length", "refused"), [(16, False), (128, False), (129, True)])
def test_roberta_bound_at_the_edge(length: int, refused: bool) -> None:
    model, arrays = load_onnx_lazy(MODELS / "roberta_ts_eager.onnx")
    apply_input_shapes(model.graph, {"input_ids": [1, length], "attention_mask": [1, length]})
    assert (derived_positions_error(model.graph, arrays) is not None) is refused


def _positions_graph(
    length: int, rows: int = 10, pad: int = 1, exclusive: int = 0, clamp: bool = False
) -> onnx.GraphProto:
    """RoBERTa's position ids, built with onnx.helper: ids (1 x length) -> rows of a table."""
    nodes = [
        helper.make_node("Equal", ["ids", "pad"], ["is_pad"]),
        helper.make_node("Not", ["is_pad"], ["real"]),
        helper.make_node("Cast", ["real"], ["mask"], to=TensorProto.INT32),
        helper.make_node("CumSum", ["mask", "axis"], ["count"], exclusive=exclusive),
        helper.make_node("Mul", ["count", "mask"], ["counted"]),
        helper.make_node("Cast", ["counted"], ["counted64"], to=TensorProto.INT64),
        helper.make_node("Add", ["counted64", "pad"], ["positions"]),
    ]
    index = "positions"
    if clamp:  # a model that clamps its ids stays inside the table at any length
        nodes.append(helper.make_node("Min", ["positions", "last"], ["clamped"]))
        index = "clamped"
    nodes.append(helper.make_node("Gather", ["table", index], ["out"]))
    table = np.zeros((rows, 4), np.float32)
    initializers = [
        numpy_helper.from_array(np.array(pad, np.int64), "pad"),
        numpy_helper.from_array(np.array(1, np.int64), "axis"),
        numpy_helper.from_array(np.array(rows - 1, np.int64), "last"),
        numpy_helper.from_array(table, "table"),
    ]
    return helper.make_graph(
        nodes,
        "positions",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, length])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, length, 4])],
        initializers,
    )


def test_derived_positions_on_a_built_graph() -> None:
    # 10 rows, pad 1: n tokens reach row n + 1, so 8 positions
    assert derived_positions_error(_positions_graph(8)) is None
    error = derived_positions_error(_positions_graph(9))
    assert error is not None
    assert str(error).startswith("ids: 9 tokens > the model's 8 positions (position table 'table'")
    assert "--shape ids=Bx8" in str(error)
    # pad 3: two fewer positions
    assert "the model's 6 positions" in str(derived_positions_error(_positions_graph(7, pad=3)))
    # an exclusive CumSum counts one fewer: 9 tokens reach row 9
    assert derived_positions_error(_positions_graph(9, exclusive=1)) is None
    assert derived_positions_error(_positions_graph(10, exclusive=1)) is not None
    # bounded by a clamp: never refused, whatever the length
    assert derived_positions_error(_positions_graph(500, clamp=True)) is None
