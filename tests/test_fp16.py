"""fp16 storage (issue 16): programs store their data segment in the hardware's element type and
the interpreter keeps DRAM in it (fp16 by default, fp32 accumulation on chip); `--precision fp32`
compiles for the fp32 machine, which matches onnxruntime to float32 rounding."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FP16_ATOL, FP16_MIN_COSINE, MODELS, shape_flags

from ctac.cli import main
from ctac.errors import CtacError
from ctac.hw import hardware_from_text, load_hardware, with_precision
from ctac.run import program_hardware
from ctac.runtime.assembly import assemble, disassemble
from ctac.runtime.data_segment import FP16_MAX, to_storage
from ctac.runtime.interpreter import run_program
from ctac.runtime.isa import ACT_BUFFER
from ctac.runtime.program import (
    HEADER,
    Program,
    Symbol,
    decode_program,
    encode_program,
    read_program,
)

HW = load_hardware(None)
CAPACITIES = {b.index: b.capacity for b in HW.buffers}
F32_MIN = float(np.finfo(np.float32).min)


def _shape_flag(entry: dict) -> str:
    return ",".join(
        f"{name}={'x'.join(map(str, dims))}" for name, dims in shape_flags(entry).items()
    )


def _compile_and_compare(entry: dict, tmp_path: Path, precision: str, capsys) -> tuple[int, dict]:
    """(program file size, `ctac run --compare --json` report) of the model at `precision`."""
    model = MODELS / entry["file"]
    target = tmp_path / f"{precision}.ctab"
    flags = ["--shape", _shape_flag(entry), "--precision", precision, "-o", str(target)]
    assert main(["compile", str(model), *flags]) == 0
    capsys.readouterr()
    assert main(["run", str(target), "--compare", str(model), "--json"]) == 0
    return target.stat().st_size, json.loads(capsys.readouterr().out)


def test_every_model_fp16_is_half_the_size_and_reports_its_error(
    model_entry: dict, tmp_path: Path, capsys
) -> None:
    """Acceptance: the fp16 program is about half the fp32 one; `ctac run --compare` reports the
    fp16 error (nonzero, within the honest bound) and the fp32 machine matches onnxruntime to
    1e-4."""
    size16, report16 = _compile_and_compare(model_entry, tmp_path, "fp16", capsys)
    size32, report32 = _compile_and_compare(model_entry, tmp_path, "fp32", capsys)
    # Instructions and tables are the same size in both: the data segment halves, so the
    # file is a little over half (0.50 on the larger models, up to 0.62 on t5's tiny one).
    assert size16 < 0.65 * size32
    for report, storage in ((report16, "fp16"), (report32, "fp32")):
        assert program_hardware(tmp_path / f"{storage}.ctab").precision == storage
        assert all(entry["storage"] == storage for entry in report["outputs"].values())
    errors16 = [entry["max_abs_err"] for entry in report16["outputs"].values()]
    errors32 = [entry["max_abs_err"] for entry in report32["outputs"].values()]
    assert errors16 and max(errors32) <= 1e-4
    # fp16's rounding is a visible result, far above float32's, within the honest bound
    assert 10 * max(errors32) < max(errors16) <= FP16_ATOL
    assert min(e["min_cosine"] for e in report16["outputs"].values()) >= FP16_MIN_COSINE


def test_run_prints_the_error_with_its_storage_type(tmp_path: Path, capsys) -> None:
    entry = {"file": "bert_ts_eager.onnx", "inputs": {"input_ids": {"shape": [2, 16]},
             "attention_mask": {"shape": [2, 16]}}}  # fmt: skip
    _compile_and_compare(entry, tmp_path, "fp16", capsys)
    assert main(["run", str(tmp_path / "fp16.ctab"), "--compare", str(MODELS / entry["file"])]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert "vs onnxruntime (fp16 storage): max abs err" in line


def test_saturation_keeps_float32_min_finite() -> None:
    values = np.array([F32_MIN, -7e4, 7e4, 65519.0, -np.inf, np.inf, np.nan, 0.1, 0.0], np.float32)
    stored = to_storage(values, "fp16")
    assert stored.dtype == np.float16
    np.testing.assert_array_equal(
        stored[:6].astype(np.float32), [-FP16_MAX, -FP16_MAX, FP16_MAX, FP16_MAX, -np.inf, np.inf]
    )
    assert np.isnan(stored[6]) and stored[7] == np.float16(0.1) and stored[8] == 0
    assert to_storage(values, "fp32") is values  # an fp32 machine stores as it is


def _copy_program(element_type: str, data: np.ndarray) -> Program:
    """x (4 floats) -> LOAD -> times 1e4 -> STORE y, and the data segment `data` before x."""
    base = len(data)
    instructions = [
        ("LOAD", dict(dst=ACT_BUFFER, dst_addr=0, src=base, rows=1, cols=4, stride=4)),
        (
            "VEC",
            dict(
                op="mul",
                dst=ACT_BUFFER,
                dst_addr=8,
                a=ACT_BUFFER,
                a_addr=0,
                b=ACT_BUFFER,
                b_addr=0,
                rows=1,
                cols=4,
                bcast="imm",
                imm=1e4,
            ),
        ),  # fmt: skip
        (
            "STORE",
            dict(src=ACT_BUFFER, src_addr=8, dst=base + 4, rows=1, cols=4, stride=4, src_stride=0),
        ),  # fmt: skip
        ("LOAD", dict(dst=ACT_BUFFER, dst_addr=16, src=0, rows=1, cols=base, stride=base)),
        (
            "STORE",
            dict(
                src=ACT_BUFFER,
                src_addr=16,
                dst=base + 8,
                rows=1,
                cols=base,
                stride=base,
                src_stride=0,
            ),
        ),  # fmt: skip
        ("HALT", {}),
    ]
    from ctac.runtime import isa

    instructions = [(name, isa.decode(isa.encode(name, f))[1]) for name, f in instructions]
    symbols = [
        Symbol("x", "input", (4,), "float32", base),
        Symbol("y", "output", (4,), "float32", base + 4),
        Symbol("d", "output", (base,), "float32", base + 8),
    ]
    program = Program(
        HW.digest, instructions, data, 2 * base + 8, symbols, ["copy"] * len(instructions),
        element_type=element_type,
    )  # fmt: skip
    return decode_program(encode_program(program), HW.digest, CAPACITIES)


def test_dram_holds_the_storage_type() -> None:
    """fp16: the data segment, a float input and a store are rounded (saturating: float32.min
    stays finite); fp32: all exact."""
    data = np.array([F32_MIN, 1 / 3, np.nan, 1e5], np.float32)
    x = np.array([-10.0, 7.0, 1 / 3, 1e-4], np.float32)
    for element_type in ("fp16", "fp32"):
        program = _copy_program(element_type, data)
        outputs, _ = run_program(program, CAPACITIES, {"x": x})
        if element_type == "fp32":
            np.testing.assert_array_equal(outputs["d"], data)
            np.testing.assert_array_equal(outputs["y"], x * np.float32(1e4))
            continue
        assert program.data.dtype == np.float16
        np.testing.assert_array_equal(
            outputs["d"], [-FP16_MAX, np.float16(1 / 3), np.nan, FP16_MAX]
        )
        # x rounded to fp16 as the host writes it, times 1e4 in fp32, stored as fp16
        rounded = x.astype(np.float16).astype(np.float32) * np.float32(1e4)
        expected = to_storage(rounded, "fp16").astype(np.float32)
        np.testing.assert_array_equal(outputs["y"], expected)
        assert outputs["y"][0] == -FP16_MAX and outputs["y"][1] == FP16_MAX


def test_token_ids_stay_exact_above_fp16s_integers() -> None:
    """fp16 is exact for integers only up to 2048; token ids go into DRAM exactly."""
    from ctac.runtime.interpreter import Machine

    ids = np.array([4097, 30001, 2049, 7], np.int64)
    program = _copy_program("fp16", np.zeros(4, np.float32))
    program.symbols[0] = Symbol("x", "input", (4,), "int64", 4, vocab=50000)
    machine = Machine(program, CAPACITIES)
    machine.write_input(program.symbols[0], ids)
    np.testing.assert_array_equal(machine.dram_tile(4, 1, 4, 4)[0], ids)
    assert float(np.float16(4097)) == 4096  # what fp16 DRAM would have made of it


def test_an_in_memory_program_runs_as_its_file(tmp_path: Path) -> None:
    """A compiled program run in memory (float32 weights) equals its fp16 file's run."""
    import ctac

    shapes = {"input_ids": (2, 16), "attention_mask": (2, 16)}
    compiled = ctac.compile(MODELS / "bert_ts_eager.onnx", shapes)
    assert compiled.program.element_type == "fp16" and compiled.hw.precision == "fp16"
    path = compiled.save(tmp_path / "p.ctab")
    loaded = read_program(path, compiled.hw.digest)
    inputs = {"input_ids": np.arange(32).reshape(2, 16) % 200,
              "attention_mask": np.ones((2, 16), np.int64)}  # fmt: skip
    capacities = {b.index: b.capacity for b in compiled.hw.buffers}
    first, _ = run_program(compiled.program, capacities, inputs)
    second, _ = run_program(loaded, capacities, inputs)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


