"""Weights flow from the ONNX file to the program file without copies (issue 16): the lazy loader's
views equal what onnx reads, external data is memory-mapped, a streamed program file is the same
bytes as the encoded one, and a program loaded by memory map runs as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ctac.emit import check_loadable, program_from_module
from ctac.errors import CtacError
from ctac.hw import load_hardware, with_precision
from ctac.importer import import_model
from ctac.mapped import FileRange, file_range
from ctac.onnx_loader import checkable_skeleton, load_onnx, load_onnx_lazy
from ctac.passes.detect_attention import detect_attention
from ctac.passes.lower_to_isa import lower_module
from ctac.pipeline import run_passes
from ctac.runtime.data_segment import DataSegment, to_storage
from ctac.runtime.program import decode_program, encode_program, read_program, write_program
from ctac.weights import forget_stores

MODELS = Path(__file__).parent / "models"
MANIFEST = json.loads((MODELS / "manifest.json").read_text())
HW = load_hardware(None)
CAPACITIES = {b.index: b.capacity for b in HW.buffers}


def _entry(name: str) -> dict:
    return next(e for e in MANIFEST["models"] if e["file"] == f"{name}.onnx")


def _shapes(entry: dict) -> dict[str, list[int]]:
    return {name: list(value["shape"]) for name, value in entry["inputs"].items()}


@pytest.mark.parametrize("name", ["bert_ts_eager", "gpt2_dynamo_sdpa", "vit_ts_eager"])
def test_lazy_views_equal_onnx_arrays(name: str) -> None:
    path = MODELS / f"{name}.onnx"
    model, views = load_onnx_lazy(path)
    full = load_onnx(path)
    assert views, "the large initializers are views"
    expected = {t.name: numpy_helper.to_array(t) for t in full.graph.initializer}
    for tensor in model.graph.initializer:
        array = views.get(tensor.name)
        if array is None:
            array = numpy_helper.to_array(tensor)
        else:
            assert not array.flags.writeable
        np.testing.assert_array_equal(array, expected[tensor.name])
        assert array.dtype == expected[tensor.name].dtype
    onnx.checker.check_model(checkable_skeleton(model, views))


def test_external_data_is_memory_mapped(tmp_path: Path) -> None:
    model = onnx.load(str(MODELS / "bert_ts_eager.onnx"))
    full = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    onnx.save_model(
        model,
        str(tmp_path / "m.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="m.data",
        size_threshold=1024,
    )
    lazy, views = load_onnx_lazy(tmp_path / "m.onnx")
    external = {
        t.name
        for t in onnx.load(str(tmp_path / "m.onnx"), load_external_data=False).graph.initializer
        if onnx.external_data_helper.uses_external_data(t)
    }
    assert external and external <= set(views)
    assert all(
        not views[name].flags.owndata and not views[name].flags.writeable for name in external
    )
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in lazy.graph.initializer)
    for name, array in views.items():
        np.testing.assert_array_equal(array, full[name])


def test_truncated_raw_data_is_refused(tmp_path: Path) -> None:
    model = onnx.load(str(MODELS / "bert_ts_eager.onnx"))
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    tensor.raw_data = tensor.raw_data[:-4]
    onnx.save_model(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(CtacError, match=tensor.name):
        load_onnx_lazy(tmp_path / "bad.onnx")


def _program(name: str, hw=HW):
    forget_stores()
    entry = _entry(name)
    imported = import_model(MODELS / entry["file"], _shapes(entry))
    run_passes(imported.module, "onnx-canonicalize")
    detect_attention(imported.module)
    return program_from_module(lower_module(imported.module, hw))


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_streamed_program_is_the_encoded_one(tmp_path: Path, precision: str) -> None:
    hw = with_precision(HW, precision)
    capacities = {b.index: b.capacity for b in hw.buffers}
    program = _program("bert_ts_eager", hw)
    assert isinstance(program.data, DataSegment) and program.element_type == precision
    # the weights are views of the ONNX file: an fp32 program writes them file to file
    # (ctac/mapped.py), an fp16 one converts them a few MB at a time
    assert any(file_range(values) is not None for _, values in program.data.pieces)
    blob = encode_program(program)
    check_loadable(program, None, capacities)
    check_loadable(program, blob, capacities)
    write_program(program, tmp_path / "p.ctab")
    assert (tmp_path / "p.ctab").read_bytes() == blob
    # the same bytes from the laid-out array
    laid_out = np.asarray(program.data)
    program.data = laid_out
    assert encode_program(program) == blob
    loaded = read_program(tmp_path / "p.ctab", hw.digest, capacities)
    assert loaded.element_type == precision
    assert loaded.data.dtype == np.dtype("<f2" if precision == "fp16" else "<f4")
    np.testing.assert_array_equal(loaded.data, to_storage(laid_out, precision))
    assert not loaded.data.flags.writeable
    assert decode_program(blob, hw.digest, capacities).instructions == loaded.instructions


def test_data_segment_gaps_and_overlaps() -> None:
    pieces = [(7, np.arange(3, dtype=np.float32)), (2, np.ones(2, dtype=np.float32))]
    segment = DataSegment(12, pieces)
    expected = np.zeros(12, dtype=np.float32)
    expected[7:10] = np.arange(3)
    expected[2:4] = 1
    assert b"".join(segment.chunks(zeros=2)) == expected.tobytes()
    fp16 = b"".join(segment.chunks(zeros=2, element_type="fp16"))
    assert fp16 == expected.astype("<f2").tobytes()
    np.testing.assert_array_equal(np.asarray(segment), expected)
    overlapping = DataSegment(6, [(0, np.ones(4, np.float32)), (2, np.full(3, 2, np.float32))])
    assert b"".join(overlapping.chunks()) == np.asarray(overlapping).tobytes()
    np.testing.assert_array_equal(np.asarray(overlapping), [1, 1, 2, 2, 2, 0])


def test_memory_mapped_program_runs(tmp_path: Path) -> None:
    from ctac.run import execute, random_inputs

    program = _program("distilbert_ts_eager")
    write_program(program, tmp_path / "p.ctab")
    loaded = read_program(tmp_path / "p.ctab", HW.digest, CAPACITIES)
    inputs = random_inputs(loaded, seed=0)
    first, _ = execute(loaded, HW, inputs, progress=False)
    second, _ = execute(program, HW, inputs, progress=False)
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


def test_a_changed_source_is_written_from_the_mapping(tmp_path: Path) -> None:
    """A FileRange whose file is no longer the one mapped writes its bytes from memory."""
    model, views = load_onnx_lazy(MODELS / "bert_ts_eager.onnx")
    array = next(v for v in views.values() if v.dtype == np.float32)
    source = file_range(array)
    assert source is not None
    stale = FileRange(source.path, (0, 0, 0, 0), source.offset, source.view)
    for chunk, name in ((source, "copied.bin"), (stale, "written.bin")):
        with open(tmp_path / name, "wb") as stream:
            stream.write(b"head")
            stream.flush()
            chunk.write_to(stream.fileno())
            stream.write(b"tail")
        assert (tmp_path / name).read_bytes() == b"head" + array.tobytes() + b"tail"


def test_printed_module_evaluates_from_a_fresh_weight_store(tmp_path: Path) -> None:
    """`ctac compile --emit onnx -o m.mlir` then `ctac eval m.mlir` in another process: the
    store opens the model from its path, and its large initializers (views of the file, whose
    protos hold no data) must come back as arrays, not as empty tensors."""
    import onnxruntime as ort

    from ctac.pipeline import module_text, parse_module
    from ctac.runtime.evaluator import evaluate

    model = MODELS / "bert_ts_eager.onnx"
    shapes = {"input_ids": [2, 16], "attention_mask": [2, 16]}
    imported = import_model(model, shapes)
    run_passes(imported.module, "onnx-canonicalize")
    text = module_text(imported.module)
    forget_stores()  # as a new process would start
    feeds = {
        "input_ids": np.arange(32).reshape(2, 16) % 200,
        "attention_mask": np.ones((2, 16), np.int64),
    }
    got = evaluate(parse_module(text), feeds)
    (expected,) = ort.InferenceSession(str(model)).run(None, feeds)
    np.testing.assert_allclose(next(iter(got.values())), expected, atol=1e-4)


def test_running_a_program_imports_neither_the_compiler_nor_onnx(tmp_path: Path) -> None:
    """`ctac run PROGRAM.ctab` loads the machine model only: not xDSL, the passes, onnx or the
    API (they took ~0.25 s of every run's start-up)."""
    import subprocess
    import sys

    from ctac.cli import main

    program = tmp_path / "bert.ctab"
    model = MODELS / _entry("bert_ts_eager")["file"]
    shapes = "input_ids=1x8,attention_mask=1x8"
    assert main(["compile", str(model), "--shape", shapes, "-o", str(program)]) == 0
    script = (
        "import sys\n"
        "from ctac.cli import main\n"
        f"assert main(['run', {str(program)!r}, '--json']) == 0\n"
        "heavy = ('xdsl', 'onnx', 'onnxruntime', 'ctac.passes', 'ctac.api', 'ctac.frontend',"
        " 'ctac.runtime.reference', 'matplotlib')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy or "
        "any(m.startswith(h + '.') for h in heavy)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-2000:]
