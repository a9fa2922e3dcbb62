"""`ctac compile --outputs NAME[,NAME]`: the part of a model that computes those values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import FP32_HW, MODELS

from ctac import api
from ctac.cli import main
from ctac.errors import CtacError

BERT = MODELS / "bert_ts_eager.onnx"
SHAPES = {"input_ids": [2, 16], "attention_mask": [2, 16]}
BLOCK_0 = "/model/encoder/layer.0/output/LayerNorm/LayerNormalization_output_0"
PROBABILITIES_1 = "/model/encoder/layer.1/attention/self/Softmax_output_0"


def _onnxruntime(names: list[str], feeds: dict) -> list[np.ndarray]:
    """onnxruntime's values of `names` (made graph outputs of a copy of the model)."""
    model = onnx.load(BERT)
    del model.graph.output[:]
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(names, feeds)


def _feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    mask = np.ones((2, 16), np.int64)
    mask[1, 12:] = 0
    return {"input_ids": rng.integers(0, 100, (2, 16)), "attention_mask": mask}


def test_a_prefix_of_the_model_compiles_and_matches_onnxruntime() -> None:
    whole = api.compile(BERT, SHAPES, hw=FP32_HW)
    part = api.compile(BERT, SHAPES, hw=FP32_HW, outputs=[BLOCK_0, PROBABILITIES_1])
    assert list(part.program.outputs[i].name for i in range(2)) == [BLOCK_0, PROBABILITIES_1]
    # Block 0 and block 1's attention, not the rest of the model.
    assert part.instructions < whole.instructions
    outputs = api.run(part, _feeds()).outputs
    for name, want in zip([BLOCK_0, PROBABILITIES_1], _onnxruntime([BLOCK_0, PROBABILITIES_1], _feeds()), strict=True):  # fmt: skip
        np.testing.assert_allclose(outputs[name], want, atol=1e-4)
    assert part.provenance.settings["outputs"] == [BLOCK_0, PROBABILITIES_1]


def test_the_cli_compiles_the_named_part(tmp_path: Path, capsys) -> None:
    program = tmp_path / "block0.ctab"
    shape = "input_ids=2x16,attention_mask=2x16"
    assert main(["compile", str(BERT), "--shape", shape, "--outputs", BLOCK_0,
                 "-o", str(program)]) == 0  # fmt: skip
    assert main(["run", str(program), "--json"]) == 0
    assert BLOCK_0 in capsys.readouterr().out


@pytest.mark.parametrize(
    "outputs, message",
    [
        ("/model/encoder/layer.0/output/LayerNorm/LayerNormalisation_output_0", "close: /model"),
        (f"{BLOCK_0},{BLOCK_0}", "names a value twice"),
        ("input_ids", "no node of the model computes 'input_ids'"),
    ],
)
def test_a_name_the_model_does_not_compute_is_one_error(
    outputs: str, message: str, tmp_path: Path, capsys
) -> None:
    program = tmp_path / "p.ctab"
    shape = "input_ids=2x16,attention_mask=2x16"
    assert main(["compile", str(BERT), "--shape", shape, "--outputs", outputs,
                 "-o", str(program)]) == 2  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: --outputs") and message in error[0]
    assert not program.exists()
    with pytest.raises(CtacError, match="--outputs"):
        api.compile(BERT, SHAPES, outputs=[outputs.split(",")[0] + "x"])
