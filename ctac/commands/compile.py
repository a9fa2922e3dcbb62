"""`ctac compile`, `ctac inspect` and `ctac eval`: a model through the compiler, its attention
layers, and a printed module on the reference evaluator."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ctac.commands.common import read_utf8, write_text
from ctac.errors import CtacError
from ctac.files import write_atomically

# Heavy modules (xDSL, the passes, the runtime) are imported inside the commands, so that
# `ctac --help` and argument errors answer at once (start-up speed, not a cycle).


EXAMPLES_COMPILE = """examples:
  ctac compile model.onnx --shape input_ids=1x128,attention_mask=1x128 -o model.ctab   (a program)
  ctac compile model.onnx --shape input_ids=1x128 --shape attention_mask=1x128 -o model.s   (its assembly)
  ctac compile model.onnx --shape input_ids=1x128,attention_mask=1x128 -o model.mlir   (the ctaisa module)
  ctac compile tests/models/bert_ts_eager.onnx --shape input_ids=2x16,attention_mask=2x16 --emit onnx
  ctac compile model.onnx --shape input_ids=1x128,attention_mask=1x128 --emit cta -o detected.mlir
"""


# What -o's extension means when --emit is not given, and the --emit values it agrees with.
EMIT_BY_EXTENSION = {".ctab": "ctab", ".s": "asm", ".mlir": "isa"}
EXTENSION_EMITS = {".ctab": ("ctab",), ".s": ("asm",), ".mlir": ("isa", "cta", "onnx")}
EMIT_EXTENSION = {"ctab": ".ctab", "asm": ".s", "isa": ".mlir", "cta": ".mlir", "onnx": ".mlir"}


def output_kind(emit: str | None, output: str | None) -> str:
    """What `ctac compile` writes: --emit, else what -o's extension names (.ctab a program, .s
    assembly, .mlir the ctaisa module; any other, or no -o, a program). An --emit that
    contradicts the extension (`--emit ctab -o x.mlir`) is an error."""
    extension = Path(output).suffix.lower() if output else ""
    if emit is None:
        return EMIT_BY_EXTENSION.get(extension, "ctab")
    if extension in EXTENSION_EMITS and emit not in EXTENSION_EMITS[extension]:
        what = {"ctab": "a binary program", "asm": "assembly"}.get(emit, "an MLIR module")
        raise CtacError(
            f"--emit {emit} writes {what} but -o {output} names a {extension} file; use -o with "
            f"{EMIT_EXTENSION[emit]} or leave --emit out (-o {extension} alone emits "
            f"{EMIT_BY_EXTENSION[extension]})"
        )
    return emit


EXAMPLES_INSPECT = """examples:
  ctac inspect tests/models/gpt2_ts_eager.onnx --shape input_ids=2x16,attention_mask=2x16
  ctac inspect model.onnx --shape input_ids=1x128,attention_mask=1x128 --json
"""


EXAMPLES_EVAL = """examples:
  ctac eval model.mlir --input input_ids=ids.npy --input attention_mask=mask.npy -o out.npz
  ctac eval model.mlir --seed 0          (random valid inputs: token ids inside the vocabulary)
