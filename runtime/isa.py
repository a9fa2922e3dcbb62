"""The CTA accelerator ISA, defined once.

Every instruction is one row of `INSTRUCTIONS`: its opcode, the unit that executes it, its fields
(name, kind, width in bits), what it does, and its cost (cycles and energy actions). The encoder,
decoder, assembler, disassembler, the `ctaisa` dialect, the interpreter's dispatch, the cost model
and docs/isa.md all read this table; adding an instruction is one row plus its semantics in
runtime/interpreter.py.

Machine model: named on-chip buffers of float32 elements (addresses are element offsets), a DRAM
of float32 elements (integers such as token ids are stored exactly as floats below 2**24), and
units that each run their instructions in order, concurrently with the other units; an
instruction waits for earlier instructions whose buffer or DRAM ranges it reads or overwrites
(a scoreboard, so the compiler emits no explicit dependency tokens). Instructions are coarse: one
moves or computes a whole tile.

Encoding: each instruction is one 256-bit little-endian word: the opcode in bits 0-7, then the
fields in table order, each in its declared width (signed fields in two's complement, `f32`
fields as IEEE-754 bits).
"""

from __future__ import annotations

import difflib
import enum
import functools
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

WORD_BYTES = 32
WORD_BITS = WORD_BYTES * 8
OPCODE_BITS = 8

# Decoupled like VTA's load, compute and store modules: DRAM reads (dma_in) and writes (dma_out)
# have queues of their own, so a tile's store never holds up the next tile's load.
UNITS = ("dma_in", "dma_out", "pe", "vector", "hash", "cluster", "control")
DMA_UNITS = ("dma_in", "dma_out")

# Vector ALU operations (VEC.op). Unary ops ignore operand b.
VECTOR_OPS = (
    "copy", "add", "sub", "mul", "div", "max", "min", "pow",
    "eq", "lt", "le", "gt", "ge", "and", "or", "not",
    "neg", "abs", "exp", "log", "sqrt", "rsqrt", "recip", "erf", "gelu", "gelu_tanh",
    "tanh", "sigmoid", "relu", "trunc", "nonzero", "cumsum", "transpose", "round",
)  # fmt: skip
# How operand b is broadcast over the (rows, cols) tile.
BROADCASTS = ("full", "row", "col", "scalar", "imm")
REDUCE_OPS = ("sum", "max", "mean", "min")
# SOFTMAX mask modes: none, a (1, cols) 0/1 key mask, or a (rows, cols) additive bias.
MASK_MODES = ("none", "keys", "additive")
# ELSA_SELECT phases: one tile holding all keys, or a scan then a select over key tiles.
ELSA_PHASES = ("whole", "scan", "select")


class Buffer(enum.IntEnum):
    """The on-chip buffers, numbered as `buf` fields encode them; ctac/hw.py's config names them
    in this order. `vec` is the vector unit's working buffer, where instructions with fixed
    operand buffers keep masks, counts and running statistics; CLUSTER reads its tokens from
    `act`."""

    ACT = 0
    WGT = 1
    ACC = 2
    VEC = 3


# Buffer names as the assembly, the ctaisa dialect and the hardware config spell them.
BUFFER_NAMES: tuple[str, ...] = tuple(buffer.name.lower() for buffer in Buffer)
# Element types of a program's inputs and outputs (its symbol table, the ctaisa symbol op).
DTYPES = ("float32", "float16", "int64", "int32", "bool", "uint8", "int8")
VEC_BUFFER = Buffer.VEC
ACT_BUFFER = Buffer.ACT
# Largest CLUSTER window (its 6-bit field): open rows compared per token and group.
MAX_CLUSTER_WINDOW = 63


class FieldError(ValueError):
    """An instruction given a field its row does not have, missing one the row requires, or
    given a value out of a field's range (a compiler bug when the lowering emits it)."""


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # uint | int | f32 | buf | enum
    bits: int
    doc: str
    choices: tuple[str, ...] = ()
    # The value an emission may leave out (a feature switched off and its operands); None: every
    # emission must give the field.
    default: int | float | str | None = None

    def check(self, value: int | float | str, instruction: str) -> int:
        """The field's encoded integer; raises FieldError naming the field if out of range."""
        # The common case first, without building the error's text: the encoder checks every
        # field of every instruction (BERT-base: ~220,000 checks per compile).
        if type(value) is int and self.kind in _UNSIGNED_KINDS and 0 <= value < 1 << self.bits:
            return value
        where = f"{instruction}.{self.name}"
        if self.kind == "f32":
            try:
                return struct.unpack("<I", struct.pack("<f", float(value)))[0]
            except (TypeError, ValueError, OverflowError):
                raise FieldError(f"{where}: {value!r} is not a float32") from None
        if self.kind == "enum":
            if isinstance(value, str):
                if value not in self.choices:
                    raise FieldError(f"{where}: '{value}' is not one of {list(self.choices)}")
                return self.choices.index(value)
            number = _integer(value, where)
            if not 0 <= number < len(self.choices):
                raise FieldError(f"{where}: enum index {number} out of range")
            return number
        number = _integer(value, where)
        if self.kind == "int":
            low, high = -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
            if not low <= number <= high:
                raise FieldError(f"{where}: {number} does not fit {self.bits} signed bits")
            return number & ((1 << self.bits) - 1)
        if not 0 <= number < (1 << self.bits):
            raise FieldError(f"{where}: {number} does not fit {self.bits} unsigned bits")
        return number

    def decode(self, raw: int) -> int | float | str:
        if self.kind == "f32":
            return struct.unpack("<f", struct.pack("<I", raw))[0]
        if self.kind == "enum":
            if raw >= len(self.choices):
                raise ValueError(f"field {self.name}: enum index {raw} out of range")
            return self.choices[raw]
        if self.kind == "int" and raw >= 1 << (self.bits - 1):
            return raw - (1 << self.bits)
        return raw


_UNSIGNED_KINDS = frozenset({"uint", "buf"})


def _integer(value: object, where: str) -> int:
    """An integer field's value: an int (a bool, numpy integer or whole float is one too)."""
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        raise FieldError(f"{where}: {value!r} is not an integer") from None
    if number != value:
        raise FieldError(f"{where}: {value!r} is not an integer")
    return number


def _buf(name: str, doc: str, default: int | None = None) -> Field:
    return Field(name, "buf", 4, doc, default=default)


def _addr(name: str, doc: str, default: int | None = None) -> Field:
    return Field(name, "uint", 24, doc, default=default)


