"""Functional model of the CTA accelerator: runs a decoded program with numpy.

Each instruction of runtime/isa.py has one function here (`SEMANTICS[name]`) that performs the
whole tile operation with bulk numpy array code, so a program runs near numpy speed. Timing is a
separate model (runtime/costmodel.py) over the same instruction stream.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ctac.blas import single_threaded_blas
from ctac.errors import CtacError
from ctac.runtime import isa
from ctac.runtime.program import Program
from ctac.runtime.reference import erf

Fields = dict


class Machine:
    """Buffers and DRAM as flat float32 arrays; addresses are element offsets."""

    def __init__(self, program: Program, capacities: Mapping[int, int]) -> None:
        self.program = program
        self.stats = ExecutionStats()
        self.index = 0
        self.buffers = {
            index: np.zeros(size, dtype=np.float32) for index, size in capacities.items()
        }
        # DRAM is the program's data segment (addresses [0, base), shared read-only, not copied:
        # copying hundreds of MB of weights dominated short runs) followed by a writable heap.
        # A write into the data segment first makes a private copy of the whole DRAM.
        # Only the DRAM that an instruction or symbol reaches is allocated: a header may declare
        # up to the ISA's 2**32 elements, which no program needs all of.
        data = np.asarray(program.data, dtype=np.float32).reshape(-1)
        self.base = min(len(data), program.dram_elements)
        self.data = data[: self.base].view()
        self.data.flags.writeable = False
        size = max(self.base, min(program.dram_elements, dram_reach(program)))
        outputs = sum(symbol.size for symbol in program.outputs)
        check_memory(
            4 * (size - self.base + outputs),
            f"the program's DRAM of {size} elements and its outputs",
        )
        try:
            self.heap = np.zeros(size - self.base, dtype=np.float32)
        except MemoryError:
            raise CtacError(
                f"the program's DRAM of {size} elements ({size * 4 / 2**30:.1f} GiB of float32) "
                "does not fit in this computer's memory"
            ) from None
        self.cluster_table = None  # the cluster unit's table (runtime/cluster_unit.py)

    @property
    def dram(self) -> np.ndarray:
        """The whole DRAM as one writable array (a private copy of the data segment on first use)."""
        self._merge()
        return self.heap

    def _merge(self) -> None:
        if self.base:
            whole = np.empty(len(self.data) + len(self.heap), dtype=np.float32)
            whole[: self.base] = self.data
            whole[self.base :] = self.heap
            self.heap, self.data, self.base = whole, whole[:0], 0

    def region(self, address: int, span: int, write: bool = False) -> tuple[np.ndarray, int]:
        """(array, offset) holding DRAM elements [address, address + span)."""
        if address >= self.base:
            return self.heap, address - self.base
        if write or address + span > self.base:
            self._merge()
            return self.heap, address
        return self.data, address

    def dram_tile(
        self, address: int, rows: int, cols: int, stride: int, write: bool = False
    ) -> np.ndarray:
        """A (rows, cols) view of DRAM with a row stride of `stride` elements."""
        span = (rows - 1) * stride + cols if rows > 0 and cols > 0 else 0
        array, offset = self.region(address, span, write)
        if stride == cols or rows == 1:
            return array[offset : offset + rows * cols].reshape(rows, cols)
        return np.lib.stride_tricks.as_strided(
            array[offset:], shape=(rows, cols), strides=(stride * 4, 4), writeable=write
        )

    def tile(self, buffer: int, address: int, rows: int, cols: int) -> np.ndarray:
        """A writable (rows, cols) view of a dense tile."""
        memory = self.buffers.get(buffer)
        if memory is None or address < 0 or rows < 0 or cols < 0:
            raise CtacError(f"buffer {buffer} tile at {address} ({rows} x {cols}) does not exist")
        if address + rows * cols > len(memory):
            raise CtacError(
                f"buffer {buffer} tile [{address}, {address + rows * cols}) exceeds its "
                f"{len(memory)} elements"
            )
        return memory[address : address + rows * cols].reshape(rows, cols)

    def broadcast(
        self, buffer: int, address: int, rows: int, cols: int, mode: str, imm: float = 0.0
    ) -> np.ndarray:
        if mode == "full":
            return self.tile(buffer, address, rows, cols)
        if mode == "row":
            return self.tile(buffer, address, 1, cols)
        if mode == "col":
            return self.tile(buffer, address, rows, 1)
        if mode == "scalar":
            return self.tile(buffer, address, 1, 1)
        return np.float32(imm)


def available_memory() -> int | None:
    """Bytes of memory the system can still give this process (Linux's MemAvailable), or None
    where that is not known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(needed: int, what: str) -> None:
    """A CtacError, before anything is allocated, if `needed` bytes exceed the memory available:
    a hostile header must not make the interpreter thrash or be killed."""
    available = available_memory()
    if available is not None and needed > available:
        raise CtacError(
            f"{what} need {needed / 2**30:.1f} GiB; this computer has "
            f"{available / 2**30:.1f} GiB available"
        )


def dram_reach(program: Program) -> int:
    """One past the highest DRAM element any instruction (at its nominal sizes), symbol or the
    data segment covers: the DRAM a run can touch."""
    reach = len(program.data)
    for symbol in program.symbols:
        reach = max(reach, symbol.address + symbol.size)
    for name, fields in program.instructions:
        spec = isa.BY_NAME[name]
        for where, start, size in spec.reads(fields) + spec.writes(fields):
            if where == "dram":
                reach = max(reach, start + max(size, 0))
    return reach


def _load(machine: Machine, f: Fields) -> None:
    rows, cols, stride = f["rows"], f["cols"], f["stride"]
    source = machine.dram_tile(f["src"], rows, cols, stride)
    machine.tile(f["dst"], f["dst_addr"], rows, cols)[...] = source


def _store(machine: Machine, f: Fields) -> None:
    rows, cols, stride = f["rows"], f["cols"], f["stride"]
    target = machine.dram_tile(f["dst"], rows, cols, stride, write=True)
    source_stride = f.get("src_stride") or cols
    if source_stride == cols or rows <= 1:
        target[...] = machine.tile(f["src"], f["src_addr"], rows, cols)
    else:
        block = machine.tile(f["src"], f["src_addr"], 1, (rows - 1) * source_stride + cols)[0]
        target[...] = np.lib.stride_tricks.as_strided(
            block, shape=(rows, cols), strides=(source_stride * 4, 4), writeable=False
        )


def _indices(values: np.ndarray, limit: int, what: str) -> np.ndarray:
    indices = values.astype(np.int64)
    indices = np.where(indices < 0, indices + limit, indices)
    if indices.size and (indices.min() < 0 or indices.max() >= limit):
        raise CtacError(
            f"{what}: an index is outside [0, {limit}) (token id beyond the vocabulary?)"
        )
    return indices


def _gather(machine: Machine, f: Fields) -> None:
    rows, cols = f["rows"], f["cols"]
    table = machine.dram_tile(f["table"], f["table_rows"], cols, cols)
    indices = _indices(
        machine.tile(f["idx"], f["idx_addr"], rows, 1)[:, 0], f["table_rows"], "GATHER"
    )
    machine.tile(f["dst"], f["dst_addr"], rows, cols)[...] = table[indices]


def _gemm(machine: Machine, f: Fields) -> None:
    m, k, n = f["m"], f["k"], f["n"]
    a = machine.tile(f["a"], f["a_addr"], m, k)
    b = (
        machine.tile(f["b"], f["b_addr"], n, k).T
        if f["transpose_b"]
        else machine.tile(f["b"], f["b_addr"], k, n)
    )
    out = machine.tile(f["dst"], f["dst_addr"], m, n)
    if not f["accumulate"]:
        if not np.shares_memory(out, a) and not np.shares_memory(out, b):
            np.matmul(a, b, out=out)
        else:
            out[...] = a @ b
        if f["has_bias"]:
            out += machine.tile(f["bias"], f["bias_addr"], 1, n)
        return
    result = a @ b
    if f["has_bias"]:
        result += machine.tile(f["bias"], f["bias_addr"], 1, n)
    out += result


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "max": np.maximum,
    "min": np.minimum,
    "pow": np.power,
    "eq": lambda a, b: (a == b).astype(np.float32),
    "lt": lambda a, b: (a < b).astype(np.float32),
    "le": lambda a, b: (a <= b).astype(np.float32),
    "gt": lambda a, b: (a > b).astype(np.float32),
    "ge": lambda a, b: (a >= b).astype(np.float32),
    "and": lambda a, b: ((a != 0) & (b != 0)).astype(np.float32),
    "or": lambda a, b: ((a != 0) | (b != 0)).astype(np.float32),
}
_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "not": lambda a: (a == 0).astype(np.float32),
    "neg": np.negative,
    "abs": np.abs,
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "rsqrt": lambda a: 1.0 / np.sqrt(a),
    "recip": lambda a: 1.0 / a,
    "erf": lambda a: erf(a),
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "tanh": np.tanh,
    "sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a)),
    "relu": lambda a: np.maximum(a, 0),
    "trunc": np.trunc,
    "round": np.round,  # halves to even (ONNX Round, QuantizeLinear)
    "nonzero": lambda a: (a != 0).astype(np.float32),
    "cumsum": lambda a: np.cumsum(a, axis=1),
}