"""


def compile_command(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from ctac.files import file_sha256

    args.emit = output_kind(args.emit, args.output)
    # The model's SHA-256 (recorded in the program) is read and hashed on a second thread while
    # the compiler works: hashlib and file reads release the GIL, and hashing a 436 MB BERT-base
    # took 0.3 s of a 2.7 s compile. A model that cannot be read fails in the import first.
    hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctac-sha256")
    digest = hashing.submit(file_sha256, args.model) if Path(args.model).is_file() else None
    hashing.shutdown(wait=False)
    try:
        return _compile(args, digest.result if digest is not None else None)
    finally:
        if digest is not None:
            digest.cancel()


def _compile(args: argparse.Namespace, model_sha256) -> int:
    from ctac.frontend import front_end, record_origin
    from ctac.hw import load_hardware, with_precision
    from ctac.pipeline import module_text

    # --precision makes another machine (its dram.element_bytes): the CTA policy's cost
    # comparison in front_end and the lowering both see it, and the program embeds it.
    args.hw = with_precision(load_hardware(args.hw), getattr(args, "precision", None))
    # The CTA policy's program of the final module, if it compiled that (programs only).
    reuse: dict | None = {} if args.emit in ("ctab", "asm") else None
    module, _ = front_end(args, args.emit, reuse)
    if args.emit in ("onnx", "cta"):
        write_text(args.output, module_text(module))
        return 0
    from ctac.emit import compile_module
    from ctac.passes.lower_to_isa import lower_module
    from ctac.runtime.assembly import disassemble
    from ctac.runtime.program import instruction_words, write_program

    hw = load_hardware(args.hw)
    if args.emit == "isa":
        write_text(args.output, module_text(lower_module(module, hw)))
        return 0
    program = (reuse or {}).get("program") or compile_module(module, hw)
    if args.emit != "asm":
        program.data.convert_ahead(program.element_type)  # while the checks below run
    from ctac.emit import check_loadable

    record_origin(program, args.model, hw, model_sha256() if model_sha256 else None)
    # What `ctac run`, `disasm` and `asm` would refuse is refused here, before anything is written.
    # The data segment is streamed into the file (write_program), never encoded in memory; the
    # instructions are encoded once, for the check and the file.
    words = instruction_words(program)
    check_loadable(program, None, {b.index: b.capacity for b in hw.buffers}, words)
    if args.emit == "asm":
        write_text(args.output, disassemble(program))
        return 0
    target = args.output or f"{Path(args.model).stem}.ctab"
    write_program(program, target, words)
    print(
        f"wrote {target}: {len(program.instructions)} instructions, {len(program.data)} "
        f"{program.element_type} data elements",
        file=sys.stderr,
    )
    return 0


INSPECT_COLUMNS = [
    ("layer", "layer"),
    ("form", "form recognised"),
    ("num_heads", "heads"),
    ("kv_heads", "kv heads"),
    ("head_dim", "head dim"),
    ("q_len", "q len"),
    ("kv_len", "kv len"),
    ("mask_kind", "mask"),
    ("causal", "causal"),
    ("projections", "projections captured"),
    ("verified", "verified (max rel err)"),
]


def inspect_command(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from ctac.frontend import front_end, policy_decisions

    detected, reports = front_end(args, "cta")
    rows = [asdict(report) for report in reports]
    # What `ctac compile --attention cta` would decide for each layer (--cta-policy always: no
    # decision, every layer compressed); attentions and reports are both in program order.
    try:
        decisions = policy_decisions(detected, args) if args.cta_policy == "cost" and rows else []
    except CtacError as exc:  # the policy compiles the model; inspect still reports its layers
        reason = "not decided: the model cannot be compiled: " + str(exc).splitlines()[0]
        decisions = []
        for row in rows:
            row["cta_policy"] = {"compress": None, "reason": reason}
    for row, decision in zip(rows, decisions, strict=False):
        row["cta_policy"] = decision.to_json()
    if args.json:
        # Numbers as numbers: the proof's max relative error (null when the match was not
        # proven), with what was done in words beside it.
        for row in rows:
            note = row.pop("verified")
            try:
                row["verified_max_rel_err"] = float(note)
            except ValueError:
                row["verified_max_rel_err"] = None
            row["verification"] = (
                "proven on random inputs" if row["verified_max_rel_err"] is not None else note
            )
        print(json.dumps({"model": str(args.model), "attention": rows}, indent=2))
        return 0
    print(f"{args.model}: {len(rows)} attention layer(s)")
    for index, row in enumerate(rows):
        print(f"[{index}]")
        for key, title in INSPECT_COLUMNS:
            print(f"  {title:<24}{row[key]}")
        if "cta_policy" in row:
            print(f"  {'cta policy':<24}{row['cta_policy']['reason']}")
    return 0


def eval_command(args: argparse.Namespace) -> int:
    from ctac.pipeline import parse_module
    from ctac.runtime.evaluator import check_value_sizes, evaluate, module_values, random_inputs

    path = Path(args.module)
    if not path.is_file():
        raise CtacError(f"module file '{path}' not found")
    module = parse_module(read_utf8(path, "a module is the text `ctac compile` writes"), str(path))
    check_value_sizes(module_values(module), args.max_tensor_bytes)
    inputs = random_inputs(module, args.seed)
    from ctac.run import load_inputs

    inputs.update(load_inputs(args.input, inputs))
    outputs = evaluate(module, inputs, args.max_tensor_bytes)
    for name, array in outputs.items():
        summary = f"{name}: {array.dtype}{list(array.shape)}"
        if array.size and np.issubdtype(array.dtype, np.number):
            summary += f" mean={array.mean():.6g} min={array.min():.6g} max={array.max():.6g}"
        print(summary)
    if args.output:
        from ctac.run import npz_bytes

        write_atomically(args.output, npz_bytes(outputs))
        print(f"wrote {args.output}")
    return 0
