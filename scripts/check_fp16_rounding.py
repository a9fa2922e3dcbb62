"""Check runtime/fp16.py's rounding (round_into: Veltkamp's split, t = 8193 x; t - (t - x), in
fp16's normal range; below it a multiply by 2**-125 and back, float32's own subnormal rounding)
against numpy's float32 -> float16 -> float32 cast on every float32 from 0 to 65504, both signs:
2,399,125,506 values, 1,895,825,408 of them below 2**-14 (zeros included), about 2.5 minutes
(numpy's cast is the slow side).
tests/test_fp16_conversions.py checks whole binades of it and the ties; this is the exhaustive
run the comments in runtime/fp16.py cite.

    python scripts/check_fp16_rounding.py
"""

from __future__ import annotations

import sys
import time

import numpy as np

from ctac.runtime.fp16 import round_into, tricks_hold

CHUNK = 1 << 24


def main() -> int:
    if not tricks_hold():
        print("this process flushes subnormals (FTZ/DAZ): round_into takes numpy's cast here")
        return 1
    smallest_normal = int(np.float32(2.0**-14).view(np.int32))
    high = int(np.float32(65504.0).view(np.int32))
    start_time = time.perf_counter()
    checked = {"below 2**-14": 0, "[2**-14, 65504]": 0}
    mismatches = 0
    scratch = np.empty((3, CHUNK), dtype=np.float32)
    mask = np.empty(CHUNK, dtype=np.bool_)
    for start in range(0, high + 1, CHUNK):
        pattern = np.arange(start, min(start + CHUNK, high + 1), dtype=np.int32)
        below = int(np.count_nonzero(pattern < smallest_normal))
        for sign in (0, np.int32(-(2**31))):
            values = (pattern | sign).view(np.float32)
            rounded = np.empty_like(values)
            size = values.size
            if size < CHUNK:  # the last chunk: its own dense scratch, or round_into casts
                scratch, mask = np.empty((3, size), np.float32), np.empty(size, np.bool_)
            round_into(values, rounded, scratch, True, mask)
            expected = values.astype(np.float16).astype(np.float32)
            mismatches += int(np.count_nonzero(rounded.view(np.int32) != expected.view(np.int32)))
            checked["below 2**-14"] += below
            checked["[2**-14, 65504]"] += size - below
    seconds = time.perf_counter() - start_time
    counts = ", ".join(f"{count:,} {where}" for where, count in checked.items())
    print(
        f"{sum(checked.values()):,} float32 values from 0 to 65504, both signs ({counts}): "
        f"{mismatches} differ ({seconds:.1f} s)"
    )
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