def _vec(machine: Machine, f: Fields) -> None:
    rows, cols, op = f["rows"], f["cols"], f["op"]
    a = machine.tile(f["a"], f["a_addr"], rows, cols)
    with np.errstate(all="ignore"):
        if op == "copy":
            b = machine.broadcast(f["b"], f["b_addr"], rows, cols, f["bcast"], f["imm"])
            machine.tile(f["dst"], f["dst_addr"], rows, cols)[...] = b
            return
        if op == "transpose":
            result = a.T.copy()
            machine.tile(f["dst"], f["dst_addr"], cols, rows)[...] = result
            return
        if op in _UNARY:
            result = _UNARY[op](a.astype(np.float64) if op in ("erf", "gelu") else a)
        else:
            b = machine.broadcast(f["b"], f["b_addr"], rows, cols, f["bcast"], f["imm"])
            result = _BINARY[op](a, b)
    machine.tile(f["dst"], f["dst_addr"], rows, cols)[...] = result


def _select(machine: Machine, f: Fields) -> None:
    rows, cols = f["rows"], f["cols"]
    condition = machine.broadcast(f["cond"], f["cond_addr"], rows, cols, f["cond_bcast"])
    a = machine.broadcast(f["a"], f["a_addr"], rows, cols, f["a_bcast"])
    b = machine.broadcast(f["b"], f["b_addr"], rows, cols, f["b_bcast"])
    machine.tile(f["dst"], f["dst_addr"], rows, cols)[...] = np.where(condition != 0, a, b)


