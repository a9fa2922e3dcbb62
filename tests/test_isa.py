"""The CTA-ISA: table, encoding, program files, lowering of every test model, and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import FP32_HW, MODELS, manifest_inputs, shape_flags
from hypothesis import given, settings
from hypothesis import strategies as st

from ctac.emit import program_from_module
from ctac.errors import CtacError
from ctac.hw import load_hardware
from ctac.importer import import_model
from ctac.passes.detect_attention import detect_attention
from ctac.passes.lower_to_isa import lower_module
from ctac.pipeline import module_text, parse_module, run_passes
from ctac.runtime import isa
from ctac.runtime.assembly import assemble, disassemble
from ctac.runtime.interpreter import run_program
from ctac.runtime.program import decode_program, encode_program

REPO = Path(__file__).resolve().parent.parent
# Programs checked against onnxruntime and the reference semantics to 1e-4: the fp32 machine
# (tests/test_fp16.py covers the default fp16 one).
HW = FP32_HW
CAPACITIES = {b.index: b.capacity for b in HW.buffers}


def compile_entry(entry: dict):
    imported = import_model(MODELS / entry["file"], shape_flags(entry))
    run_passes(imported.module, "onnx-canonicalize")
    detect_attention(imported.module)
    lowered = lower_module(imported.module, HW)
    return lowered, program_from_module(lowered)


@pytest.fixture
def compiled(model_entry: dict):
    return compile_entry(model_entry)


def test_program_runs_like_onnxruntime(model_entry: dict, compiled) -> None:
    _, program = compiled
    program = decode_program(encode_program(program), HW.digest, CAPACITIES)
    inputs = manifest_inputs(model_entry, seed=5)
    expected = ort.InferenceSession(str(MODELS / model_entry["file"])).run(None, inputs)
    got = list(run_program(program, CAPACITIES, inputs)[0].values())
    for ours, theirs in zip(got, expected, strict=True):
        assert np.abs(ours - theirs).max() <= 1e-4


def test_disasm_asm_is_byte_identical(compiled) -> None:
    _, program = compiled
    blob = encode_program(program)
    text = disassemble(decode_program(blob, HW.digest, CAPACITIES))
    assert encode_program(assemble(text)) == blob


def test_isa_module_round_trips(compiled) -> None:
    lowered, _ = compiled
    text = module_text(lowered)
    assert module_text(parse_module(text)) == text


def test_no_tile_exceeds_its_buffer(compiled) -> None:
    _, program = compiled
    for name, fields in program.instructions:
        for where, start, size in isa.BY_NAME[name].reads(fields) + isa.BY_NAME[name].writes(
            fields
        ):
            if where != "dram":
                assert start >= 0 and start + size <= CAPACITIES[where], (name, fields)


def test_docs_isa_md_is_generated_from_the_table() -> None:
    assert (REPO / "docs" / "isa.md").read_text() == isa.markdown_table()


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_every_instruction_encodes_and_decodes(data) -> None:
    spec = data.draw(st.sampled_from(isa.INSTRUCTIONS))
    fields = {}
    for field in spec.fields:
        if field.kind == "enum":
            fields[field.name] = data.draw(st.sampled_from(field.choices))
        elif field.kind == "f32":
            fields[field.name] = float(np.float32(data.draw(st.floats(-1e6, 1e6, allow_nan=False))))
        elif field.kind == "int":
            fields[field.name] = data.draw(
                st.integers(-(1 << (field.bits - 1)), (1 << (field.bits - 1)) - 1)
            )
        else:
            fields[field.name] = data.draw(st.integers(0, (1 << field.bits) - 1))
    decoded_spec, decoded = isa.decode(isa.encode(spec.name, fields))
    assert decoded_spec is spec and decoded == fields


def test_field_overflow_is_refused() -> None:
    with pytest.raises(ValueError, match=r"GEMM\.m"):
        isa.encode("GEMM", {"m": 1 << 16})


GEMM_MODULE = (REPO / "tests" / "lit" / "lower_to_isa" / "gemm.mlir").read_text()


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        ({"trasnpose_b": 1}, r"GEMM: unknown field 'trasnpose_b' \(did you mean 'transpose_b'\?\)"),
        ({"n": None}, r"GEMM\.n: missing"),
        ({"m": 1 << 16}, r"GEMM\.m: 65536 does not fit 16 unsigned bits"),
        ({"k": 2.5}, r"GEMM\.k: 2\.5 is not an integer"),
    ],
)
def test_a_wrong_emission_field_fails_at_compile_time(monkeypatch, mistake, message) -> None:
    """Every emission goes through the ISA table (issue 18): a misspelt field used to become 0
    silently in the ctaisa module. Here the GEMM lowering makes the mistake, and lowering the
    module fails at the emitting call, naming the instruction and the field."""
    from ctac.passes.lower_to_isa.core import Lowering

    emit = Lowering.emit

    def mistaken(self, name: str, **fields):
        if name == "GEMM":
            fields = {**fields, **mistake}
            fields = {key: value for key, value in fields.items() if value is not None}
        return emit(self, name, **fields)

    monkeypatch.setattr(Lowering, "emit", mistaken)
    with pytest.raises(isa.FieldError, match=message):
        lower_module(parse_module(GEMM_MODULE), HW)


def test_the_dialect_checks_fields_like_the_lowering() -> None:
    """ctaisa ops built directly (not parsed) go through the same check."""
    from ctac.dialects.ctaisa import INSTRUCTION_OPS

    with pytest.raises(isa.FieldError, match=r"LOAD: unknown field 'dst_adr'"):
        INSTRUCTION_OPS["LOAD"].create_from({"dst": 0, "dst_adr": 0, "src": 0, "rows": 1,
                                             "cols": 1, "stride": 1})  # fmt: skip
    with pytest.raises(isa.FieldError, match=r"LOAD\.stride: missing"):
        INSTRUCTION_OPS["LOAD"].create_from({"dst": 0, "dst_addr": 0, "src": 0, "rows": 1,
                                             "cols": 1})  # fmt: skip
    # Fields the table gives a default may be left out (a GEMM without bias).
    operands = {"dst": isa.Buffer.ACC, "a": isa.Buffer.ACT, "b": isa.Buffer.WGT}
    addresses = {"dst_addr": 0, "a_addr": 0, "b_addr": 0}
    gemm = INSTRUCTION_OPS["GEMM"].create_from({**operands, **addresses, "m": 1, "k": 1, "n": 1})
    assert gemm.field_values()["has_bias"] == 0 and gemm.field_values()["b"] == isa.Buffer.WGT


def _small_program():
    entry = {
        "file": "bert_ts_eager.onnx",
        "inputs": {"input_ids": {"shape": [2, 16]}, "attention_mask": {"shape": [2, 16]}},
    }
    return compile_entry(entry)[1]


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda b: b[:-1], "checksum"),
        (lambda b: b"XXXX" + b[4:], "not a ctac program"),
        (lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:], "checksum"),
    ],
)
def test_corrupt_programs_are_refused(corrupt, message: str) -> None:
    blob = encode_program(_small_program())
    with pytest.raises(CtacError, match=message):
        decode_program(corrupt(blob), HW.digest, CAPACITIES)


def _resign(body: bytes) -> bytes:
    import hashlib

    return body + hashlib.sha256(body).digest()


def test_decoder_checks_fields_behind_a_valid_checksum() -> None:
    blob = encode_program(_small_program())
    body = bytearray(blob[:-32])
    header = 4 + 2 + 2 + 32 + 4 + 8 + 8 + 4 + 4
    bad_magic = bytes(b"NOPE" + body[4:])
    with pytest.raises(CtacError, match="not a ctac program"):
        decode_program(_resign(bad_magic), HW.digest, CAPACITIES)
    bad_version = bytearray(body)
    bad_version[4] = 9
    with pytest.raises(CtacError, match="version"):
        decode_program(_resign(bytes(bad_version)), HW.digest, CAPACITIES)
    bad_opcode = bytearray(body)
    bad_opcode[header] = 200
    with pytest.raises(CtacError, match="unknown opcode"):
        decode_program(_resign(bytes(bad_opcode)), HW.digest, CAPACITIES)
    bad_buffer = bytearray(body)
    bad_buffer[header + 1] |= 0x0F  # first instruction's first buffer field -> id 15
    with pytest.raises(CtacError, match="buffer id"):
        decode_program(_resign(bytes(bad_buffer)), HW.digest, CAPACITIES)
    with pytest.raises(CtacError, match="another hardware config"):
        decode_program(blob, b"\0" * 32, CAPACITIES)


def test_unlowerable_ops_are_all_named(tmp_path: Path) -> None:
    text = """
