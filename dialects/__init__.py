"""IRDL dialects of ctac: `onnx` (imported models), later `cta` and `ctaisa`."""
