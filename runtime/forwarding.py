"""Load forwarding: LOADs whose tile the interpreter need not copy into its buffer.

Most of an exact run's LOADs fill a GEMM operand tile (a weight tile, a tile of activations)
that nothing but GEMMs reads before it is overwritten. Copying it costs a pass over the tile (and
for an fp16 data segment a widening); forwarding hands the GEMM a view of DRAM instead. The
values are the same, so outputs are bit for bit those of the copying machine: a view is taken only
where the program order guarantees it shows what the copy would hold (`forwarding_plan`).

An fp16 data segment has no float32 view to hand out: `widened_data` widens it once per program
and keeps it for the program's later runs, as onnxruntime's session prepacks its weights once.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ctac.runtime import fp16, isa
from ctac.runtime.program import Program, storage_array


@dataclass(frozen=True)
class ForwardingPlan:
    """`loads`: the LOAD indices that may hand out a view instead of copying. `operands`: per
    GEMM index, {"a" or "b": the LOAD index whose tile it reads as that operand}."""

    loads: frozenset[int]
    operands: dict[int, dict[str, int]]


@dataclass
class _Candidate:
    """A LOAD's tile while it may still be read: where it lives and who reads it."""

    load: int
    buffer: int
    start: int
    end: int
    dram_start: int
    dram_end: int
    shape: tuple[int, int]
    dense: bool  # its rows adjacent in DRAM (else a column block: rows `stride` apart)
    readers: list[tuple[int, str]]
    forwardable: bool = True
    stale: bool = False  # its DRAM source was written since: a view would show the new values


def _operand_shapes(name: str, fields: dict) -> tuple[tuple[int, int], ...]:
    """The (rows, cols) of the reads a view may stand in for: GEMM's a and b tiles, its first
    two reads in runtime/isa.py (its accumulator and bias reads need the buffer)."""
    if name != "GEMM":
        return ()
    m, k, n = fields["m"], fields["k"], fields["n"]
    return ((m, k), (n, k) if fields["transpose_b"] else (k, n))


def _plan(program: Program) -> ForwardingPlan:
    base = min(len(program.data), program.dram_elements)
    live: dict[int, list[_Candidate]] = {}  # by buffer
    loads: set[int] = set()
    operands: dict[int, dict[str, int]] = {}

    def settle(candidate: _Candidate) -> None:
        live[candidate.buffer].remove(candidate)
        if candidate.forwardable and candidate.readers:
            loads.add(candidate.load)
            for reader, operand in candidate.readers:
                operands.setdefault(reader, {})[operand] = candidate.load

    for index, (name, fields) in enumerate(program.instructions):
        spec = isa.BY_NAME[name]
        reads, writes = spec.reads(fields), spec.writes(fields)
        if any(live.values()):
            operand_shapes = _operand_shapes(name, fields)
            # numpy's matmul picks its routine by the operands' layout; a view must get the one
            # the dense buffer tile gets (the same bits). A column-block view of a GEMM with a
            # dimension of 1 takes a matrix-vector routine the dense tile does not (different
            # sums; found by review).
            matrices = name == "GEMM" and min(fields["m"], fields["k"], fields["n"]) > 1
            viewed: dict[int, _Candidate] = {}
            for position, (where, start, size) in enumerate(reads):
                if where == "dram":
                    continue
                for candidate in live.get(where, ()):
                    if start < candidate.end and start + size > candidate.start:
                        if (
                            not candidate.stale
                            and position < len(operand_shapes)
                            and (start, start + size) == (candidate.start, candidate.end)
                            and operand_shapes[position] == candidate.shape
                            and (candidate.dense or matrices)
                        ):
                            candidate.readers.append((index, "ab"[position]))
                            viewed[position] = candidate
                        else:  # another reader needs the tile in the buffer
                            candidate.forwardable = False
            if len(viewed) == 2 and viewed[0] is not viewed[1]:
                a, b = viewed[0], viewed[1]
                if a.dram_start < b.dram_end and b.dram_start < a.dram_end:
                    # views of one DRAM tile as a and b: with b transposed numpy's matmul takes
                    # its A @ A.T routine (syrk), not the general one two buffer tiles get
                    a.forwardable = b.forwardable = False
            for where, start, size in writes:
                if where == "dram":
                    for candidate in (c for cs in live.values() for c in cs):
                        if start < candidate.dram_end and start + size > candidate.dram_start:
                            candidate.stale = True
                    continue
                for candidate in list(live.get(where, ())):
                    if start < candidate.end and start + size > candidate.start:
                        if not (start <= candidate.start and start + size >= candidate.end):
                            # the rest of the tile stays in the buffer for later readers
                            candidate.forwardable = False
                        settle(candidate)
        if name == "LOAD":
            ((_, source, span),) = reads
            rows, cols = fields["rows"], fields["cols"]
            end = source + span
            dense = fields["stride"] == cols or rows == 1
            # a tile wholly in the data segment or wholly in the heap (one array to view), with
            # rows that do not overlap (stride 0 or < cols: numpy's matmul cannot hand such a
            # view to BLAS and sums in another order)
            if (
                rows > 0
                and cols > 0
                and (dense or fields["stride"] > cols)
                and (end <= base or source >= base)
            ):
                start = fields["dst_addr"]
                live.setdefault(fields["dst"], []).append(
                    _Candidate(
                        index,
                        fields["dst"],
                        start,
                        start + rows * cols,
                        source,
                        end,
                        (rows, cols),
                        dense,
                        [],
                    )
                )
    for candidates in list(live.values()):
        for candidate in list(candidates):
            settle(candidate)  # read to the end of the program: the buffers are not outputs
    return ForwardingPlan(frozenset(loads), operands)


