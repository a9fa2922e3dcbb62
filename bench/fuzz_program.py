"""Fuzz the program decoder and the interpreter with corrupt .ctab files.

Compiles a few test models (exact attention, causal GPT-2, CTA compression, ELSA filtering) to
programs, then mutates their bytes: bit flips, truncation and extension (which the checksum must
catch), and edits re-signed with a fresh SHA-256 so the field validation is reached: header
fields, opcodes, every instruction field (buffer ids, addresses, dims, enums, strides), raw bits
of instruction words, the symbol table JSON, the source table (strings, index, dynamic entries),
section sizes, dropped or duplicated instructions and data values.

Issue 17 added hostile headers (DRAM beyond the ISA's 2^32 elements, 65+ dimensions, vocab 1e30,
2^33-element symbols: `header_limits`) and CLUSTER sizes the unit cannot hold (`cluster_sizes`),
and scenarios beyond program bytes: `ctac asm` on mutated assembly (bad numbers, deep or broken
`;@` JSON, bytes that are not UTF-8: `assembler`), hardware TOML with wrong types and ranges
(`hardware_toml`), `-o` onto FIFOs, links, directories and devices (`special_files`), and
CLUSTER chunks of up to 65,535 distinct tokens (`cluster_chunk`).

Every case must end with `decode_program` raising CtacError, or with a program that then runs in
`run_program` to completion or to a CtacError (a scenario: a CtacError, or the CLI's exit 2 with
one `error:` line): no other exception, nothing over 10 s, no temporary file left, and (for the
unsigned byte mutations) never a successful decode. Prints a table by mutation kind and writes
bench/results/fuzz_program.json.

    python bench/fuzz_program.py --cases 10000 [--seed 0]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import random
import signal
import struct
import sys
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "tests" / "models"
RESULTS = REPO / "bench" / "results"
MANIFEST = json.loads((MODELS / "manifest.json").read_text())

TIME_LIMIT = 10.0
# The DRAM cap the fuzzer passes to the decoder (the test programs use about 150 k elements).
FUZZ_MAX_DRAM_ELEMENTS = 1 << 22


class CaseTimeout(BaseException):
    pass


def _entry(name: str) -> dict:
    return next(m for m in MANIFEST["models"] if m["file"] == name)


def _inputs_for(program, seed: int) -> dict[str, np.ndarray]:
    """Random inputs fitting the program's own (possibly mutated) input symbols."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for symbol in program.inputs:
        if symbol.size > 1 << 22:
            continue  # run_program reports the missing input as a CtacError
        if symbol.dtype in ("int64", "int32", "uint8", "int8"):
            high = symbol.vocab if symbol.vocab > 0 else 2
            inputs[symbol.name] = rng.integers(0, high, size=symbol.shape).astype(symbol.dtype)
        elif symbol.dtype == "bool":
            inputs[symbol.name] = rng.integers(0, 2, size=symbol.shape).astype(bool)
        else:
            inputs[symbol.name] = rng.standard_normal(symbol.shape).astype(symbol.dtype)
    return inputs


def compile_programs() -> dict[str, bytes]:
    """name -> encoded program for the fuzzing corpus."""
    from ctac.emit import program_from_module
    from ctac.hw import load_hardware
    from ctac.importer import import_model
    from ctac.passes.detect_attention import detect_attention
    from ctac.passes.lower_to_isa import lower_module
    from ctac.pipeline import run_passes
    from ctac.runtime.program import encode_program

    hw = load_hardware()
    corpus = {}
    for name, file, passes in (
        ("bert_exact", "bert_ts_eager.onnx", None),
        ("gpt2_exact", "gpt2_ts_eager.onnx", None),
        ("bert_cta", "bert_ts_eager.onnx", "cta-compress{tau-q=0.5 tau-kv=0.5}"),
        ("bert_elsa", "bert_ts_eager.onnx", "elsa-filter{bits=8 threshold=0.5}"),
    ):
        entry = _entry(file)
        shapes = {n: spec["shape"] for n, spec in entry["inputs"].items()}
        imported = import_model(MODELS / file, shapes)
        run_passes(imported.module, "onnx-canonicalize")
        detect_attention(imported.module)
        if passes:
            run_passes(imported.module, passes)
        corpus[name] = encode_program(program_from_module(lower_module(imported.module, hw)))
    return corpus


# ---------------------------------------------------------------------------------------------
# Mutations: (rng, blob) -> new blob. "signed" ones re-sign the body so the checksum passes.
# ---------------------------------------------------------------------------------------------