def _dram(name: str, doc: str) -> Field:
    return Field(name, "uint", 32, doc)


def _dim(name: str, doc: str) -> Field:
    return Field(name, "uint", 16, doc)


Cost = Callable[[Mapping, "HardwareView"], int]
Actions = Callable[[Mapping, "HardwareView"], dict[str, float]]


@dataclass(frozen=True)
class HardwareView:
    """The hardware numbers the cost formulas read (built from the TOML config)."""

    pe_rows: int
    pe_cols: int
    vector_lanes: int
    vector_pipeline: int
    special_function_passes: int
    dram_bytes_per_cycle: float
    dram_latency: int
    element_bytes: int
    hash_macs_per_cycle: int
    cluster_lanes: int
    pe_weight_buffers: int = 1  # 2: the next fold's weights load while the current fold computes
    cluster_table_bytes: int = 262144  # the cluster unit's centroid table SRAM
    cluster_candidates: int = 64  # tokens per pass over the table rows spilled to DRAM


@dataclass(frozen=True)
class Instruction:
    name: str
    opcode: int
    unit: str
    fields: tuple[Field, ...]
    doc: str
    cost_doc: str
    cycles: Cost
    actions: Actions
    reads: Callable[[Mapping], list[tuple[str, int, int]]] = field(default=lambda f: [])
    writes: Callable[[Mapping], list[tuple[str, int, int]]] = field(default=lambda f: [])

    def field(self, name: str) -> Field:
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        raise KeyError(f"{self.name} has no field '{name}'")

    @property
    def bits(self) -> int:
        return OPCODE_BITS + sum(f.bits for f in self.fields)

    @functools.cached_property
    def field_checks(self) -> tuple[frozenset[str], tuple]:
        """checked_fields' table, made once per row: the field names, and per field (name,
        default, lowest and highest int that needs no Field.check call, spec); a float or enum
        field has the empty range (1, 0), so every value of it goes through Field.check."""
        checks = tuple((f.name, f.default, *_unchecked_ints(f), f) for f in self.fields)
        return frozenset(f.name for f in self.fields), checks


def _ceil(a: float, b: float) -> int:
    return int(math.ceil(a / b)) if b else 0


def _dma_cycles(elements: int, hw: HardwareView, narrow: int = 0) -> int:
    return hw.dram_latency + _ceil(elements * _element_bytes(hw, narrow), hw.dram_bytes_per_cycle)


def _element_bytes(hw: HardwareView, narrow: int) -> int:
    """Bytes per DRAM element of a DMA: one for 8-bit integers (LOAD/STORE `narrow`, a quantized
    model's int8/uint8 tensors), else the machine's storage type."""
    return 1 if narrow else hw.element_bytes


_NARROW_DOC = (
    "1: the tile holds 8-bit integers (int8 or uint8 values: quantized weights and activations), "
    "one byte per element in DRAM"
)


def _vector_cycles(elements: int, hw: HardwareView, passes: int = 1) -> int:
    return passes * _ceil(elements, hw.vector_lanes) + hw.vector_pipeline


def _gemm_cycles(m: int, k: int, n: int, hw: HardwareView) -> int:
    folds = _ceil(k, hw.pe_rows) * _ceil(n, hw.pe_cols)
    if not folds:
        return 0
    if hw.pe_weight_buffers >= 2:
        # First weights in (R), folds back to back (a fold streams m rows while the next fold's
        # R weight rows shift in), then the last fold's skew drains (R + C - 2).
        return hw.pe_rows + folds * max(m, hw.pe_rows) + hw.pe_rows + hw.pe_cols - 2
    return folds * (2 * hw.pe_rows + hw.pe_cols + m - 2)


def transfer_cycles(name: str, fields: Mapping, hw: HardwareView) -> int:
    """Cycles a DMA instruction holds the DRAM channel: its cycles less the access latency."""
    return max(1, BY_NAME[name].cycles(fields, hw) - hw.dram_latency)


SPECIAL_OPS = {
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "recip",
    "erf",
    "gelu",
    "gelu_tanh",
    "tanh",
    "sigmoid",
    "pow",
    "div",
}


def _region(buffer_field: str, address_field: str, size: Callable[[Mapping], int]):
    return lambda f: (f[buffer_field], f[address_field], size(f))


def _rc(f: Mapping) -> int:
    return f["rows"] * f["cols"]


def _broadcast_elements(f: Mapping, mode: str) -> int:
    return {"full": _rc(f), "row": f["cols"], "col": f["rows"], "scalar": 1, "imm": 0}[mode]


def _b_elements(f: Mapping) -> int:
    return _broadcast_elements(f, f["bcast"])


def cluster_table_capacity(view: HardwareView, cols: int) -> int:
    """Rows of a `cols`-feature table the cluster unit's SRAM holds (the rest spill to DRAM)."""
    return view.cluster_table_bytes // (cluster_row_elements(cols) * view.element_bytes)


def cluster_row_elements(cols: int) -> int:
    """Storage elements of one cluster-table row: the running mean, its squared norm, the member
    count and the group key, cols + 3 fp32 values of two storage elements each."""
    return 2 * (cols + 3)


def _cluster_overflow(f: Mapping) -> int:
    """Table rows a CLUSTER may find in DRAM: those from `resident` on, up to the rows the table
    can hold after the chunk (table_rows before it, plus one per token)."""
    return max(0, f["table_rows"] + f["rows"] - f["resident"])


def _cluster_spill_bytes(f: Mapping, hw: HardwareView) -> int:
    """DRAM traffic of a CLUSTER's spilled rows: streamed once per `candidates` tokens (each token
    keeps its nearest passing spilled rows in a candidate list that deep), and at most one row
    per token written back. With a window the open rows stay on chip and a spilled row is only
    written, once."""
    over = _cluster_overflow(f)
    passes = 0 if f.get("window") else _ceil(f["rows"], hw.cluster_candidates)
    return (
        (passes * over + min(f["rows"], over)) * cluster_row_elements(f["cols"]) * hw.element_bytes
    )


def _read_spilled(f: Mapping) -> int:
    """Rows of a CLUSTER_READ that come from DRAM (those from `resident` on)."""
    return max(0, f["row0"] + f["rows"] - max(f["row0"], f["resident"]))


def _overlapped(compute: int, dram_bytes: int, hw: HardwareView) -> int:
    """Compute overlapped with a DRAM stream (which first waits its access latency)."""
    if not dram_bytes:
        return compute
    return max(compute, _ceil(dram_bytes, hw.dram_bytes_per_cycle)) + hw.dram_latency


