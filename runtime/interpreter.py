"""Functional model of the CTA accelerator: runs a decoded program with numpy.

Each instruction of runtime/isa.py has one function in `SEMANTICS[name]` that performs the
whole tile operation with bulk numpy array code, so a program runs near numpy speed (the compute
instructions' kernels are in runtime/kernels.py). Timing is a separate model
(runtime/costmodel.py) over the same instruction stream.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ctac.blas import single_threaded_blas
from ctac.errors import CtacError
from ctac.runtime import fp16, isa, kernels
from ctac.runtime.data_segment import to_storage
from ctac.runtime.forwarding import forwarding_plan, widened_data
from ctac.runtime.lane_worker import run_in_worker
from ctac.runtime.lanes import chosen_plan, run_lanes
from ctac.runtime.program import Program, Symbol, storage_array

Fields = dict


# A program declaring at most this many DRAM elements past its data segment gets them all; one
# declaring more (up to the ISA's 2**32) gets only what its instructions and symbols reach.
ALWAYS_ALLOCATED_HEAP = 1 << 24  # 64 MB of float32
# A run keeps at most this many tile views (~200 bytes each; a BERT-base run uses 48).
MAX_KEPT_TILES = 1 << 16


class Machine:
    """Buffers and DRAM as flat arrays; addresses are element offsets. On-chip buffers are
    float32 (the machine computes and accumulates in fp32); DRAM holds the program's storage
    type (fp16 by default, ctac/hw.py): the data segment as stored, and every DMA store and
    float input rounded to it."""

    def __init__(
        self,
        program: Program,
        capacities: Mapping[int, int],
        widened: np.ndarray | None = None,
    ) -> None:
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
        # The data segment stays in its storage type (fp16: half the bytes of float32); loads
        # widen it to float32 as they copy into the buffers.
        self.element_type = program.element_type
        # Loads and stores convert with runtime/fp16.py's exact integer tricks, where this
        # process's floating point allows them (checked once per run).
        self.exact_tricks = self.element_type == "fp16" and fp16.tricks_hold()
        data = storage_array(program)
        self.base = min(len(data), program.dram_elements)
        self.data = data[: self.base].view()
        self.data.flags.writeable = False
        size = self.base + heap_elements(program)
        outputs = sum(symbol.size for symbol in program.outputs)
        check_memory(
            4 * (size - self.base + outputs),
            f"the program's DRAM of {size} elements and its outputs",
        )
        # The heap (inputs, intermediates, outputs) is float32 although it only ever holds
        # values of the storage type (stores and float inputs are rounded, see `stored`):
        # token-id inputs are integers the hardware would keep in an integer type, exact in
        # float32 below 2**24 (MAX_VOCAB) but in fp16 only up to 2048.
        try:
            self.heap = np.zeros(size - self.base, dtype=np.float32)
        except MemoryError:
            raise CtacError(
                f"the program's DRAM of {size} elements ({size * 4 / 2**30:.1f} GiB of float32) "
                "does not fit in this computer's memory"
            ) from None
        self.cluster_table = None  # the cluster unit's table (runtime/cluster_unit.py)
        # Load forwarding (runtime/forwarding.py): the LOADs that hand their GEMM readers a view
        # of DRAM instead of copying, and the views they handed out, by LOAD index. An fp16
        # data segment's views are of `widened`, its float32 copy, when there is one.
        self.plan = forwarding_plan(program)
        self.widened = widened
        self.forwarded: dict[int, np.ndarray] = {}
        # Views of the data segment the forwarded LOADs hand out: the same in every run of the
        # program (the segment and its widened copy never change), so made once.
        self.segment_views = _segment_views(program, widened)
        # This run's views of buffer tiles, by (buffer, address, rows, cols): a layer's tiles
        # recur in every layer, and a dict lookup costs a fifth of making the view.
        self.tiles: dict[tuple[int, int, int, int], np.ndarray] = {}
        self.scratch_arrays: dict = {}  # runtime/kernels.py's scratch

    def restart(self) -> None:
        """Ready this machine for another run of its program (runtime/lane_worker.py's second
        lane runs every run on one machine): buffers zeroed, the last run's forwarded views,
        cluster table and statistics dropped. DRAM is the caller's to write."""
        for memory in self.buffers.values():
            memory.fill(0)
        self.forwarded = {}
        self.cluster_table = None
        self.stats = ExecutionStats()
        self.index = 0

    def for_second_lane(self) -> Machine:
        """A machine for runtime/lanes.py's second lane: this one's DRAM, its own buffers (and
        the views and scratch arrays that are of them)."""
        second = copy.copy(self)
        second.buffers = {index: np.zeros_like(memory) for index, memory in self.buffers.items()}
        second.tiles = {}
        second.scratch_arrays = {}
        second.forwarded = {}
        return second

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
        return _tile_view(array, offset, rows, cols, stride, write)

    def forward(self, f: Fields) -> bool:
        """LOAD `f` without copying: record a float32 view of its DRAM tile for the GEMMs that
        read it (the plan says nothing else does). False where there is no float32 view (an fp16
        data segment without its widened copy): the LOAD copies."""
        source, rows, cols = f["src"], f["rows"], f["cols"]
        if source >= self.base:
            array, offset = self.heap, source - self.base
        elif self.data.dtype == np.float32:
            array, offset = self.data, source
        elif self.widened is not None:
            array, offset = self.widened, source
        else:
            return False
        self.tile(f["dst"], f["dst_addr"], rows, cols)  # the destination's checks
        if source < self.base:
            where = (source, rows, cols, f["stride"])
            kept = self.segment_views.get(self.index)
            if kept is not None and kept[0] == where:
                view = kept[1]
            else:
                view = _tile_view(array, offset, rows, cols, f["stride"], False)
                self.segment_views[self.index] = (where, view)
        else:
            view = _tile_view(array, offset, rows, cols, f["stride"], False)
        self.forwarded[self.index] = view
        return True

    def operand(self, which: str, buffer: int, address: int, rows: int, cols: int) -> np.ndarray:
        """GEMM operand `which` ("a" or "b"): the (rows, cols) buffer tile, or the view its LOAD
        forwarded."""
        loads = self.plan.operands.get(self.index)
        if loads is not None and which in loads:
            view = self.forwarded.get(loads[which])
            if view is not None:
                return view
        return self.tile(buffer, address, rows, cols)

    def stored(self, values: np.ndarray) -> np.ndarray:
        """`values` as DRAM holds them: rounded to the storage type (fp16 saturating at
        +-65504, to_storage); unchanged on an fp32 machine."""
        return to_storage(values, self.element_type)

    def write_input(self, symbol: Symbol, array: np.ndarray) -> None:
        """The host writes an input into DRAM: a float input in the storage type (rounded, as
        the host would convert it for an fp16 machine), an integer one (token ids) exactly."""
        flat = array.reshape(-1)
        values = self.stored(flat) if flat.dtype.kind == "f" else flat.astype(np.float32)
        self.dram_tile(symbol.address, 1, symbol.size, symbol.size, write=True)[0] = values

    def tile(self, buffer: int, address: int, rows: int, cols: int) -> np.ndarray:
        """A writable (rows, cols) view of a dense tile."""
        key = (buffer, address, rows, cols)
        view = self.tiles.get(key)
        if view is None:
            view = self._new_tile(buffer, address, rows, cols)
            if len(self.tiles) < MAX_KEPT_TILES:
                self.tiles[key] = view
        return view

    def _new_tile(self, buffer: int, address: int, rows: int, cols: int) -> np.ndarray:
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


