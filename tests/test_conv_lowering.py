"""General Conv (im2col) and ConvTranspose on the accelerator (issue 14).

Small graphs made with onnx.helper are compiled (import, canonicalize, lower, encode, the
loader's checks) and run on the interpreter; outputs are compared with onnxruntime. The forms
are those of a ViT's convolutional decoder or head: 3x3 with padding 1 at stride 1 and 2,
depthwise, dilated, 1-D, ConvTranspose upsampling with output_padding, and a conv tiled
because the buffers are small. The reference evaluator (runtime/reference_conv.py) is checked
against onnxruntime on the same graphs.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from conftest import fp32_same_capacity
from onnx import TensorProto, helper, numpy_helper
from test_lowering_properties import check_buffer_ranges, check_stores

from ctac.emit import check_loadable, program_from_module
from ctac.errors import CtacError
from ctac.hw import Hardware, hardware_from_text, load_hardware
from ctac.importer import import_model
from ctac.passes.lower_to_isa import lower_module
from ctac.pipeline import run_passes
from ctac.runtime import isa
from ctac.runtime.evaluator import evaluate
from ctac.runtime.interpreter import run_program
from ctac.runtime.program import decode_program, encode_program
from ctac.weights import forget_stores

SIZE_KIB = re.compile(r"size_kib = \{ value = [0-9.]+")


def _hardware(sizes_kib: tuple[float, ...] | None = None) -> Hardware:
    """The default machine at fp32 (same element capacities), optionally with the buffers'
    size_kib (act, wgt, acc, vec) replaced, as tests/test_lowering_properties.py does."""
    text = load_hardware(None).text
    if sizes_kib is not None:
        values = iter(sizes_kib)
        text = SIZE_KIB.sub(lambda m: f"size_kib = {{ value = {next(values)}", text)
    return hardware_from_text(fp32_same_capacity(text), f"conv test {sizes_kib}")


def _model(
    op_type: str,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    bias: bool,
    seed: int = 0,
    **attributes,
) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(w_shape).astype(np.float32)
    out_channels = w_shape[0] if op_type == "Conv" else w_shape[1] * attributes.get("group", 1)
    initializers = [numpy_helper.from_array(w, "w")]
    inputs = ["x", "w"]
    if bias:
        initializers.append(
            numpy_helper.from_array(rng.standard_normal(out_channels).astype(np.float32), "b")
        )
        inputs.append("b")
    node = helper.make_node(op_type, inputs, ["y"], **attributes)
    graph = helper.make_graph(
        [node],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)  # gives y its shape


def _compile_and_run(
    model: onnx.ModelProto, x: np.ndarray, hw: Hardware, tmp_path: Path
) -> tuple[np.ndarray, np.ndarray, list]:
    """(accelerator output, reference evaluator output, the program's instructions). Every
    buffer range lies in its buffer and the output is stored exactly once per element, never
    over the data segment or the input (test_lowering_properties' checks)."""
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    try:
        imported = import_model(path, {"x": list(x.shape)})
        run_passes(imported.module, "onnx-canonicalize")
        evaluated = evaluate(imported.module, {"x": x})["y"]
        program = program_from_module(lower_module(imported.module, hw))
    finally:
        forget_stores()
    capacities = {b.index: b.capacity for b in hw.buffers}
    blob = encode_program(program)
    check_loadable(program, blob, capacities)
    program = decode_program(blob, hw.digest, capacities)
    check_buffer_ranges(program, hw)
    check_stores(program)
    outputs, _ = run_program(program, capacities, {"x": x})
    return outputs["y"], evaluated, program.instructions


def _onnxruntime(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(["y"], {"x": x})[0]


CASES = {
    "3x3-pad1-stride1": ("Conv", (1, 3, 8, 8), (4, 3, 3, 3), True, {"pads": [1, 1, 1, 1]}),
    "3x3-pad1-stride2": (
        "Conv", (2, 3, 9, 7), (5, 3, 3, 3), True, {"pads": [1, 1, 1, 1], "strides": [2, 2]},
    ),
    "depthwise": (
        "Conv", (1, 4, 6, 6), (4, 1, 3, 3), True, {"pads": [1, 1, 1, 1], "group": 4},
    ),
    "grouped-2": ("Conv", (1, 4, 5, 5), (6, 2, 3, 3), False, {"group": 2}),
    "dilation2": (
        "Conv", (1, 2, 9, 9), (3, 2, 3, 3), False, {"pads": [2, 2, 2, 2], "dilations": [2, 2]},
    ),
    "asymmetric-pads-stride-3x1": (
        "Conv", (1, 2, 7, 6), (2, 2, 2, 3), True, {"pads": [0, 1, 2, 0], "strides": [3, 1]},
    ),
    "same-upper": ("Conv", (1, 2, 7, 7), (2, 2, 3, 3), False, {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "1d": ("Conv", (2, 3, 11), (4, 3, 3), True, {"pads": [1, 1], "strides": [2]}),
    # No padding: windows read the input itself. The last window reads one element past the
    # end of the input, so the last channel is gathered element by element.
    "1d-stride2-read-past-end": ("Conv", (1, 2, 9), (3, 2, 1), False, {"strides": [2]}),
    # 7 rows are not a whole number of stride-2 row steps: channels gathered one by one.
    "3x3-stride2-odd-rows": ("Conv", (1, 2, 7, 7), (2, 2, 3, 3), True, {"strides": [2, 2]}),
    "3d": ("Conv", (1, 2, 4, 5, 5), (3, 2, 2, 3, 3), True, {"pads": [0, 1, 1, 1, 1, 0]}),
    "patchify": ("Conv", (1, 3, 8, 8), (6, 3, 4, 4), True, {"strides": [4, 4]}),
    "1x1": ("Conv", (2, 8, 5, 6), (4, 8, 1, 1), True, {}),
    "transpose-stride2-output-padding": (
        "ConvTranspose", (1, 3, 4, 5), (3, 2, 3, 3), True,
        {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
    ),
    "transpose-2x2-upsample": ("ConvTranspose", (2, 4, 3, 3), (4, 3, 2, 2), True, {"strides": [2, 2]}),
    "transpose-grouped-dilated": (
        "ConvTranspose", (1, 4, 4, 4), (4, 1, 3, 3), False,
        {"group": 2, "dilations": [2, 2], "strides": [2, 1], "pads": [2, 0, 0, 1]},
    ),
    "transpose-1d-output-shape": (
        "ConvTranspose", (1, 2, 5), (2, 3, 3), False, {"strides": [3], "output_shape": [17]},
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_conv_matches_onnxruntime(name: str, tmp_path: Path) -> None:
    op_type, x_shape, w_shape, bias, attributes = CASES[name]
    model = _model(op_type, x_shape, w_shape, bias, **attributes)
    x = np.random.default_rng(1).standard_normal(x_shape).astype(np.float32)
    want = _onnxruntime(model, x)
    got, evaluated, _ = _compile_and_run(model, x, _hardware(), tmp_path)
    np.testing.assert_allclose(evaluated, want, rtol=1e-5, atol=1e-5, err_msg="reference")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg="accelerator")


def test_patch_matrix_is_tiled_for_small_buffers(tmp_path: Path) -> None:
    """2 KiB act/wgt/acc (256-element halves at fp32): a band of the patch matrix is wider than
    an act half (16 output columns x stride 2 x 9 rows), so the DMA and the GEMM both tile."""
    model = _model("Conv", (1, 8, 32, 32), (8, 8, 3, 3), True, pads=[1, 1, 1, 1], strides=[2, 2])
    x = np.random.default_rng(2).standard_normal((1, 8, 32, 32)).astype(np.float32)
    hw = _hardware((2, 2, 2, 40))
    got, _, instructions = _compile_and_run(model, x, hw, tmp_path)
    np.testing.assert_allclose(got, _onnxruntime(model, x), rtol=1e-4, atol=1e-4)
    half = {b.index: b.capacity // 2 for b in hw.buffers}
    gemms = [fields for name, fields in instructions if name == "GEMM"]
    # The GEMM is 8 x (72 + 1) x 256: more than one k step and more than one n tile.
    assert any(f["accumulate"] for f in gemms) and len(gemms) > 4
    for name, fields in instructions:
        if name == "LOAD" and fields["dst"] == isa.Buffer.ACT:
            assert fields["rows"] * fields["cols"] <= half[isa.Buffer.ACT]


def test_channels_share_one_dma_per_kernel_tap(tmp_path: Path) -> None:
    """A 3x3 conv over 16 channels gathers its patch matrix with one LOAD and one STORE per
    kernel tap (9 of each), not one per channel and tap (144)."""
    model = _model("Conv", (1, 16, 8, 8), (4, 16, 3, 3), False, pads=[1, 1, 1, 1])
    x = np.random.default_rng(4).standard_normal((1, 16, 8, 8)).astype(np.float32)
    got, _, instructions = _compile_and_run(model, x, _hardware(), tmp_path)
    np.testing.assert_allclose(got, _onnxruntime(model, x), rtol=1e-4, atol=1e-4)
    # The padded image has 10 rows per channel: a tap's LOAD reads 15 planes + 8 window rows.
    gathers = [f for name, f in instructions if name == "LOAD" and f["rows"] == 15 * 10 + 8]
    assert len(gathers) == 9
    loads = sum(name == "LOAD" for name, _ in instructions)
    assert loads < 16 + 9 + 10  # the 16 channel copies into the padded image, the 9 taps, GEMM


def test_wide_rows_gather_element_by_element(tmp_path: Path) -> None:
    """A stride-3 1-D conv whose output row (120 x 3 elements) is wider than a 256-element act
    half: each row is gathered by LOADs whose rows are single elements."""
    model = _model("Conv", (1, 2, 362), (3, 2, 5), False, strides=[3])
    x = np.random.default_rng(3).standard_normal((1, 2, 362)).astype(np.float32)
    got, _, _ = _compile_and_run(model, x, _hardware((2, 2, 2, 40)), tmp_path)
    np.testing.assert_allclose(got, _onnxruntime(model, x), rtol=1e-4, atol=1e-4)


def test_refused_conv_names_the_limit(tmp_path: Path) -> None:
    """An act buffer of one element (halves of none) cannot move the patch matrix: the Conv is
    refused with one clear line naming the op and the limit, not a traceback."""
    model = _model("Conv", (1, 2, 4, 4), (2, 2, 3, 3), False, pads=[1, 1, 1, 1])
    x = np.zeros((1, 2, 4, 4), np.float32)
    one_element = 2 / 1024  # KiB of one fp16 element (fp32_same_capacity keeps the count)
    with pytest.raises(CtacError) as refused:
        _compile_and_run(model, x, _hardware((one_element, 2, 2, 40)), tmp_path)
    message = str(refused.value)
    assert message.startswith("1 op(s) cannot be lowered to the CTA-ISA:")
    assert "'y' (onnx.Conv): an act buffer half of 0 elements cannot hold one element" in message


def test_gpu_roofline_counts_conv_transpose_macs(tmp_path: Path) -> None:
    """The V100 model charges ConvTranspose its products on the tensor cores: every input
    element times the M/group x k x k weights it meets, 2 FLOPs each (not one per output)."""
    from ctac.dialects import onnx as ox
    from ctac.runtime.gpu import op_work

    model = _model("ConvTranspose", (2, 4, 3, 3), (4, 3, 2, 2), True, strides=[2, 2])
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    imported = import_model(path, {"x": [2, 4, 3, 3]})
    (op,) = [op for op in imported.module.walk() if isinstance(op, ox.ConvTransposeOp)]
    flops, _, tensor_cores = op_work(op)
    assert tensor_cores and flops == 2.0 * (2 * 4 * 3 * 3) * (3 * 2 * 2)