def test_the_python_api_compiles_for_a_precision() -> None:
    import ctac

    shapes = {"input_ids": (2, 16), "attention_mask": (2, 16)}
    compiled = ctac.compile(MODELS / "bert_ts_eager.onnx", shapes, precision="fp32")
    assert compiled.program.element_type == "fp32" and compiled.hw.precision == "fp32"
    assert compiled.program.hardware["toml"] == compiled.hw.text
    with pytest.raises(CtacError, match="precision must be one of"):
        ctac.compile(MODELS / "bert_ts_eager.onnx", shapes, precision="bf16")


def test_assembly_round_trips_fp16_data(tmp_path: Path) -> None:
    program = _copy_program("fp16", np.array([F32_MIN, 0.1, np.nan, 3.0], np.float32))
    text = disassemble(program)
    assert ".data 4 fp16" in text
    again = assemble(text)
    assert again.element_type == "fp16" and again.data.dtype == np.float16
    assert encode_program(again) == encode_program(program)
    with pytest.raises(CtacError, match=r"\.data COUNT TYPE"):
        assemble(text.replace(".data 4 fp16", ".data 4"))
    with pytest.raises(CtacError, match="4 fp32 elements but .bytes hold 2"):
        assemble(text.replace(".data 4 fp16", ".data 4 fp32"))


