"""The deployment variants people ship of one transformer ONNX file, made with onnxruntime's own
tools: its transformers optimizer at opt levels 1 and 2 (fused SkipLayerNormalization,
EmbedLayerNormalization, BiasGelu, Attention; what optimum's O1-O3 call), the O2 file in float16,
dynamic int8 (quantize_dynamic: DynamicQuantizeLinear + MatMulInteger), static int8 in QDQ and
QOperator form (quantize_static on a few calibration inputs), and a sentence-transformers-style
mean-pooling head (ReduceSum over the sequence, Clip, Div) on the plain file.

    python scripts/make_deployment_variants.py MODEL.onnx OUT_DIR [--heads 12 --hidden 384]

bench/real_world.py runs ctac on every variant; this script only writes them. Needs nothing
beyond ctac's own dependencies (onnxruntime ships the optimizer and the quantizer).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VARIANTS = ("ort_o1", "ort_o2", "ort_o2_fp16", "dynamic_int8", "qdq_int8", "qoperator_int8",
            "mean_pooling")  # fmt: skip


def _quiet(function: Callable, *args, **kwargs):
    """onnxruntime's tools log and warn a lot; keep the bench output readable."""
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


def optimized(source: Path, out: Path, level: int, heads: int, hidden: int, fp16: bool) -> None:
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_shape_inference = False  # its default needs torch and sympy
    model = _quiet(
        optimize_model, str(source), model_type="bert", num_heads=heads, hidden_size=hidden,
        opt_level=0 if level == 1 else level, optimization_options=options,
    )  # fmt: skip
    if fp16:
        _quiet(model.convert_float_to_float16, keep_io_types=True)
    model.save_model_to_file(str(out))


def dynamic_int8(source: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _quiet(quantize_dynamic, str(source), str(out), weight_type=QuantType.QInt8)


class _Reader:
    """Calibration inputs for quantize_static: a few random token sequences."""

    def __init__(self, model: onnx.ModelProto, samples: int = 4, length: int = 32) -> None:
        rng = np.random.default_rng(0)
        self.feeds = []
        for _ in range(samples):
            feed = {}
            for value in model.graph.input:
                elem = value.type.tensor_type.elem_type
                dtype = helper.tensor_dtype_to_np_dtype(elem)
                if value.name == "attention_mask":
                    feed[value.name] = np.ones((1, length), dtype)
                elif np.issubdtype(dtype, np.integer):
                    feed[value.name] = rng.integers(1000, 8000, (1, length)).astype(dtype)
                else:
                    feed[value.name] = rng.standard_normal((1, length)).astype(dtype)
            self.feeds.append(feed)
        self.iterator = iter(self.feeds)

    def get_next(self):
        return next(self.iterator, None)

    def rewind(self) -> None:
        self.iterator = iter(self.feeds)


def static_int8(source: Path, out: Path, qdq: bool) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    reader = _Reader(onnx.load(str(source), load_external_data=False))
    _quiet(
        quantize_static, str(source), str(out), reader,
        quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip


def mean_pooling(source: Path, out: Path) -> None:
    """sentence-transformers' Pooling(mean) as its ONNX exports write it: the token embeddings
    times the expanded mask, summed over the sequence, over the mask's sum clipped at 1e-9."""
    model = onnx.load(str(source))
    graph = model.graph
    hidden = graph.output[0].name
    nodes = [
        helper.make_node("Unsqueeze", ["attention_mask", "pool_axes_last"], ["pool_mask3"]),
        helper.make_node("Cast", ["pool_mask3"], ["pool_maskf"], to=TensorProto.FLOAT),
        helper.make_node("Expand", ["pool_maskf", "pool_shape"], ["pool_mask_x"]),
        helper.make_node("Shape", [hidden], ["pool_shape"]),
        helper.make_node("Mul", [hidden, "pool_mask_x"], ["pool_masked"]),
        helper.make_node("ReduceSum", ["pool_masked", "pool_axes_seq"], ["pool_sum"], keepdims=0),
        helper.make_node("ReduceSum", ["pool_mask_x", "pool_axes_seq"], ["pool_count"],
                         keepdims=0),
        helper.make_node("Clip", ["pool_count", "pool_min", ""], ["pool_count_c"]),
        helper.make_node("Div", ["pool_sum", "pool_count_c"], ["sentence_embedding"]),
    ]  # fmt: skip
    graph.initializer.extend([
        numpy_helper.from_array(np.array([-1], np.int64), "pool_axes_last"),
        numpy_helper.from_array(np.array([1], np.int64), "pool_axes_seq"),
        numpy_helper.from_array(np.array(1e-9, np.float32), "pool_min"),
    ])  # fmt: skip
    # Shape before Expand: keep the graph topologically sorted.
    nodes.insert(2, nodes.pop(3))
    graph.node.extend(nodes)
    width = graph.output[0].type.tensor_type.shape.dim[-1]
    graph.output.append(
        helper.make_tensor_value_info(
            "sentence_embedding", TensorProto.FLOAT, ["batch", width.dim_value or "width"]
        )
    )
    onnx.save(model, str(out))


def make(source: Path, out_dir: Path, heads: int, hidden: int, only=VARIANTS) -> dict[str, Path]:
    """Write each variant in `only` to OUT_DIR/NAME.onnx; returns name -> path (made or kept)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    makers = {
        "ort_o1": lambda p: optimized(source, p, 1, heads, hidden, fp16=False),
        "ort_o2": lambda p: optimized(source, p, 2, heads, hidden, fp16=False),
        "ort_o2_fp16": lambda p: optimized(source, p, 2, heads, hidden, fp16=True),
        "dynamic_int8": lambda p: dynamic_int8(source, p),
        "qdq_int8": lambda p: static_int8(source, p, qdq=True),
        "qoperator_int8": lambda p: static_int8(source, p, qdq=False),
        "mean_pooling": lambda p: mean_pooling(source, p),
    }
    made = {}
    for name in only:
        path = out_dir / f"{name}.onnx"
        if not path.exists():
            print(f"[variants] {name} -> {path}", flush=True)
            makers[name](path)
        made[name] = path
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--only", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args(argv)
    make(args.model, args.out, args.heads, args.hidden, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
