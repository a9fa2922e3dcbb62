"""Timing and energy model of the CTA accelerator, separate from the functional model.

Each instruction's cycles and energy actions come from its row in runtime/isa.py, fed with the
hardware config. Units (dma, pe, vector, hash, cluster) run concurrently; each runs its own
instructions in program order; an instruction also waits for every earlier instruction whose
buffer or DRAM ranges conflict with its own (read after write, write after read, write after
write), tracked by a scoreboard of blocks of addresses. SYNC and HALT wait for every unit.

Instructions whose work depends on data (compressed attention: the number of clusters) name
their dynamic fields in the program (`Program.dynamic`); given the clusters each CLUSTER formed in
a functional run, the model charges those sizes, otherwise (timing only) the nominal worst case.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ctac.hw import Hardware
from ctac.runtime import isa
from ctac.runtime.program import Program

BUFFER_BLOCK = 64
DRAM_BLOCK = 1024
ENERGY_ACTIONS = {
    "macs": "mac",
    "vector_ops": "vector_op",
    "hash_macs": "hash_mac",
    "buffer_read": "buffer_element",
    "buffer_write": "buffer_element",
    "dram_bytes": "dram_byte",
}


@dataclass
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
            entry[f"{timing.unit}_cycles"] += timing.end - timing.start
            entry["energy_pj"] += timing.energy_pj
            entry["dram_bytes"] += timing.dram_bytes
            entry["macs"] += timing.macs
            entry["instructions"] += 1
            entry["first_cycle"] = min(entry.get("first_cycle", timing.start), timing.start)
            entry["last_cycle"] = max(entry.get("last_cycle", timing.end), timing.end)
        return {name: dict(values) for name, values in layers.items()}


class _Scoreboard:
    """Per block of addresses: when the last write and the last read finish."""

    def __init__(self, sizes: Mapping[int | str, int]) -> None:
        self.block = {key: DRAM_BLOCK if key == "dram" else BUFFER_BLOCK for key in sizes}
        self.last_write = {
            key: np.zeros(size // self.block[key] + 2, dtype=np.int64)
            for key, size in sizes.items()
        }
        self.last_read = {
            key: np.zeros(size // self.block[key] + 2, dtype=np.int64)
            for key, size in sizes.items()
        }

    def _span(self, where: int | str, start: int, size: int) -> slice:
        block = self.block[where]
        return slice(start // block, (start + max(size, 1) - 1) // block + 1)

    def ready(self, reads: list, writes: list) -> int:
        ready = 0
        for where, start, size in reads:
            ready = max(
                ready, int(self.last_write[where][self._span(where, start, size)].max(initial=0))
            )
        for where, start, size in writes:
            span = self._span(where, start, size)
            ready = max(
                ready,
                int(self.last_write[where][span].max(initial=0)),
                int(self.last_read[where][span].max(initial=0)),
            )
        return ready

    def record(self, reads: list, writes: list, end: int) -> None:
        for where, start, size in reads:
            span = self._span(where, start, size)
            np.maximum(self.last_read[where][span], end, out=self.last_read[where][span])
        for where, start, size in writes:
            self.last_write[where][self._span(where, start, size)] = end


def effective_fields(program: Program, clusters: Mapping[int, int] | None) -> dict[int, dict]:
    """Per dynamic instruction: its fields with the sizes the data decided."""
    effective: dict[int, dict] = {}
    if not clusters:
        return effective
    for index, name, source in program.dynamic:
        if source in clusters:
            fields = effective.setdefault(index, dict(program.instructions[index][1]))
            fields[name] = max(1, min(fields[name], clusters[source]))
    return effective


def simulate(program: Program, hw: Hardware, clusters: Mapping[int, int] | None = None) -> Profile:
    """Cycles, energy and traffic of every instruction, with dynamic sizes from `clusters`."""
    view = hw.view()
    energies = {key: hw.number("energy_pj", key) for key in set(ENERGY_ACTIONS.values())}
    sizes: dict[int | str, int] = {b.index: b.capacity for b in hw.buffers}
    sizes["dram"] = program.dram_elements
    board = _Scoreboard(sizes)
    unit_end: dict[str, int] = defaultdict(int)
    unit_busy: dict[str, int] = defaultdict(int)
    timings: list[InstructionTiming] = []
    energy_by_action: dict[str, float] = defaultdict(float)
    total_energy = total_dram = total_macs = 0.0
    finish = 0
    sources = program.sources or [""] * len(program.instructions)
    dynamic = effective_fields(program, clusters)
    for index, ((name, fields), source) in enumerate(
        zip(program.instructions, sources, strict=True)
    ):
        spec = isa.BY_NAME[name]
        effective = dynamic.get(index, fields)
        if spec.unit == "control":
            start = max(finish, max(unit_end.values(), default=0))
            end = start + spec.cycles(effective, view)
            for unit in list(unit_end):
                unit_end[unit] = end
            timings.append(
                InstructionTiming(index, name, spec.unit, source, start, end, 0.0, 0.0, 0.0)
            )
            finish = max(finish, end)
            continue
        reads, writes = spec.reads(fields), spec.writes(fields)
        start = max(unit_end[spec.unit], board.ready(reads, writes))
        cycles = spec.cycles(effective, view)
        end = start + cycles
        board.record(reads, writes, end)
        unit_end[spec.unit] = end
        unit_busy[spec.unit] += cycles
        actions = spec.actions(effective, view)
        energy = 0.0
        for action, count in actions.items():
            joules = count * energies[ENERGY_ACTIONS[action]]
            energy_by_action[action] += joules
            energy += joules
        total_energy += energy
        total_dram += actions.get("dram_bytes", 0.0)
        total_macs += actions.get("macs", 0.0)
        timings.append(
            InstructionTiming(
                index,
                name,
                spec.unit,
                source,
                start,
                end,
                energy,
                actions.get("dram_bytes", 0.0),
                actions.get("macs", 0.0),
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
    )
