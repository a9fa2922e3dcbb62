"""The program file (.ctab): the Program, and its encoding and validated decoding (its data
segment in memory is runtime/data_segment.py; its assembly form runtime/assembly.py).

Binary layout (little-endian):

    magic "CTAB" | version u16 | element bytes u16 | hardware SHA-256 (32 bytes)
    instruction count u32 | data elements u64 | DRAM elements u64
    symbol table bytes u32 | source table bytes u32
    instructions: count x 32-byte words (runtime/isa.py)
    data segment: elements of the hardware's storage type (element bytes 2: fp16, 4: float32),
                  placed at DRAM address 0 (weights, constants)
    symbol table: canonical JSON, inputs and outputs with name, shape, dtype, DRAM address
    source table: canonical JSON {"strings": [...], "index": [one per instruction]}, and
                  optionally "dynamic", "policy", "model" {"path", "sha256"} (the ONNX file it was
                  compiled from) and "hardware" {"path", "toml"} (the config, whose SHA-256 is
                  the header's hardware hash)
    SHA-256 of everything above

`read_program` validates all of it (checksum, version, every field, every address range) before
anything runs; a corrupt file is a CtacError naming the field. Version 1 files (a float32 data
segment whatever the hardware, and a zero where the element bytes are now) are refused with a
request to recompile.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import mmap
import queue
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ctac.errors import CtacError, shorten
from ctac.files import write_atomically
from ctac.mapped import FileRange
from ctac.runtime import isa
from ctac.runtime.data_segment import (
    ELEMENT_TYPE_BY_BYTES,
    ELEMENT_TYPES,
    DataSegment,
    array_chunks,
    to_storage,
)

MAGIC = b"CTAB"
VERSION = 2
HEADER = struct.Struct("<4sHH32sIQQII")
DTYPES = isa.DTYPES
BUFFER_NAMES = isa.BUFFER_NAMES
# The DRAM the ISA can address: its DRAM address fields are 32-bit element addresses (the
# compiler places every tensor at one), so a program declaring more is corrupt. The interpreter
# allocates only the part that an instruction or symbol reaches (runtime/interpreter.py).
MAX_DRAM_ELEMENTS = 1 << 32
# Rows of the cluster unit's table: CLUSTER_READ addresses them with 16-bit fields.
MAX_TABLE_ROWS = (1 << 16) - 1
# numpy's limit on dimensions (NPY_MAXDIMS): a symbol with more could not be held as an array.
MAX_RANK = 64
# Token ids are stored in DRAM as float32, exact below 2**24: no vocabulary can be larger.
MAX_VOCAB = 1 << 24


@dataclass(frozen=True)
class Symbol:
    name: str
    kind: str  # input | output
    shape: tuple[int, ...]
    dtype: str
    address: int
    # For integer inputs that index an embedding: the table's rows (random inputs stay inside).
    vocab: int = 0

    @property
    def size(self) -> int:
        # Python integers: np.prod would wrap around for a hostile shape like [2**40, 2**40].
        return math.prod(self.shape)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "address": self.address,
            "vocab": self.vocab,
        }


@dataclass
class Program:
    hw_digest: bytes
    instructions: list[tuple[str, dict]]
    data: np.ndarray
    dram_elements: int
    symbols: list[Symbol]
    sources: list[str] = field(default_factory=list)
    # Data-dependent sizes: (instruction, field, CLUSTER instruction[, offset]): the field's
    # effective value is the number of clusters that CLUSTER formed less the offset (the first
    # cluster row of a tile), capped by the field's nominal value; 0 skips the instruction.
    dynamic: list[tuple] = field(default_factory=list)
    # The CTA policy's decisions (ctac/policy.py), one dict per attention layer, if it ran.
    policy: list[dict] = field(default_factory=list)
    # The model it was compiled from, {"path", "sha256"} (of the ONNX file), if recorded:
    # `ctac run --compare` refuses another model.
    model: dict | None = None
    # The hardware config it was compiled for, {"path", "toml"} (the TOML text, whose SHA-256 is
    # hw_digest), if embedded: run, profile and disasm then need no --hw.
    hardware: dict | None = None
    # The data segment's storage type in the file, and what the interpreter rounds DRAM stores
    # and float inputs to: "fp16" or "fp32" (the compiler sets the hardware's, ctac/hw.py).
    element_type: str = "fp32"

    @property
    def inputs(self) -> list[Symbol]:
        return [s for s in self.symbols if s.kind == "input"]

    @property
    def outputs(self) -> list[Symbol]:
        return [s for s in self.symbols if s.kind == "output"]

    def source_table(self) -> dict:
        strings: list[str] = []
        positions: dict[str, int] = {}
        index = []
        for source in self.sources:
            if source not in positions:
                positions[source] = len(strings)
                strings.append(source)
            index.append(positions[source])
        table = {
            "strings": strings,
            "index": index,
            "dynamic": [list(entry) for entry in self.dynamic],
        }
        if self.policy:
            table["policy"] = self.policy
        if self.model is not None:
            table["model"] = self.model
        if self.hardware is not None:
            table["hardware"] = self.hardware
        return table


def storage_array(program: Program) -> np.ndarray:
    """The data segment as one contiguous array of its storage type: the file's own bytes for a
    program read from disk (no copy), converted (to_storage) for one compiled in memory."""
    if isinstance(program.data, DataSegment):
        return program.data.stored(program.element_type)
    return np.ascontiguousarray(
        to_storage(np.asarray(program.data).reshape(-1), program.element_type)
    )


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def encode_program(program: Program, words: bytes | None = None) -> bytes:
    return b"".join(encode_chunks(program, words=words))


def instruction_words(program: Program) -> bytes:
    """The program's instructions encoded, 32 bytes each (the file's text section)."""
    return b"".join(isa.encode(name, fields) for name, fields in program.instructions)


def encode_chunks(program: Program, file_ranges: bool = False, words: bytes | None = None):
    """The program file as a sequence of byte chunks (their concatenation is encode_program's
    result): the data segment is written from its arrays as they are, never copied whole, and the
    checksum is computed along the way. With `file_ranges`, weights still in their mapped ONNX
    file come as FileRange chunks (ctac/mapped.py: their bytes are `.view`), for write_atomically
    to copy file to file. `words`: instruction_words(program), when the caller has them
    already (`ctac compile` encodes once for its loader check and the file)."""
    if words is None:
        words = instruction_words(program)
    symbols = _canonical([s.to_json() for s in program.symbols])
    sources = _canonical(program.source_table())
    data = program.data
    if program.element_type not in ELEMENT_TYPES:
        raise CtacError(f"unknown program element type {program.element_type!r}")
    if isinstance(data, DataSegment):
        data_chunks = data.chunks(file_ranges=file_ranges, element_type=program.element_type)
    else:
        data_chunks = array_chunks(data, program.element_type)
    header = HEADER.pack(
        MAGIC,
        VERSION,
        ELEMENT_TYPES[program.element_type][0],
        program.hw_digest,
        len(program.instructions),
        len(program.data),
        program.dram_elements,
        len(symbols),
        len(sources),
    )
    checksum = _Checksum()
    try:
        for chunk in itertools.chain((header, words), data_chunks, (symbols, sources)):
            checksum.update(chunk.view if isinstance(chunk, FileRange) else chunk)
            yield chunk
        yield checksum.digest()
    finally:
        checksum.close()


class _Checksum:
    """SHA-256 of the chunks given in order, computed in a second thread while the first writes
    them (hashlib releases the GIL on large buffers): hashing a BERT-base program takes as long
    as writing it."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._hash.update(chunk)

    def update(self, chunk) -> None:
        self._queue.put(chunk)

    def digest(self) -> bytes:
        self.close()
        return self._hash.digest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def _fail(message: str) -> CtacError:
    return CtacError(f"corrupt program: {message}")


