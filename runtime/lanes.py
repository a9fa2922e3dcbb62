"""Two-lane execution: the interpreter runs a program on two lanes, and its outputs and errors
are bit for bit those of running it in order. This module makes the plan and runs it on two
threads (`run_lanes`); on Linux runtime/lane_worker.py runs the same plan with the second lane in
a worker process, which spares the lanes the GIL, and falls back to the threads.

numpy releases the GIL while it multiplies (and during its larger elementwise loops), so two
threads that each run a share of a program's tile chains use two cores. The hardware does the
same with its units; here the split is only the interpreter's, and what the machine computes does
not change: every instruction reads exactly the values it reads in order.

The split (`lane_plan`, made once per program):
- A *chain* is the set of instructions joined by buffer data flow: an instruction that reads a
  buffer element belongs to the chain of the element's last writer. A LOAD joins no chain: it
  only copies DRAM, so every lane whose chains read its tile runs it.
- Each lane has its own buffers. Every buffer element an instruction reads was last written, in
  program order, by an instruction of its own lane (or a LOAD it runs too), so its lane's buffer
  holds what the in-order machine's held.
- DRAM is shared. Before an instruction runs, the other lane must have finished every earlier
  instruction whose DRAM access conflicts with its own (read after write, write after read,
  write after write), tracked per block of DRAM elements with the DMA's exact row strides (the
  column tiles of one matrix do not conflict).
- The cluster unit's table is one state: its instructions form one chain.
- Chains go to lanes in program order: a chain whose first LOAD reads what a lane wrote goes to
  that lane (no wait), unless that lane is ahead in work by more than `_BUDGET`; any other to the
  lane with less work.

Errors: a lane stops at its first error and the other at the first instruction past it; the run
raises the error of the lowest instruction index, the one the in-order run raises (an
instruction's error depends only on its inputs, which are the in-order run's). What the other
lane recorded past that index (statistics) is dropped, and progress counts only the instructions
finished in program order, so a failed run also leaves what the in-order run leaves.
"""

from __future__ import annotations

import bisect
import contextvars
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ctac.errors import CtacError
from ctac.runtime import isa
from ctac.runtime.forwarding import ForwardingPlan
from ctac.runtime.program import Program

# Estimated interpreter seconds per instruction, for balancing the lanes only: a GEMM at
# numpy's BLAS speed (~90 GFLOP/s on one core), anything else a dispatch plus a pass per element.
_GEMM_FLOPS_PER_SECOND = 9e10
_DISPATCH_SECONDS = 4e-6
_ELEMENT_SECONDS = 2e-9
# A chain follows the data it reads unless its lane is this far ahead in estimated work.
_BUDGET = 1e-3
# Programs whose estimated work is below this run in order: two threads cost ~0.1 ms to start
# and each wait for the other lane ~0.05 ms on a virtual machine.
MIN_WORK_SECONDS = 5e-3
# The DRAM conflict table has at most this many blocks (16 MB of int32 per lane and kind); the
# blocks grow with the heap from 16 elements.
_MAX_BLOCKS = 1 << 20


@dataclass(frozen=True)
class LanePlan:
    """Per lane, in program order: the instruction indices it runs, and for each the index of the
    other lane's last instruction that must be done first (-1: none). `shared`: the instructions
    both lanes run (LOADs). `work`: each lane's estimated seconds."""

    orders: tuple[tuple[int, ...], tuple[int, ...]]
    waits: tuple[tuple[int, ...], tuple[int, ...]]
    shared: frozenset[int]
    work: tuple[float, float]


