"""Check runtime/fp16.py's rounding (Veltkamp's split, t = 8193 x; t - (t - x)) against numpy's
float32 -> float16 -> float32 cast on every float32 of fp16's normal range, both signs:
503,300,098 values, about 5 s. tests/test_fp16_conversions.py checks whole binades of it and the
ties; this is the exhaustive run the comment in runtime/fp16.py cites.

    python scripts/check_fp16_rounding.py
"""

from __future__ import annotations

import sys
import time

import numpy as np

from ctac.runtime.fp16 import split_round

CHUNK = 1 << 24


def main() -> int:
    low = int(np.float32(2.0**-14).view(np.int32))
    high = int(np.float32(65504.0).view(np.int32))
    start_time = time.perf_counter()
    checked = mismatches = 0
    for start in range(low, high + 1, CHUNK):
        pattern = np.arange(start, min(start + CHUNK, high + 1), dtype=np.int32)
        for sign in (0, np.int32(-(2**31))):
            values = (pattern | sign).view(np.float32)
            rounded = np.empty_like(values)
            split_round(values, rounded, np.empty((2, *values.shape), dtype=np.float32))
            expected = values.astype(np.float16).astype(np.float32)
            mismatches += int(np.count_nonzero(rounded.view(np.int32) != expected.view(np.int32)))
            checked += values.size
    seconds = time.perf_counter() - start_time
    print(
        f"{checked:,} float32 values in [2**-14, 65504], both signs: {mismatches} differ ({seconds:.1f} s)"
    )
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