def _segment_views(program: Program, widened: np.ndarray | None) -> dict:
    """The program's cache of forwarded views of its data segment (or of `widened`, its float32
    copy), by LOAD index: ((src, rows, cols, stride), view). Kept on the program for as long as
    that array is the one viewed."""
    viewed = widened if widened is not None else program.data
    key = (id(viewed), len(viewed), id(program.instructions))
    kept = getattr(program, "_segment_views", None)
    if kept is None or kept[0] != key or kept[1] is not viewed:
        kept = program._segment_views = (key, viewed, {})
    return kept[2]


def _tile_view(
    array: np.ndarray, offset: int, rows: int, cols: int, stride: int, write: bool
) -> np.ndarray:
    """The (rows, cols) tile of flat `array` from `offset`, rows `stride` elements apart."""
    if stride == cols or rows == 1:
        return array[offset : offset + rows * cols].reshape(rows, cols)
    if cols < stride and offset + rows * stride <= len(array):
        # the same view as as_strided below, built by slicing: 3x cheaper per tile
        return array[offset : offset + rows * stride].reshape(rows, stride)[:, :cols]
    width = array.itemsize  # the fp16 data segment or a float32 array
    return np.lib.stride_tricks.as_strided(
        array[offset:], shape=(rows, cols), strides=(stride * width, width), writeable=write
    )


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


