"""Timing and energy model of the CTA accelerator, separate from the functional model.

Each instruction's cycles and energy actions come from its row in runtime/isa.py, fed with the
hardware config. Units (dma_in, dma_out, pe, vector, hash, cluster) run concurrently; each runs
its own instructions in program order; an instruction also waits for every earlier instruction
whose buffer or DRAM ranges conflict with its own (read after write, write after read, write
after write), tracked by a scoreboard of blocks of addresses. SYNC and HALT wait for every unit.

DMA (VTA-style decoupled load and store queues): `dma_in` (LOAD, GATHER) and `dma_out` (STORE)
each have the config's number of engines. A transfer holds the DRAM channel for its transfer
cycles (bytes / bandwidth); with `bandwidth_sharing = "shared"` all engines take turns on one
channel at the full bandwidth (the first free gap at or after the request's data can arrive),
with "split" each engine owns bandwidth / engines. The access latency is paid before the data
moves but overlaps other transfers: an engine issues its next request while data is in flight.
An instruction's timing runs from issue to completion; the unit is busy for the transfer only.
A compute instruction with DRAM traffic of its own (CLUSTER's spilled table rows) also reserves
the shared channel for it.

Instructions whose work depends on data (compressed attention: the number of clusters) name
their dynamic fields in the program (`Program.dynamic`); given the clusters each CLUSTER formed in
a functional run, the model charges those sizes, otherwise (timing only) the nominal worst case.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ctac.hw import Hardware
from ctac.runtime import isa
from ctac.runtime.program import Program

BUFFER_BLOCK = 64
DRAM_BLOCK = 1024
ENERGY_ACTIONS = {
    "macs": "mac",
    "int8_macs": "int8_mac",  # GEMM's integer mode (int8 operands, int32 accumulation)
    "vector_ops": "vector_op",
    "hash_macs": "hash_mac",
    "buffer_read": "buffer_element",
    "buffer_write": "buffer_element",
    "dram_bytes": "dram_byte",
}


@dataclass(slots=True)  # slots: a program makes one per instruction
class InstructionTiming:
    index: int
    name: str
    unit: str
    source: str
    start: int
    end: int
    energy_pj: float
    dram_bytes: float
    macs: float
    busy: int = -1  # cycles the unit was occupied (DMA: the transfer); -1 means end - start

    @property
    def occupied(self) -> int:
        return self.end - self.start if self.busy < 0 else self.busy


@dataclass
class Profile:
    timings: list[InstructionTiming]
    cycles: int
    clock_hz: float
    dynamic_energy_pj: float
    static_energy_pj: float
    dram_bytes: float
    macs: float
    unit_busy: dict[str, int]
    energy_by_action: dict[str, float] = field(default_factory=dict)
    # Of `macs`, those the PE array ran in its integer mode (GEMM int8=1), at energy_pj.int8_mac.
    int8_macs: float = 0.0

    @property
    def seconds(self) -> float:
        return self.cycles / self.clock_hz

    @property
    def energy_pj(self) -> float:
        return self.dynamic_energy_pj + self.static_energy_pj

    def utilisation(self) -> dict[str, float]:
        return {
            unit: busy / self.cycles if self.cycles else 0.0
            for unit, busy in self.unit_busy.items()
        }

    def by_layer(self) -> dict[str, dict[str, float]]:
        """Cycles each unit spent, energy and DRAM bytes, per source (layer) name, in program order."""
        layers: dict[str, dict[str, float]] = {}
        for timing in self.timings:
            entry = layers.setdefault(timing.source or "(none)", defaultdict(float))
            entry[f"{timing.unit}_cycles"] += timing.occupied
            entry["energy_pj"] += timing.energy_pj
            entry["dram_bytes"] += timing.dram_bytes
            entry["macs"] += timing.macs
            entry["instructions"] += 1
            entry["first_cycle"] = min(entry.get("first_cycle", timing.start), timing.start)
            entry["last_cycle"] = max(entry.get("last_cycle", timing.end), timing.end)
        return {name: dict(values) for name, values in layers.items()}


class _Blocks:
    """When the last write and the last read of each block of one buffer (or DRAM) finish, as
    runs of blocks with equal times: `starts[i]` is the first block of run i, which goes on to
    the next run's first block (the last run to `limit`, the blocks there are). Tiles are
    written and read whole, so a buffer holds a few dozen runs where a per-block array has
    thousands of entries, and most regions are one run."""

    __slots__ = ("block", "limit", "starts", "write", "read")

    def __init__(self, block: int, blocks: int) -> None:
        self.block, self.limit = block, blocks
        self.starts, self.write, self.read = [0], [0], [0]

    def latest(self, start: int, size: int, reads_too: bool) -> int:
        """The last write (and with reads_too the last read) to finish in the region."""
        block = self.block
        first = start // block
        if first >= self.limit:
            return 0
        last = (start + size - 1) // block + 1 if size > 1 else first + 1
        starts = self.starts
        run = bisect.bisect_right(starts, first) - 1
        end = bisect.bisect_left(starts, last, run)
        if end - run == 1:
            write = self.write[run]
            if reads_too:
                read = self.read[run]
                return write if write > read else read
            return write
        latest = max(self.write[run:end])
        return max(latest, *self.read[run:end]) if reads_too else latest

    def cut(self, start: int, size: int) -> tuple[int, int]:
        """Runs [i, j) holding exactly the region's blocks, splitting runs at its ends."""
        block = self.block
        first = start // block
        last = (start + size - 1) // block + 1 if size > 1 else first + 1
        if last > self.limit:
            last = self.limit
        if first >= last:
            return 0, 0
        return self._split(first), self._split(last)

    def _split(self, block: int) -> int:
        starts = self.starts
        index = bisect.bisect_left(starts, block)
        if (index == len(starts) or starts[index] != block) and block < self.limit:
            starts.insert(index, block)
            self.write.insert(index, self.write[index - 1])
            self.read.insert(index, self.read[index - 1])
        return index

    def merge(self, first: int, last: int) -> None:
        """Join equal neighbouring runs from run `first` - 1 to run `last` (keeps lists short)."""
        starts, write, read = self.starts, self.write, self.read
        index = min(last, len(starts) - 1)
        stop = max(first, 1)
        while index >= stop:
            if write[index] == write[index - 1] and read[index] == read[index - 1]:
                del starts[index], write[index], read[index]
            index -= 1