def decode_program(
    blob: bytes,
    hw_digest: bytes | None = None,
    capacities: dict[int, int] | None = None,
    max_dram_elements: int = MAX_DRAM_ELEMENTS,
) -> Program:
    """Parse and validate a program; `capacities` (buffer index -> elements) checks buffer ranges,
    `max_dram_elements` caps the DRAM the program may make the interpreter allocate."""
    if len(blob) < HEADER.size + 32:
        raise _fail(f"{len(blob)} bytes is shorter than a header and checksum")
    blob = memoryview(blob).cast("B")  # bytes or a memory-mapped file: slices stay views
    if bytes(blob[: len(MAGIC)]) != MAGIC:
        # Most often an ONNX model or a text file given where a program belongs.
        raise CtacError(
            f"not a ctac program (it does not start with {MAGIC!r}); make one with "
            "`ctac compile MODEL.onnx -o PROGRAM.ctab`"
        )
    body, checksum = blob[:-32], blob[-32:]
    if hashlib.sha256(body).digest() != bytes(checksum):
        raise _fail("checksum mismatch (the file is truncated or was modified)")
    (
        magic,
        version,
        element_bytes,
        digest,
        count,
        data_elements,
        dram_elements,
        symbol_bytes,
        source_bytes,
    ) = HEADER.unpack_from(body)
    assert magic == MAGIC  # checked first, above
    if version == 1:
        raise CtacError(
            "the program is format version 1 (a float32 data segment, from before programs "
            f"stored the hardware's element type); this ctac reads version {VERSION}: recompile "
            "the model with `ctac compile`"
        )
    if version != VERSION:
        raise _fail(f"version {version}; this ctac reads version {VERSION}")
    element_type = ELEMENT_TYPE_BY_BYTES.get(element_bytes)
    if element_type is None:
        raise _fail(f"element bytes {element_bytes}; a data segment is fp16 (2) or float32 (4)")
    if hw_digest is not None and digest != hw_digest:
        raise CtacError(
            "the program was compiled for another hardware config (hash mismatch); "
            "recompile it or pass the same --hw file"
        )
    expected = (
        HEADER.size
        + count * isa.WORD_BYTES
        + data_elements * element_bytes
        + symbol_bytes
        + source_bytes
    )
    if expected != len(body):
        raise _fail(f"sections add up to {expected} bytes but the file has {len(body)}")
    if not data_elements <= dram_elements <= max_dram_elements:
        raise _fail(
            f"DRAM size {dram_elements} must be from the data segment's {data_elements} to "
            f"{max_dram_elements} elements"
        )
    offset = HEADER.size
    instructions = []
    for index in range(count):
        word = body[offset : offset + isa.WORD_BYTES]
        offset += isa.WORD_BYTES
        try:
            spec, fields = isa.decode(word)
        except ValueError as exc:
            raise _fail(f"instruction {index}: {exc}") from None
        _check_ranges(index, spec, fields, dram_elements, capacities)
        instructions.append((spec.name, fields))
    # A read-only view of the blob (of the memory-mapped file, from read_program): not copied.
    data = np.frombuffer(
        body, dtype=ELEMENT_TYPES[element_type][1], count=data_elements, offset=offset
    )
    offset += data_elements * element_bytes
    try:
        symbol_list = json.loads(bytes(body[offset : offset + symbol_bytes]))
        offset += symbol_bytes
        source_table = json.loads(bytes(body[offset : offset + source_bytes]))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise _fail(f"symbol or source table is not JSON: {str(exc)[:200]}") from None
    symbols = _symbols(symbol_list, dram_elements)
    sources = _sources(source_table, count)
    dynamic = _dynamic(source_table, instructions)
    policy = source_table.get("policy", []) if isinstance(source_table, dict) else []
    if not isinstance(policy, list) or not all(isinstance(entry, dict) for entry in policy):
        raise _fail("source table 'policy' is not a list of decisions")
    model = _model_record(source_table.get("model"))
    hardware = _hardware_record(source_table.get("hardware"), digest)
    if not instructions or instructions[-1][0] != "HALT":
        raise _fail("the program does not end with HALT")
    return Program(
        digest, instructions, data, dram_elements, symbols, sources, dynamic, policy, model,
        hardware, element_type,
    )  # fmt: skip