def _reduce(machine: Machine, f: Fields) -> None:
    source = machine.tile(f["src"], f["src_addr"], f["rows"], f["cols"])
    function = {"sum": np.sum, "max": np.max, "mean": np.mean, "min": np.min}[f["op"]]
    machine.tile(f["dst"], f["dst_addr"], f["rows"], 1)[:, 0] = function(source, axis=1)


def _layernorm(machine: Machine, f: Fields) -> None:
    rows, cols = f["rows"], f["cols"]
    x = machine.tile(f["src"], f["src_addr"], rows, cols).astype(np.float64)
    mean = x.mean(axis=1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=1, keepdims=True)
    y = (
        (x - mean)
        / np.sqrt(variance + f["eps"])
        * machine.tile(f["gamma"], f["gamma_addr"], 1, cols)
    )
    if f["has_beta"]:
        y = y + machine.tile(f["beta"], f["beta_addr"], 1, cols)
    machine.tile(f["dst"], f["dst_addr"], rows, cols)[...] = y


def _visible_scores(machine: Machine, f: Fields) -> tuple[np.ndarray, np.ndarray | None]:
    """SOFTMAX's scaled, softcapped, masked scores (-inf where a key is not visible) in float64,
    and the per-column count weights of compressed keys. SOFTMAX_ONLINE keeps its mask and
    counts in vec and folds the tile's first query into its causal offset."""
    rows, cols = f["rows"], f["cols"]
    if "state_addr" in f:
        f = {**f, "mask_buf": isa.VEC_BUFFER, "counts": isa.VEC_BUFFER, "row0": 0}
    scores = machine.tile(f["src"], f["src_addr"], rows, cols).astype(np.float64) * f["scale"]
    if f["softcap"] > 0:
        scores = f["softcap"] * np.tanh(scores / f["softcap"])
    visible = np.ones((rows, cols), dtype=bool)
    if f["mask"] == "keys":
        visible &= machine.tile(f["mask_buf"], f["mask_addr"], 1, cols) != 0
    elif f["mask"] == "additive":
        scores = scores + machine.tile(f["mask_buf"], f["mask_addr"], rows, cols)
    if f["causal"]:
        frontier = np.arange(rows)[:, None] + f["row0"] + f["causal_offset"]
        visible &= np.arange(cols)[None, :] <= frontier
    weights_per_column = None
    if f["has_counts"]:
        counts = machine.tile(f["counts"], f["counts_addr"], 1, cols)
        visible &= counts > 0
        weights_per_column = counts
    return np.where(visible, scores, -np.inf), weights_per_column


