"""The CTA-ISA assembly: a readable text form of a whole program (`ctac disasm`, `ctac asm`).

One line per instruction (`NAME field=value ... ;@ "source" {dynamic sizes}`), directives for the
header, symbols, policy, model and embedded hardware, and the data segment as base64 `.bytes` in
its storage type; with the data segment it assembles back to the same .ctab bytes. The binary
layout and its validation are runtime/program.py's; `assemble` builds a Program and leaves the
checks to `decode_program` on its encoding, so both forms are held to the same rules.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math

import numpy as np

from ctac.errors import CtacError, shorten
from ctac.runtime import isa
from ctac.runtime.data_segment import ELEMENT_TYPES
from ctac.runtime.program import (
    BUFFER_NAMES,
    MAX_DRAM_ELEMENTS,
    VERSION,
    Program,
    Symbol,
    _model_record,
    storage_array,
)


def _format_fields(spec: isa.Instruction, fields: dict) -> str:
    parts = []
    for field_spec in spec.fields:
        value = fields[field_spec.name]
        text = (
            BUFFER_NAMES[value] if field_spec.kind == "buf" else isa.format_value(field_spec, value)
        )
        parts.append(f"{field_spec.name}={text}")
    return " ".join(parts)


def _asm_json(value: object) -> str:
    """JSON for a directive's argument, with ';' escaped (the assembler reads ';' as the start of
    a comment)."""
    return json.dumps(value, sort_keys=True).replace(";", "\\u003b")


def disassemble(program: Program, include_data: bool = True) -> str:
    """Readable assembly; with the data segment it assembles back to the same bytes."""
    lines = [
        "; ctac CTA-ISA assembly",
        f".version {VERSION}",
        f".hw {program.hw_digest.hex()}",
        f".dram {program.dram_elements}",
    ]
    lines += [f".policy {_asm_json(entry)}" for entry in program.policy]
    if program.model is not None:
        lines.append(f".model {_asm_json(program.model)}")
    if program.hardware is not None:
        # The embedded config, one JSON string per line of its TOML (joined back with newlines).
        lines.append(f".hardware {_asm_json(program.hardware['path'])}")
        lines += [f".toml {_asm_json(line)}" for line in program.hardware["toml"].split("\n")]
    for symbol in program.symbols:
        shape = "x".join(map(str, symbol.shape)) or "scalar"
        vocab = f" vocab={symbol.vocab}" if symbol.vocab else ""
        lines.append(
            f".{symbol.kind} {json.dumps(symbol.name)} {symbol.dtype} {shape} @{symbol.address}{vocab}"
        )
    # The data segment's element type, then its bytes in that type (as in the binary file).
    lines.append(f".data {len(program.data)} {program.element_type}")
    if include_data:
        raw = storage_array(program).tobytes()
        encoded = base64.b64encode(raw).decode()
        lines += [f".bytes {encoded[i : i + 96]}" for i in range(0, len(encoded), 96)]
    lines.append(".text")
    sources = program.sources or [""] * len(program.instructions)
    dynamic: dict[int, dict[str, object]] = {}
    for index, name, cluster, *offset in program.dynamic:
        dynamic.setdefault(index, {})[name] = [cluster, *offset] if offset else cluster
    for index, ((name, fields), source) in enumerate(
        zip(program.instructions, sources, strict=True)
    ):
        spec = isa.BY_NAME[name]
        text = f"{name} {_format_fields(spec, fields)}".rstrip()
        sizes = f" {json.dumps(dynamic[index])}" if index in dynamic else ""
        lines.append(f"{text:<100} ;@ {json.dumps(source)}{sizes}")
    return "\n".join(lines) + "\n"


# Nesting the assembler's JSON may have (a ;@ dynamic-size entry is two levels deep, a .policy
# decision a few more): deeper input is refused before json can recurse on it.
MAX_JSON_DEPTH = 32


def _json_depth(text: str) -> int:
    """The deepest [ / { nesting of JSON text (brackets inside strings counted too: an upper
    bound, which is all the check needs)."""
    depth = deepest = 0
    for character in text:
        if character in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif character in "]}":
            depth -= 1
    return deepest


def _f32(text: str) -> float:
    """An f32 field's value: a float (inf and nan included) that float32 can hold."""
    value = float(text)
    if math.isfinite(value) and abs(value) > float(np.finfo(np.float32).max):
        raise OverflowError(value)
    return value


def assemble(text: str, source_name: str = "<asm>") -> Program:
    """The program of assembly `text` (as `disassemble` writes it); a malformed line is a
    CtacError naming `source_name`, the line number and what the line should look like."""
    digest = None
    dram = None
    symbols: list[Symbol] = []
    data_count = None
    element_type = None
    chunks: list[str] = []
    instructions: list[tuple[str, dict]] = []
    sources: list[str] = []
    dynamic: list[tuple] = []
    policy: list[dict] = []
    model = None
    hardware_path = None
    toml_lines: list[str] = []
    in_text = False

    def fail(number: int, message: str) -> CtacError:
        return CtacError(f"{source_name}:{number}: {message}")

    def count(number: int, keyword: str, value: str, limit: int) -> int:
        try:
            result = int(value.strip())
        except ValueError:
            raise fail(
                number, f"{keyword} '{shorten(value.strip())}' should be a whole number of elements"
            ) from None
        if not 0 <= result <= limit:
            raise fail(number, f"{keyword} {shorten(result)} should be in [0, {limit}]")
        return result

    def parse_json(number: int, raw: str, what: str, whole: bool = True) -> tuple[object, int]:
        if _json_depth(raw) > MAX_JSON_DEPTH:
            raise fail(number, f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
        try:
            if whole:
                return json.loads(raw), len(raw)
            return json.JSONDecoder().raw_decode(raw)
        except (json.JSONDecodeError, RecursionError, ValueError) as exc:
            raise fail(number, f"{what} is not valid JSON ({shorten(exc)})") from None

    for number, line in enumerate(text.splitlines(), start=1):
        code, _, comment = line.partition(";")
        code = code.strip()
        if not code:
            continue
        if not in_text:
            keyword, _, rest = code.partition(" ")
            if keyword == ".version":
                if rest.strip() != str(VERSION):
                    raise fail(
                        number,
                        f"version {shorten(rest.strip())}; this ctac assembles version {VERSION}",
                    )
            elif keyword == ".hw":
                try:
                    digest = bytes.fromhex(rest.strip())
                except ValueError:
                    digest = None
                if digest is None or len(digest) != 32:
                    raise fail(number, "the .hw digest should be 64 hex digits (a SHA-256)")
            elif keyword == ".dram":
                dram = count(number, ".dram", rest, MAX_DRAM_ELEMENTS)
            elif keyword == ".policy":
                entry, _ = parse_json(number, rest.strip(), ".policy")
                if not isinstance(entry, dict):
                    raise fail(number, ".policy should be a JSON object (one decision)")
                policy.append(entry)
            elif keyword == ".model":
                entry, _ = parse_json(number, rest.strip(), ".model")
                try:
                    model = _model_record(entry)
                except CtacError:
                    raise fail(
                        number, '.model should be {"path": "...", "sha256": "64 hex digits"}'
                    ) from None
            elif keyword == ".hardware":
                hardware_path, _ = parse_json(number, rest.strip(), ".hardware")
                if not isinstance(hardware_path, str):
                    raise fail(number, ".hardware should be a JSON string (the config's path)")
            elif keyword == ".toml":
                line_text, _ = parse_json(number, rest.strip(), ".toml")
                if not isinstance(line_text, str) or hardware_path is None:
                    raise fail(
                        number, ".toml should follow .hardware and be a JSON string (a line of it)"
                    )
                toml_lines.append(line_text)
            elif keyword in (".input", ".output"):
                usage = f'{keyword} should look like {keyword} "NAME" DTYPE 2x16 @ADDRESS [vocab=N]'
                name, end = parse_json(number, rest.strip(), f"{keyword} name", whole=False)
                if not isinstance(name, str):
                    raise fail(number, usage)
                try:
                    dtype, shape, address, *extra = rest.strip()[end:].split()
                    if len(extra) > 1 or (extra and not extra[0].startswith("vocab=")):
                        raise ValueError(extra)
                    dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
                    vocab = int(extra[0].removeprefix("vocab=")) if extra else 0
                    symbols.append(
                        Symbol(name, keyword[1:], dims, dtype, int(address.lstrip("@")), vocab)
                    )
                except ValueError:
                    raise fail(number, usage) from None
            elif keyword == ".data":
                size, _, element_type = rest.strip().partition(" ")
                if element_type.strip() not in ELEMENT_TYPES:
                    raise fail(
                        number,
                        f".data should be .data COUNT TYPE with TYPE {' or '.join(ELEMENT_TYPES)} "
                        "(the data segment's element type)",
                    )
                element_type = element_type.strip()
                data_count = count(number, ".data", size, MAX_DRAM_ELEMENTS)
            elif keyword == ".bytes":
                chunks.append(rest.strip())
            elif keyword == ".text":
                in_text = True
            else:
                raise fail(
                    number,
                    f"unknown directive '{shorten(keyword)}' (expected .version, .hw, .dram, "
                    ".policy, .model, .hardware, .toml, .input, .output, .data, .bytes or .text)",
                )
            continue
        name, *pairs = code.split()
        spec = isa.BY_NAME.get(name)
        if spec is None:
            raise fail(number, f"unknown instruction '{shorten(name)}'")
        fields: dict = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise fail(number, f"'{shorten(pair)}' should be field=value")
            try:
                field_spec = spec.field(key)
            except KeyError:
                raise fail(number, f"{name} has no field '{shorten(key)}'") from None
            if field_spec.kind == "buf":
                if value not in BUFFER_NAMES:
                    raise fail(
                        number,
                        f"{name}.{key}: unknown buffer '{shorten(value)}' (one of "
                        f"{', '.join(BUFFER_NAMES)})",
                    )
                fields[key] = BUFFER_NAMES.index(value)
            elif field_spec.kind == "f32":
                try:
                    fields[key] = _f32(value)
                except (ValueError, OverflowError):
                    raise fail(
                        number,
                        f"{name}.{key}: '{shorten(value)}' is not a float32 number (finite values "
                        "up to 3.4e38, inf or nan)",
                    ) from None
            elif field_spec.kind == "enum":
                fields[key] = value
            else:
                try:
                    fields[key] = int(value)
                except ValueError:
                    raise fail(
                        number, f"{name}.{key}: '{shorten(value)}' is not an integer"
                    ) from None
        try:
            word = isa.encode(name, fields)
            _, decoded = isa.decode(word)
        except (ValueError, OverflowError) as exc:
            raise fail(number, shorten(exc, 200)) from None
        marker = comment.strip()
        source = ""
        if marker.startswith("@"):
            usage = (
                ";@ should be followed by a JSON string (the source) and optionally a JSON object "
                'of dynamic sizes, e.g. ;@ "layer0" {"rows": 12} or {"rows": [12, 64]}'
            )
            raw = marker[1:].strip()
            source, end = parse_json(number, raw, ";@ source", whole=False)
            rest = raw[end:].strip()
            sizes, _ = parse_json(number, rest, ";@ dynamic sizes") if rest else ({}, 0)
            if not isinstance(source, str) or not isinstance(sizes, dict):
                raise fail(number, usage)
            for key, cluster in sizes.items():
                entry = cluster if isinstance(cluster, list) else [cluster]
                if len(entry) not in (1, 2) or not all(
                    isinstance(value, int) and not isinstance(value, bool) for value in entry
                ):
                    raise fail(number, usage)
                dynamic.append((len(instructions), key, *entry))
        instructions.append((name, decoded))
        sources.append(source)
    if digest is None or dram is None or data_count is None or element_type is None:
        raise CtacError(f"{source_name}: missing .hw, .dram or .data directive")
    try:
        raw = base64.b64decode("".join(chunks), validate=True) if chunks else b""
    except ValueError:
        raise CtacError(f"{source_name}: the .bytes lines are not base64") from None
    width, dtype = ELEMENT_TYPES[element_type]
    if len(raw) != data_count * width:
        raise CtacError(
            f"{source_name}: .data says {data_count} {element_type} elements but .bytes hold "
            f"{len(raw) / width:g}"
        )
    data = np.frombuffer(raw, dtype=dtype).copy()
    hardware = None
    if hardware_path is not None:
        hardware = {"path": hardware_path, "toml": "\n".join(toml_lines)}
        if hashlib.sha256(hardware["toml"].encode()).digest() != digest:
            raise CtacError(
                f"{source_name}: the .toml lines are not the hardware config of .hw (their "
                "SHA-256 differs)"
            )
    return Program(
        digest, instructions, data, dram, symbols, sources, dynamic, policy, model, hardware,
        element_type,
    )  # fmt: skip