def _cluster_spill_region(f: Mapping) -> list[tuple[str, int, int]]:
    over = _cluster_overflow(f)
    return [("dram", f["spill"], over * cluster_row_elements(f["cols"]))] if over else []


def _read_spill_region(f: Mapping) -> list[tuple[str, int, int]]:
    rows = _read_spilled(f)
    first = max(f["row0"], f["resident"]) - f["resident"]
    size = cluster_row_elements(f["cols"])
    return [("dram", f["spill"] + first * size, rows * size)] if rows else []


INSTRUCTIONS: tuple[Instruction, ...] = (
    Instruction(
        "LOAD", 1, "dma_in",
        (
            _buf("dst", "destination buffer"), _addr("dst_addr", "destination element offset"),
            _dram("src", "DRAM element address of the first row"),
            _dim("rows", "rows"), _dim("cols", "elements per row"),
            Field("stride", "int", 32, "DRAM elements between rows (0 repeats one row)"),
            Field("narrow", "uint", 1, _NARROW_DOC, default=0),
        ),
        "DRAM -> buffer: a 2-D strided tile, stored densely (rows x cols).",
        "latency + rows*cols*element_bytes (1 if narrow) / DRAM bytes per cycle",
        lambda f, hw: _dma_cycles(_rc(f), hw, f.get("narrow", 0)),
        lambda f, hw: {"dram_bytes": _rc(f) * _element_bytes(hw, f.get("narrow", 0)), "buffer_write": _rc(f)},
        reads=lambda f: [("dram", f["src"], max(f["stride"], f["cols"]) * (f["rows"] - 1) + f["cols"])],
        writes=lambda f: [(f["dst"], f["dst_addr"], _rc(f))],
    ),
    Instruction(
        "STORE", 2, "dma_out",
        (
            _buf("src", "source buffer"), _addr("src_addr", "source element offset"),
            _dram("dst", "DRAM element address of the first row"),
            _dim("rows", "rows"), _dim("cols", "elements per row"),
            Field("stride", "int", 32, "DRAM elements between rows"),
            _dim("src_stride", "buffer elements between rows (0: cols, a dense tile)"),
            Field("exact", "uint", 1, "1: integers (ids, indices), stored exactly instead of "
                  "rounded to the storage type", default=0),
            Field("narrow", "uint", 1, _NARROW_DOC, default=0),
        ),
        "Buffer -> DRAM: a (rows x cols) tile, dense or a column block of a wider tile, written "
        "as a 2-D strided tile (a GEMM tile across heads goes straight into head layout), "
        "rounded to the machine's storage type (fp16: DRAM holds fp16 tensors) unless exact.",
        "latency + rows*cols*element_bytes (1 if narrow) / DRAM bytes per cycle",
        lambda f, hw: _dma_cycles(_rc(f), hw, f.get("narrow", 0)),
        lambda f, hw: {"dram_bytes": _rc(f) * _element_bytes(hw, f.get("narrow", 0)), "buffer_read": _rc(f)},
        reads=lambda f: [(f["src"], f["src_addr"], (f["src_stride"] or f["cols"]) * (f["rows"] - 1) + f["cols"])],
        writes=lambda f: [("dram", f["dst"], f["stride"] * (f["rows"] - 1) + f["cols"])],
    ),
    Instruction(
        "GATHER", 3, "dma_in",
        (
            _buf("dst", "destination buffer"), _addr("dst_addr", "destination element offset"),
            _dram("table", "DRAM address of row 0 of the table"),
            _buf("idx", "buffer holding the row indices"), _addr("idx_addr", "index offset"),
            _dim("rows", "rows to gather"), _dim("cols", "elements per row"),
            Field("table_rows", "uint", 32, "rows in the table (indices are checked against it)"),
        ),
        "Row gather: dst[i, :] = table[idx[i], :] (embedding lookup, recovery by cluster id).",
        "latency + rows * (latency/4 + cols*element_bytes / DRAM bytes per cycle)",
        lambda f, hw: hw.dram_latency + f["rows"] * (hw.dram_latency // 4 + _ceil(f["cols"] * hw.element_bytes, hw.dram_bytes_per_cycle)),
        lambda f, hw: {"dram_bytes": _rc(f) * hw.element_bytes, "buffer_write": _rc(f), "buffer_read": f["rows"]},
        reads=lambda f: [("dram", f["table"], f["table_rows"] * f["cols"]), (f["idx"], f["idx_addr"], f["rows"])],
        writes=lambda f: [(f["dst"], f["dst_addr"], _rc(f))],
    ),
    Instruction(
        "GEMM", 4, "pe",
        (
            _buf("dst", "accumulator buffer"), _addr("dst_addr", "output offset (m x n)"),
            _buf("a", "left operand buffer"), _addr("a_addr", "left operand offset (m x k)"),
            _buf("b", "right operand buffer"), _addr("b_addr", "right operand offset (k x n, or n x k if transposed)"),
            _dim("m", "rows of the output"), _dim("k", "inner dimension"), _dim("n", "columns of the output"),
            Field("accumulate", "uint", 1, "add to dst instead of overwriting it", default=0),
            Field("transpose_b", "uint", 1, "b is stored n x k", default=0),
            Field("has_bias", "uint", 1, "add a (1 x n) bias row", default=0),
            _buf("bias", "bias buffer", default=0), _addr("bias_addr", "bias offset", default=0),
            Field("int8", "uint", 1, "integer mode: a and b hold integers in [-256, 255] (int8 or uint8 values, or such a value less its zero point), multiplied as 9-bit signed integers and summed exactly (int32 accumulation); dst, and the bias, hold integers", default=0),
        ),
        "dst (+)= a @ b (+ bias) on the weight-stationary PE array; int8=1 runs the array's "
        "integer mode (quantized models: requantisation is VEC work on the result). The machine "
        "model holds the integers as floats, exact while partial sums stay below 2**24.",
        "F = ceil(k/R)*ceil(n/C) weight folds; single-buffered weights (SCALE-Sim, weight "
        "stationary): F * (2R + C + m - 2); double-buffered weights (the next fold's weights "
        "shift in while the current fold streams, as a TPU's weight FIFO): R + F * max(m, R) + "
        "R + C - 2. Integer mode: the same rate (one MAC per PE per cycle), each MAC charged "
        "energy_pj.int8_mac instead of energy_pj.mac",
        lambda f, hw: _gemm_cycles(f["m"], f["k"], f["n"], hw),
        lambda f, hw: {
            ("int8_macs" if f.get("int8") else "macs"): f["m"] * f["k"] * f["n"],
            "buffer_read": f["m"] * f["k"] * _ceil(f["n"], hw.pe_cols) + f["k"] * f["n"],
            "buffer_write": f["m"] * f["n"],
        },
        reads=lambda f: [
            (f["a"], f["a_addr"], f["m"] * f["k"]),
            (f["b"], f["b_addr"], f["k"] * f["n"]),
            *([(f["dst"], f["dst_addr"], f["m"] * f["n"])] if f["accumulate"] else []),
            *([(f["bias"], f["bias_addr"], f["n"])] if f["has_bias"] else []),
        ],
        writes=lambda f: [(f["dst"], f["dst_addr"], f["m"] * f["n"])],
    ),
    Instruction(
        "VEC", 5, "vector",
        (
            Field("op", "enum", 6, "operation", VECTOR_OPS),
            _buf("dst", "destination buffer"), _addr("dst_addr", "destination offset"),
            _buf("a", "operand a buffer"), _addr("a_addr", "operand a offset (rows x cols)"),
            _buf("b", "operand b buffer"), _addr("b_addr", "operand b offset"),
            _dim("rows", "rows"), _dim("cols", "columns"),
            Field("bcast", "enum", 3, "how b covers the tile", BROADCASTS),
            Field("imm", "f32", 32, "immediate operand (bcast=imm) or exponent"),
        ),
        "Elementwise dst = a OP b over a (rows x cols) tile; b full, one row, one column, one "
        "element or the immediate. copy writes b (broadcast); cumsum scans each row; transpose "
        "writes cols x rows.",
        "passes * ceil(rows*cols / lanes) + pipeline depth (special functions take more passes)",
        lambda f, hw: _vector_cycles(_rc(f), hw, hw.special_function_passes if f["op"] in SPECIAL_OPS else 1),
        lambda f, hw: {"vector_ops": _rc(f), "buffer_read": _rc(f) + _b_elements(f), "buffer_write": _rc(f)},
        reads=lambda f: [*([(f["a"], f["a_addr"], _rc(f))] if f["op"] != "copy" else []), *([(f["b"], f["b_addr"], _b_elements(f))] if _b_elements(f) else [])],
        writes=lambda f: [(f["dst"], f["dst_addr"], _rc(f))],
    ),
    Instruction(
        "SELECT", 6, "vector",
        (
            _buf("dst", "destination buffer"), _addr("dst_addr", "destination offset"),
            _buf("cond", "condition buffer (nonzero = true)"), _addr("cond_addr", "condition offset"),
            _buf("a", "value-if-true buffer"), _addr("a_addr", "offset"),
            _buf("b", "value-if-false buffer"), _addr("b_addr", "offset"),
            _dim("rows", "rows"), _dim("cols", "columns"),
            Field("cond_bcast", "enum", 3, "broadcast of cond", BROADCASTS),
            Field("a_bcast", "enum", 3, "broadcast of a", BROADCASTS),
            Field("b_bcast", "enum", 3, "broadcast of b", BROADCASTS),
        ),
        "dst = cond ? a : b elementwise (each operand full or broadcast).",
        "ceil(rows*cols / lanes) + pipeline depth",
        lambda f, hw: _vector_cycles(_rc(f), hw),
        lambda f, hw: {"vector_ops": _rc(f), "buffer_read": 3 * _rc(f), "buffer_write": _rc(f)},
        reads=lambda f: [
            (f[name], f[f"{name}_addr"], _broadcast_elements(f, f[f"{name}_bcast"]))
            for name in ("cond", "a", "b")
            if f[f"{name}_bcast"] != "imm"
        ],
        writes=lambda f: [(f["dst"], f["dst_addr"], _rc(f))],
    ),
    Instruction(
        "REDUCE", 7, "vector",
        (
            Field("op", "enum", 2, "reduction", REDUCE_OPS),
            _buf("dst", "destination buffer"), _addr("dst_addr", "destination offset (rows x 1)"),
            _buf("src", "source buffer"), _addr("src_addr", "source offset (rows x cols)"),
            _dim("rows", "rows"), _dim("cols", "columns reduced"),
        ),
        "Row reduction: dst[r] = OP over src[r, :].",
        "ceil(rows*cols / lanes) + pipeline depth",
        lambda f, hw: _vector_cycles(_rc(f), hw),
        lambda f, hw: {"vector_ops": _rc(f), "buffer_read": _rc(f), "buffer_write": f["rows"]},
        reads=lambda f: [(f["src"], f["src_addr"], _rc(f))],
        writes=lambda f: [(f["dst"], f["dst_addr"], f["rows"])],
    ),
    Instruction(
        "LAYERNORM", 8, "vector",
        (
            _buf("dst", "destination buffer"), _addr("dst_addr", "destination offset"),
            _buf("src", "source buffer"), _addr("src_addr", "source offset (rows x cols)"),
            _buf("gamma", "scale buffer"), _addr("gamma_addr", "scale offset (1 x cols)"),
            _buf("beta", "bias buffer"), _addr("beta_addr", "bias offset (1 x cols)"),
            Field("has_beta", "uint", 1, "add the bias row"),
            _dim("rows", "rows"), _dim("cols", "normalised width"),
            Field("eps", "f32", 32, "epsilon"),
            Field("rms", "uint", 1, "RMSNorm: no mean subtracted, var = mean(x^2)", default=0),
        ),
        "Row-wise LayerNorm: (x - mean) / sqrt(var + eps) * gamma + beta; with rms, "
        "x / sqrt(mean(x^2) + eps) * gamma (+ beta).",
        "3 passes (mean, variance, normalise) of ceil(rows*cols / lanes) + pipeline depth; "
        "with rms 2 (mean square, normalise)",
        # RMSNorm skips the mean pass and the subtraction: one pass, one op and one read of the
        # row fewer (what a norm unit saves; a VEC/REDUCE sequence would instead pay a buffer
        # round trip per step).
        lambda f, hw: _vector_cycles(_rc(f), hw, 2 if f["rms"] else 3),
        lambda f, hw: {"vector_ops": (4 if f["rms"] else 5) * _rc(f), "buffer_read": 2 * _rc(f) + (1 + f["has_beta"]) * f["cols"] if f["rms"] else 3 * _rc(f) + 2 * f["cols"], "buffer_write": _rc(f)},
        reads=lambda f: [(f["src"], f["src_addr"], _rc(f)), (f["gamma"], f["gamma_addr"], f["cols"]), *([(f["beta"], f["beta_addr"], f["cols"])] if f["has_beta"] else [])],
        writes=lambda f: [(f["dst"], f["dst_addr"], _rc(f))],
    ),
    Instruction(
        "SOFTMAX", 9, "vector",
        (
            _buf("dst", "destination buffer"), _addr("dst_addr", "destination offset"),
            _buf("src", "scores buffer"), _addr("src_addr", "scores offset (rows x cols)"),
            _dim("rows", "query rows"), _dim("cols", "key columns"),
            Field("scale", "f32", 32, "multiplies the scores first"),
            Field("softcap", "f32", 32, "c > 0: scores = c * tanh(scores / c)", default=0.0),
            Field("mask", "enum", 2, "mask mode", MASK_MODES, default="none"),
            _buf("mask_buf", "mask buffer", default=0), _addr("mask_addr", "mask offset", default=0),
            Field("has_counts", "uint", 1, "weight column j by count[j] (compressed keys)", default=0),
            _buf("counts", "counts buffer", default=0), _addr("counts_addr", "counts offset (1 x cols)", default=0),
            Field("causal", "uint", 1, "row r sees columns j <= row0 + r + causal_offset", default=0),
            Field("row0", "uint", 16, "query index of the tile's first row", default=0),
            Field("causal_offset", "int", 16, "causal frontier offset", default=0),
        ),
        "Row softmax of scale*scores (softcapped, masked, causal, count-weighted); a row with no "
        "visible column becomes zeros.",
        "3 passes (max, exp+sum, normalise) of ceil(rows*cols / lanes) + pipeline depth",
        lambda f, hw: _vector_cycles(_rc(f), hw, 2 + hw.special_function_passes),
        lambda f, hw: {"vector_ops": 5 * _rc(f), "buffer_read": 3 * _rc(f), "buffer_write": _rc(f)},
        reads=lambda f: [
            (f["src"], f["src_addr"], _rc(f)),
            *([(f["mask_buf"], f["mask_addr"], f["cols"] if f["mask"] == "keys" else _rc(f))] if f["mask"] != "none" else []),
            *([(f["counts"], f["counts_addr"], f["cols"])] if f["has_counts"] else []),
        ],
        writes=lambda f: [(f["dst"], f["dst_addr"], _rc(f))],
    ),
    Instruction(
        "SOFTMAX_ONLINE", 17, "vector",
        (
            _buf("dst", "weights buffer"), _addr("dst_addr", "weights offset (rows x cols)"),
            _buf("src", "scores buffer"), _addr("src_addr", "scores offset (rows x cols)"),
            _dim("rows", "query rows"), _dim("cols", "key columns of this key tile"),
            Field("scale", "f32", 32, "multiplies the scores first"),
            Field("softcap", "f32", 32, "c > 0: scores = c * tanh(scores / c)"),
            Field("mask", "enum", 2, "mask mode", MASK_MODES),
            _addr("mask_addr", "mask offset in vec"),
            Field("has_counts", "uint", 1, "weight column j by count[j] (compressed keys)"),
            _addr("counts_addr", "counts offset in vec (1 x cols)"),
            Field("causal", "uint", 1, "row r sees tile column j <= r + causal_offset"),
            Field("causal_offset", "int", 18, "causal frontier of row 0 in tile columns"),
            _addr("state_addr", "offset in vec of three (rows x 1) columns: running max, running sum, rescale"),
            Field("first", "uint", 1, "first key tile: start the running max at -inf and the sum at 0"),
            Field("last", "uint", 1, "last key tile: divide the weights and the rescale by the final sum"),
        ),
        "One key tile of an online softmax (FlashAttention): m' = max(m, rowmax(S)), weights "
        "e^(S - m') (count-weighted, masked), l' = l e^(m - m') + rowsum(weights), rescale = "
        "e^(m - m') for the output accumulated so far (the third state column); the last tile divides the "
        "weights and the rescale by l' (a row with no visible key becomes zeros). Masks, counts "
        "and the state live in vec.",
        "SOFTMAX's passes over the tile + 2 * ceil(rows / lanes) for the running statistics",
        lambda f, hw: _vector_cycles(_rc(f), hw, 2 + hw.special_function_passes) + 2 * _ceil(f["rows"], hw.vector_lanes),
        lambda f, hw: {"vector_ops": 5 * _rc(f) + 6 * f["rows"], "buffer_read": 3 * _rc(f) + 2 * f["rows"], "buffer_write": _rc(f) + 3 * f["rows"]},
        reads=lambda f: [
            (f["src"], f["src_addr"], _rc(f)),
            *([(VEC_BUFFER, f["mask_addr"], f["cols"] if f["mask"] == "keys" else _rc(f))] if f["mask"] != "none" else []),
            *([(VEC_BUFFER, f["counts_addr"], f["cols"])] if f["has_counts"] else []),
            *([(VEC_BUFFER, f["state_addr"], 2 * f["rows"])] if not f["first"] else []),
        ],
        writes=lambda f: [(f["dst"], f["dst_addr"], _rc(f)), (VEC_BUFFER, f["state_addr"], 3 * f["rows"])],
    ),
    Instruction(
        "HASH", 10, "hash",
        (
            _buf("dst", "code buffer (rows x 1)"), _addr("dst_addr", "code offset"),
            _buf("src", "token buffer"), _addr("src_addr", "token offset (rows x cols)"),
            _buf("proj", "projection buffer"), _addr("proj_addr", "projection offset (cols x bits)"),
            _dim("rows", "tokens"), _dim("cols", "features"), Field("bits", "uint", 6, "hash bits"),
        ),
        "Sign-random-projection codes: dst[r] = sum_b 2^b [src[r] . proj[:, b] > 0].",
        "rows*cols*bits / hash MACs per cycle + pipeline depth",
        lambda f, hw: _ceil(_rc(f) * f["bits"], hw.hash_macs_per_cycle) + hw.vector_pipeline,
        lambda f, hw: {"hash_macs": _rc(f) * f["bits"], "buffer_read": _rc(f) + f["cols"] * f["bits"], "buffer_write": f["rows"]},
        reads=lambda f: [(f["src"], f["src_addr"], _rc(f)), (f["proj"], f["proj_addr"], f["cols"] * f["bits"])],
        writes=lambda f: [(f["dst"], f["dst_addr"], f["rows"])],
    ),
    Instruction(
        "CLUSTER", 11, "cluster",
        (
            _addr("src_addr", "token offset in act (rows x cols)"),
            _addr("codes_addr", "hash codes offset in vec (rows x 1)"),
            _addr("valid_addr", "validity offset in vec (rows x 1, 0 = padding)"),
            Field("has_valid", "uint", 1, "use the validity column"),
            _addr("ids_addr", "offset in vec of each token's table row (rows x 1)"),
            _dim("rows", "tokens of this chunk"), _dim("cols", "features"),
            Field("threshold", "f32", 32, "join a row when |x - c| <= threshold * |c|"),
            Field("first", "uint", 1, "the chunk starts a sequence (or block): begin an empty table"),
            _dram("spill", "DRAM address of table row `resident` (rows beyond the SRAM)"),
            _dim("resident", "table rows the unit's SRAM holds; later rows live at spill"),
            _dim("table_rows", "rows in the table before the chunk (cost: at most the tokens before it)"),
            _dim("scan", "table rows compared per token (cost: the nominal worst case)"),
            Field("window", "uint", 6, "compare a token with the rows its group opened last, at "
                  "most this many (0: every row of the group)"),
        ),
        "One chunk of leader clustering against the cluster unit's table, which persists from "
        "the earlier chunks of the same sequence (first=1 begins an empty one): in position "
        "order each token (from act) joins the nearest row of its group (same hash code and "
        "validity; padding never meets real tokens) within threshold * that row's norm, updating "
        "its running mean, else opens a row; with window > 0 only the `window` rows its group "
        "opened last are open (compared and updated). ids get each token's row; rows are "
        "numbered by their first token. Rows from `resident` on live in DRAM at `spill` (cols + "
        "3 fp32 values each); with a window they are only written (a row leaves the window "
        "before it leaves the chip: the open rows of every group stay on chip).",
        "rows * (ceil(scan * cols / cluster lanes) + ceil(cols / cluster lanes)) (the distances "
        "to the compared rows, packed into the lanes when a row is narrower than them, plus the "
        "update) + pipeline depth; rows beyond the SRAM stream from DRAM once per `candidates` "
        "tokens, overlapped (max(compute, bytes / bandwidth) + latency)",
        lambda f, hw: hw.vector_pipeline + _overlapped(
            f["rows"] * (_ceil(f["scan"] * f["cols"], hw.cluster_lanes) + _ceil(f["cols"], hw.cluster_lanes)),
            _cluster_spill_bytes(f, hw), hw),
        lambda f, hw: {
            "vector_ops": 3 * f["rows"] * (f["scan"] + 1) * f["cols"],
            "buffer_read": _rc(f) + 2 * f["rows"] + f["rows"] * f["scan"] * f["cols"],
            "buffer_write": f["rows"] + _rc(f),
            "dram_bytes": _cluster_spill_bytes(f, hw),
        },
        reads=lambda f: [(ACT_BUFFER, f["src_addr"], _rc(f)), (VEC_BUFFER, f["codes_addr"], f["rows"]),
                         *([(VEC_BUFFER, f["valid_addr"], f["rows"])] if f["has_valid"] else []), *_cluster_spill_region(f)],
        writes=lambda f: [(VEC_BUFFER, f["ids_addr"], f["rows"]), *_cluster_spill_region(f)],
    ),
    Instruction(
        "CLUSTER_READ", 18, "cluster",
        (
            _buf("dst", "centroid buffer"), _addr("dst_addr", "centroids offset (rows x cols)"),
            _addr("counts_addr", "offset in vec of the real-member counts (1 x rows)"),
            _dim("row0", "first table row"), _dim("rows", "table rows"), _dim("cols", "features"),
            _dram("spill", "DRAM address of table row `resident`"),
            _dim("resident", "table rows the unit's SRAM holds"),
        ),
        "Table rows [row0, row0 + rows) of the cluster unit: centroids (the running means, to "
        "storage precision) and counts of real members (0 for padding-only rows); rows no "
        "cluster uses read as zero. Rows from `resident` on come from DRAM at `spill`.",
        "ceil(rows * cols / cluster lanes) + pipeline depth, overlapped with the DRAM read of "
        "spilled rows (max(compute, bytes / bandwidth) + latency)",
        lambda f, hw: hw.vector_pipeline + _overlapped(
            _ceil(_rc(f), hw.cluster_lanes), _read_spilled(f) * cluster_row_elements(f["cols"]) * hw.element_bytes, hw),
        lambda f, hw: {
            "buffer_read": _rc(f), "buffer_write": _rc(f) + f["rows"],
            "dram_bytes": _read_spilled(f) * cluster_row_elements(f["cols"]) * hw.element_bytes,
        },
        reads=lambda f: _read_spill_region(f),
        writes=lambda f: [(f["dst"], f["dst_addr"], _rc(f)), (VEC_BUFFER, f["counts_addr"], f["rows"])],
    ),
    Instruction(
        "SCATTER_ADD", 12, "vector",
        (
            _buf("dst", "accumulated rows buffer"), _addr("dst_addr", "offset (dst_rows x cols)"),
            _buf("src", "source rows buffer"), _addr("src_addr", "offset (rows x cols)"),
            _buf("idx", "index buffer"), _addr("idx_addr", "offset (rows x 1)"),
            _dim("rows", "source rows"), _dim("cols", "columns"), _dim("dst_rows", "rows in dst"),
            Field("window", "uint", 1, "dst holds rows [base, base + dst_rows) only; other indices are skipped"),
            _addr("base", "first row dst holds (window=1)"),
        ),
        "dst[idx[r] - base, :] += src[r, :] (centroid accumulation); with window=1 rows whose "
        "index falls outside [base, base + dst_rows) are skipped.",
        "ceil(rows*cols / lanes) + pipeline depth",
        lambda f, hw: _vector_cycles(_rc(f), hw),
        lambda f, hw: {"vector_ops": _rc(f), "buffer_read": 2 * _rc(f), "buffer_write": _rc(f)},
        reads=lambda f: [(f["src"], f["src_addr"], _rc(f)), (f["idx"], f["idx_addr"], f["rows"]), (f["dst"], f["dst_addr"], f["dst_rows"] * f["cols"])],
        writes=lambda f: [(f["dst"], f["dst_addr"], f["dst_rows"] * f["cols"])],
    ),
    Instruction(
        "GATHER_BUF", 13, "vector",
        (
            _buf("dst", "destination buffer"), _addr("dst_addr", "offset (rows x cols)"),
            _buf("src", "table buffer"), _addr("src_addr", "offset (src_rows x cols)"),
            _buf("idx", "index buffer"), _addr("idx_addr", "offset (rows x 1)"),
            _dim("rows", "rows"), _dim("cols", "columns"), _dim("src_rows", "rows in the table"),
            Field("window", "uint", 1, "src holds table rows [base, base + src_rows) only; other rows of dst are kept"),
            _addr("base", "first table row src holds (window=1)"),
        ),
        "On-chip row gather: dst[r, :] = src[idx[r] - base, :] (recovery of per-token rows); with "
        "window=1 (one window of a table too large for a buffer) a row whose index falls outside "
        "[base, base + src_rows) keeps its value.",
        "ceil(rows*cols / lanes) + pipeline depth",
        lambda f, hw: _vector_cycles(_rc(f), hw),
        lambda f, hw: {"buffer_read": _rc(f) + f["rows"], "buffer_write": _rc(f)},
        reads=lambda f: [(f["src"], f["src_addr"], f["src_rows"] * f["cols"]), (f["idx"], f["idx_addr"], f["rows"]),
                         *([(f["dst"], f["dst_addr"], _rc(f))] if f["window"] else [])],
        writes=lambda f: [(f["dst"], f["dst_addr"], _rc(f))],
    ),
    Instruction(
        "ELSA_SELECT", 16, "vector",
        (
            _buf("dst", "mask buffer"), _addr("dst_addr", "additive mask offset (rows x cols)"),
            _buf("q", "query codes buffer"), _addr("q_addr", "query codes (rows x 1)"),
            _buf("k", "key codes buffer"), _addr("k_addr", "key codes (cols x 1)"),
            _buf("keys", "key validity buffer"), _addr("keys_addr", "key validity row (1 x cols)"),
            Field("has_keys", "uint", 1, "use the key validity row"),
            _dim("rows", "queries"), _dim("cols", "keys"), Field("bits", "uint", 6, "code bits"),
            Field("threshold", "f32", 32, "keep keys with cos(pi * hamming / bits) >= threshold"),
            Field("causal", "uint", 1, "row r sees columns j <= row0 + r + causal_offset"),
            Field("row0", "uint", 16, "query index of the tile's first row"),
            Field("causal_offset", "int", 16, "causal frontier offset"),
            Field("phase", "enum", 2, "whole tile, scan for the nearest distance, or select", ELSA_PHASES),
            Field("first", "uint", 1, "scan: the first key tile (the nearest distance starts at bits + 1)"),
            _addr("nearest_addr", "scan / select: (rows x 1) nearest visible Hamming distance, in vec"),
        ),
        "ELSA candidate selection: 0 where a key's hashed angle estimate passes (or it is the "
        "nearest visible key), -inf elsewhere. Over key tiles: phase scan keeps each row's nearest "
        "visible distance over the tiles, then phase select marks each tile's candidates with it.",
        "ceil(rows*cols / lanes) + pipeline depth",
        lambda f, hw: _vector_cycles(_rc(f), hw),
        lambda f, hw: {"vector_ops": 2 * _rc(f), "buffer_read": f["rows"] + f["cols"], "buffer_write": _rc(f) if f["phase"] != "scan" else f["rows"]},
        reads=lambda f: [
            (f["q"], f["q_addr"], f["rows"]), (f["k"], f["k_addr"], f["cols"]),
            *([(f["keys"], f["keys_addr"], f["cols"])] if f["has_keys"] else []),
            *([(VEC_BUFFER, f["nearest_addr"], f["rows"])] if f["phase"] == "select" or (f["phase"] == "scan" and not f["first"]) else []),
        ],
        writes=lambda f: [(VEC_BUFFER, f["nearest_addr"], f["rows"])] if f["phase"] == "scan" else [(f["dst"], f["dst_addr"], _rc(f))],
    ),
    Instruction(
        "TOPK", 19, "vector",
        (
            _buf("dst", "rank buffer"), _addr("dst_addr", "rank row offset (1 x cols)"),
            _buf("src", "scores buffer"), _addr("src_addr", "scores row offset (1 x cols)"),
            _addr("valid_addr", "validity row offset in vec (1 x cols, 0 = padding)"),
            Field("has_valid", "uint", 1, "use the validity row"),
            _dim("cols", "scores"), _dim("k", "columns to keep"),
        ),
        "Top-k flags of one row of scores: dst[j] = the rank 1..k of column j among the valid "
        "columns by descending score (ties: the lower column first), 0 for the rest (cta.keep_top: "
        "the keys kept out of clustering).",
        "[assumed] each lane keeps a sorted list of its k best, inserted by binary search: "
        "ceil(log2(k + 1)) passes of ceil(cols / lanes), then k merge steps across the lanes' "
        "lists, + pipeline depth",
        lambda f, hw: _vector_cycles(f["cols"], hw, max(1, math.ceil(math.log2(f["k"] + 1)))) + f["k"],
        lambda f, hw: {
            "vector_ops": f["cols"] * max(1, math.ceil(math.log2(f["k"] + 1))),
            "buffer_read": f["cols"] * (1 + f["has_valid"]),
            "buffer_write": f["cols"],
        },
        reads=lambda f: [(f["src"], f["src_addr"], f["cols"]), *([(VEC_BUFFER, f["valid_addr"], f["cols"])] if f["has_valid"] else [])],
        writes=lambda f: [(f["dst"], f["dst_addr"], f["cols"])],
    ),
    Instruction(
        "SYNC", 14, "control", (),
        "Barrier: waits until every unit has finished all earlier instructions.",
        "1 cycle after the last unit drains",
        lambda f, hw: 1,
        lambda f, hw: {},
    ),
    Instruction(
        "HALT", 15, "control", (),
        "End of program (waits for every unit).",
        "1 cycle after the last unit drains",
        lambda f, hw: 1,
        lambda f, hw: {},
    ),
)  # fmt: skip

BY_NAME: dict[str, Instruction] = {i.name: i for i in INSTRUCTIONS}
BY_OPCODE: dict[int, Instruction] = {i.opcode: i for i in INSTRUCTIONS}


def _validate_table() -> None:
    assert len(BY_NAME) == len(INSTRUCTIONS) and len(BY_OPCODE) == len(INSTRUCTIONS)
    for instruction in INSTRUCTIONS:
        assert instruction.unit in UNITS, instruction.name
        assert instruction.bits <= WORD_BITS, f"{instruction.name} needs {instruction.bits} bits"
        names = [f.name for f in instruction.fields]
        assert len(set(names)) == len(names), instruction.name
        for spec in instruction.fields:
            if spec.default is not None:
                spec.check(spec.default, instruction.name)


_validate_table()


def _unchecked_ints(spec: Field) -> tuple[int, int]:
    """The ints Field.check returns as they are, as (lowest, highest); (1, 0): none."""
    if spec.kind in _UNSIGNED_KINDS:
        return 0, (1 << spec.bits) - 1
    if spec.kind == "int":
        return -(1 << (spec.bits - 1)), (1 << (spec.bits - 1)) - 1
    return 1, 0


def _zero(spec: Field) -> int | float | str:
    """What the encoder writes for a field it is not given: the table's default, else zero (an
    enum its first choice)."""
    if spec.default is not None:
        return spec.default
    return spec.choices[0] if spec.kind == "enum" else 0


def with_defaults(name: str, fields: Mapping[str, int | float | str]) -> dict:
    """The fields as the encoder sees them: missing ones as `_zero` says."""
    return {spec.name: fields.get(spec.name, _zero(spec)) for spec in BY_NAME[name].fields}


def checked_fields(name: str, fields: Mapping[str, int | float | str]) -> dict:
    """The fields of one emission of `name`, in table order, with the table's defaults filled in.

    Raises FieldError naming the instruction and the field for an unknown instruction or field
    (a misspelt `emit("GEMM", trasnpose_b=1)` would otherwise encode as 0), a missing field the
    table gives no default, or a value out of the field's range. lower-to-isa checks every
    instruction it emits with this, so such a mistake fails at compile time, where it was made.
    """
    instruction = BY_NAME.get(name)
    if instruction is None:
        raise FieldError(f"unknown instruction '{name}'")
    known, checks = instruction.field_checks
    if not fields.keys() <= known:
        hints = []
        for key in [key for key in fields if key not in known]:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise FieldError(
            f"{name}: unknown field{'s' if len(hints) > 1 else ''} {', '.join(hints)}; "
            f"its fields are {', '.join(spec.name for spec in instruction.fields) or 'none'}"
        )
    # An in-range int (most fields of most instructions) needs no Field.check call:
    # lower-to-isa emits ~270,000 instructions for a GPT-2-small at 512 tokens.
    values: dict[str, int | float | str] = {}
    for field_name, default, low, high, spec in checks:
        value = fields.get(field_name, default)
        if not (type(value) is int and low <= value <= high):
            if value is None:
                raise FieldError(
                    f"{name}.{field_name}: missing (the ISA table gives it no default)"
                )
            spec.check(value, name)
        values[field_name] = value
    return values


def encode(name: str, fields: Mapping[str, int | float | str]) -> bytes:
    """One 32-byte instruction word. Missing fields are zero; unknown ones are an error."""
    instruction = BY_NAME[name]
    unknown = fields.keys() - {f.name for f in instruction.fields}
    if unknown:
        raise FieldError(f"{name}: unknown field(s) {sorted(unknown)}")
    word = instruction.opcode
    shift = OPCODE_BITS
    for spec in instruction.fields:
        word |= spec.check(fields.get(spec.name, _zero(spec)), name) << shift
        shift += spec.bits
    return word.to_bytes(WORD_BYTES, "little")


def decode(word: bytes) -> tuple[Instruction, dict[str, int | float | str]]:
    """Instruction and field values of one word; raises ValueError on anything malformed."""
    if len(word) != WORD_BYTES:
        raise ValueError(f"an instruction word is {WORD_BYTES} bytes, got {len(word)}")
    value = int.from_bytes(word, "little")
    opcode = value & ((1 << OPCODE_BITS) - 1)
    instruction = BY_OPCODE.get(opcode)
    if instruction is None:
        raise ValueError(f"unknown opcode {opcode}")
    fields: dict[str, int | float | str] = {}
    shift = OPCODE_BITS
    for spec in instruction.fields:
        fields[spec.name] = spec.decode((value >> shift) & ((1 << spec.bits) - 1))
        shift += spec.bits
    if value >> shift:
        raise ValueError(f"{instruction.name}: nonzero bits beyond its last field")
    return instruction, fields


def format_value(spec: Field, value: int | float | str) -> str:
    if spec.kind == "f32":
        return repr(float(value))
    if spec.kind in ("enum",):
        return str(value)
    return str(int(value))


def markdown_table() -> str:
    """docs/isa.md: every instruction with its unit, fields, semantics and cost formula."""
    lines = [
        "# CTA accelerator ISA",
        "",
        "Generated by `ctac isa --markdown` from runtime/isa.py; a test fails when this file differs.",
        "",
        f"Every instruction is one {WORD_BITS}-bit little-endian word: the opcode in bits 0-{OPCODE_BITS - 1}, "
        "then the fields below in order. Addresses are element offsets (buffers) or element "
        "addresses (DRAM); `buf` fields name a buffer by its index in the hardware config ("
        + ", ".join(f"{index} `{name}`" for index, name in enumerate(BUFFER_NAMES))
        + "). The compiler must give every field, except those with a default, which it may "
        "leave out (a feature switched off).",
        "",
        "| opcode | instruction | unit | bits | what it does | cycles |",
        "|---|---|---|---|---|---|",
    ]
    for instruction in INSTRUCTIONS:
        lines.append(
            f"| {instruction.opcode} | `{instruction.name}` | {instruction.unit} | {instruction.bits} "
            f"| {instruction.doc} | {instruction.cost_doc} |"
        )
    for instruction in INSTRUCTIONS:
        lines += ["", f"## {instruction.name}", "", instruction.doc, ""]
        if not instruction.fields:
            lines.append("No fields.")
            continue
        lines += ["| field | kind | bits | meaning |", "|---|---|---|---|"]
        for spec in instruction.fields:
            meaning = spec.doc + (f" ({', '.join(spec.choices)})" if spec.choices else "")
            if spec.default is not None:
                meaning += f"; default {format_value(spec, spec.default)}"
            lines.append(f"| `{spec.name}` | {spec.kind} | {spec.bits} | {meaning} |")
    lines += [
        "",
        "Vector operations (`VEC.op`): " + ", ".join(f"`{op}`" for op in VECTOR_OPS) + ".",
    ]
    return "\n".join(lines) + "\n"
