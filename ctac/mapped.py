"""Memory-mapped source files, so arrays viewing them can be written by the kernel.

load_onnx_lazy (ctac/onnx_loader.py) registers the ONNX file it maps; a weight array that is a
view of it knows where its bytes are in that file (`file_range`), and the program writer copies
those bytes file to file with os.copy_file_range (no page faults, no user-space copy: twice as
fast as writing them from the mapping) instead of writing them from memory. The file must still
be the one that was mapped (same device, inode, size and modification time), else the bytes are
written from the mapping as usual. Only depends on numpy; imported by ctac.runtime.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class _Mapping:
    base: int
    size: int
    path: Path
    identity: tuple[int, int, int, int]
    alive: weakref.ref


_MAPPINGS: list[_Mapping] = []


def _identity(status: os.stat_result) -> tuple[int, int, int, int]:
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def register(mapped, path: Path, descriptor: int) -> None:
    """Record a read-only mapping of the whole file `path` (open as `descriptor`)."""
    _MAPPINGS[:] = [m for m in _MAPPINGS if m.alive() is not None]
    try:
        address = np.frombuffer(mapped, dtype=np.uint8).__array_interface__["data"][0]
        identity = _identity(os.fstat(descriptor))
        alive = weakref.ref(mapped)
    except (TypeError, ValueError, OSError):
        return
    _MAPPINGS.append(_Mapping(address, len(mapped), Path(path), identity, alive))


@dataclass(frozen=True)
class FileRange:
    """Bytes of a mapped file: `view` holds them (for a checksum, or to write them as they are),
    `write_to` copies them from the file itself."""

    path: Path
    identity: tuple[int, int, int, int]
    offset: int
    view: memoryview

    def write_to(self, descriptor: int) -> None:
        """Append the bytes at the descriptor's position: file to file where the kernel can."""
        start = os.lseek(descriptor, 0, os.SEEK_CUR)
        try:
            with open(self.path, "rb") as source:
                if _identity(os.fstat(source.fileno())) != self.identity:
                    raise OSError("the source file changed since it was mapped")
                done = 0
                while done < len(self.view):
                    copied = os.copy_file_range(
                        source.fileno(), descriptor, len(self.view) - done, self.offset + done
                    )
                    if copied <= 0:
                        raise OSError("copy_file_range copied nothing")
                    done += copied
            return
        except (OSError, AttributeError):  # another file system, no copy_file_range, a change
            os.lseek(descriptor, start, os.SEEK_SET)
        done = 0
        while done < len(self.view):
            done += os.write(descriptor, self.view[done:])


def file_range(array: np.ndarray) -> FileRange | None:
    """Where a C-contiguous array's bytes lie in a registered mapped file, or None."""
    if not array.flags.c_contiguous or array.nbytes == 0:
        return None
    address = array.__array_interface__["data"][0]
    for mapping in _MAPPINGS:
        if mapping.base <= address and address + array.nbytes <= mapping.base + mapping.size:
            if mapping.alive() is None:
                return None
            view = memoryview(array.reshape(-1)).cast("B")
            return FileRange(mapping.path, mapping.identity, address - mapping.base, view)
    return None
