"""Special functions the golden model (runtime/reference.py) and the interpreter's kernels
(runtime/kernels.py) share, in numpy alone: running a program must not import the IR."""

from __future__ import annotations

import numpy as np

Array = np.ndarray


def erf(x: Array) -> Array:
    """Error function to ~1e-7 relative accuracy (Numerical Recipes' erfc Chebyshev fit)."""
    x64 = np.asarray(x, dtype=np.float64)
    z = np.abs(x64)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = (
        -z * z
        - 1.26551223
        + t
        * (
            1.00002368
            + t
            * (
                0.37409196
                + t
                * (
                    0.09678418
                    + t
                    * (
                        -0.18628806
                        + t
                        * (
                            0.27886807
                            + t
                            * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))
                        )
                    )
                )
            )
        )
    )
    erfc = t * np.exp(poly)
    return np.where(x64 >= 0, 1.0 - erfc, erfc - 1.0)