def heap_elements(program: Program) -> int:
    """DRAM elements past the data segment a machine for the program holds."""
    base = min(len(program.data), program.dram_elements)
    size = program.dram_elements
    if size - base > ALWAYS_ALLOCATED_HEAP:  # walking the instructions costs ~1 us each
        size = max(base, min(size, dram_reach(program)))
    return size - base


def runs_on_two_lanes(program: Program) -> bool:
    """Whether run_program (lanes=None) runs the program on two lanes (runtime/lanes.py)."""
    return chosen_plan(program, forwarding_plan(program), heap_elements(program), None) is not None


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
    if machine.index in machine.plan.loads and machine.forward(f):
        return
    rows, cols, stride = f["rows"], f["cols"], f["stride"]
    source = machine.dram_tile(f["src"], rows, cols, stride)
    target = machine.tile(f["dst"], f["dst_addr"], rows, cols)
    if source.dtype == np.float16:  # the data segment of an fp16 machine
        fp16.widen_into(source, target, machine.exact_tricks)
    else:
        target[...] = source


def _store(machine: Machine, f: Fields) -> None:
    rows, cols, stride = f["rows"], f["cols"], f["stride"]
    target = machine.dram_tile(f["dst"], rows, cols, stride, write=True)
    source_stride = f.get("src_stride") or cols
    if source_stride == cols or rows <= 1:
        source = machine.tile(f["src"], f["src_addr"], rows, cols)
    else:
        block = machine.tile(f["src"], f["src_addr"], 1, (rows - 1) * source_stride + cols)[0]
        width = block.itemsize
        source = np.lib.stride_tricks.as_strided(
            block, shape=(rows, cols), strides=(source_stride * width, width), writeable=False
        )
    # DRAM holds the storage type: an fp16 machine's store rounds (fp32 accumulators -> fp16);
    # integers (exact=1: token ids cast to int32, indices) are kept exactly.
    if f.get("exact") or machine.element_type != "fp16":
        target[...] = source
    else:
        tricks = fp16.rounds_with_tricks(source, machine.exact_tricks)
        work = kernels.scratch(machine, (3, *source.shape), np.float32) if tricks else None
        mask = kernels.scratch(machine, source.shape, np.bool_) if tricks else None
        fp16.round_into(source, target, work, machine.exact_tricks, mask)


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


def _nothing(machine: Machine, f: Fields) -> None:
    """SYNC and HALT order the units; the functional model runs in program order anyway."""


def _hash(machine: Machine, f: Fields) -> None:
    rows, cols, bits = f["rows"], f["cols"], f["bits"]
    tokens = machine.tile(f["src"], f["src_addr"], rows, cols)
    projection = machine.tile(f["proj"], f["proj_addr"], cols, bits)
    signs = (tokens @ projection) > 0
    codes = (signs * (1 << np.arange(bits))).sum(axis=1)
    machine.tile(f["dst"], f["dst_addr"], rows, 1)[:, 0] = codes


