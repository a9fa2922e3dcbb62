"""Memory planning for lower-to-isa: buffer ids, DRAM tensors, the DRAM arena, tile ranges."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ctac.runtime.isa import BUFFER_NAMES, Buffer

ACT, WGT, ACC, VEC = Buffer


def buffer_name(buffer: int) -> str:
    return BUFFER_NAMES[buffer]


# Elements of `vec` kept for rows that live through a whole op.
PERSISTENT = 16384


def elements(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape)) if shape else 1


def rows_cols(shape: tuple[int, ...]) -> tuple[int, int]:
    if not shape:
        return 1, 1
    return elements(shape[:-1]), shape[-1]


@dataclass
class Tensor:
    """A tensor in DRAM, row-major at `address` (element address)."""

    address: int
    shape: tuple[int, ...]


@dataclass
class Arena:
    """First-fit allocator over DRAM addresses above the data segment and the symbols."""

    base: int
    free: list[tuple[int, int]] = field(default_factory=list)
    top: int = 0

    def allocate(self, size: int) -> int:
        size = max(size, 1)
        for index, (start, length) in enumerate(self.free):
            if length >= size:
                if length == size:
                    self.free.pop(index)
                else:
                    self.free[index] = (start + size, length - size)
                return start
        address = self.base + self.top
        self.top += size
        return address

    def release(self, address: int, size: int) -> None:
        self.free.append((address, max(size, 1)))
        self.free.sort()
        merged: list[tuple[int, int]] = []
        for start, length in self.free:
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + length)
            else:
                merged.append((start, length))
        self.free = merged


class Unsupported(Exception):
    """An op this lowering cannot handle (collected, then reported together)."""


def split_ranges(total: int, step: int):
    for start in range(0, total, step):
        yield start, min(step, total - start)


def runs_of(indices: np.ndarray) -> list[tuple[int, int, int]]:
    """(first index, count, stride in rows) runs covering `indices` in order: stride 1 or 0."""
    runs: list[tuple[int, int, int]] = []
    position = 0
    while position < len(indices):
        start = int(indices[position])
        length = 1
        stride = 1
        if position + 1 < len(indices):
            stride = int(indices[position + 1]) - start
            if stride not in (0, 1):
                stride = 1
            else:
                while (
                    position + length < len(indices)
                    and int(indices[position + length]) == start + stride * length
                ):
                    length += 1
        runs.append((start, length, stride))
        position += length
    return runs


@dataclass
class Stream:
    """Slots of one tile size in a buffer, used in turn: while a tile is computed from one slot
    the DMA fills the next (double buffering when depth is 2)."""

    buffer: int
    base: int
    size: int
    depth: int = 2
    turns: int = 0

    def next(self) -> int:
        """Address of the next slot (the first call gives slot 0)."""
        address = self.slot(self.turns)
        self.turns += 1
        return address

    def slot(self, turn: int) -> int:
        """Address of the slot used on `turn` (turns cycle through the depth)."""
        return self.base + (turn % self.depth) * self.size