class _LastWriters:
    """One buffer's elements as disjoint intervals [start, end), each with its last writer."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.writers: list[int] = []

    def read(self, start: int, end: int) -> list[int]:
        index = bisect.bisect_right(self.ends, start)
        found = []
        while index < len(self.starts) and self.starts[index] < end:
            found.append(self.writers[index])
            index += 1
        return found

    def write(self, start: int, end: int, writer: int) -> None:
        first = bisect.bisect_right(self.ends, start)
        last = first
        starts, ends, writers = [], [], []
        while last < len(self.starts) and self.starts[last] < end:
            if self.starts[last] < start:  # the part before the write stays
                starts.append(self.starts[last])
                ends.append(start)
                writers.append(self.writers[last])
            last += 1
        starts.append(start)
        ends.append(end)
        writers.append(writer)
        if last > first and self.ends[last - 1] > end:  # the part after it stays
            starts.append(end)
            ends.append(self.ends[last - 1])
            writers.append(self.writers[last - 1])
        self.starts[first:last] = starts
        self.ends[first:last] = ends
        self.writers[first:last] = writers


def _work(name: str, fields: dict) -> float:
    if name == "GEMM":
        flops = 2 * fields["m"] * fields["k"] * fields["n"]
        return _DISPATCH_SECONDS + flops / _GEMM_FLOPS_PER_SECOND
    return _DISPATCH_SECONDS + _ELEMENT_SECONDS * fields.get("rows", 1) * fields.get("cols", 1)


def _chains(program: Program) -> tuple[list[int], dict[int, list[int]]]:
    """(per instruction its chain's first instruction (LOADs: themselves), per LOAD the
    instructions that read its tile)."""
    count = len(program.instructions)
    parent = list(range(count))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    writers: dict[int, _LastWriters] = {}
    readers: dict[int, list[int]] = {}
    cluster_unit = None
    for index, (name, fields) in enumerate(program.instructions):
        spec = isa.BY_NAME[name]
        if spec.unit == "cluster":  # the cluster table: one state for all of them
            if cluster_unit is None:
                cluster_unit = index
            else:
                parent[root(index)] = root(cluster_unit)
        for where, start, size in spec.reads(fields):
            if where == "dram" or size <= 0 or where not in writers:
                continue
            for writer in writers[where].read(start, start + size):
                if program.instructions[writer][0] == "LOAD":
                    readers.setdefault(writer, []).append(index)
                else:
                    a, b = root(index), root(writer)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
        for where, start, size in spec.writes(fields):
            if where != "dram" and size > 0:
                writers.setdefault(where, _LastWriters()).write(start, start + size, index)
    return [root(index) for index in range(count)], readers


def _dram_tiles(
    name: str, fields: dict
) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int, int, int]]]:
    """The instruction's own DRAM reads and writes as (start, rows, cols, stride) tiles: the
    DMA's rows as they are, anything else one row."""
    spec = isa.BY_NAME[name]
    reads = [(start, 1, size, size) for where, start, size in spec.reads(fields) if where == "dram"]
    writes = [
        (start, 1, size, size) for where, start, size in spec.writes(fields) if where == "dram"
    ]
    if name in ("LOAD", "STORE") and fields["rows"] > 1 and fields["stride"] > fields["cols"]:
        tile = (fields["src" if name == "LOAD" else "dst"], fields["rows"], fields["cols"])
        (reads if name == "LOAD" else writes)[0] = (*tile, fields["stride"])
    return reads, writes


