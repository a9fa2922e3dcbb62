"""`ctac isa`, `ctac disasm` and `ctac asm`: the instruction set table and program files as
assembly text."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ctac.commands.common import read_utf8, write_text
from ctac.errors import CtacError
from ctac.files import write_atomically

# Heavy modules (xDSL, the passes, the runtime) are imported inside the commands, so that
# `ctac --help` and argument errors answer at once (start-up speed, not a cycle).


def isa_command(args: argparse.Namespace) -> int:
    from ctac.runtime.isa import markdown_table

    sys.stdout.write(markdown_table())
    return 0


def disasm_command(args: argparse.Namespace) -> int:
    from ctac.run import program_hardware
    from ctac.runtime.assembly import disassemble
    from ctac.runtime.program import read_program

    hw = program_hardware(args.program, args.hw)
    program = read_program(args.program, hw.digest, {b.index: b.capacity for b in hw.buffers})
    write_text(args.output, disassemble(program, include_data=not args.no_data))
    return 0


def asm_command(args: argparse.Namespace) -> int:
    from ctac.hw import load_hardware
    from ctac.runtime.assembly import assemble
    from ctac.runtime.program import decode_program, encode_program

    path = Path(args.source)
    try:
        text = read_utf8(path, "assembly is the text `ctac disasm PROGRAM.ctab` writes")
    except OSError as exc:
        raise CtacError(f"cannot read '{path}': {exc.strerror}") from None
    hw = load_hardware(args.hw)
    blob = encode_program(assemble(text, str(path)))
    decode_program(blob, hw.digest, {b.index: b.capacity for b in hw.buffers})
    target = args.output or f"{path.stem}.ctab"
    write_atomically(target, blob)
    print(f"wrote {target}", file=sys.stderr)
    return 0
