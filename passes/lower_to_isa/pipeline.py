"""The software-pipelined tile emitter: the one place that decides the order of a tiled loop.

The lowering driver opens one Pipeline per op (`lowering.pipeline`); an op lowering starts each
tile of its loop with `lowering.next_stage()` (which calls `tile()`) and emits that tile's
instructions as usual; `drain()` ends one loop before another of the same op begins. Each instruction gets a stage: given
explicitly with `stage(k)`, or by its unit (loads 0, compute 1, stores 2; a tile without compute
stores at stage 1). On close the loop is emitted skewed, as a modulo schedule with one tile per
stage: step t emits stage 0 of tile t, stage 1 of tile t-1, stage 2 of tile t-2, ... So tile
i+1's loads are issued before tile i's compute and tile i-1's store after it: the in-order DMA
queues and the shared DRAM channel see requests in the order a pipelined machine needs them.

The reordering is only safe if no buffer slot is overwritten before its last reader: with
double-buffered slots (memory.Stream, depth 2, alternating per tile) a value must be read at
most one stage after the stage that writes it (load at 0 -> compute at 1 -> store at 2).
Lowerings that keep a value longer (attention's running output) give it a slot that alternates
per outer tile, or load it later (attention loads V at the stage before P V). Values written by
one tile and read through DRAM by a later tile of the same loop are not allowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ctac.runtime import isa

if TYPE_CHECKING:
    from ctac.passes.lower_to_isa.core import Emitted, Lowering

LOAD_STAGE, COMPUTE_STAGE, STORE_STAGE = 0, 1, 2


class Pipeline:
    def __init__(self, lowering: Lowering) -> None:
        self.lowering = lowering
        self.tiles: list[list[tuple[int | None, Emitted]]] = []
        self.current: int | None = None
        # In order: an op whose loop keeps values longer than the slots allow (for now
        # block-causal compressed attention) is emitted as written.
        self.ordered = False

    def __enter__(self) -> Pipeline:
        return self.open()

    def open(self) -> Pipeline:
        """Collect the lowering's instructions from now on (close() emits them skewed)."""
        self.outer = self.lowering.sink
        self.lowering.sink = self._collect
        return self

    def tile(self) -> None:
        """Start the next tile; until stage() is called its instructions are staged by unit."""
        self.tiles.append([])
        self.current = None

    def stage(self, number: int) -> None:
        """Put the tile's next instructions in stage `number` (until the next call or tile)."""
        self.current = number

    def _collect(self, emitted: Emitted) -> None:
        if not self.tiles:
            self.tile()
        self.tiles[-1].append((self.current, emitted))

    def __exit__(self, kind, value, traceback) -> None:
        self.lowering.sink = self.outer
        if kind is None:
            self.close()

    def close(self) -> None:
        """Emit the collected tiles in software-pipelined order."""
        self.drain()
        self.lowering.sink = self.outer

    def drain(self) -> None:
        """Emit the tiles collected so far (the loop they form ends here)."""
        tiles, self.tiles, self.current = self.tiles, [], None
        if self.ordered:
            for tile in tiles:
                for _, emitted in tile:
                    self.outer(emitted)
            return
        written = [emitted for tile in tiles for _, emitted in tile]
        ranges = {id(emitted): on_chip_ranges(emitted) for emitted in written}
        staged = [self._stages(tile, ranges) for tile in tiles]
        depth = max((len(stages) for stages in staged), default=0)
        skewed: list[Emitted] = []
        for step in range(len(staged) + depth - 1):
            for number in range(depth):
                index = step - number
                if 0 <= index < len(staged) and number < len(staged[index]):
                    skewed.extend(staged[index][number])
        if not _keeps_dependences(written, skewed, self.lowering.capacity, ranges):
            # A loop whose values outlive their slots: emitted as written (correct, unpipelined).
            self.lowering.unpipelined_loops += 1
            skewed = written
        for emitted in skewed:
            self.outer(emitted)

    @staticmethod
    def _stages(
        tile: list[tuple[int | None, Emitted]], ranges: dict[int, tuple[list, list]]
    ) -> list[list[Emitted]]:
        """Stage lists of one tile: explicit stages as given; otherwise loads 0, compute 1,
        stores 2 (1 in a tile without compute), and never before an instruction of the same tile
        whose buffer ranges it depends on (a GATHER whose indices a VEC wrote)."""
        computes = any(
            number is None and isa.BY_NAME[e.name].unit not in isa.DMA_UNITS for number, e in tile
        )
        stages: list[list[Emitted]] = []
        placed: list[tuple[int, list, list]] = []  # (stage, reads, writes) of earlier ones
        for number, emitted in tile:
            spec = isa.BY_NAME[emitted.name]
            reads, writes = ranges[id(emitted)]
            if number is None:
                if spec.unit == "dma_in":
                    number = LOAD_STAGE
                elif spec.unit == "dma_out":
                    number = STORE_STAGE if computes else COMPUTE_STAGE
                else:
                    number = COMPUTE_STAGE
                for stage, earlier_reads, earlier_writes in placed:
                    if stage > number and (
                        _overlap(reads + writes, earlier_writes) or _overlap(writes, earlier_reads)
                    ):
                        number = stage
            placed.append((number, reads, writes))
            while len(stages) <= number:
                stages.append([])
            stages[number].append(emitted)
        return stages