def _resign(body: bytes) -> bytes:
    return body + hashlib.sha256(body).digest()


def test_an_old_version_program_is_refused_with_recompile() -> None:
    blob = encode_program(_copy_program("fp32", np.ones(4, np.float32)))
    fields = list(HEADER.unpack_from(blob))
    fields[1], fields[2] = 1, 0  # version 1: float32 data, reserved zero
    old = _resign(HEADER.pack(*fields) + blob[HEADER.size : -32])
    with pytest.raises(CtacError, match="version 1.*recompile the model with `ctac compile`"):
        decode_program(old, HW.digest, CAPACITIES)
    fields[1], fields[2] = 2, 3  # no such element type
    with pytest.raises(CtacError, match="element bytes 3"):
        decode_program(_resign(HEADER.pack(*fields) + blob[HEADER.size : -32]))
    with pytest.raises(CtacError, match="version 1"):
        assemble(disassemble(decode_program(blob)).replace(".version 2", ".version 1"))


def test_precision_is_the_hardwares_element_bytes(tmp_path: Path, capsys) -> None:
    """--precision fp32 makes the fp32 machine: element_bytes 4 in the embedded config, twice the
    DRAM bytes in the cost model, half the elements per buffer."""
    fp32 = with_precision(HW, "fp32")
    assert (HW.precision, fp32.precision) == ("fp16", "fp32")
    assert fp32.view().element_bytes == 4 and fp32.digest != HW.digest
    assert fp32.buffers[0].capacity * 2 == HW.buffers[0].capacity
    assert with_precision(fp32, "fp16").view() == HW.view()
    assert with_precision(HW, None) is HW
    with pytest.raises(CtacError, match="precision must be one of fp16, fp32"):
        with_precision(HW, "int8")
    model = MODELS / "bert_ts_eager.onnx"
    target = tmp_path / "p.ctab"
    assert main(["compile", str(model), "--shape", "input_ids=2x16,attention_mask=2x16",
                 "--precision", "fp32", "-o", str(target)]) == 0  # fmt: skip
    assert "fp32 data elements" in capsys.readouterr().err
    embedded = program_hardware(target)
    assert embedded.precision == "fp32" and "set by --precision fp32" in embedded.text


