"""numpy's BLAS on one thread while small matrices are multiplied (the interpreter's tiles,
detection's numeric proofs); below every layer that does numerics, so both can use it."""

from __future__ import annotations

import contextlib

_CONTROLLER = None  # threadpoolctl's view of the loaded BLAS libraries, found once


def single_threaded_blas():
    """Tile GEMMs are small (a half buffer at most). Two threads run a 128x512x128 tile 1.6x
    faster on an idle 2-core machine, but 3-4x slower on a busy one, and OpenBLAS's results
    depend on its thread count for some shapes (at 300x700x90, 70% of the outputs differ between
    1 and 2 threads), which CTA's clustering decisions must not. So the interpreter (and
    detection's proofs, also small matrices) keep numpy's BLAS on one thread while they run.
    The BLAS libraries are looked up once per process (threadpoolctl's scan of the loaded
    libraries took ~1 ms, a fifth of a small model's run): numpy's, loaded with numpy and the
    one the interpreter multiplies with, is always among them; a BLAS another library loads
    later in the process is not limited."""
    global _CONTROLLER
    try:
        from threadpoolctl import ThreadpoolController  # optional: without it, nothing to limit
    except ImportError:
        return contextlib.nullcontext()
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")