def forwarding_plan(program: Program) -> ForwardingPlan:
    """The program's plan, made once (~20 ms for BERT-base's 8,449 instructions) and kept on
    the program: programs are not changed once they run."""
    instructions = program.instructions
    key = (id(instructions), len(instructions), len(program.data), program.dram_elements)
    cached = getattr(program, "_forwarding", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    plan = _plan(program)
    program._forwarding = (key, plan)
    return plan


# The program whose widened data segment is kept (on the program, so it goes with it): one
# program's at a time, so a process holding many programs holds at most one widened copy between
# runs. Two programs run in turn widen on every run.
_widened_lock = threading.Lock()
_widened_program: weakref.ref | None = None
_WIDEN_CHUNK = 1 << 20


def widened_data(
    program: Program, available_memory: Callable[[], int | None] = lambda: None
) -> np.ndarray | None:
    """The program's fp16 data segment as float32 (exactly: widening loses nothing), made on its
    first call and kept while the program lives or until another program's is asked for. None,
    and nothing kept, where making it would take more than half of `available_memory()` bytes
    (asked only when it is to be made: a kept copy costs a run nothing)."""
    global _widened_program
    key = (id(program.data), len(program.data), program.element_type)
    with _widened_lock:
        kept = getattr(program, "_widened", None)
        if kept is not None and kept[0] == key:
            return kept[1]
        available = available_memory()
        if available is not None and 4 * len(program.data) >= available // 2:
            return None  # the loads widen as they copy
        previous = _widened_program() if _widened_program is not None else None
        if previous is not None:
            previous._widened = None  # free the last one before making this one
        data = storage_array(program)
        wide = np.empty(len(data), dtype=np.float32)
        tricks = fp16.tricks_hold()
        for start in range(0, len(data), _WIDEN_CHUNK):
            part = slice(start, start + _WIDEN_CHUNK)
            fp16.widen_into(data[part], wide[part], tricks)
        wide.flags.writeable = False
        program._widened = (key, wide)
        _widened_program = weakref.ref(program)
        return wide