def _header():
    from ctac.runtime.program import HEADER

    return HEADER


def _sign(body: bytes) -> bytes:
    return body + hashlib.sha256(body).digest()


def _width(fields: list) -> int:
    """Bytes per data segment element: the header's element bytes (2 fp16, 4 float32)."""
    return fields[2] if fields[2] in (2, 4) else 4


def _split(blob: bytes):
    """(header fields, instruction words, data bytes, symbol bytes, source bytes)."""
    from ctac.runtime.isa import WORD_BYTES

    header = _header()
    fields = list(header.unpack_from(blob))
    count, data_elements, symbol_bytes = fields[4], fields[5], fields[7]
    offset = header.size
    # a header a previous mutation corrupted may claim up to 2**32 words: only those present
    count = min(count, max(0, len(blob) - offset) // WORD_BYTES)
    words = [blob[offset + i * WORD_BYTES : offset + (i + 1) * WORD_BYTES] for i in range(count)]
    offset += count * WORD_BYTES
    data = blob[offset : offset + data_elements * _width(fields)]
    offset += data_elements * _width(fields)
    symbols = blob[offset : offset + symbol_bytes]
    offset += symbol_bytes
    sources = blob[offset : len(blob) - 32]
    return fields, words, data, symbols, sources


def _join(fields, words, data, symbols, sources, fix_sizes: bool = True) -> bytes:
    if fix_sizes:
        fields[4], fields[5], fields[7], fields[8] = (
            len(words),
            len(data) // _width(fields),
            len(symbols),
            len(sources),
        )
    return _sign(_header().pack(*fields) + b"".join(words) + data + symbols + sources)


INTERESTING = [0, 1, 2, 3, 4, 7, 15, 255, 65535, 1 << 16, 1 << 23, (1 << 24) - 1, 1 << 31, -1, -2]


def u_bit_flip(rng, blob):
    data = bytearray(blob)
    for _ in range(rng.choice([1, 1, 2, 8])):
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
    return bytes(data)


def u_truncate(rng, blob):
    return blob[: rng.choice([0, 4, 40, 79, 100, rng.randrange(len(blob)), len(blob) - 1])]


def u_extend(rng, blob):
    return blob + bytes(rng.randrange(256) for _ in range(rng.choice([1, 4, 32, 100])))


def s_header_field(rng, blob):
    fields, *rest = _split(blob)
    position = rng.randrange(len(fields))
    value = fields[position]
    if isinstance(value, bytes):
        changed = bytearray(value)
        changed[rng.randrange(len(changed))] ^= 1 << rng.randrange(8)
        fields[position] = bytes(changed)
    else:
        bits = {1: 16, 2: 16, 4: 32, 5: 64, 6: 64, 7: 32, 8: 32}[position]
        candidates = [value + 1, value - 1, 0, (1 << bits) - 1, value * 2, rng.randrange(1 << bits)]
        fields[position] = min(max(rng.choice(candidates), 0), (1 << bits) - 1)
    return _sign(_header().pack(*fields) + b"".join(rest[0]) + b"".join(rest[1:]))


def s_opcode(rng, blob):
    fields, words, data, symbols, sources = _split(blob)
    i = rng.randrange(len(words))
    word = bytearray(words[i])
    word[0] = rng.randrange(256) if rng.random() < 0.5 else rng.randrange(20)
    words[i] = bytes(word)
    return _join(fields, words, data, symbols, sources)


def _field_positions(word: bytes):
    """(spec, [(field, bit offset)]) of a valid instruction word."""
    from ctac.runtime import isa

    opcode = word[0]
    spec = next(s for s in isa.INSTRUCTIONS if s.opcode == opcode)
    positions, offset = [], isa.OPCODE_BITS
    for field in spec.fields:
        positions.append((field, offset))
        offset += field.bits
    return spec, positions


def s_instruction_field(rng, blob):
    """Set one field of one instruction to a boundary or random raw value (any bit pattern)."""
    fields, words, data, symbols, sources = _split(blob)
    i = rng.randrange(len(words))
    spec, positions = _field_positions(words[i])
    if not positions:
        return _join(fields, words, data, symbols, sources)
    field, offset = rng.choice(positions)
    mask = (1 << field.bits) - 1
    raw = int.from_bytes(words[i], "little")
    current = (raw >> offset) & mask
    choice = rng.random()
    if choice < 0.4:
        value = rng.choice(INTERESTING) & mask
    elif choice < 0.7:
        value = (current + rng.choice([-1, 1, 2, -16, 16, 1024, 1 << 15])) & mask
    elif field.kind == "f32":
        value = struct.unpack("<I", struct.pack("<f", rng.choice([float("nan"), float("inf"), -1e30, 0.0, -1.0, 1e-30])))[0]  # fmt: skip
    else:
        value = rng.randrange(mask + 1)
    raw = (raw & ~(mask << offset)) | (value << offset)
    words[i] = raw.to_bytes(len(words[i]), "little")
    return _join(fields, words, data, symbols, sources)


def s_instruction_bits(rng, blob):
    fields, words, data, symbols, sources = _split(blob)
    i = rng.randrange(len(words))
    raw = int.from_bytes(words[i], "little")
    for _ in range(rng.choice([1, 2, 5])):
        raw ^= 1 << rng.randrange(8, len(words[i]) * 8)
    words[i] = raw.to_bytes(len(words[i]), "little")
    return _join(fields, words, data, symbols, sources)


def s_instructions(rng, blob):
    """Drop, duplicate, swap or append instructions (the source table is left as it was)."""
    fields, words, data, symbols, sources = _split(blob)
    choice = rng.random()
    i = rng.randrange(len(words))
    if choice < 0.3:
        del words[i]
    elif choice < 0.6:
        words.insert(i, words[rng.randrange(len(words))])
    elif choice < 0.8:
        j = rng.randrange(len(words))
        words[i], words[j] = words[j], words[i]
    else:
        words = words[:-1] if rng.random() < 0.5 else words + [words[-1]]
    return _join(fields, words, data, symbols, sources)


def _weird(rng):
    return rng.choice(
        [None, True, -1, 0, 1 << 40, 2**63, 1.5, float("inf"), float("nan"), "x", "", [], {}, [1, 2],
         {"a": 1}, [[[[]]]], -(1 << 70)]
    )  # fmt: skip


def s_symbols(rng, blob):
    fields, words, data, symbols, sources = _split(blob)
    table = json.loads(symbols)
    choice = rng.random()
    if choice < 0.05:
        table = _weird(rng)
    elif choice < 0.1:
        table = "[" * 100000 + "]" * 100000
    elif choice < 0.15:
        table.append(copy.deepcopy(rng.choice(table)))
    elif choice < 0.2 and table:
        table.pop(rng.randrange(len(table)))
    elif table:
        entry = rng.choice(table)
        key = rng.choice(["name", "kind", "shape", "dtype", "address", "vocab", "extra"])
        action = rng.random()
        if action < 0.2:
            entry.pop(key, None)
        elif key == "shape" and action < 0.6:
            entry["shape"] = rng.choice(
                [[], [0], [-1], [1 << 40, 1 << 40], [1 << 62, 4], [2, 16, 1], [1] * 64, [3, 3]]
            )
        elif key == "address" and action < 0.6:
            entry["address"] = rng.choice([-1, 0, entry.get("address", 0) + 1, 1 << 40])
        elif key == "dtype" and action < 0.6:
            entry["dtype"] = rng.choice(["float32", "int64", "bool", "float64", "complex64"])
        elif key == "kind" and action < 0.6:
            entry["kind"] = rng.choice(["input", "output", "weight"])
        else:
            entry[key] = _weird(rng)
    if isinstance(table, str):
        encoded = table.encode()
    else:
        encoded = json.dumps(table, sort_keys=True, separators=(",", ":")).encode()
    if rng.random() < 0.05:
        encoded = encoded[: rng.randrange(len(encoded) + 1)] + b"\xff"
    return _join(fields, words, data, encoded, sources)


def s_sources(rng, blob):
    fields, words, data, symbols, sources = _split(blob)
    table = json.loads(sources)
    key = rng.choice(["strings", "index", "dynamic", "dynamic", "whole"])
    choice = rng.random()
    if key == "whole":
        table = _weird(rng) if choice < 0.5 else {}
    elif choice < 0.3:
        table[key] = _weird(rng)
    elif key == "index" and table["index"]:
        i = rng.randrange(len(table["index"]))
        table["index"][i] = rng.choice([-1, len(table["strings"]), 1 << 40, "0", None, 0.5, True])
    elif key == "strings" and table["strings"]:
        if rng.random() < 0.5:
            table["strings"].pop()
        else:
            table["strings"][0] = _weird(rng)
    elif key == "dynamic":
        count = len(words)
        entry = [
            rng.choice([0, count - 1, count, -1, rng.randrange(count), "1"]),
            rng.choice(["rows", "cols", "n", "m", "nope", "", None, ["rows"], {"a": 1}]),
            rng.choice([0, count - 1, count, -1, rng.randrange(count), 1.0]),
        ]
        if rng.random() < 0.2:
            entry = rng.choice([entry[:2], entry + [0], [entry], "x", 5])
        if table["dynamic"] and rng.random() < 0.5:
            table["dynamic"][rng.randrange(len(table["dynamic"]))] = entry
        else:
            table["dynamic"].append(entry)
    encoded = json.dumps(table, sort_keys=True, separators=(",", ":")).encode()
    return _join(fields, words, data, symbols, encoded)


def s_data(rng, blob):
    """Data segment values (NaN, inf, huge): a valid program; it must run or fail cleanly."""
    fields, words, data, symbols, sources = _split(blob)
    dtype = "<f2" if _width(fields) == 2 else "<f4"
    values = np.frombuffer(data, dtype=dtype).copy()
    if len(values):
        picks = rng.sample(range(len(values)), min(len(values), rng.choice([1, 16, 1024])))
        with np.errstate(over="ignore"):  # 3e38 and 1e6 are inf in fp16
            values[picks] = rng.choice([np.nan, np.inf, -np.inf, 3e38, -1.0, 1e6, 0.0])
    if rng.random() < 0.3:
        values = values[: rng.randrange(len(values) + 1)]
    return _join(fields, words, values.tobytes(), symbols, sources)


def s_sections(rng, blob):
    """Section sizes that still add up to the file length, but split it wrongly."""
    fields, words, data, symbols, sources = _split(blob)
    body = blob[:-32]
    delta = rng.choice([1, 4, 8, 32, 64])
    which = rng.sample([4, 5, 7, 8], 2)
    unit = {4: 32, 5: _width(fields), 7: 1, 8: 1}
    fields[which[0]] += delta * unit[which[1]]
    fields[which[1]] -= delta * unit[which[0]]
    if min(fields[4], fields[5], fields[7], fields[8]) < 0:
        fields[which[0]], fields[which[1]] = _split(blob)[0][which[0]], _split(blob)[0][which[1]]
        fields[7] += 1
    return _sign(_header().pack(*fields) + body[_header().size :])


def s_header_limits(rng, blob):
    """Issue 17 class 5: a header and symbol table that declare more than a program can hold
    (DRAM beyond the ISA's reach, 65+ dimensions, vocabularies of 1e30, 2^33-element symbols)."""
    fields, words, data, symbols, sources = _split(blob)
    table = json.loads(symbols)
    entry = rng.choice(table)
    choice = rng.randrange(6)
    if choice == 0:
        fields[6] = rng.choice([1 << 32, (1 << 32) + 1, 1 << 34, (1 << 64) - 1, 1 << 22])
    elif choice == 1:
        entry["shape"] = [1] * rng.choice([33, 64, 65, 100, 1000]) + [2]
    elif choice == 2:
        entry["vocab"] = rng.choice([10**30, 1 << 24, (1 << 24) + 1, 1 << 62, -1])
    elif choice == 3:
        entry["shape"] = [rng.choice([1 << 33, 1 << 31, (1 << 22) + 1])]
        fields[6] = entry["shape"][0] + entry["address"] + rng.choice([0, 1, 1000])
    elif choice == 4:
        entry["name"] = rng.choice(["n" * 1_000_000, 5, None, ["a"], "\udcff"])
    else:
        entry["address"] = rng.choice([(1 << 32) - 1, 1 << 40, fields[6]])
    encoded = json.dumps(table, sort_keys=True, separators=(",", ":")).encode()
    return _join(fields, words, data, encoded, sources)


def s_cluster_sizes(rng, blob):
    """Issue 17 class 6: CLUSTER / CLUSTER_READ sizes the hardware could not hold (rows, the
    table before the chunk, resident rows, window) in programs that cluster."""
    from ctac.runtime import isa

    fields, words, data, symbols, sources = _split(blob)
    clusters = [i for i, w in enumerate(words) if w[0] in (isa.BY_NAME["CLUSTER"].opcode,
                                                          isa.BY_NAME["CLUSTER_READ"].opcode)]  # fmt: skip
    if not clusters:
        return s_instruction_field(rng, blob)
    i = rng.choice(clusters)
    spec, positions = _field_positions(words[i])
    wanted = [p for p in positions if p[0].name in ("rows", "table_rows", "resident", "window",
                                                      "row0", "cols", "first")]  # fmt: skip
    raw = int.from_bytes(words[i], "little")
    for field, offset in rng.sample(wanted, min(len(wanted), rng.choice([1, 2]))):
        mask = (1 << field.bits) - 1
        value = rng.choice([0, 1, 63, 64, 4096, 32768, 65534, 65535, mask]) & mask
        raw = (raw & ~(mask << offset)) | (value << offset)
    words[i] = raw.to_bytes(len(words[i]), "little")
    return _join(fields, words, data, symbols, sources)


MUTATIONS: dict[str, tuple[Callable, bool]] = {
    # name: (mutation, re-signed)
    "bit_flip": (u_bit_flip, False),
    "truncate": (u_truncate, False),
    "extend": (u_extend, False),
    "header_field": (s_header_field, True),
    "opcode": (s_opcode, True),
    "instruction_field": (s_instruction_field, True),
    "instruction_bits": (s_instruction_bits, True),
    "instructions": (s_instructions, True),
    "symbol_table": (s_symbols, True),
    "source_table": (s_sources, True),
    "data_segment": (s_data, True),
    "section_sizes": (s_sections, True),
    "header_limits": (s_header_limits, True),
    "cluster_sizes": (s_cluster_sizes, True),
}
WEIGHTS = {"instruction_field": 4, "instruction_bits": 2, "symbol_table": 2, "source_table": 2}


# ---------------------------------------------------------------------------------------------
# Scenarios beyond program bytes (issue 17 classes 6, 7, 9, 10): each returns its outcome,
# "rejected" (a CtacError or the CLI's exit 2) or "ran", and raises on anything else.
# ---------------------------------------------------------------------------------------------

HOSTILE_TOKENS = [
    "abc", "-5", "-1", "1e300", "-1e300", "nan", "inf", "1e30", "0x10", "", "99999999999999999999",
    "9" * 5000, "x" * 100_000, "1.5", "\u00e9", "=", "[[[[", "{", "\"", "\\", "\t",
]  # fmt: skip


def _tiny_assembly() -> str:
    """Assembly of a small program using every directive (kept small so a case is fast)."""
    from ctac.hw import load_hardware
    from ctac.runtime.assembly import disassemble
    from ctac.runtime.program import Program, Symbol

    hw = load_hardware()
    program = Program(
        hw.digest,
        [
            ("LOAD", {"dst": 0, "dst_addr": 0, "src": 0, "rows": 2, "cols": 4, "stride": 4}),
            (
                "VEC",
                {
                    "op": "add",
                    "dst": 2,
                    "dst_addr": 0,
                    "a": 0,
                    "a_addr": 0,
                    "b": 0,
                    "b_addr": 0,
                    "rows": 2,
                    "cols": 4,
                    "bcast": "imm",
                    "imm": 1.5,
                },
            ),  # fmt: skip
            ("STORE", {"src": 2, "src_addr": 0, "dst": 8, "rows": 2, "cols": 4, "stride": 4}),
            ("HALT", {}),
        ],
        np.arange(8, dtype=np.float32),
        16,
        [
            Symbol("x", "input", (2, 4), "float32", 0, 0),
            Symbol("y", "output", (2, 4), "float32", 8),
        ],
        ["load", "add", "store", ""],
        [(1, "rows", 0)],
        [{"layer": 0}],
    )
    from ctac.runtime import isa

    program.instructions = [(n, isa.decode(isa.encode(n, f))[1]) for n, f in program.instructions]
    return disassemble(program)


def _mutate_assembly(rng, text: str) -> bytes:
    lines = text.splitlines()
    choice = rng.randrange(9)
    i = rng.randrange(len(lines))
    if choice == 0:  # a directive's value
        directives = [j for j, line in enumerate(lines) if line.startswith(".")]
        i = rng.choice(directives)
        keyword = lines[i].split(" ", 1)[0]
        lines[i] = f"{keyword} {rng.choice(HOSTILE_TOKENS)}"
    elif choice == 1:  # a field value
        code = [j for j, line in enumerate(lines) if line[:1].isupper()]
        i = rng.choice(code)
        head, _, comment = lines[i].partition(";")
        parts = head.split()
        if len(parts) > 1:
            k = rng.randrange(1, len(parts))
            key = parts[k].split("=", 1)[0]
            parts[k] = f"{key}={rng.choice(HOSTILE_TOKENS)}"
        lines[i] = " ".join(parts) + (f" ;{comment}" if comment else "")
    elif choice == 2:  # the ;@ JSON
        code = [j for j, line in enumerate(lines) if line[:1].isupper()]
        i = rng.choice(code)
        head = lines[i].partition(";")[0]
        marker = rng.choice([
            '"a" {"rows": [1, 2, 3]}', '"a" {"rows": "x"}', '"a" [1]', "5", '"a" {"rows": 1.5}',
            "[" * 100_000, '"a" ' + '{"a":' * 5000 + "1" + "}" * 5000, '{"unclosed', '"a" {"nope": 1}',
            '"a" {"rows": true}', '"a" {"rows": [99, 0]}', '"\ud800"',
        ])  # fmt: skip
        lines[i] = f"{head} ;@ {marker}"
    elif choice == 3:  # .policy / .input / .output JSON
        lines.insert(
            rng.randrange(1, 5),
            rng.choice(
                [
                    ".policy " + "[" * 50_000,
                    ".policy [1, 2]",
                    ".policy {}",
                    ".policy 1e999",
                    '.input "z" float32 2x4 @0 vocab=1e30',
                    ".input " + "[" * 50_000,
                    ".input 5 float32 2 @0",
                    '.output "z" float64 2 @0',
                    '.input "z" int64 2x-4 @0',
                    '.input "z" int64 ' + "x".join(["1"] * 70) + " @0",
                    '.input "z" int64 2 @-1 extra',
                ]
            ),  # fmt: skip
        )
    elif choice == 4:
        del lines[i]
    elif choice == 5:
        lines.insert(i, lines[rng.randrange(len(lines))])
    elif choice == 6:  # an unknown instruction / directive / field
        lines.insert(rng.randrange(len(lines)), rng.choice(["FOO a=1", ".foo", "VEC nope=1",
                     "VEC rows", "HALT extra=1", "LOAD dst=zzz"]))  # fmt: skip
    elif choice == 7:
        lines[i] = lines[i] + rng.choice(HOSTILE_TOKENS)
    encoded = "\n".join(lines).encode("utf-8", "surrogatepass")
    if choice == 8 or rng.random() < 0.05:  # bytes that are not UTF-8
        position = rng.randrange(len(encoded) + 1)
        encoded = (
            encoded[:position]
            + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80"])
            + encoded[position:]
        )
    return encoded


def _cli(argv: list[str]) -> str:
    """Run the ctac CLI in-process with stdout and stderr captured; exit 0 -> ran, 2 -> rejected,
    anything else raises."""
    import contextlib
    import io

    from ctac.cli import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    message = err.getvalue()
    if code == 0:
        return "ran"
    if code == 2 and message.count("error:") == 1 and len(message) < 4000:
        return "rejected"
    raise AssertionError(f"exit {code}: {message[:300]}")


def x_assembler(rng, index: int, corpus, folder: Path) -> str:
    """Class 7: `ctac asm` on mutated assembly."""
    source = folder / f"case{index}.s"
    source.write_bytes(_mutate_assembly(rng, _tiny_assembly()))
    return _cli(["asm", str(source), "-o", str(folder / f"case{index}.ctab")])


HW_VALUES = [1, 2, 64, 128.0, 1e-3, 0.5, float("nan"), float("inf"), -1, 0, 1e300, 1e-300, 33.5, 4194304, 1 << 70,
             "x", True, [], {}]  # fmt: skip


def x_hardware(rng, index: int, corpus, folder: Path) -> str:
    """Class 10: a hardware TOML with a value of the wrong type or range, a buffer without its
    name or size, or bytes that are not TOML / UTF-8, loaded and used by `ctac disasm`."""
    import re

    from ctac.hw import load_hardware

    text = (REPO / "ctac" / "data" / "default_hw.toml").read_text()
    values = list(re.finditer(r"value = [^,]+,", text))
    choice = rng.randrange(6)
    if choice < 3:
        match = rng.choice(values)
        value = rng.choice(HW_VALUES)
        literal = (
            json.dumps(value) if isinstance(value, str | list) else
            "true" if value is True else "{}" if value == {} else
            {"nan": "nan", "inf": "inf"}.get(str(value), repr(value))
        )  # fmt: skip
        text = text[: match.start()] + f"value = {literal}," + text[match.end() :]
    elif choice == 3:
        text = text.replace(rng.choice(['name = "wgt"\n', 'name = "act"\n', "size_kib"]), "", 1)
    elif choice == 4:
        text = text.replace('[[buffers]]\nname = "vec"', rng.choice(
            ['[[buffers]]\nname = 5', "[buffers]\nname = 'vec'", '[[buffers]]\nname = "vec"\nrole = []']), 1)  # fmt: skip
    else:
        text = text[: rng.randrange(len(text))] + rng.choice(["\x00", "= =", "[[", "\udcff"])
    path = folder / f"hw{index}.toml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    if rng.random() < 0.3:  # through the CLI (which also refuses the changed hardware hash)
        program = folder / f"p{index}.ctab"
        program.write_bytes(corpus[rng.choice(sorted(corpus))])
        return _cli(["disasm", str(program), "--hw", str(path), "--no-data", "-o", str(folder / "d.s")])  # fmt: skip
    from ctac.errors import CtacError
    from ctac.runtime.costmodel import simulate
    from ctac.runtime.program import decode_program

    try:
        hw = load_hardware(path)
    except CtacError:
        return "rejected"
    # A config that loads must work: its buffers, its cost formulas on a program.
    capacities = {b.index: b.capacity for b in hw.buffers}
    try:
        program = decode_program(corpus[rng.choice(sorted(corpus))], None, capacities)
    except CtacError:
        return "rejected"  # the programs' buffer ranges do not fit the smaller buffers
    simulate(program, hw)
    return "ran"


def x_special_file(rng, index: int, corpus, folder: Path) -> str:
    """Class 9: `-o` onto a FIFO, a symbolic link, a directory, a device or /dev/null; the
    special file must still be there, unchanged, afterwards."""
    import os
    import stat

    program = folder / f"p{index}.ctab"
    program.write_bytes(corpus[rng.choice(sorted(corpus))])
    kind = rng.choice(["fifo", "symlink", "dangling", "directory", "devnull", "devzero"])
    target = folder / f"out{index}"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "symlink":
        (folder / f"real{index}").write_text("keep")
        target.symlink_to(folder / f"real{index}")
    elif kind == "dangling":
        target.symlink_to(folder / f"missing{index}")
    elif kind == "directory":
        target.mkdir()
    elif kind == "devnull":
        target = Path(os.devnull)
    else:
        target = Path("/dev/zero")
    before = os.lstat(target).st_mode
    outcome = _cli(["disasm", str(program), "--no-data", "-o", str(target)])
    after = os.lstat(target).st_mode
    if stat.S_IFMT(before) != stat.S_IFMT(after):
        raise AssertionError(f"{kind}: the file type changed")
    if kind == "symlink" and (folder / f"real{index}").read_text() != "keep":
        raise AssertionError("the link's target was written")
    if outcome == "ran" and kind != "devnull":
        raise AssertionError(f"{kind}: written instead of refused")
    return outcome


def x_cluster_chunk(rng, index: int, corpus, folder: Path) -> str:
    """Class 6: one CLUSTER-sized chunk of distinct tokens in one group, up to the 65,535 rows
    a CLUSTER holds; the functional model must stay fast."""
    from ctac.runtime.cluster_unit import ClusterTable

    n = rng.choice([1, 100, 4096, 16384, 65535] if rng.random() < 0.2 else [1, 10, 500, 2000])
    cols = max(1, min(rng.choice([1, 2, 8, 64]), 131072 // n))
    data = np.random.default_rng(index)
    tokens = (data.standard_normal((n, cols)) * rng.choice([1, 100])).astype(np.float32)
    codes = data.integers(0, rng.choice([1, 2, 16]), n)
    table = ClusterTable(cols)
    table.cluster(tokens, codes, None, rng.choice([0.0, 0.001, 0.1, 0.5, 2.0]),
                  rng.choice([0, 0, 8, 63]))  # fmt: skip
    return "ran"


SCENARIOS: dict[str, Callable] = {
    "assembler": x_assembler,
    "hardware_toml": x_hardware,
    "special_files": x_special_file,
    "cluster_chunk": x_cluster_chunk,
}


def _on_alarm(signum, frame):
    raise CaseTimeout()


def run_case(index: int, seed: int, corpus: dict[str, bytes], hw, capacities) -> dict:
    from ctac.errors import CtacError
    from ctac.runtime.interpreter import run_program
    from ctac.runtime.program import decode_program

    rng = random.Random(seed * 1_000_003 + index)
    name = rng.choice(sorted(corpus))
    kinds = [k for k in [*MUTATIONS, *SCENARIOS] for _ in range(WEIGHTS.get(k, 1))]
    kind = rng.choice(kinds)
    if kind in SCENARIOS:
        return run_scenario(kind, rng, index, corpus)
    mutate, signed = MUTATIONS[kind]
    original = corpus[name]
    result = {"case": index, "program": name, "kind": kind}
    try:
        blob = mutate(rng, original)
    except (ValueError, IndexError, struct.error, TypeError, OverflowError) as exc:
        blob = _sign(original[:-32] + repr(exc).encode())
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    start = time.perf_counter()
    stage = "decode"
    try:
        signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
        program = decode_program(blob, hw.digest, capacities, FUZZ_MAX_DRAM_ELEMENTS)
        if not signed and blob != original:
            result["outcome"], result["why"] = "FAIL", "an unsigned corruption decoded"
        else:
            stage = "run"
            with np.errstate(all="ignore"):
                run_program(program, capacities, _inputs_for(program, index))
            result["outcome"] = "ran"
    except CtacError as exc:
        result["outcome"] = "rejected" if stage == "decode" else "run_error"
        result["message"] = str(exc)[:200]
    except CaseTimeout:
        result["outcome"], result["why"] = "FAIL", f"{stage} over {TIME_LIMIT} s"
    except BaseException as exc:  # noqa: BLE001 - any other exception is the bug we look for
        result["outcome"] = "FAIL"
        result["why"] = f"{stage}: {type(exc).__name__}: {str(exc)[:300]}"
        result["traceback"] = traceback.format_exc()[-2000:]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    result["seconds"] = round(time.perf_counter() - start, 4)
    return result


def run_scenario(kind: str, rng, index: int, corpus: dict[str, bytes]) -> dict:
    import tempfile

    result = {"case": index, "program": "-", "kind": kind}
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="ctac-fuzz-") as folder:
            signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
            try:
                with np.errstate(all="ignore"):
                    result["outcome"] = SCENARIOS[kind](rng, index, corpus, Path(folder))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            leftovers = [p.name for p in Path(folder).rglob("*.tmp")]
            if leftovers:
                result["outcome"], result["why"] = "FAIL", f"temporaries left: {leftovers}"
    except CaseTimeout:
        result["outcome"], result["why"] = "FAIL", f"over {TIME_LIMIT} s"
    except BaseException as exc:  # noqa: BLE001 - any other exception is the bug we look for
        result["outcome"] = "FAIL"
        result["why"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        result["traceback"] = traceback.format_exc()[-2000:]
    finally:
        signal.signal(signal.SIGALRM, previous)
    result["seconds"] = round(time.perf_counter() - start, 4)
    return result


def run(cases: int, seed: int, corpus: dict[str, bytes] | None = None) -> dict:
    from ctac.hw import load_hardware

    hw = load_hardware()
    capacities = {b.index: b.capacity for b in hw.buffers}
    corpus = corpus or compile_programs()
    results = [run_case(i, seed, corpus, hw, capacities) for i in range(cases)]
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for result in results:
        by_kind[result["kind"]][result["outcome"]] += 1
    failures = [r for r in results if r["outcome"] == "FAIL"]
    return {
        "cases": cases,
        "seed": seed,
        "programs": {name: len(blob) for name, blob in sorted(corpus.items())},
        "time_limit_s": TIME_LIMIT,
        "max_dram_elements": FUZZ_MAX_DRAM_ELEMENTS,
        "failures": len(failures),
        "max_seconds": max((r["seconds"] for r in results), default=0.0),
        "by_kind": {kind: dict(counts) for kind, counts in sorted(by_kind.items())},
        "failed_cases": failures,
    }


def print_table(report: dict) -> None:
    print(f"{'mutation':<20} {'cases':>6} {'rejected':>9} {'ran':>6} {'run err':>8} {'FAIL':>6}")
    print("-" * 60)
    for kind, counts in report["by_kind"].items():
        print(
            f"{kind:<20} {sum(counts.values()):>6} {counts.get('rejected', 0):>9} "
            f"{counts.get('ran', 0):>6} {counts.get('run_error', 0):>8} {counts.get('FAIL', 0):>6}"
        )
    print("-" * 60)
    print(
        f"{report['cases']} cases, {report['failures']} failures; slowest "
        f"{report['max_seconds']:.2f} s"
    )
    for failure in report["failed_cases"][:20]:
        print(f"  case {failure['case']} {failure['kind']} {failure['program']}: {failure['why']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "fuzz_program.json")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report = run(args.cases, args.seed)
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
