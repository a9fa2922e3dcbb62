"""A program's data segment in memory and its storage type: `to_storage` (float32 values as
an fp16 or fp32 machine stores them, fp16 saturating), `DataSegment` (the compiler's weights laid
out at their DRAM addresses without being copied: views of the ONNX file until the program is
written) and `array_chunks` (an array's bytes in the storage type, a few MB at a time).
runtime/program.py writes and reads the file around them."""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ctac.mapped import file_range

# The data segment's element types (ctac/hw.py PRECISIONS), by name: (bytes, numpy dtype).
ELEMENT_TYPES = {"fp16": (2, np.dtype("<f2")), "fp32": (4, np.dtype("<f4"))}
ELEMENT_TYPE_BY_BYTES = {size: name for name, (size, _) in ELEMENT_TYPES.items()}
FP16_MAX = float(np.finfo(np.float16).max)  # 65504


def to_storage(values: np.ndarray, element_type: str) -> np.ndarray:
    """`values` in the storage type `element_type` (a view when they already are). Into fp16,
    finite values beyond its range saturate to +-65504 instead of becoming inf: an additive mask
    of float32.min (-3.4e38, what many exporters write for "not visible") must stay a large
    negative finite number, which still gives its keys zero weight, where -inf would make a fully
    masked row's softmax arithmetic (-inf minus its -inf maximum) NaN. inf stays inf and NaN
    stays NaN."""
    dtype = ELEMENT_TYPES[element_type][1]
    values = np.asarray(values)
    if values.dtype == dtype:
        return values
    if (
        element_type == "fp16"
        and values.dtype.kind == "f"
        and values.size
        and values.min() >= -FP16_MAX
        and values.max() <= FP16_MAX
    ):
        # Nothing to saturate (most tiles and weights; a NaN fails the test): the plain cast.
        # A small store tile's overflow checks below cost more than its conversion.
        return values.astype(dtype)
    with np.errstate(over="ignore"):
        stored = values.astype(dtype)
    if element_type == "fp16" and stored.size:
        # inf's bit pattern on the raw bits: 7x faster than np.isinf on fp16 (the compiler
        # converts every weight through here)
        bits = stored.view(np.uint16) & 0x7FFF
        overflow = bits == 0x7C00
        if overflow.any():
            finite = overflow & np.isfinite(values)
            stored[finite] = np.copysign(FP16_MAX, values[finite])
    return stored


class DataSegment:
    """A data segment not yet laid out in memory: `size` float32 elements, zero except for
    `pieces` [(start, array)] (where two overlap, the later one's values). The compiler's weights
    stay where they are (views of the ONNX file) until the program is written, which streams them
    straight into the file (encode_chunks); `np.asarray(segment)` builds the whole array once, for
    whoever needs it."""

    def __init__(self, size: int, pieces: list[tuple[int, np.ndarray]]) -> None:
        self.size = size
        self.pieces = [(start, np.asarray(values).reshape(-1)) for start, values in pieces]
        self._ordered = sorted(self.pieces, key=lambda piece: piece[0])
        self._overlap = any(
            start < before + values.size
            for (before, values), (start, _) in zip(self._ordered, self._ordered[1:], strict=False)
        )
        self._array: np.ndarray | None = None
        self._stored: dict[str, np.ndarray] = {}
        self._ahead: dict[int, Future] = {}  # id(piece) -> its converted chunks (convert_ahead)
        self._ahead_type = ""

    def __len__(self) -> int:
        return self.size

    def convert_ahead(self, element_type: str) -> None:
        """Start converting the pieces into `element_type` on worker threads, in the order
        `chunks` writes them, so a writer finds them ready: numpy's casts release the GIL, and
        converting BERT-base's 109 M weights to fp16 took 0.4 s of the compile's critical path.
        Two workers where there are two cores: the writer mostly waits for them (`ctac compile`
        of BERT-base 1.71 s against 1.88 s with one, medians of 6, 2 cores). Holds the
        converted segment (half the float32 bytes for fp16) until it is written."""
        if ELEMENT_TYPES[element_type][1] == np.dtype("<f4") or self._overlap or self._ahead:
            return
        self._ahead_type = element_type
        workers = min(2, usable_cores())
        worker = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ctac-convert")
        for _, values in self._ordered:
            self._ahead[id(values)] = worker.submit(
                lambda v=values: list(array_chunks(v, element_type))
            )
        worker.shutdown(wait=False)

    def array(self) -> np.ndarray:
        if self._array is None:
            array = np.zeros(self.size, dtype=np.float32)
            for start, values in self.pieces:
                array[start : start + values.size] = values
            array.flags.writeable = False
            self._array = array
        return self._array

    def stored(self, element_type: str) -> np.ndarray:
        """The whole segment in its storage type, built once (from the pieces, without the
        float32 array) and kept: every run of a program compiled in memory starts from it."""
        if element_type not in self._stored:
            array = np.zeros(self.size, dtype=ELEMENT_TYPES[element_type][1])
            for start, values in self.pieces:
                array[start : start + values.size] = to_storage(values, element_type)
            array.flags.writeable = False
            self._stored[element_type] = array
        return self._stored[element_type]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = self.array()
        if copy:
            array = array.copy()
        return array if dtype is None else array.astype(dtype, copy=False)

    def chunks(self, zeros: int = 1 << 20, file_ranges: bool = False, element_type: str = "fp32"):
        """The segment as little-endian bytes of `element_type`, in order, without building it
        (fp16 converted a few MB at a time); with `file_ranges`, an fp32 piece that is a view of
        a mapped file comes as a FileRange (ctac/mapped.py), which the writer copies file to
        file."""
        if self._overlap:
            yield from array_chunks(self.array(), element_type)
            return
        width = ELEMENT_TYPES[element_type][0]
        blank = memoryview(bytes(width * min(zeros, max(self.size, 1))))
        position = 0

        def gap(count: int):
            while count > 0:
                step = min(count, len(blank) // width)
                yield blank[: width * step]
                count -= step

        try:
            for start, values in self._ordered:
                yield from gap(start - position)
                source = None
                if file_ranges and element_type == "fp32" and values.dtype == np.dtype("<f4"):
                    source = file_range(values)
                ahead = (
                    self._ahead.pop(id(values), None) if element_type == self._ahead_type else None
                )
                if source is not None:
                    yield source
                elif ahead is not None:
                    yield from ahead.result()
                else:
                    yield from array_chunks(values, element_type)
                position = start + values.size
            yield from gap(self.size - position)
        finally:
            # A write that stops early (an error, a refused program) leaves no conversion queued
            # to run on, holding memory and delaying the process's exit.
            for pending in self._ahead.values():
                pending.cancel()
            self._ahead.clear()


def usable_cores() -> int:
    """The cores this process may run on (its affinity, where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def array_chunks(array: np.ndarray, element_type: str = "fp32", step: int = 1 << 22):
    """An array's little-endian bytes in `element_type`, a few MB at a time (views where it is
    already contiguous in that type, converted chunk by chunk otherwise: to_storage's
    saturation)."""
    flat = np.asarray(array).reshape(-1)
    for start in range(0, flat.size, step):
        part = np.ascontiguousarray(to_storage(flat[start : start + step], element_type))
        yield memoryview(part).cast("B")
