"""numpy's BLAS on one thread while small matrices are multiplied (the interpreter's tiles,
detection's numeric proofs); below every layer that does numerics, so both can use it."""

from __future__ import annotations

import contextlib

_CONTROLLER = None  # threadpoolctl's view of the loaded BLAS libraries, found once


def single_threaded_blas():
    """Tile GEMMs are small (a half buffer at most): a multi-threaded BLAS spends more on
    synchronisation than it gains (3-4x slower on a busy 2-core machine), so the interpreter (and
    detection's proofs, also small matrices) keep numpy's BLAS on one thread while they run.
    The BLAS libraries are looked up once per process (threadpoolctl's scan of the loaded
    libraries took ~1 ms, a fifth of a small model's run): numpy's, loaded with numpy, is
    among them."""
    global _CONTROLLER
    try:
        from threadpoolctl import ThreadpoolController  # optional: without it, nothing to limit
    except ImportError:
        return contextlib.nullcontext()
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")