func.func @main(%x: tensor<1x4x8x8xf32> {onnx.name = "x"}) -> (tensor<1x4x8x8xf32> {onnx.name = "y"}, tensor<1x4x8x8xf32> {onnx.name = "z"}) {
  %i = onnx.Constant dense<1> : tensor<1x4x8x8xi64>
  %y = onnx.GatherElements %x, %i {axis = 1 : i64} : (tensor<1x4x8x8xf32>, tensor<1x4x8x8xi64>) -> tensor<1x4x8x8xf32>
  %z = onnx.Mod %x, %x {fmod = 1 : i64} : (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
  func.return %y, %z : tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>
}
"""
    module = parse_module(text)
    with pytest.raises(CtacError, match=r"2 op\(s\) cannot be lowered") as error:
        lower_module(module, HW)
    assert "'y' (onnx.GatherElements)" in str(error.value) and "'z' (onnx.Mod)" in str(error.value)


def test_hardware_numbers_need_sources(tmp_path: Path) -> None:
    text = (REPO / "ctac" / "data" / "default_hw.toml").read_text()
    broken = tmp_path / "hw.toml"
    broken.write_text(
        text.replace(
            'lanes = { value = 64, source = "[assumed] 64-lane vector/softmax unit" }', "lanes = 64"
        )
    )
    with pytest.raises(CtacError, match="vector.lanes = 64 has no source"):
        load_hardware(broken)
    untagged = tmp_path / "hw2.toml"
    untagged.write_text(text.replace("[assumed] 64-lane", "64-lane"))
    with pytest.raises(CtacError, match="vector.lanes needs a source"):
        load_hardware(untagged)


def test_cli_compile_disasm_asm(tmp_path: Path, capsys) -> None:
    from ctac.cli import main

    program = tmp_path / "gpt2.ctab"
    shapes = "input_ids=2x16,attention_mask=2x16"
    assert (
        main(["compile", str(MODELS / "gpt2_ts_eager.onnx"), "--shape", shapes, "-o", str(program)])
        == 0
    )
    assert main(["disasm", str(program), "-o", str(tmp_path / "gpt2.s")]) == 0
    assert main(["asm", str(tmp_path / "gpt2.s"), "-o", str(tmp_path / "again.ctab")]) == 0
    assert (tmp_path / "again.ctab").read_bytes() == program.read_bytes()
    capsys.readouterr()
    assert (
        main(["compile", str(MODELS / "gpt2_ts_eager.onnx"), "--shape", shapes, "--emit", "asm"])
        == 0
    )
    text = capsys.readouterr().out
    assert text.startswith("; ctac CTA-ISA assembly") and "SOFTMAX" in text and "HALT" in text
    assert main(["isa", "--markdown"]) == 0
    assert capsys.readouterr().out == (REPO / "docs" / "isa.md").read_text()


def test_cta_mode_compiles_round_trips_and_matches_its_semantics(model_entry: dict) -> None:
    """Every model in CTA mode (causal ones through the block-causal scheme): the program equals
    the reference evaluation of the compressed module, and disasm -> asm is byte-identical."""
    from ctac.runtime.evaluator import evaluate

    imported = import_model(MODELS / model_entry["file"], shape_flags(model_entry))
    run_passes(imported.module, "onnx-canonicalize")
    detect_attention(imported.module)
    run_passes(imported.module, "cta-compress{tau-q=0.3 tau-kv=0.3 hash-bits=4 block=8}")
    inputs = manifest_inputs(model_entry, seed=11)
    expected = evaluate(imported.module, inputs)
    program = program_from_module(lower_module(imported.module, HW))
    assert any(name == "CLUSTER" for name, _ in program.instructions)
    blob = encode_program(program)
    assert (
        encode_program(assemble(disassemble(decode_program(blob, HW.digest, CAPACITIES)))) == blob
    )
    outputs, stats = run_program(program, CAPACITIES, inputs)
    for name, array in outputs.items():
        np.testing.assert_allclose(array, expected[name], atol=1e-4, rtol=1e-4)