SHA256_HEX = frozenset("0123456789abcdef")


def _model_record(raw: object) -> dict | None:
    """The source table's optional "model": {"path": str, "sha256": 64 hex digits}."""
    if raw is None:
        return None
    if (
        not isinstance(raw, dict)
        or set(raw) != {"path", "sha256"}
        or not isinstance(raw["path"], str)
        or not isinstance(raw["sha256"], str)
        or len(raw["sha256"]) != 64
        or not set(raw["sha256"]) <= SHA256_HEX
    ):
        raise _fail('source table \'model\' must be {"path": ..., "sha256": 64 hex digits}')
    return {"path": raw["path"], "sha256": raw["sha256"]}


def _hardware_record(raw: object, digest: bytes) -> dict | None:
    """The source table's optional "hardware": {"path": str, "toml": str}, the config whose
    SHA-256 is the header's hardware hash."""
    if raw is None:
        return None
    if (
        not isinstance(raw, dict)
        or set(raw) != {"path", "toml"}
        or not isinstance(raw["path"], str)
        or not isinstance(raw["toml"], str)
    ):
        raise _fail('source table \'hardware\' must be {"path": ..., "toml": ...}')
    if hashlib.sha256(raw["toml"].encode()).digest() != digest:
        raise _fail("the embedded hardware config does not match the header's hardware hash")
    return {"path": raw["path"], "toml": raw["toml"]}