def _spill(machine: Machine, f: Fields, rows: int, write: bool = True) -> np.ndarray:
    """The DRAM words of `rows` table rows from `resident` on (the cluster table's overflow);
    `write`: CLUSTER writes them back, CLUSTER_READ only reads (a read of the data segment
    must not make the machine copy its DRAM: two lanes would then hold two)."""
    size = rows * isa.cluster_row_elements(f["cols"])
    if f["spill"] + size > machine.base + len(machine.heap):
        raise CtacError(f"the cluster table's DRAM rows [{f['spill']}, +{size}) exceed DRAM")
    return (
        machine.dram_tile(f["spill"], 1, size, size, write=write)[0]
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
            machine, {**f, "spill": f["spill"] + (first - resident) * size}, last - first, False
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
    **kernels.KERNELS,
    "HASH": _hash,
    "CLUSTER": _cluster,
    "CLUSTER_READ": _cluster_read,
    "SCATTER_ADD": _scatter_add,
    "GATHER_BUF": _gather_buf,
    "ELSA_SELECT": _elsa_select,
    "TOPK": _topk,
    "SYNC": _nothing,
    "HALT": _nothing,
}
assert set(SEMANTICS) == set(isa.BY_NAME), "every instruction needs semantics"


@dataclass
class ExecutionStats:
    """What the data decided during a run, per instruction index (the cost model sizes the
    program's dynamic fields with it): for CLUSTER_READ the clusters its table holds, for CLUSTER
    the table rows each token was compared with (mean, rounded up), for ELSA_SELECT the
    candidates each query kept (mean, rounded up)."""

    clusters: dict[int, int] = field(default_factory=dict)


def _step(machine: Machine, index: int) -> None:
    """Run instruction `index`; its errors name it and the op it came from."""
    name, fields = machine.program.instructions[index]
    machine.index = index
    try:
        SEMANTICS[name](machine, fields)
    except CtacError as exc:
        sources = machine.program.sources
        raise CtacError(
            f"instruction {index} ({name}, {sources[index] if sources else ''}): {exc}"
        ) from None


def run_program(
    program: Program,
    capacities: Mapping[int, int],
    inputs: Mapping[str, np.ndarray],
    progress: Callable[[int], object] | None = None,
    stats: ExecutionStats | None = None,
    keep_widened: bool = False,
    lanes: bool | None = None,
) -> tuple[dict[str, np.ndarray], ExecutionStats]:
    """Execute the whole program on named inputs; returns named outputs (in their dtypes) and
    the data-dependent statistics of the run. `keep_widened`: the program will run again, so
    widen its fp16 data segment to float32 once and keep it (runtime/forwarding.py's
    widened_data: twice the segment's memory, for runs whose weight loads copy nothing).
    `lanes`: run on two threads (runtime/lanes.py; the same outputs and errors): None where the
    program is long enough to gain and two cores are free to run it, True wherever the program
    allows it, False never."""
    widened = None
    if keep_widened and program.element_type == "fp16":
        widened = widened_data(program, available_memory)
    with single_threaded_blas():
        return _run(
            program, capacities, inputs, progress, stats or ExecutionStats(), widened, lanes
        )


def _run(
    program: Program,
    capacities: Mapping[int, int],
    inputs: Mapping[str, np.ndarray],
    progress: Callable[[int], object] | None,
    stats: ExecutionStats,
    widened: np.ndarray | None,
    lanes: bool | None,
) -> tuple[dict[str, np.ndarray], ExecutionStats]:
    machine = Machine(program, capacities, widened)
    machine.stats = stats
    for symbol in program.inputs:
        if symbol.name not in inputs:
            raise CtacError(f"missing input '{symbol.name}' {symbol.dtype}{list(symbol.shape)}")
        array = np.asarray(inputs[symbol.name])
        if array.shape != symbol.shape:
            raise CtacError(
                f"input '{symbol.name}' has shape {array.shape}, the program expects {symbol.shape}"
            )
        machine.write_input(symbol, array)
    plan = chosen_plan(program, machine.plan, len(machine.heap), lanes)
    if plan is not None:
        if not run_in_worker(machine, plan, _step, progress):
            run_lanes(machine, plan, _step, progress)
    else:
        for index in range(len(program.instructions)):
            _step(machine, index)
            if progress is not None and index % 256 == 255:
                progress(256)
    outputs = {}
    for symbol in program.outputs:
        flat = machine.dram_tile(symbol.address, 1, symbol.size, symbol.size)[0]
        outputs[symbol.name] = flat.reshape(symbol.shape).astype(symbol.dtype)
    return outputs, stats