class _Scoreboard:
    """Per block of addresses: when the last write and the last read finish."""

    def __init__(self, sizes: Mapping[int | str, int]) -> None:
        self.blocks = {}
        for key, size in sizes.items():
            block = DRAM_BLOCK if key == "dram" else BUFFER_BLOCK
            self.blocks[key] = _Blocks(block, size // block + 2)

    def ready(self, reads: list, writes: list) -> int:
        ready = 0
        blocks = self.blocks
        for where, start, size in reads:  # read after write
            latest = blocks[where].latest(start, size, False)
            if latest > ready:
                ready = latest
        for where, start, size in writes:  # write after write, write after read
            latest = blocks[where].latest(start, size, True)
            if latest > ready:
                ready = latest
        return ready

    def record(self, reads: list, writes: list, end: int) -> None:
        for where, start, size in reads:
            blocks = self.blocks[where]
            first, last = blocks.cut(start, size)
            read = blocks.read
            changed = False
            for index in range(first, last):
                if read[index] < end:
                    read[index] = end
                    changed = True
            if changed:
                blocks.merge(first, last)
        for where, start, size in writes:
            blocks = self.blocks[where]
            first, last = blocks.cut(start, size)
            if last - first == 1:
                blocks.write[first] = end
            else:
                blocks.write[first:last] = [end] * (last - first)
            blocks.merge(first, last)


class DramChannel:
    """Busy intervals of one DRAM channel; a transfer takes the first gap long enough at or after
    the time its data can move (requests are placed in program order, not time order, so gaps
    left by later-placed earlier-time transfers are reused)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def reserve(self, earliest: int, length: int) -> int:
        """Start of the reserved interval [start, start + length)."""
        index = bisect.bisect_right(self.ends, earliest)
        start = earliest
        while index < len(self.starts):
            if self.starts[index] >= start + length:
                break
            start = max(start, self.ends[index])
            index += 1
        # Insert, merging with touching neighbours so the lists stay short.
        end = start + length
        if index > 0 and self.ends[index - 1] == start:
            self.ends[index - 1] = end
            if index < len(self.starts) and self.starts[index] == end:
                self.ends[index - 1] = self.ends.pop(index)
                self.starts.pop(index)
        elif index < len(self.starts) and self.starts[index] == end:
            self.starts[index] = start
        else:
            self.starts.insert(index, start)
            self.ends.insert(index, end)
        return start


class _DmaQueue:
    """The engines of one DMA queue; an instruction takes the engine that frees first."""

    def __init__(self, engines: int, shared: DramChannel | None) -> None:
        self.free = [0] * engines
        self.channels = [shared or DramChannel() for _ in range(engines)]

    def schedule(self, ready: int, latency: int, transfer: int) -> tuple[int, int]:
        """(issue, completion) of a transfer whose operands are ready at `ready`."""
        free = self.free
        engine = 0 if len(free) == 1 else min(range(len(free)), key=free.__getitem__)
        issue = max(self.free[engine], ready)
        data = self.channels[engine].reserve(issue + latency, transfer)
        # The engine issues its next request while this one's data is in flight.
        self.free[engine] = data + transfer - latency
        return issue, data + transfer


def effective_fields(
    program: Program, clusters: Mapping[int, int] | None
) -> tuple[dict[int, dict], set[int]]:
    """Per dynamic instruction: its fields with the sizes the data decided; and the instructions
    of tiles that lie wholly past the clusters formed (skipped). A field name "" only skips."""
    effective: dict[int, dict] = {}
    skipped: set[int] = set()
    if not clusters:
        return effective, skipped
    for index, name, source, *offset in program.dynamic:
        if source in clusters:
            formed = clusters[source] - (offset[0] if offset else 0)
            if formed <= 0 and offset:
                skipped.add(index)
            if name:
                fields = effective.setdefault(index, dict(program.instructions[index][1]))
                fields[name] = max(1, min(fields[name], formed))
    return effective, skipped


def simulate(program: Program, hw: Hardware, clusters: Mapping[int, int] | None = None) -> Profile:
    """Cycles, energy and traffic of every instruction, with dynamic sizes from `clusters`."""
    view = hw.view()
    shared = DramChannel() if hw.dram_sharing == "shared" else None
    split = 1.0 if shared else hw.dma_engines("dma_in") + hw.dma_engines("dma_out")
    # "split": each engine streams at its share of the bandwidth.
    dma_view = replace(view, dram_bytes_per_cycle=view.dram_bytes_per_cycle / split)
    queues = {unit: _DmaQueue(hw.dma_engines(unit), shared) for unit in isa.DMA_UNITS}
    energies = {key: hw.energy(key) for key in set(ENERGY_ACTIONS.values())}
    sizes: dict[int | str, int] = {b.index: b.capacity for b in hw.buffers}
    sizes["dram"] = program.dram_elements
    board = _Scoreboard(sizes)
    unit_end: dict[str, int] = defaultdict(int)
    unit_busy: dict[str, int] = defaultdict(int)
    timings: list[InstructionTiming] = []
    energy_by_action: dict[str, float] = defaultdict(float)
    total_energy = total_dram = total_macs = total_int8_macs = 0.0
    finish = 0
    sources = program.sources or [""] * len(program.instructions)
    dynamic, skipped = effective_fields(program, clusters)
    pj_per_action = {action: energies[key] for action, key in ENERGY_ACTIONS.items()}
    latency = view.dram_latency
    for index, ((name, fields), source) in enumerate(
        zip(program.instructions, sources, strict=True)
    ):
        spec = isa.BY_NAME[name]
        effective = dynamic.get(index, fields) if dynamic else fields
        if skipped and index in skipped:
            # A tile beyond the clusters formed: skipped (the hardware tests the count first).
            timings.append(
                InstructionTiming(index, name, spec.unit, source, finish, finish, 0.0, 0.0, 0.0, 0)
            )
            continue
        if spec.unit == "control":
            start = max(finish, max(unit_end.values(), default=0))
            end = start + spec.cycles(effective, view)
            for unit in list(unit_end):
                unit_end[unit] = end
            for queue in queues.values():
                queue.free = [max(free, end) for free in queue.free]
            timings.append(
                InstructionTiming(index, name, spec.unit, source, start, end, 0.0, 0.0, 0.0)
            )
            finish = max(finish, end)
            continue
        unit = spec.unit
        reads, writes = spec.reads(fields), spec.writes(fields)
        ready = board.ready(reads, writes)
        actions = spec.actions(effective, view)
        queue = queues.get(unit)
        if queue is not None:
            cycles = max(1, spec.cycles(effective, dma_view) - latency)  # isa.transfer_cycles
            start, end = queue.schedule(ready, latency, cycles)
            unit_end[unit] = max(unit_end[unit], end)
        else:
            start = max(unit_end[unit], ready)
            cycles = spec.cycles(effective, view)
            end = start + cycles
            # A compute unit that moves DRAM data itself (the cluster unit's spilled table rows)
            # takes its turn on the DRAM channel too: it ends no sooner than its transfer does.
            spilled = actions.get("dram_bytes", 0)
            if spilled and shared is not None:
                transfer = max(1, -(-int(spilled) // max(int(view.dram_bytes_per_cycle), 1)))
                end = max(end, shared.reserve(start, transfer) + transfer)
            unit_end[unit] = end
        board.record(reads, writes, end)
        unit_busy[unit] += cycles
        energy = 0.0
        for action, count in actions.items():
            energy_pj = count * pj_per_action[action]
            energy_by_action[action] += energy_pj
            energy += energy_pj
        total_energy += energy
        total_dram += actions.get("dram_bytes", 0.0)
        int8_macs = actions.get("int8_macs", 0.0)
        macs = actions.get("macs", 0.0) + int8_macs
        total_macs += macs
        total_int8_macs += int8_macs
        timings.append(
            InstructionTiming(
                index,
                name,
                unit,
                source,
                start,
                end,
                energy,
                actions.get("dram_bytes", 0.0),
                macs,
                cycles,
            )
        )
        finish = max(finish, end)
    clock = hw.clock_hz
    static = hw.number("energy_pj", "static_mw") * 1e-3 * (finish / clock) * 1e12
    for unit in isa.UNITS:
        if unit != "control":
            unit_busy.setdefault(unit, 0)
    return Profile(
        timings,
        finish,
        clock,
        total_energy,
        static,
        total_dram,
        total_macs,
        dict(unit_busy),
        dict(energy_by_action),
        total_int8_macs,
    )