class _DramTable:
    """Per lane and DRAM block of the heap: the last instruction that read it and that wrote
    it."""

    def __init__(self, base: int, heap: int) -> None:
        self.base = base
        self.block = 16
        while heap // self.block > _MAX_BLOCKS:
            self.block *= 2
        blocks = heap // self.block + 2
        self.last = {
            (lane, kind): np.full(blocks, -1, np.int32) for lane in (0, 1) for kind in "rw"
        }
        self.limit = blocks - 1
        self.known: dict[tuple[int, int, int, int], slice | np.ndarray | None] = {}

    def blocks(self, tile: tuple[int, int, int, int]) -> slice | np.ndarray | None:
        """The heap blocks a tile touches (None: none, it is in the data segment)."""
        known = self.known.get(tile, False)
        if known is False:
            known = self.known[tile] = self._blocks(*tile)
        return known

    def _blocks(self, start: int, rows: int, cols: int, stride: int) -> slice | np.ndarray | None:
        if rows <= 0 or cols <= 0:
            return None
        span = (rows - 1) * stride + cols
        if start + span <= self.base:
            return None
        offset = max(start - self.base, 0)
        block = self.block
        if rows == 1 or stride <= cols:
            first = min(offset // block, self.limit)
            return slice(first, min((offset + span - 1) // block, self.limit) + 1)
        row_starts = offset + stride * np.arange(rows, dtype=np.int64)
        firsts = row_starts // block
        lasts = (row_starts + cols - 1) // block
        width = int((lasts - firsts).max()) + 1
        spread = firsts[:, None] + np.arange(width)
        return np.minimum(np.minimum(spread, lasts[:, None]), self.limit).ravel()

    def conflict(self, lane: int, reads: list, writes: list) -> int:
        """The other lane's last instruction this access must wait for (-1: none)."""
        other = 1 - lane
        need = -1
        for blocks in reads:
            need = max(need, int(self.last[other, "w"][blocks].max()))
        for blocks in writes:
            need = max(
                need,
                int(self.last[other, "w"][blocks].max()),
                int(self.last[other, "r"][blocks].max()),
            )
        return need

    def record(self, lane: int, index: int, reads: list, writes: list) -> None:
        for blocks in reads:
            self.last[lane, "r"][blocks] = index
        for blocks in writes:
            self.last[lane, "w"][blocks] = index

    def last_writer(self, blocks_list: list) -> int | None:
        """The lane that last wrote any of these blocks (None: neither did)."""
        latest = [-1, -1]
        for blocks in blocks_list:
            for lane in (0, 1):
                latest[lane] = max(latest[lane], int(self.last[lane, "w"][blocks].max()))
        if latest == [-1, -1]:
            return None
        return 0 if latest[0] > latest[1] else 1


def _plan(program: Program, forwarding: ForwardingPlan, heap: int) -> LanePlan | None:
    base = min(len(program.data), program.dram_elements)
    table = _DramTable(base, heap)
    accesses = []  # per instruction: the heap blocks it reads, and those it writes
    load_reads: dict[int, list] = {}
    for index, (name, fields) in enumerate(program.instructions):
        reads, writes = _dram_tiles(name, fields)
        for start, rows, cols, stride in reads + writes:
            span = (rows - 1) * stride + cols if rows > 0 and cols > 0 else 0
            if span and start < base < start + span:
                return None  # the machine would copy the whole DRAM mid-run
        for start, rows, cols, _ in writes:
            if rows > 0 and cols > 0 and start < base:
                return None
        if name == "LOAD":
            load_reads[index] = reads
        for load in forwarding.operands.get(index, {}).values():
            reads = reads + load_reads[load]  # read through the view, at the GEMM
        accesses.append(
            (
                [b for b in map(table.blocks, reads) if b is not None],
                [b for b in map(table.blocks, writes) if b is not None],
            )
        )
    chains, readers = _chains(program)
    lane_of_chain: dict[int, int] = {}
    work = [0.0, 0.0]
    orders: tuple[list[int], list[int]] = ([], [])
    waits: tuple[list[int], list[int]] = ([], [])

    def assign(chain: int, preferred: int | None) -> int:
        lane = lane_of_chain.get(chain)
        if lane is None:
            lighter = 0 if work[0] <= work[1] else 1
            if preferred is not None and work[preferred] - work[1 - preferred] <= _BUDGET:
                lighter = preferred
            lane = lane_of_chain[chain] = lighter
        return lane

    for index, (name, fields) in enumerate(program.instructions):
        read_blocks, write_blocks = accesses[index]
        if name == "LOAD":
            reader_chains = {chains[reader] for reader in readers.get(index, ())}
            preferred = None
            if read_blocks and not reader_chains <= lane_of_chain.keys():
                preferred = table.last_writer(read_blocks)
            lanes = sorted({assign(chain, preferred) for chain in reader_chains}) or [0]
        else:
            lanes = [assign(chains[index], None)]
        cost = _work(name, fields)
        for lane in lanes:
            waits[lane].append(
                table.conflict(lane, read_blocks, write_blocks)
                if read_blocks or write_blocks
                else -1
            )
            orders[lane].append(index)
            work[lane] += cost
        if read_blocks or write_blocks:
            for lane in lanes:
                table.record(lane, index, read_blocks, write_blocks)
    return LanePlan(
        (tuple(orders[0]), tuple(orders[1])),
        (tuple(waits[0]), tuple(waits[1])),
        frozenset(orders[0]) & frozenset(orders[1]),
        (work[0], work[1]),
    )


def lane_plan(program: Program, forwarding: ForwardingPlan, heap: int) -> LanePlan | None:
    """The program's two lanes (None: it must run in order), made once and kept on the program
    (~0.1 s for BERT-base's 8,449 instructions). `heap`: the DRAM elements past the data segment
    the machine holds."""
    instructions = program.instructions
    key = (id(instructions), len(instructions), len(program.data), program.dram_elements, heap)
    cached = getattr(program, "_lanes", None)
    if cached is not None and cached[0] == key and cached[1] is forwarding:
        return cached[2]
    plan = _plan(program, forwarding, heap)
    program._lanes = (key, forwarding, plan)
    return plan


def threads() -> int:
    """Lanes (threads, or a worker process) a run may use: $CTAC_THREADS where set (a sweep's
    workers set 1: they already run a point per core), else the CPU cores this process may run
    on."""
    setting = os.environ.get("CTAC_THREADS", "").strip()
    if setting:
        if not setting.isdigit() or int(setting) < 1:
            raise CtacError(
                f"CTAC_THREADS={setting!r}: expected a positive number of threads (1 runs every "
                "program on one thread)"
            )
        return int(setting)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worth_two_lanes(plan: LanePlan | None) -> bool:
    """Two threads pay for themselves: enough work, split evenly enough, and two threads
    allowed (`threads`)."""
    if plan is None or min(plan.work) < 0.2 * max(plan.work):
        return False
    return sum(plan.work) >= MIN_WORK_SECONDS and threads() >= 2


def _estimated_work(program: Program) -> float:
    """Estimated seconds of the whole program in order (`_work`), kept on the program."""
    key = (id(program.instructions), len(program.instructions))
    cached = getattr(program, "_estimated_work", None)
    if cached is None or cached[0] != key:
        cached = program._estimated_work = (
            key,
            sum(_work(name, fields) for name, fields in program.instructions),
        )
    return cached[1]


def chosen_plan(
    program: Program, forwarding: ForwardingPlan, heap: int, lanes: bool | None
) -> LanePlan | None:
    """The plan to run on two lanes, or None to run in order. `lanes`: False never; True
    wherever the plan allows; None where it pays (worth_two_lanes). The plan is made only
    where it may be used: a short program or one thread allowed is decided without it."""
    if lanes is False:
        return None
    if lanes is None and (_estimated_work(program) < MIN_WORK_SECONDS or threads() < 2):
        return None
    plan = lane_plan(program, forwarding, heap)
    if lanes is None and not worth_two_lanes(plan):
        return None
    return plan


FINISHED = 1 << 62  # a lane's next instruction once it has run them all


# The lanes' shared state, one int64 word per lane (0, 1) each: the last instruction it finished,
# the next one it has not (every index below both lanes' is finished), where it stopped (an
# error's index; -1: stop now), and whether it waits for the other lane.
DONE, NEXT, STOP, WAITING = 0, 2, 4, 6
CONTROL_WORDS = 8


def start_control(control: np.ndarray, plan: LanePlan, count: int) -> None:
    """Set `control` (CONTROL_WORDS int64) for a run of `count` instructions."""
    control[DONE : DONE + 2] = -1
    control[WAITING : WAITING + 2] = 0
    control[STOP : STOP + 2] = count
    for lane in (0, 1):
        control[NEXT + lane] = plan.orders[lane][0] if plan.orders[lane] else FINISHED


def run_lane(
    lane: int,
    machine,
    plan: LanePlan,
    step: Callable,
    control: np.ndarray,
    errors: dict[int, BaseException],
    wait: Callable[[int, int], None],
    signal: Callable[[int], None],
    report: Callable[[int], None] | None = None,
) -> None:
    """Run `lane`'s instructions in program order, each once the other lane has finished the
    instruction it waits for (`wait(lane, need)` sleeps until then; `signal(other)` wakes a
    lane that sleeps). An error is recorded in `errors` and stops the lane; both lanes stop
    before any instruction past the lowest error. The threads (run_lanes) and the worker
    process (runtime/lane_worker.py) run their lanes with this, each its own wait and signal."""
    other = 1 - lane
    order = plan.orders[lane]
    index = -1
    try:
        for position, (index, need) in enumerate(zip(order, plan.waits[lane], strict=True)):
            if control[DONE + other] < need:
                wait(lane, need)
            if index >= min(control[STOP], control[STOP + 1]):
                break
            step(machine, index)
            control[DONE + lane] = index
            control[NEXT + lane] = order[position + 1] if position + 1 < len(order) else FINISHED
            signal(other)
            if report is not None:
                report(int(min(control[NEXT], control[NEXT + 1])))
    except Exception as exc:  # the caller raises the lowest index's first
        errors[index] = exc
        control[STOP + lane] = index
    finally:
        control[DONE + lane] = FINISHED
        control[NEXT + lane] = FINISHED
        signal(other)


def run_lanes(
    machine,
    plan: LanePlan,
    step: Callable,
    progress: Callable[[int], object] | None = None,
) -> None:
    """Run `plan` on `machine` (the first lane; the second gets its own buffers) with
    `step(machine_of_lane, index)` running one instruction, the second lane on a thread. Raises
    what the in-order run would raise first, and leaves the statistics and progress the
    in-order run leaves: that of the instructions before the error (a lane may have run past it
    meanwhile)."""
    second = machine.for_second_lane()
    count = len(machine.program.instructions)
    control = np.empty(CONTROL_WORDS, dtype=np.int64)  # a word's write is atomic under the GIL
    start_control(control, plan, count)
    errors: dict[int, BaseException] = {}
    ended = [False, False]  # per lane: its thread has left `run`
    stats_before = dict(machine.stats.clusters)
    error_state = np.geterr()  # numpy < 2 keeps it per thread, not per context
    changed = threading.Condition()
    report = progress_reporter(progress, count)

    def wait(lane: int, need: int) -> None:
        with changed:
            control[WAITING + lane] = 1
            while control[DONE + 1 - lane] < need:
                changed.wait()
            control[WAITING + lane] = 0

    def signal(lane: int) -> None:
        if control[WAITING + lane]:
            with changed:
                changed.notify_all()

    def run(lane: int) -> None:
        if lane == 1:
            np.seterr(**error_state)
        try:
            lane_machine, reporting = (machine, report if progress else None) if lane == 0 else (second, None)  # fmt: skip
            run_lane(lane, lane_machine, plan, step, control, errors, wait, signal, reporting)
        finally:
            with changed:
                ended[lane] = True
                changed.notify_all()

    def halt() -> None:
        with changed:
            control[STOP] = -1
            changed.notify_all()

    # the second lane runs in the caller's context: numpy's error state (np.errstate) is a
    # context variable, and a new thread would start from the defaults
    worker = threading.Thread(
        target=contextvars.copy_context().run, args=(run, 1), name="ctac-lane-1", daemon=True
    )
    worker.start()
    interrupted: BaseException | None = None
    try:
        run(0)
    except BaseException as exc:  # KeyboardInterrupt in the main thread: both lanes stop now
        interrupted = exc
        halt()
    # waits on `ended`, not Thread.join: a join that Ctrl-C interrupts can leave is_alive()
    # False while the thread still runs (CPython 3.11)
    while not ended[1]:
        try:
            with changed:
                while not ended[1]:
                    changed.wait()
        except BaseException as exc:  # interrupted while waiting for the other lane
            interrupted = interrupted or exc
            halt()
    worker.join()
    if interrupted is not None:
        raise interrupted
    finish(machine, stats_before, errors, count, report)


def progress_reporter(
    progress: Callable[[int], object] | None, count: int
) -> Callable[[int], None]:
    """report(finished): progress as the in-order run reports it, every 256 instructions, where
    `finished` instructions of program order are done."""
    reported = [0]

    def report(finished: int) -> None:
        due = min(finished, count) // 256 * 256
        if progress is not None and due > reported[0]:
            progress(due - reported[0])
            reported[0] = due

    return report


def finish(
    machine,
    stats_before: dict[int, int],
    errors: dict[int, BaseException],
    count: int,
    report: Callable[[int], None],
) -> None:
    """End a two-lane run as the in-order run ends: the statistics of the instructions before
    the first error only (a lane may have run past it), new entries in program order, over
    those the caller's stats held before (`stats_before`); progress up to the error; then the
    first error raised."""
    first = min(errors) if errors else count
    recorded = machine.stats.clusters
    kept = {i: recorded[i] if i < first else value for i, value in stats_before.items()}
    new = sorted((i, v) for i, v in recorded.items() if i < first and i not in stats_before)
    recorded.clear()
    recorded.update(kept)
    recorded.update(new)
    report(first)
    if errors:
        raise errors[first]
