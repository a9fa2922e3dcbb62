"""The `ctac` command line: the argument parser and `main` (exit codes, error handling). Each
command is a function in ctac/commands/ (one module per family of commands).

Exit codes: 0 success, 1 an internal failure (a bug: run with --debug for the traceback),
2 a user error (bad file, unsupported op, bad flag), printed as one `error:` line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from ctac import __version__
from ctac.arguments import (
    compression_arguments,
    input_arguments,
    model_arguments,
    precision_argument,
    window_argument,
)
from ctac.commands.calibrate import calibrate_command
from ctac.commands.compile import (
    EXAMPLES_COMPILE,
    EXAMPLES_EVAL,
    EXAMPLES_INSPECT,
    compile_command,
    eval_command,
    inspect_command,
)
from ctac.commands.demo import demo_command
from ctac.commands.program import asm_command, disasm_command, isa_command
from ctac.commands.run import compare_command, profile_command, run_command
from ctac.commands.sweep import sweep_command
from ctac.errors import CtacError, brief
from ctac.limits import DEFAULT_MAX_TENSOR_BYTES

# --hw of the commands that read a program file.
HW_OF_PROGRAM = (
    "the hardware config it was compiled for, for programs that do not embed theirs (older "
    "files, `ctac asm` output); another config than the embedded one is refused"
)


def _command(
    commands, name: str, *, help: str, epilog: str, handler: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """A subcommand whose epilog (its examples) is printed as written."""
    parser = commands.add_parser(
        name, help=help, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.set_defaults(handler=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctac",
        description="Compile ONNX transformers for a Compressed Token Attention accelerator.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"ctac {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    compile_parser = _command(
        commands,
        "compile",
        help="import an ONNX model and compile it",
        epilog=EXAMPLES_COMPILE,
        handler=compile_command,
    )
    model_arguments(compile_parser)
    compile_parser.add_argument(
        "--emit",
        choices=["onnx", "cta", "isa", "asm", "ctab"],
        default=None,
        help="what to produce: the program file (ctab, default: -o or MODEL.ctab), its assembly "
        "(asm), the ctaisa module (isa), the module after attention detection (cta) or the "
        "canonicalised onnx-dialect module (onnx); text goes to stdout without -o. Without "
        "--emit, -o's extension decides: .ctab a program, .s assembly, .mlir the ctaisa module "
        "(any other: a program); a flag that contradicts the extension is an error",
    )
    compile_parser.add_argument(
        "--attention",
        choices=["exact", "cta", "elsa"],
        default="exact",
        help="how attention runs on the accelerator: exact (default), cta (compressed tokens) or "
        "elsa (per-query candidate keys from hashed angle estimates, the baseline)",
    )
    compression_arguments(compile_parser)
    compile_parser.add_argument("--hw", help="hardware config TOML (default: ctac's own)")
    precision_argument(compile_parser)
    compile_parser.add_argument(
        "--outputs",
        metavar="NAME[,NAME]",
        help="compile only the part of the model that computes these values (node outputs of "
        "the ONNX graph; they become the program's outputs)",
    )
    compile_parser.add_argument("-o", "--output", help="output file")

    calibrate_parser = _command(
        commands,
        "calibrate",
        help="thresholds that keep the outputs within a target cosine on calibration data",
        epilog="examples:\n  ctac calibrate model.onnx --shape input_ids=1x128,attention_mask=1x128 "
        "--data calib.npz -o cta.toml\n  ctac calibrate model.onnx --shape input_ids=1x128,attention_mask=1x128 "
        "--data texts/ --tokenizer tokenizer.json --methods hash-leader,leader -o cta.toml\n"
        "  ctac compile model.onnx --shape ... --attention cta "
        "--cta-settings cta.toml --cta-policy cost\n",
        handler=calibrate_command,
    )
    model_arguments(calibrate_parser)
    calibrate_parser.add_argument(
        "--data", required=True, action="append", metavar="CALIB.npz|TEXT",
        help="an npz (one array per model input, of its --shape or with a leading axis of "
        "samples), or text: .txt files or directories of them (repeatable), one sample per "
        "paragraph, read with --tokenizer",
    )  # fmt: skip
    calibrate_parser.add_argument(
        "--tokenizer", metavar="tokenizer.json",
        help="the model's HuggingFace tokenizer file, for text --data (fills input_ids, "
        "attention_mask, token_type_ids)",
    )  # fmt: skip
    calibrate_parser.add_argument(
        "--max-samples", type=int, default=None, metavar="N",
        help="use at most N samples (default: 16 paragraphs of text, every sample of an npz)",
    )  # fmt: skip
    calibrate_parser.add_argument(
        "--target-cosine", type=float, default=0.999,
        help="mean cosine of the outputs to the exact model to keep (default 0.999)",
    )  # fmt: skip
    calibrate_parser.add_argument("--hash-bits", type=int, default=4, help="CTA bucket bits")
    calibrate_parser.add_argument("--cta-method", default="hash-leader", help="clustering method")
    calibrate_parser.add_argument(
        "--fidelity", choices=["rows", "pooled"], default="rows",
        help="compare every output row (token) with the exact model's (rows, the default), or "
        "each sequence's outputs mean-pooled over its real tokens (pooled: sentence embeddings)",
    )  # fmt: skip
    window_argument(calibrate_parser)
    calibrate_parser.add_argument(
        "--methods", metavar="M1,M2",
        help="calibrate each of these clustering methods and keep the one meeting the target "
        "whose program the cost model finds cheapest (default: --cta-method)",
    )  # fmt: skip
    calibrate_parser.add_argument(
        "--hw", help="hardware config TOML the method search models cycles on (default: ctac's own)"
    )
    calibrate_parser.add_argument(
        "--cta-granularity", choices=["head", "input"], default="head", help="where to cluster"
    )
    calibrate_parser.add_argument("-o", "--output", help="settings file (default: stdout)")

    disasm_parser = _command(
        commands,
        "disasm",
        help="print a program file as assembly",
        epilog="examples:\n  ctac disasm bert.ctab -o bert.s\n  ctac disasm bert.ctab --no-data | less\n",
        handler=disasm_command,
    )
    disasm_parser.add_argument("program", help="a .ctab file")
    disasm_parser.add_argument("--hw", help=HW_OF_PROGRAM)
    disasm_parser.add_argument("--no-data", action="store_true", help="leave out the data segment")
    disasm_parser.add_argument("-o", "--output", help="write to this file instead of stdout")

    asm_parser = _command(
        commands,
        "asm",
        help="assemble a program from assembly",
        epilog="examples:\n  ctac asm bert.s -o bert.ctab\n",
        handler=asm_command,
    )
    asm_parser.add_argument("source", help="an assembly file written by ctac disasm")
    asm_parser.add_argument("--hw", help="hardware config to check the program against")
    asm_parser.add_argument("-o", "--output", help="output .ctab (default: SOURCE.ctab)")

    run_parser = _command(
        commands,
        "run",
        help="run a program on the accelerator model",
        epilog="examples:\n  ctac run bert.ctab --compare tests/models/bert_ts_eager.onnx\n"
        "  ctac run bert.ctab --input input_ids=ids.npy --input attention_mask=mask.npy -o out.npz --json\n",
        handler=run_command,
    )
    run_parser.add_argument("program", help="a .ctab file")
    input_arguments(run_parser)
    run_parser.add_argument(
        "--compare",
        metavar="MODEL.onnx",
        help="compare the outputs with onnxruntime running this model (refused when the program "
        "records another model's SHA-256)",
    )
    run_parser.add_argument("--json", action="store_true", help="print one JSON object")
    run_parser.add_argument("--hw", help=HW_OF_PROGRAM)
    run_parser.add_argument("-o", "--output", help="save the outputs to this .npz file")

    profile_parser = _command(
        commands,
        "profile",
        help="cycles, energy and traffic per unit and layer, with a trace and plots",
        epilog="examples:\n  ctac profile bert.ctab --out prof/\n  ctac profile bert.ctab --out prof/ --timing-only\n",
        handler=profile_command,
    )
    profile_parser.add_argument("program", help="a .ctab file")
    profile_parser.add_argument(
        "--out", required=True, help="folder for profile.json, trace.json and plots"
    )
    profile_parser.add_argument(
        "--timing-only", action="store_true", help="skip the numerics (nominal sizes)"
    )
    profile_parser.add_argument(
        "--cluster-ratio", type=float, default=None, metavar="R",
        help="with --timing-only: size CTA's data-dependent work as R clusters per token (e.g. "
        "a calibration's) instead of the nominal worst case",
    )  # fmt: skip
    profile_parser.add_argument(
        "--cta-settings", metavar="FILE",
        help="with --timing-only: charge the cluster ratio and hash-bucket spread a `ctac "
        "calibrate` settings file measured",
    )  # fmt: skip
    input_arguments(profile_parser)
    profile_parser.add_argument("--hw", help=HW_OF_PROGRAM)
    profile_parser.add_argument(
        "--format", choices=["png", "svg", "pdf"], default="png",
        help="format of the plots (default png); each is titled with the program, its model, "
        "the hardware and the run",
    )  # fmt: skip

    compare_parser = _command(
        commands,
        "compare",
        help="exact vs CTA attention on the accelerator vs the GPU roofline, in one table",
        epilog="examples:\n  ctac compare tests/models/bert_ts_eager.onnx --shape input_ids=2x16,attention_mask=2x16 --tau 0.3\n",
        handler=compare_command,
    )
    model_arguments(compare_parser)
    compression_arguments(compare_parser)
    compare_parser.add_argument("--hw", help="hardware config TOML (default: ctac's own)")
    precision_argument(compare_parser)
    compare_parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    compare_parser.add_argument(
        "--json", action="store_true", help="print JSON instead of the table"
    )
    compare_parser.add_argument("--out", help="also write compare.json and side-by-side plots here")

    sweep_parser = _command(
        commands,
        "sweep",
        help="a design-space sweep (models x settings x hardware) into a table and plots",
        epilog="examples:\n  ctac sweep examples/sweep.toml --jobs 2\n"
        "  ctac sweep examples/sweep.toml --ray            (a local Ray instance)\n"
        "  ctac sweep examples/sweep.toml --ray ray://head:10001 --cache /shared/ctac-cache\n",
        handler=sweep_command,
    )
    sweep_parser.add_argument("spec", help="a sweep spec TOML (see examples/sweep.toml)")
    sweep_parser.add_argument("--out", help="folder for the table and plots (default: the spec's)")
    sweep_parser.add_argument(
        "--jobs", type=int, default=None, help="worker processes (default: the CPUs, at most 8)"
    )
    sweep_parser.add_argument(
        "--cache", metavar="DIR", help="result cache (default: ~/.cache/ctac/sweep)"
    )
    sweep_parser.add_argument(
        "--ray", nargs="?", const="", default=None, metavar="ADDRESS",
        help="run the points on Ray: a local instance, or the cluster at ADDRESS",
    )  # fmt: skip
    sweep_parser.add_argument(
        "--format", choices=["png", "svg", "pdf"], default="png", help="plot format"
    )
    sweep_parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    demo_parser = _command(
        commands,
        "demo",
        help="the whole story on a small BERT: detect, compress, compile, run, compare, profile",
        epilog="examples:\n  ctac demo\n  ctac demo --out /tmp/ctac-demo --tau 0.4\n",
        handler=demo_command,
    )
    demo_parser.add_argument(
        "--out", default="ctac-demo", help="folder for the artifacts (default: ./ctac-demo)"
    )
    demo_parser.add_argument(
        "--seq", type=int, default=64, help="tokens per sequence (at most 128)"
    )
    demo_parser.add_argument("--seed", type=int, default=0, help="seed of the random token ids")
    demo_parser.add_argument(
        "--real-seq",
        type=int,
        default=128,
        help="tokens per passage of the real-weight step (all-MiniLM-L6-v2 on Python's "
        "documentation, calibrated; runs when the `export` extra's model is in the cache)",
    )
    demo_parser.add_argument(
        "--no-real-weights", action="store_true", help="skip the real-weight step"
    )
    compression_arguments(demo_parser)

    isa_parser = _command(
        commands,
        "isa",
        help="print the instruction set table",
        epilog="examples:\n  ctac isa --markdown > docs/isa.md\n",
        handler=isa_command,
    )
    isa_parser.add_argument("--markdown", action="store_true", help="as Markdown (the only format)")

    inspect_parser = _command(
        commands,
        "inspect",
        help="list the attention layers ctac finds in a model",
        epilog=EXAMPLES_INSPECT,
        handler=inspect_command,
    )
    model_arguments(inspect_parser)
    compression_arguments(inspect_parser)
    inspect_parser.add_argument("--json", action="store_true", help="print JSON instead of text")

    eval_parser = _command(
        commands,
        "eval",
        help="run a module with the numpy reference evaluator",
        epilog=EXAMPLES_EVAL,
        handler=eval_command,
    )
    eval_parser.add_argument("module", help="a .mlir module printed by ctac")
    input_arguments(eval_parser)
    eval_parser.add_argument("-o", "--output", help="save the outputs to this .npz file")
    eval_parser.add_argument(
        "--max-tensor-bytes", type=int, default=DEFAULT_MAX_TENSOR_BYTES,
        help=f"refuse a module with a value larger than this (default {DEFAULT_MAX_TENSOR_BYTES})",
    )  # fmt: skip
    return parser


class _ReaderMayLeave(io.TextIOBase):
    """stdout that outlives its reader: when the pipe closes (`ctac run P | head -1`), the rest of
    the text is dropped and the command still finishes, its output files included."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.reader_left = False

    def _left(self) -> None:
        self.reader_left = True
        # Python flushes stdout at exit; point the descriptor at /dev/null so that cannot fail.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())

    def write(self, text: str) -> int:
        if not self.reader_left:
            try:
                self._stream.write(text)
            except BrokenPipeError:
                self._left()
        return len(text)

    def flush(self) -> None:
        if not self.reader_left:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._left()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stdout = sys.stdout
    sys.stdout = _ReaderMayLeave(stdout)
    try:
        return args.handler(args)
    except CtacError as exc:
        if args.debug:
            raise
        print(f"error: {brief(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug in ctac, not in the input
        if args.debug:
            raise
        print(
            f"internal error: {type(exc).__name__}: {brief(exc)} (rerun with --debug for the "
            "traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        sys.stdout = stdout


if __name__ == "__main__":
    sys.exit(main())
