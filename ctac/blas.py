"""numpy's BLAS on one thread while small matrices are multiplied (the interpreter's tiles,
detection's numeric proofs); below every layer that does numerics, so both can use it."""

from __future__ import annotations

import contextlib


def single_threaded_blas():
    """Tile GEMMs are small (a half buffer at most): a multi-threaded BLAS spends more on
    synchronisation than it gains (3-4x slower on a busy 2-core machine), so the interpreter (and
    detection's proofs, also small matrices) keep numpy's BLAS on one thread while they run."""
    try:
        from threadpoolctl import threadpool_limits  # optional: without it, nothing to limit
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