def embedded_hardware(path: str | Path) -> dict | None:
    """The hardware config a program file embeds ({"path", "toml"}), read from its source table
    without decoding the rest; None when it has none or the file is not a well-formed program
    (read_program then says why). The TOML's SHA-256 is checked against the header's hash."""
    try:
        with open(path, "rb") as stream:
            header = stream.read(HEADER.size)
            if len(header) != HEADER.size or header[: len(MAGIC)] != MAGIC:
                return None
            digest, source_bytes = HEADER.unpack(header)[3], HEADER.unpack(header)[8]
            size = stream.seek(0, 2)
            start = size - 32 - source_bytes
            if start < HEADER.size:
                return None
            stream.seek(start)
            table = json.loads(stream.read(source_bytes))
        return _hardware_record(table.get("hardware"), digest) if isinstance(table, dict) else None
    except (OSError, ValueError, RecursionError, CtacError):
        return None


def _check_ranges(
    index: int,
    spec: isa.Instruction,
    fields: dict,
    dram_elements: int,
    capacities: dict[int, int] | None,
) -> None:
    for field_spec in spec.fields:
        if field_spec.kind == "buf" and fields[field_spec.name] >= len(BUFFER_NAMES):
            raise _fail(
                f"instruction {index} ({spec.name}): buffer id {fields[field_spec.name]} does not exist"
            )
    for dim in ("rows", "cols"):
        if dim in fields and spec.name != "SYNC" and fields[dim] == 0:
            raise _fail(f"instruction {index} ({spec.name}): {dim} is 0")
    try:
        regions = spec.reads(fields) + spec.writes(fields)
    except (KeyError, TypeError) as exc:
        raise _fail(f"instruction {index} ({spec.name}): {exc}") from None
    for where, start, size in regions:
        if where == "dram":
            if start < 0 or size < 0 or start + size > dram_elements:
                raise _fail(
                    f"instruction {index} ({spec.name}): DRAM range [{start}, {start + size}) is outside [0, {dram_elements})"
                )
        elif capacities is not None and (
            start < 0 or size < 0 or start + size > capacities.get(where, 0)
        ):
            raise _fail(
                f"instruction {index} ({spec.name}): {BUFFER_NAMES[where]} range [{start}, "
                f"{start + size}) exceeds its {capacities.get(where, 0)} elements"
            )
    if spec.name == "CLUSTER" and fields["table_rows"] + fields["rows"] > MAX_TABLE_ROWS:
        raise _fail(
            f"instruction {index} (CLUSTER): a table of {fields['table_rows']} + {fields['rows']} "
            f"rows; the cluster unit's table holds at most {MAX_TABLE_ROWS} (its row fields are "
            "16-bit)"
        )
    if spec.name in ("LOAD", "STORE") and fields["stride"] < 0:
        raise _fail(f"instruction {index} ({spec.name}): negative stride")


