"""Size limits shared by the ONNX loader and the command-line flags, in a module of their own so
that building the argument parser imports neither onnx nor xDSL."""

from __future__ import annotations

# --max-tensor-bytes: a module with a larger value (weight, constant or computed) is refused.
DEFAULT_MAX_TENSOR_BYTES = 4 * 1024**3
