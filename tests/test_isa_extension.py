"""docs/architecture.md's "where to change what", row "add an instruction", done in a test (issue
18, acceptance 5): a toy row added to the ISA table of runtime/isa.py, plus its semantics in the
interpreter's SEMANTICS, reaches every reader of the table: the ctaisa dialect (an op that
parses, prints and verifies its fields), the encoder, decoder, disassembler and assembler, the
interpreter, the cost model (cycles, energy, the scoreboard's read and write ranges) and the
text of docs/isa.md. Nothing else is edited.

The row goes into the table by monkeypatching (undone after each test). The ctaisa dialect builds
its op classes from the table when it is imported, so the fixture makes the toy's op with the
same generator (`ctaisa.instruction_op`) that builds the real ones."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import FP32_HW
from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, IntegerAttr, i64
from xdsl.ir import Dialect
from xdsl.parser import Parser
from xdsl.utils.exceptions import VerifyException

from ctac.dialects import ctaisa
from ctac.pipeline import module_text
from ctac.runtime import costmodel, interpreter, isa
from ctac.runtime.assembly import assemble, disassemble
from ctac.runtime.program import (
    Program,
    Symbol,
    decode_program,
    encode_program,
)

REPO = Path(__file__).resolve().parent.parent
HW = FP32_HW  # checked against the reference to float32 rounding
CAPACITIES = {b.index: b.capacity for b in HW.buffers}
ACT, WGT, ACC, VEC = isa.Buffer

# The one row: dst = alpha * x + y over n elements, on the vector unit.
AXPY = isa.Instruction(
    "AXPY", 63, "vector",
    (
        isa.Field("dst", "buf", 4, "destination buffer"),
        isa.Field("dst_addr", "uint", 24, "destination offset"),
        isa.Field("x", "buf", 4, "x buffer"), isa.Field("x_addr", "uint", 24, "x offset"),
        isa.Field("y", "buf", 4, "y buffer"), isa.Field("y_addr", "uint", 24, "y offset"),
        isa.Field("n", "uint", 16, "elements"),
        isa.Field("alpha", "f32", 32, "multiplies x"),
    ),
    "dst = alpha * x + y over n elements (a toy row of tests/test_isa_extension.py).",
    "ceil(n / lanes) + pipeline depth",
    lambda f, hw: math.ceil(f["n"] / hw.vector_lanes) + hw.vector_pipeline,
    lambda f, hw: {"vector_ops": 2 * f["n"], "buffer_read": 2 * f["n"], "buffer_write": f["n"]},
    reads=lambda f: [(f["x"], f["x_addr"], f["n"]), (f["y"], f["y_addr"], f["n"])],
    writes=lambda f: [(f["dst"], f["dst_addr"], f["n"])],
)  # fmt: skip


def _axpy(machine: interpreter.Machine, f: dict) -> None:
    """The row's semantics, as runtime/interpreter.py would hold them."""
    x = machine.tile(f["x"], f["x_addr"], 1, f["n"])
    y = machine.tile(f["y"], f["y_addr"], 1, f["n"])
    machine.tile(f["dst"], f["dst_addr"], 1, f["n"])[...] = np.float32(f["alpha"]) * x + y


FIELDS = {"dst": VEC, "dst_addr": 64, "x": ACT, "x_addr": 0, "y": WGT, "y_addr": 0, "n": 8,
          "alpha": 2.5}  # fmt: skip


@pytest.fixture
def toy_isa(monkeypatch) -> type[ctaisa.InstructionOp]:
    """The table with the AXPY row and the interpreter with its semantics; the toy's ctaisa op."""
    monkeypatch.setattr(isa, "INSTRUCTIONS", (*isa.INSTRUCTIONS, AXPY))
    monkeypatch.setitem(isa.BY_NAME, AXPY.name, AXPY)
    monkeypatch.setitem(isa.BY_OPCODE, AXPY.opcode, AXPY)
    isa._validate_table()  # the table's own invariants hold with the new row
    monkeypatch.setitem(interpreter.SEMANTICS, AXPY.name, _axpy)
    op = ctaisa.instruction_op(AXPY)
    monkeypatch.setitem(ctaisa.INSTRUCTION_OPS, AXPY.name, op)
    return op