def _symbols(raw: object, dram_elements: int) -> list[Symbol]:
    if not isinstance(raw, list):
        raise _fail("symbol table is not a list")
    symbols = []
    for entry in raw:
        try:
            symbol = Symbol(
                str(entry["name"]),
                str(entry["kind"]),
                tuple(int(d) for d in entry["shape"]),
                str(entry["dtype"]),
                int(entry["address"]),
                int(entry.get("vocab", 0)),
            )
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise _fail(f"symbol {shorten(entry)}: {shorten(exc)}") from None
        name = shorten(symbol.name)
        if not isinstance(entry["name"], str):
            raise _fail(f"symbol '{name}': its name is not a string")
        if symbol.kind not in ("input", "output") or symbol.dtype not in DTYPES:
            raise _fail(
                f"symbol '{name}': kind {shorten(symbol.kind)} / dtype {shorten(symbol.dtype)} "
                "unknown"
            )
        if len(symbol.shape) > MAX_RANK:
            raise _fail(f"symbol '{name}' has {len(symbol.shape)} dimensions, over {MAX_RANK}")
        if not 0 <= symbol.vocab <= MAX_VOCAB:
            raise _fail(
                f"symbol '{name}': vocab {shorten(symbol.vocab)} is outside [0, {MAX_VOCAB}] "
                "(token ids are float32 in DRAM, exact below 2**24)"
            )
        if any(d <= 0 for d in symbol.shape) or not (
            0 <= symbol.address <= dram_elements - symbol.size
        ):
            raise _fail(
                f"symbol '{name}': shape {shorten(symbol.shape)} at {shorten(symbol.address)} "
                f"is outside DRAM [0, {dram_elements})"
            )
        symbols.append(symbol)
    return symbols


def _sources(raw: object, count: int) -> list[str]:
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("strings"), list)
        or not isinstance(raw.get("index"), list)
    ):
        raise _fail("source table must be {strings: [...], index: [...]}")
    strings, index = raw["strings"], raw["index"]
    if len(index) != count or any(
        not isinstance(i, int) or not 0 <= i < len(strings) for i in index
    ):
        raise _fail("source table index does not match the instructions")
    return [str(strings[i]) for i in index]


def _dynamic(raw: dict, instructions: list[tuple[str, dict]]) -> list[tuple[int, str, int]]:
    entries = raw.get("dynamic", [])
    if not isinstance(entries, list):
        raise _fail("source table 'dynamic' is not a list")
    dynamic = []
    for entry in entries:
        if (
            not isinstance(entry, list)
            or len(entry) not in (3, 4)
            or not all(isinstance(value, int) for value in entry[3:])
            or not isinstance(entry[0], int)
            or not isinstance(entry[1], str)
            or not isinstance(entry[2], int)
            or not 0 <= entry[0] < len(instructions)
            or not 0 <= entry[2] < len(instructions)
            or instructions[entry[2]][0] not in ("CLUSTER", "CLUSTER_READ", "ELSA_SELECT")
            or (entry[1] and entry[1] not in instructions[entry[0]][1])
        ):
            raise _fail(
                f"dynamic size entry {shorten(repr(entry))} does not name an instruction field "
                "and a CLUSTER"
            )
        dynamic.append((entry[0], str(entry[1]), entry[2], *entry[3:4]))
    return dynamic


def write_program(program: Program, path: str | Path, words: bytes | None = None) -> None:
    """Write the .ctab file, streamed: the data segment goes from its arrays into the file.
    `words`: instruction_words(program) if already encoded."""
    write_atomically(path, encode_chunks(program, file_ranges=True, words=words))


def read_program(
    path: str | Path, hw_digest: bytes | None = None, capacities: dict[int, int] | None = None
) -> Program:
    """Load a program by memory map: its data segment is a read-only view of the file."""
    try:
        with open(path, "rb") as stream:
            try:
                blob = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
            except (ValueError, OSError):  # an empty file, a pipe: read it instead
                blob = stream.read()
    except OSError as exc:
        raise CtacError(f"cannot read program '{path}': {exc.strerror}") from None
    return decode_program(blob, hw_digest, capacities)