def on_chip_ranges(emitted: Emitted) -> tuple[list, list]:
    """(reads, writes) of one instruction in the buffers, as (buffer, start, size): computed
    once per instruction of a loop, for both the staging and the reordering check."""
    spec = isa.BY_NAME[emitted.name]
    fields = emitted.fields  # Lowering.emit's are complete (checked_fields fills the defaults)
    if len(fields) != len(spec.fields):
        fields = isa.with_defaults(emitted.name, fields)
    reads = [r for r in spec.reads(fields) if r[0] != "dram"]
    writes = [w for w in spec.writes(fields) if w[0] != "dram"]
    return reads, writes


def _overlap(first: list, second: list) -> bool:
    return any(
        a[0] == b[0] and a[1] < b[1] + max(b[2], 1) and b[1] < a[1] + max(a[2], 1)
        for a in first
        for b in second
    )


BLOCK = 64  # elements per scoreboard block of the reordering check


def _keeps_dependences(
    written: list[Emitted],
    reordered: list[Emitted],
    capacity: dict,
    ranges: dict[int, tuple[list, list]],
) -> bool:
    """True if every pair of instructions whose on-chip ranges conflict (read after write, write
    after read, write after write) keeps its order. Walks the new order remembering, per block
    of each buffer, the latest original position among the writers and readers already placed:
    placing an instruction after a conflicting one that came later in the original order breaks
    a dependence. (DRAM is not checked: a loop never reads what it writes.)"""
    if len(written) < 2:
        return True
    original = {id(emitted): index for index, emitted in enumerate(written)}
    last_writer = {b: np.full(size // BLOCK + 2, -1, np.int64) for b, size in capacity.items()}
    last_reader = {b: np.full(size // BLOCK + 2, -1, np.int64) for b, size in capacity.items()}
    for emitted in reordered:
        position = original[id(emitted)]
        reads, writes = ranges[id(emitted)]
        spans = [
            (b, slice(start // BLOCK, (start + max(size, 1) - 1) // BLOCK + 1))
            for b, start, size in reads
        ]
        write_spans = [
            (b, slice(start // BLOCK, (start + max(size, 1) - 1) // BLOCK + 1))
            for b, start, size in writes
        ]
        for buffer, span in spans:
            if last_writer[buffer][span].max(initial=-1) > position:
                return False
        for buffer, span in write_spans:
            if (
                last_writer[buffer][span].max(initial=-1) > position
                or last_reader[buffer][span].max(initial=-1) > position
            ):
                return False
        for buffer, span in spans:
            np.maximum(last_reader[buffer][span], position, out=last_reader[buffer][span])
        for buffer, span in write_spans:
            np.maximum(last_writer[buffer][span], position, out=last_writer[buffer][span])
    return True