def test_the_row_is_a_ctaisa_op_with_checked_fields(toy_isa) -> None:
    op = toy_isa.create_from(FIELDS, "toy")
    op.verify()
    assert op.name == "ctaisa.axpy" and op.field_values() == FIELDS
    # It prints and parses back like any instruction (a context whose ctaisa has the new op).
    context = Context()
    context.load_dialect(Builtin)
    context.load_dialect(Dialect("ctaisa", [*ctaisa.CtaIsa.operations, toy_isa], []))
    text = "builtin.module {\n  ctaisa.axpy dst=vec dst_addr=64 x=act x_addr=0 y=wgt y_addr=0 n=8 "
    text += 'alpha=2.5 src "toy"\n}\n'
    module = Parser(context, text).parse_module()
    module.verify()
    assert module_text(module) == text
    # Its fields are checked against the row: misspelt, missing, out of range.
    with pytest.raises(isa.FieldError, match=r"AXPY: unknown field 'alhpa' \(did you mean 'alpha'"):
        toy_isa.create_from({**FIELDS, "alhpa": 1.0})
    with pytest.raises(isa.FieldError, match=r"AXPY\.alpha: missing"):
        toy_isa.create_from({k: v for k, v in FIELDS.items() if k != "alpha"})
    with pytest.raises(isa.FieldError, match=r"AXPY\.n: 65536 does not fit 16 unsigned bits"):
        toy_isa.create_from({**FIELDS, "n": 1 << 16})
    op.properties["n"] = IntegerAttr(1 << 16, i64)  # the verifier reads the same row
    with pytest.raises(VerifyException, match=r"AXPY\.n"):
        op.verify()


def test_the_row_encodes_decodes_and_assembles(toy_isa) -> None:
    word = isa.encode("AXPY", FIELDS)
    assert word[0] == 63
    spec, fields = isa.decode(word)
    assert spec is AXPY and fields == FIELDS
    instructions = [("AXPY", FIELDS), ("HALT", {})]
    program = Program(HW.digest, instructions, np.zeros(0, np.float32), 0, [], ["toy", "end"])
    blob = encode_program(program)
    decoded = decode_program(blob, HW.digest, CAPACITIES)
    assert decoded.instructions[0] == ("AXPY", FIELDS)
    text = disassemble(decoded)
    assert "AXPY dst=vec dst_addr=64 x=act x_addr=0 y=wgt y_addr=0 n=8 alpha=2.5" in text
    assert encode_program(assemble(text)) == blob


def _axpy_program() -> Program:
    """x and y from DRAM, AXPY, the result back to DRAM."""
    n = FIELDS["n"]
    load = {"rows": 1, "cols": n, "stride": n}
    return Program(
        HW.digest,
        [
            ("LOAD", {"dst": ACT, "dst_addr": 0, "src": 0, **load}),
            ("LOAD", {"dst": WGT, "dst_addr": 0, "src": n, **load}),
            ("AXPY", FIELDS),
            ("STORE", {"src": VEC, "src_addr": 64, "dst": 2 * n, **load, "src_stride": 0}),
            ("HALT", {}),
        ],
        np.zeros(0, np.float32),
        3 * n,
        [
            Symbol("x", "input", (n,), "float32", 0),
            Symbol("y", "input", (n,), "float32", n),
            Symbol("out", "output", (n,), "float32", 2 * n),
        ],
        ["x", "y", "toy", "out", "end"],
    )


def test_the_row_runs_in_the_interpreter(toy_isa) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(8, np.float32), rng.standard_normal(8, np.float32)
    outputs, _ = interpreter.run_program(_axpy_program(), CAPACITIES, {"x": x, "y": y})
    np.testing.assert_allclose(outputs["out"], 2.5 * x + y, rtol=1e-6)


def test_the_row_is_costed_by_the_cost_model(toy_isa) -> None:
    profile = costmodel.simulate(_axpy_program(), HW)
    loads, axpy, store = profile.timings[0:2], profile.timings[2], profile.timings[3]
    view = HW.view()
    assert axpy.unit == "vector"
    assert axpy.end - axpy.start == math.ceil(8 / view.vector_lanes) + view.vector_pipeline
    # Energy from the row's actions and the config's energies per action.
    element = HW.number("energy_pj", "buffer_element")
    expected = 16 * HW.number("energy_pj", "vector_op") + (16 + 8) * element
    assert axpy.energy_pj == pytest.approx(expected)
    # The scoreboard reads the row's ranges: AXPY waits for both loads, the store for AXPY.
    assert axpy.start >= max(load.end for load in loads) and store.start >= axpy.end


def test_the_row_is_documented(toy_isa) -> None:
    table = isa.markdown_table()
    assert "| 63 | `AXPY` | vector | 140 | dst = alpha * x + y over n elements" in table
    assert "## AXPY" in table and "| `alpha` | f32 | 32 | multiplies x |" in table
    # The row's last step, "regenerate docs/isa.md", is what test_isa's docs test enforces.
    assert (REPO / "docs" / "isa.md").read_text() != table
