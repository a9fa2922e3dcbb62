"""The flags several commands take: the model and its shapes, and the compression options.
Below the commands and the API: the API fills its `ctac compile` namespace with these defaults
(ctac/frontend.py, compile_arguments), so the two cannot drift apart."""

from __future__ import annotations

import argparse

from ctac.limits import DEFAULT_MAX_TENSOR_BYTES


def model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the .onnx file")
    parser.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=DxD",
        help="fix an input's shape (repeatable, or comma-separated: a=1x16,b=1x16)",
    )
    parser.add_argument(
        "--max-tensor-bytes",
        type=int,
        default=DEFAULT_MAX_TENSOR_BYTES,
        help=(
            "refuse models declaring a tensor larger than this many bytes "
            f"(default {DEFAULT_MAX_TENSOR_BYTES}, 4 GiB)"
        ),
    )
    parser.add_argument(
        "--verify-attention",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="prove each attention match numerically on random inputs (default on)",
    )


# Open clusters per hash bucket a token is compared with: on MiniLM with real prose at 512 tokens
# a window of 8 makes 4-5x fewer comparisons than an unbounded one for 1-5% more clusters at the
# same or better fidelity (docs/compression.md, "Bounded clustering").
DEFAULT_WINDOW = 8


def input_arguments(parser: argparse.ArgumentParser) -> None:
    """--input and --seed of the commands that run a program or module."""
    parser.add_argument(
        "--input", action="append", default=[], metavar="NAME=FILE.npy", help="an input array"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for inputs not given with --input"
    )


WINDOW_HELP = (
    "compare each token only with the W clusters its hash bucket opened last (bounded clustering "
    f"work per token; default {DEFAULT_WINDOW}; 0: every cluster of the bucket)"
)

# The compression flags of compile, compare, demo and inspect, in --help order: (flag,
# add_argument keywords), one row each.
COMPRESSION_FLAGS: list[tuple[str, dict]] = [
    ("--tau", dict(type=float, default=0.5, help="CTA merge threshold for queries (default 0.5)")),
    ("--tau-kv", dict(type=float, default=0.3, help="CTA merge threshold for keys and values (default 0.3)")),
    ("--hash-bits", dict(type=int, default=4, help="sign-random-projection bits of the CTA buckets")),
    ("--cta-granularity", dict(choices=["head", "input"], default="head", help="cluster per (sequence, head) after the projections, or the layer input before them")),
    ("--cta-block", dict(type=int, default=None, help="block size of the causal CTA scheme (default: the cost policy's choice of 64-512 per layer; 64 with --cta-policy always)")),
    ("--cta-values", dict(choices=["project", "pooled-input"], default="project", help="head placement: pool the projected V over the key clusters (project), or pool the layer input per head and project only the clusters (pooled-input; same values)")),
    ("--cta-window", dict(type=int, default=DEFAULT_WINDOW, metavar="W", help=WINDOW_HELP)),
    ("--cta-keep-top", dict(type=int, default=0, metavar="K", help="head placement: keep the K keys of each (sequence, head) with the largest estimated attention mass (mean query . key) out of clustering (0, the default: none)")),
    ("--cta-keys", dict(choices=["per-head", "shared"], default="per-head", help="head placement: cluster K per (sequence, head), or once per sequence over the concatenated keys of all heads (shared: ids and counts shared by the heads)")),
    ("--cta-method", dict(default="hash-leader", help="CTA clustering method (see docs/compression.md)")),
    ("--cta-policy", dict(choices=["always", "cost"], default="cost", help="compress only the layers whose compressed form the cost model finds cheaper at --cluster-ratio (cost, the default; see ctac/policy.py), or every attention (always)")),
    ("--cluster-ratio", dict(type=float, default=None, help="clusters per token the cost policy expects (default: the --cta-settings file's, else 1.0, no merging)")),
    ("--cta-settings", dict(metavar="FILE", help="thresholds and cluster ratios from `ctac calibrate` (override --tau, --tau-kv, --hash-bits, --cta-method, --cta-granularity)")),
    ("--elsa-bits", dict(type=int, default=16, help="hash bits of the ELSA baseline")),
    ("--elsa-threshold", dict(type=float, default=0.5, help="estimated-cosine threshold of the ELSA baseline")),
]  # fmt: skip


class Remembered(argparse.Action):
    """Stores the value like the default action and records that the user gave the flag
    (`namespace.given`), so a flag that does not apply can be refused even at its default."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.given = getattr(namespace, "given", frozenset()) | {self.dest}


def window_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cta-window", type=int, default=DEFAULT_WINDOW, metavar="W", help=WINDOW_HELP
    )


def compression_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, keywords in COMPRESSION_FLAGS:
        parser.add_argument(flag, action=Remembered, **keywords)


def precision_argument(parser: argparse.ArgumentParser) -> None:
    """--precision: the machine's storage type (`compile`, `compare`)."""
    parser.add_argument(
        "--precision",
        choices=["fp16", "fp32"],
        help="the element type the machine stores tensors in: sets the config's "
        "dram.element_bytes (2 or 4; the cost model charges it too) and the program's data "
        "segment type (default: the config's, fp16 for ctac's own; fp32 for bit-faithful "
        "comparisons with onnxruntime)",
    )