def _softmax(machine: Machine, f: Fields) -> None:
    rows, cols = f["rows"], f["cols"]
    scores, weights_per_column = _visible_scores(machine, f)
    peak = scores.max(axis=1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    weights = np.exp(scores - peak)
    if weights_per_column is not None:
        weights = weights * weights_per_column
    total = weights.sum(axis=1, keepdims=True)
    out = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    machine.tile(f["dst"], f["dst_addr"], rows, cols)[...] = out


def _softmax_online(machine: Machine, f: Fields) -> None:
    rows, cols = f["rows"], f["cols"]
    scores, weights_per_column = _visible_scores(machine, f)
    state = machine.tile(isa.VEC_BUFFER, f["state_addr"], 3, rows)  # max, sum, rescale columns
    if f["first"]:
        old_max, old_sum = np.full(rows, -np.inf), np.zeros(rows)
    else:
        old_max, old_sum = state[0].astype(np.float64), state[1].astype(np.float64)
    new_max = np.maximum(old_max, scores.max(axis=1, initial=-np.inf))
    pivot = np.where(np.isfinite(new_max), new_max, 0.0)
    weights = np.exp(scores - pivot[:, None])
    if weights_per_column is not None:
        weights = weights * weights_per_column
    rescale = np.where(np.isfinite(old_max), np.exp(old_max - pivot), 0.0)
    new_sum = old_sum * rescale + weights.sum(axis=1)
    if f["last"]:
        inverse = np.divide(1.0, new_sum, out=np.zeros_like(new_sum), where=new_sum > 0)
        weights = weights * inverse[:, None]
        rescale = rescale * inverse
    machine.tile(f["dst"], f["dst_addr"], rows, cols)[...] = weights
    state[0], state[1], state[2] = new_max, new_sum, rescale


def _hash(machine: Machine, f: Fields) -> None:
    rows, cols, bits = f["rows"], f["cols"], f["bits"]
    tokens = machine.tile(f["src"], f["src_addr"], rows, cols)
    projection = machine.tile(f["proj"], f["proj_addr"], cols, bits)
    signs = (tokens @ projection) > 0
    codes = (signs * (1 << np.arange(bits))).sum(axis=1)
    machine.tile(f["dst"], f["dst_addr"], rows, 1)[:, 0] = codes


def _spill(machine: Machine, f: Fields, rows: int) -> np.ndarray:
    """The DRAM words of `rows` table rows from `resident` on (the cluster table's overflow)."""
    size = rows * isa.cluster_row_elements(f["cols"])
    if f["spill"] + size > machine.base + len(machine.heap):
        raise CtacError(f"the cluster table's DRAM rows [{f['spill']}, +{size}) exceed DRAM")
    return (
        machine.dram_tile(f["spill"], 1, size, size, write=True)[0]
        if size
        else np.zeros(0, np.float32)
    )


def _cluster(machine: Machine, f: Fields) -> None:
    """One chunk against the cluster unit's table (runtime/cluster_unit.py); records the mean
    number of table rows each token was compared with (the size of its `scan` field)."""
    from ctac.runtime.cluster_unit import ClusterTable

    rows, cols = f["rows"], f["cols"]
    tokens = machine.tile(isa.ACT_BUFFER, f["src_addr"], rows, cols)
    codes = machine.tile(isa.VEC_BUFFER, f["codes_addr"], rows, 1)[:, 0]
    if not np.isfinite(codes).all() or np.abs(codes).max(initial=0) >= 2**53:
        raise CtacError("CLUSTER: a hash code is not an integer")
    valid = (
        machine.tile(isa.VEC_BUFFER, f["valid_addr"], rows, 1)[:, 0] != 0
        if f["has_valid"]
        else None
    )
    table = machine.cluster_table
    if f["first"] or table is None:
        if not f["first"]:
            raise CtacError("CLUSTER continues a table no CLUSTER with first=1 began")
        table = machine.cluster_table = ClusterTable(cols)
    elif table.cols != cols:
        raise CtacError(f"CLUSTER of {cols} features continues a table of {table.cols}")
    if table.used > f["table_rows"]:
        # the hardware's table is sized by table_rows + rows (at most 65,535, the decoder checks)
        raise CtacError(
            f"CLUSTER: the table already holds {table.used} rows, more than its table_rows "
            f"{f['table_rows']}"
        )
    resident = f["resident"]
    table.load_spilled(_spill(machine, f, max(0, table.used - resident)), 0, table.used, resident)
    ids, comparisons = table.cluster(
        tokens, codes.astype(np.int64), valid, f["threshold"], f["window"]
    )
    table.store_spilled(_spill(machine, f, max(0, table.used - resident)), 0, table.used, resident)
    machine.tile(isa.VEC_BUFFER, f["ids_addr"], rows, 1)[:, 0] = ids
    machine.stats.clusters[machine.index] = -(-comparisons // rows) if rows else 0


def _cluster_read(machine: Machine, f: Fields) -> None:
    """Rows of the cluster unit's table; records the rows the table uses (its clusters)."""
    table = machine.cluster_table
    if table is None or table.cols != f["cols"]:
        raise CtacError(f"CLUSTER_READ of {f['cols']} features: no such cluster table")
    row0, rows, resident = f["row0"], f["rows"], f["resident"]
    target = machine.tile(f["dst"], f["dst_addr"], rows, f["cols"])
    count_row = machine.tile(isa.VEC_BUFFER, f["counts_addr"], 1, rows)
    last = min(row0 + rows, table.used)
    if last > max(row0, resident):
        first = max(row0, resident)
        size = isa.cluster_row_elements(f["cols"])
        words = _spill(
            machine, {**f, "spill": f["spill"] + (first - resident) * size}, last - first
        )
        table.load_spilled(words, first, last, first)
    target[...], count_row[0] = table.read(row0, rows)
    machine.stats.clusters[machine.index] = table.used


def _window(
    machine: Machine, f: Fields, rows_field: str, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """(positions in the index column, table rows they select) of an indexed SCATTER_ADD or
    GATHER_BUF: every index must hit the table, or with window=1 only those that do count."""
    limit = f[rows_field]
    values = machine.tile(f["idx"], f["idx_addr"], f["rows"], 1)[:, 0]
    if not f.get("window"):
        return np.arange(f["rows"]), _indices(values, limit, what)
    if not np.isfinite(values).all():
        raise CtacError(f"{what}: an index is not a number")
    relative = values.astype(np.int64) - f["base"]
    inside = np.flatnonzero((relative >= 0) & (relative < limit))
    return inside, relative[inside]


def _scatter_add(machine: Machine, f: Fields) -> None:
    rows, cols = f["rows"], f["cols"]
    target = machine.tile(f["dst"], f["dst_addr"], f["dst_rows"], cols)
    source = machine.tile(f["src"], f["src_addr"], rows, cols)
    positions, indices = _window(machine, f, "dst_rows", "SCATTER_ADD")
    np.add.at(target, indices, source[positions])


def _gather_buf(machine: Machine, f: Fields) -> None:
    rows, cols = f["rows"], f["cols"]
    table = machine.tile(f["src"], f["src_addr"], f["src_rows"], cols)
    positions, indices = _window(machine, f, "src_rows", "GATHER_BUF")
    target = machine.tile(f["dst"], f["dst_addr"], rows, cols)
    if len(positions) == rows:
        target[...] = table[indices]
    else:
        target[positions] = table[indices]


def _elsa_select(machine: Machine, f: Fields) -> None:
    from ctac.runtime.elsa import popcount, select

    rows, cols = f["rows"], f["cols"]
    q_codes = machine.tile(f["q"], f["q_addr"], rows, 1)[:, 0].astype(np.int64)
    k_codes = machine.tile(f["k"], f["k_addr"], cols, 1)[:, 0].astype(np.int64)
    visible = np.ones((rows, cols), dtype=bool)
    if f["has_keys"]:
        visible &= machine.tile(f["keys"], f["keys_addr"], 1, cols) != 0
    if f["causal"]:
        frontier = np.arange(rows)[:, None] + f["row0"] + f["causal_offset"]
        visible &= np.arange(cols)[None, :] <= frontier
    phase = f.get("phase", "whole")
    if phase != "whole":
        nearest = machine.tile(isa.VEC_BUFFER, f["nearest_addr"], rows, 1)[:, 0]
        distance = popcount(np.bitwise_xor(q_codes[:, None], k_codes[None, :]))
        masked = np.where(visible, distance, f["bits"] + 1)
        if phase == "scan":
            start = f["bits"] + 1 if f["first"] else nearest.astype(np.int64)
            nearest[...] = np.minimum(start, masked.min(axis=1, initial=f["bits"] + 1))
            return
        chosen = visible & (
            (np.cos(np.pi * distance / f["bits"]) >= f["threshold"]) | (masked == nearest[:, None])
        )
    else:
        chosen = select(q_codes, k_codes, visible, f["bits"], f["threshold"])
    machine.tile(f["dst"], f["dst_addr"], rows, cols)[...] = np.where(chosen, 0.0, -np.inf)
    machine.stats.clusters[machine.index] = int(np.ceil(chosen.sum(axis=1).mean()))


def _topk(machine: Machine, f: Fields) -> None:
    """Ranks 1..k of the largest valid scores of one row (ties: the lower column), else 0."""
    cols, keep = f["cols"], f["k"]
    scores = machine.tile(f["src"], f["src_addr"], 1, cols)[0].astype(np.float64)
    valid = (
        machine.tile(isa.VEC_BUFFER, f["valid_addr"], 1, cols)[0] != 0
        if f["has_valid"]
        else np.ones(cols, dtype=bool)
    )
    if np.isnan(scores[valid]).any():
        raise CtacError("TOPK: a score is NaN")
    order = np.argsort(np.where(valid, -scores, np.inf), kind="stable")[:keep]
    order = order[valid[order]]
    rank = np.zeros(cols, dtype=np.float32)
    rank[order] = np.arange(1, len(order) + 1)
    machine.tile(f["dst"], f["dst_addr"], 1, cols)[0] = rank


SEMANTICS: dict[str, Callable[[Machine, Fields], None]] = {
    "LOAD": _load,
    "STORE": _store,
    "GATHER": _gather,
    "GEMM": _gemm,
    "VEC": _vec,
    "SELECT": _select,
    "REDUCE": _reduce,
    "LAYERNORM": _layernorm,
    "SOFTMAX": _softmax,
    "SOFTMAX_ONLINE": _softmax_online,
    "HASH": _hash,
    "CLUSTER": _cluster,
    "CLUSTER_READ": _cluster_read,
    "SCATTER_ADD": _scatter_add,
    "GATHER_BUF": _gather_buf,
    "ELSA_SELECT": _elsa_select,
    "TOPK": _topk,
    "SYNC": lambda machine, f: None,
    "HALT": lambda machine, f: None,
}
assert set(SEMANTICS) == set(isa.BY_NAME), "every instruction needs semantics"


@dataclass
class ExecutionStats:
    """What the data decided during a run, per instruction index (the cost model sizes the
    program's dynamic fields with it): for CLUSTER_READ the clusters its table holds, for CLUSTER
    the table rows each token was compared with (mean, rounded up), for ELSA_SELECT the
    candidates each query kept (mean, rounded up)."""

    clusters: dict[int, int] = field(default_factory=dict)


def run_program(
    program: Program,
    capacities: Mapping[int, int],
    inputs: Mapping[str, np.ndarray],
    progress: Callable[[int], object] | None = None,
    stats: ExecutionStats | None = None,
) -> tuple[dict[str, np.ndarray], ExecutionStats]:
    """Execute the whole program on named inputs; returns named outputs (in their dtypes) and
    the data-dependent statistics of the run."""
    with single_threaded_blas():
        return _run(program, capacities, inputs, progress, stats or ExecutionStats())


def _run(
    program: Program,
    capacities: Mapping[int, int],
    inputs: Mapping[str, np.ndarray],
    progress: Callable[[int], object] | None,
    stats: ExecutionStats,
) -> tuple[dict[str, np.ndarray], ExecutionStats]:
    machine = Machine(program, capacities)
    machine.stats = stats
    for symbol in program.inputs:
        if symbol.name not in inputs:
            raise CtacError(f"missing input '{symbol.name}' {symbol.dtype}{list(symbol.shape)}")
        array = np.asarray(inputs[symbol.name])
        if array.shape != symbol.shape:
            raise CtacError(
                f"input '{symbol.name}' has shape {array.shape}, the program expects {symbol.shape}"
            )
        machine.dram_tile(symbol.address, 1, symbol.size, symbol.size, write=True)[0] = (
            array.reshape(-1).astype(np.float32)
        )
    for index, (name, fields) in enumerate(program.instructions):
        machine.index = index
        try:
            SEMANTICS[name](machine, fields)
        except CtacError as exc:
            source = program.sources[index] if program.sources else ""
            raise CtacError(f"instruction {index} ({name}, {source}): {exc}") from None
        if progress is not None and index % 256 == 255:
            progress(256)
    outputs = {}
    for symbol in program.outputs:
        flat = machine.dram_tile(symbol.address, 1, symbol.size, symbol.size)[0]
        outputs[symbol.name] = flat.reshape(symbol.shape).astype(symbol.dtype)
    return outputs, stats
