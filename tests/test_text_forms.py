"""The two text forms of a lowered program (docs/architecture.md, "Two text forms"): the ctaisa
dialect's MLIR text and the assembly of runtime/assembly.py write an instruction's fields the same
way, and its dynamic sizes as the same JSON object."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ctac.dialects.ctaisa import InstructionOp
from ctac.emit import program_from_module
from ctac.errors import CtacError
from ctac.hw import load_hardware
from ctac.passes.lower_to_isa import lower_module
from ctac.pipeline import module_text, parse_module
from ctac.runtime.assembly import assemble, disassemble

LIT = Path(__file__).parent / "lit" / "lower_to_isa"
DEFAULT_HW = Path(__file__).parent.parent / "ctac" / "data" / "default_hw.toml"


def small_buffers(tmp_path: Path, kib: float) -> Path:
    """The default config with act, wgt and acc of `kib` KiB and a `kib` KiB cluster table (as
    the lit files' RUN lines make it), so a small module needs tiles and dynamic sizes."""
    text, buffer = [], None
    for line in DEFAULT_HW.read_text().splitlines():
        named = re.search(r'name = "(\w+)"', line)
        buffer = named.group(1) if named else buffer
        if buffer in ("act", "wgt", "acc") and line.strip().startswith("size_kib"):
            line = re.sub(r"value = [0-9.]+", f"value = {kib}", line)
        line = re.sub(r"table_kib = \{ value = [0-9.]+", f"table_kib = {{ value = {kib}", line)
        text.append(line)
    path = tmp_path / "hw.toml"
    path.write_text("\n".join(text) + "\n")
    return path


@pytest.mark.parametrize(("name", "kib"), [("cluster_tiles", 0.5), ("pool_recover_windows", 0.25)])
def test_dynamic_sizes_are_one_encoding(name: str, kib: float, tmp_path: Path) -> None:
    source = (LIT / f"{name}.mlir").read_text()
    lowered = lower_module(parse_module(source), load_hardware(small_buffers(tmp_path, kib)))
    instructions = [op for op in lowered.walk() if isinstance(op, InstructionOp)]
    dialect_sizes = [
        op.attributes["dynamic"].data if "dynamic" in op.attributes else None for op in instructions
    ]
    assert any(dialect_sizes), "the module should have data-dependent sizes"

    # The ctaisa text carries the JSON object as it is, and parses back to the same module.
    text = module_text(lowered)
    for sizes in filter(None, dialect_sizes):
        assert f" dynamic {sizes}" in text
    assert module_text(parse_module(text)) == text

    # The assembly's `;@ "source" {...}` comment holds the same JSON, instruction for instruction.
    program = program_from_module(lowered)
    lines = disassemble(program, include_data=False).split(".text\n", 1)[1].splitlines()
    assert len(lines) == len(instructions)
    for line, sizes in zip(lines, dialect_sizes, strict=True):
        comment = line.split(";@ ", 1)[1]
        _, end = json.JSONDecoder().raw_decode(comment)
        assert comment[end:].strip() == (sizes or "")
    assert assemble(disassemble(program)).dynamic == program.dynamic


def test_malformed_dynamic_sizes_are_a_parse_error() -> None:
    good = (
        'ctaisa.store src=acc src_addr=0 dst=0 rows=8 cols=4 stride=4 src_stride=0 exact=0 narrow=0 src "x" '
        'dynamic {"rows": [3, 16]}'
    )
    op = next(o for o in parse_module(good).walk() if isinstance(o, InstructionOp))
    assert op.dynamic_fields() == [("rows", 3, 16)]
    for bad in ('dynamic "rows=3"', 'dynamic {"rows": -1}', 'dynamic {"rows": [3]}'):
        with pytest.raises(CtacError, match=r"<input>:1:"):
            parse_module(good.replace('dynamic {"rows": [3, 16]}', bad))


def test_dynamic_sizes_in_generic_form_are_checked() -> None:
    """The generic form stores the JSON in a string attribute; anything else fails to verify."""
    generic = (
        '"builtin.module"() ({ "ctaisa.store"() <{src = "acc", src_addr = 0 : i64, dst = 0 : i64, '
        "rows = 8 : i64, cols = 4 : i64, stride = 4 : i64, src_stride = 0 : i64, exact = 0 : i64, narrow = 0 : i64}> "
        "{dynamic = DYNAMIC} : () -> () }) : () -> ()"
    )
    op = next(
        o
        for o in parse_module(generic.replace("DYNAMIC", '"{\\"rows\\": 3}"')).walk()
        if isinstance(o, InstructionOp)
    )
    assert op.dynamic_fields() == [("rows", 3)]
    for bad in ('"rows=3"', '"{\\"rows\\": true}"', '"[3]"'):
        with pytest.raises(CtacError, match="does not verify"):
            parse_module(generic.replace("DYNAMIC", bad))