def test_other_element_sizes_are_refused_at_load() -> None:
    text = HW.text.replace("element_bytes = { value = 2,", "element_bytes = { value = 1,")
    with pytest.raises(CtacError, match=r"dram.element_bytes must be 2 \(fp16 storage\) or 4"):
        hardware_from_text(text, "test config")


def _ids_through_dram_model(path: Path, offset: int | np.ndarray | None = None) -> Path:
    """input_ids -> Cast(int32) [-> Add(offset)] -> Gather from a 40000-row table: the cast
    ids go through DRAM (the form onnxruntime's optimizer leaves before EmbedLayerNorm)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(0).standard_normal((40000, 4)).astype(np.float32)
    nodes = [helper.make_node("Cast", ["input_ids"], ["ids32"], to=TensorProto.INT32)]
    initializers = [numpy_helper.from_array(table, "table")]
    ids = "ids32"
    rows = [np.asarray(offset).shape[0] if np.ndim(offset) == 2 else 1]
    if offset is not None:
        nodes.append(helper.make_node("Add", ["ids32", "offset"], ["shifted"]))
        initializers.append(numpy_helper.from_array(np.asarray(offset, np.int32), "offset"))
        ids = "shifted"
    nodes.append(helper.make_node("Gather", ["table", ids], ["rows"]))
    graph = helper.make_graph(
        nodes, "ids", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 8])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [*rows, 8, 4])], initializers,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def test_integers_stored_by_the_machine_stay_exact(tmp_path: Path) -> None:
    """Token ids cast on the machine and stored to DRAM (STORE exact=1) keep ids above fp16's
    2048 exact: an fp16 store would turn id 30437 into 30432 and gather the wrong rows."""
    from ctac import api

    model = _ids_through_dram_model(tmp_path / "ids.onnx")
    program = api.compile(model, {"input_ids": [1, 8]})
    exact_stores = [f for name, f in program.program.instructions if name == "STORE" and f["exact"]]
    assert exact_stores, "the cast ids' STORE must be exact"
    ids = np.array([[30437, 39999, 2049, 4097, 12345, 7, 0, 32767]], np.int64)
    result = api.run(program, {"input_ids": ids}, check=True)
    # The gathered rows are the table's rows rounded to fp16: the right rows, nothing else.
    assert result.errors["rows"]["max_abs_err"] < 2e-3


def test_an_integer_constant_fp16_cannot_hold_is_refused(tmp_path: Path) -> None:
    from ctac import api

    model = _ids_through_dram_model(tmp_path / "offset.onnx", offset=2049)
    with pytest.raises(CtacError, match=r"integer constant 2049 .*--precision fp32"):
        api.compile(model, {"input_ids": [1, 8]})
    fp32 = api.compile(model, {"input_ids": [1, 8]}, precision="fp32")
    ids = np.array([[100, 200, 300, 30000, 0, 1, 2, 3]], np.int64)
    assert api.run(fp32, {"input_ids": ids}, check=True).errors["rows"]["max_abs_err"] == 0.0
    representable = _ids_through_dram_model(tmp_path / "even.onnx", offset=4096)
    api.compile(representable, {"input_ids": [1, 8]})  # exact in fp16: accepted
    # A larger integer initializer lives in the weight store (not inline): checked as well.
    table = np.arange(8, dtype=np.int32).reshape(1, 8) * 300 + 2049
    stored = _ids_through_dram_model(tmp_path / "weights.onnx", offset=np.repeat(table, 3, 0))
    with pytest.raises(CtacError, match=r"integer constant 2049 .*--precision fp32"):
        api.compile(stored, {"input_ids": [1, 8]})


@pytest.mark.parametrize("cores", [1, 2])
def test_converting_ahead_writes_the_same_file(tmp_path: Path, monkeypatch, cores: int) -> None:
    """`ctac compile` converts the data segment to fp16 on worker threads (two where there are
    two cores) while it checks the program (DataSegment.convert_ahead); the file is
    byte-identical to a plain write, and a conversion for another element type is not used."""
    import ctac
    from ctac.runtime import data_segment
    from ctac.runtime.program import write_program

    monkeypatch.setattr(data_segment, "usable_cores", lambda: cores)

    shapes = {"input_ids": (2, 16), "attention_mask": (2, 16)}
    plain = ctac.compile(MODELS / "bert_ts_eager.onnx", shapes).save(tmp_path / "plain.ctab")
    ahead = ctac.compile(MODELS / "bert_ts_eager.onnx", shapes).program
    ahead.data.convert_ahead("fp16")
    assert ahead.data._ahead  # pieces were queued
    write_program(ahead, tmp_path / "ahead.ctab")
    assert (tmp_path / "ahead.ctab").read_bytes() == plain.read_bytes()
    other = ctac.compile(MODELS / "bert_ts_eager.onnx", shapes).program
    other.data.convert_ahead("fp16")
    fp32 = b"".join(bytes(c) for c in other.data.chunks(element_type="fp32"))
    assert fp32 == np.asarray(other.data, dtype="<f4").tobytes()


def test_compare_runs_the_machine_at_a_chosen_precision(capsys) -> None:
    """`ctac compare --precision fp32` runs an fp32 machine (errors at float32's level, the
    provenance says so); the default fp16 machine's exact mode differs by fp16 rounding."""
    model = MODELS / "bert_ts_eager.onnx"
    shapes = "input_ids=2x16,attention_mask=2x16"
    errors = {}
    for flags in ([], ["--precision", "fp32"]):
        assert main(["compare", str(model), "--shape", shapes, "--json", *flags]) == 0
        report = json.loads(capsys.readouterr().out)
        exact = next(m for m in report["modes"] if m["mode"].startswith("exact"))
        errors[tuple(flags)] = (exact["max_abs_err"], exact["dram_bytes"])
        config = report["provenance"]["hardware_config"]
        assert ("precision=fp32" in config) == bool(flags)
    (fp16_error, fp16_bytes), (fp32_error, fp32_bytes) = errors.values()
    assert fp32_error < 1e-5 < 1e-4 < fp16_error
    assert fp32_bytes > 1.5 * fp16_bytes  # the cost model charges 4-byte elements


def test_a_write_that_stops_early_leaves_no_conversion_queued(monkeypatch) -> None:
    """Closing the chunks after the first (a failed write) cancels the conversions not started
    and forgets the rest, so they neither hold memory nor delay the exit."""
    import threading
    from concurrent.futures import wait

    import ctac
    from ctac.runtime import data_segment

    shapes = {"input_ids": (2, 16), "attention_mask": (2, 16)}
    program = ctac.compile(MODELS / "bert_ts_eager.onnx", shapes).program
    release, convert = threading.Event(), data_segment.array_chunks
    started = []

    def held(values, element_type):  # the first piece converts; the others wait for `release`
        started.append(1)
        if len(started) > 1:
            release.wait(60)
        return convert(values, element_type)

    monkeypatch.setattr(data_segment, "array_chunks", held)
    program.data.convert_ahead("fp16")
    queued = list(program.data._ahead.values())
    assert len(queued) > 3
    chunks = program.data.chunks(element_type="fp16")
    next(chunks)
    chunks.close()
    release.set()
    assert not program.data._ahead
    # the first piece and the two the workers were on (both blocked) finish; the rest never start
    wait(queued, timeout=60)
    assert sum(f.cancelled() for f in queued) >= len(queued) - 3
