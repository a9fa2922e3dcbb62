"""The `ctac` command line.

Exit codes: 0 success, 1 an internal failure (a bug: run with --debug for the traceback),
2 a user error (bad file, unsupported op, bad flag), printed as one `error:` line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from ctac import __version__
from ctac.errors import CtacError, brief
from ctac.onnx_loader import DEFAULT_MAX_TENSOR_BYTES

EXAMPLES_COMPILE = """examples:
  ctac compile tests/models/bert_ts_eager.onnx --shape input_ids=2x16,attention_mask=2x16 --emit onnx
  ctac compile model.onnx --shape input_ids=1x128 --shape attention_mask=1x128 -o model.mlir
  ctac compile model.onnx --shape input_ids=1x128,attention_mask=1x128 --emit cta
"""

EXAMPLES_INSPECT = """examples:
  ctac inspect tests/models/gpt2_ts_eager.onnx --shape input_ids=2x16,attention_mask=2x16
  ctac inspect model.onnx --shape input_ids=1x128,attention_mask=1x128 --json
"""

EXAMPLES_EVAL = """examples:
  ctac eval model.mlir --input input_ids=ids.npy --input attention_mask=mask.npy -o out.npz
  ctac eval model.mlir --seed 0          (random valid inputs: token ids inside the vocabulary)
"""


class _Signalled(BaseException):
    """SIGTERM or SIGHUP arrived while write_atomically was writing (its temporary is removed,
    then the signal is delivered again to the handler it had before)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _refuse_special(target: Path) -> None:
    """A CtacError if `target` exists and is not a regular file (see write_atomically)."""
    import stat

    try:
        mode = os.lstat(target).st_mode
    except OSError:
        return  # missing (it will be created) or unreadable (the write reports it)
    if stat.S_ISREG(mode):
        return
    kind = (
        "a symbolic link" if stat.S_ISLNK(mode)
        else "a directory" if stat.S_ISDIR(mode)
        else "a FIFO" if stat.S_ISFIFO(mode)
        else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket" if stat.S_ISSOCK(mode)
        else "not a regular file"
    )  # fmt: skip
    raise CtacError(
        f"cannot write '{target}': it is {kind}; ctac only replaces regular files (give a new "
        "file name, or leave out -o/--output to print text to stdout)"
    )


def _remove_stale_temporaries(target: Path) -> None:
    """Remove `.NAME.PID.*.tmp` files of `target` whose writer process no longer exists (one
    killed by SIGKILL or a power cut cannot clean up after itself)."""
    prefix = f".{target.name}."
    try:
        names = [
            n for n in os.listdir(target.parent) if n.startswith(prefix) and n.endswith(".tmp")
        ]
    except OSError:
        return
    for name in names:
        pid = name[len(prefix) :].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                os.unlink(target.parent / name)
        except OSError:
            pass  # alive (another user's process) or unknowable: leave it


def write_atomically(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a whole file or nothing: a temporary file `.NAME.PID.XXXX.tmp` in the same folder,
    then a rename.

    On any failure the temporary file is removed and an existing target is left as it was; an
    OSError (folder not writable, disk full) becomes a CtacError. SIGTERM and SIGHUP during the
    write remove the temporary too, then take their usual course; temporaries that a killed
    writer (SIGKILL) left behind are removed by the next write of the same file.

    Targets that exist and are not regular files are refused with a CtacError: a rename would
    replace a symbolic link, FIFO, socket or device node with a regular file. The one exception
    is /dev/null (os.devnull), which is written through, so `-o /dev/null` discards the output
    as usual."""
    target = Path(path)
    if os.path.abspath(target) == os.devnull:
        try:
            sink = os.open(os.devnull, os.O_WRONLY)
            try:
                os.write(sink, data[:0])  # /dev/null takes everything; nothing needs to move
            finally:
                os.close(sink)
        except OSError as exc:
            raise CtacError(f"cannot write '{target}': {exc.strerror or exc}") from None
        return
    _refuse_special(target)
    handlers = _catch_termination()
    temporary = None
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_temporaries(target)
            handle, temporary = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp"
            )
        except OSError as exc:
            raise CtacError(f"cannot write '{target}': {exc.strerror or exc}") from None
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, target)
        temporary = None
    except BaseException as exc:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CtacError(f"cannot write '{target}': {exc.strerror or exc}") from None
        if isinstance(exc, _Signalled):
            _restore_handlers(handlers)
            handlers = {}
            import signal

            signal.raise_signal(exc.signum)
        raise
    finally:
        _restore_handlers(handlers)


def _catch_termination() -> dict:
    """While a file is written, SIGTERM and SIGHUP raise _Signalled (main thread only: Python
    delivers signals there); returns the previous handlers."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def interrupt(signum, frame):
        raise _Signalled(signum)

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):
            previous[signum] = signal.signal(signum, interrupt)
    return previous


def _restore_handlers(handlers: dict) -> None:
    import signal

    for signum, handler in handlers.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _front_end(args: argparse.Namespace, emit: str):
    """Import, canonicalize and (for emit != 'onnx') detect attention; returns (module, reports)."""
    from ctac.importer import import_model, parse_shape_flags
    from ctac.passes.detect_attention import detect_attention
    from ctac.pipeline import run_passes

    imported = import_model(args.model, parse_shape_flags(args.shape), args.max_tensor_bytes)
    run_passes(imported.module, "canonicalize")
    reports, refused = [], []
    if emit != "onnx":
        reports, refused = detect_attention(imported.module, verify=args.verify_attention)
        for line in refused:
            print(f"warning: attention match refused at {line}", file=sys.stderr)
        if getattr(args, "attention", "exact") == "cta" and emit != "cta-detected":
            from ctac.passes.cta_compress import uncompressible

            for layer, reason in uncompressible(imported.module):
                print(f"warning: attention '{layer}' stays exact: {reason}", file=sys.stderr)
            keep_exact = _policy(imported.module, args)
            run_passes(imported.module, _compress_spec(args, keep_exact))
        if getattr(args, "attention", "exact") == "elsa" and emit != "cta-detected":
            run_passes(imported.module, _elsa_spec(args))
    return imported.module, reports


def _calibrate(args: argparse.Namespace) -> int:
    from ctac.calibrate import calibrate
    from ctac.calibration_data import load_calibration_data
    from ctac.hw import load_hardware

    module, _ = _front_end(args, "cta-detected")
    samples = load_calibration_data(module, args.data, args.tokenizer, args.max_samples)
    methods = [m.strip() for m in (args.methods or args.cta_method).split(",") if m.strip()]
    settings = calibrate(
        module, samples, args.target_cosine, args.hash_bits, args.cta_method,
        args.cta_granularity, progress=lambda line: print(line, file=sys.stderr),
        methods=methods, hw=load_hardware(args.hw), window=args.cta_window,
        measure=args.fidelity,
    )  # fmt: skip
    text = settings.to_toml()
    if args.output:
        write_atomically(args.output, text.encode())
        print(f"wrote {args.output}: {settings.method}, tau-q {settings.tau_q:g}, mean cosine "
              f"{settings.mean_cosine:.5f} on {settings.samples} samples", file=sys.stderr)  # fmt: skip
    else:
        print(text, end="")
    return 0


def _compile(args: argparse.Namespace) -> int:
    from ctac.pipeline import module_text

    module, _ = _front_end(args, args.emit)
    if args.emit in ("onnx", "cta"):
        _write_text(args.output, module_text(module))
        return 0
    from ctac.emit import program_from_module
    from ctac.hw import load_hardware
    from ctac.passes.lower_to_isa import lower_module
    from ctac.runtime.program import disassemble, encode_program

    lowered = lower_module(module, load_hardware(args.hw))
    if args.emit == "isa":
        _write_text(args.output, module_text(lowered))
        return 0
    program = program_from_module(lowered)
    from ctac.emit import check_loadable

    # What `ctac run`, `disasm` and `asm` would refuse is refused here, before anything is written.
    blob = encode_program(program)
    hw = load_hardware(args.hw)
    check_loadable(program, blob, {b.index: b.capacity for b in hw.buffers})
    if args.emit == "asm":
        _write_text(args.output, disassemble(program))
        return 0
    target = args.output or f"{Path(args.model).stem}.ctab"
    write_atomically(target, blob)
    print(
        f"wrote {target}: {len(program.instructions)} instructions, {len(program.data)} data elements",
        file=sys.stderr,
    )
    return 0


def _write_text(path: str | None, text: str) -> None:
    if path:
        write_atomically(path, text.encode())
    else:
        sys.stdout.write(text)


def _disasm(args: argparse.Namespace) -> int:
    from ctac.hw import load_hardware
    from ctac.runtime.program import disassemble, read_program

    hw = load_hardware(args.hw)
    program = read_program(args.program, hw.digest, {b.index: b.capacity for b in hw.buffers})
    _write_text(args.output, disassemble(program, include_data=not args.no_data))
    return 0


def _read_utf8(path: Path, what: str) -> str:
    """A text file's contents; bytes that are not UTF-8 are a CtacError saying what it should be."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CtacError(f"'{path}' is not UTF-8 text (byte {exc.start}); {what}") from None


def _asm(args: argparse.Namespace) -> int:
    from ctac.hw import load_hardware
    from ctac.runtime.program import assemble, decode_program, encode_program

    path = Path(args.source)
    try:
        text = _read_utf8(path, "assembly is the text `ctac disasm PROGRAM.ctab` writes")
    except OSError as exc:
        raise CtacError(f"cannot read '{path}': {exc.strerror}") from None
    hw = load_hardware(args.hw)
    blob = encode_program(assemble(text, str(path)))
    decode_program(blob, hw.digest, {b.index: b.capacity for b in hw.buffers})
    target = args.output or f"{path.stem}.ctab"
    write_atomically(target, blob)
    print(f"wrote {target}", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    import json

    from ctac.hw import load_hardware
    from ctac.run import (
        attention_report,
        compare_with_onnxruntime,
        execute,
        load_inputs,
        load_program,
        profile_json,
        profile_program,
        random_inputs,
    )

    hw = load_hardware(args.hw)
    program = load_program(args.program, hw)
    inputs = random_inputs(program, args.seed)
    inputs.update(load_inputs(args.input, inputs))
    outputs, stats = execute(program, hw, inputs)
    profile = profile_program(program, hw, stats)
    errors = compare_with_onnxruntime(args.compare, inputs, outputs) if args.compare else {}
    if args.output:
        from ctac.run import npz_bytes

        write_atomically(args.output, npz_bytes(outputs))
    report = {
        "outputs": {
            name: {
                "shape": list(array.shape),
                **(
                    {
                        "max_abs_err": errors[name]["max_abs_err"],
                        "max_rel_err": errors[name]["max_rel_err"],
                        "min_cosine": errors[name]["min_cosine"],
                    }
                    if name in errors
                    else {}
                ),
            }
            for name, array in outputs.items()
        },
        "profile": profile_json(profile),
        "attention": attention_report(program, stats),
    }
    if program.policy:
        report["cta_policy"] = program.policy
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for name, entry in report["outputs"].items():
        line = f"{name}: {outputs[name].dtype}{entry['shape']}"
        if "max_abs_err" in entry:
            line += f"  vs onnxruntime: max abs err {entry['max_abs_err']:.3g}, max rel err {entry['max_rel_err']:.3g}, min row cosine {entry['min_cosine']:.6f}"
        print(line)
    p = report["profile"]
    print(
        f"{p['cycles']:,} cycles = {p['seconds'] * 1e3:.3f} ms, {p['energy_pj'] / 1e6:.3f} uJ, {p['dram_bytes'] / 1e6:.3f} MB DRAM"
    )
    for layer in report["attention"]:
        print(
            f"attention {layer['layer']}: {layer['tokens']} tokens -> {layer['query_clusters']} query / {layer['kv_clusters']} key-value clusters"
        )
    for decision in program.policy:
        print(f"cta policy: {decision['name']}: {decision['reason']}")
    if args.output:
        print(f"wrote {args.output}")
    return 0


def _profile(args: argparse.Namespace) -> int:
    from ctac.hw import load_hardware
    from ctac.run import (
        execute,
        load_inputs,
        load_program,
        profile_program,
        random_inputs,
        timing_clusters,
    )
    from ctac.runtime.profile import format_blocks, format_summary, write_reports

    hw = load_hardware(args.hw)
    program = load_program(args.program, hw)
    stats = None
    if args.cluster_ratio is not None and not (args.timing_only and args.cluster_ratio > 0):
        raise CtacError(
            "--cluster-ratio R needs --timing-only and R > 0 (a functional run measures the "
            "clusters itself)"
        )
    if args.cta_settings is not None and not args.timing_only:
        raise CtacError(
            "--cta-settings needs --timing-only (a functional run measures the clusters itself)"
        )
    if not args.timing_only:
        inputs = random_inputs(program, args.seed)
        inputs.update(load_inputs(args.input, inputs))
        _, stats = execute(program, hw, inputs)
    # --timing-only: the nominal sizes, --cluster-ratio's, or the --cta-settings calibration's
    clusters = timing_clusters(program, args.cluster_ratio, args.cta_settings)
    if clusters is not None:
        from ctac.runtime.costmodel import simulate

        profile = simulate(program, hw, clusters)
    else:
        profile = profile_program(program, hw, stats)
    print(
        format_summary(
            profile,
            f"{args.program} ({len(program.instructions):,} instructions{', timing only' if args.timing_only else ''})",
        )
    )
    print()
    print(format_blocks(profile))
    for decision in program.policy:
        print(f"cta policy: {decision['name']}: {decision['reason']}")
    paths = write_reports(profile, Path(args.out), Path(args.program).stem, program.policy)
    print()
    for kind, path in paths.items():
        print(f"wrote {path}  ({kind})")
    print(
        "open trace.json in https://ui.perfetto.dev (Open trace file) to see every unit's timeline"
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    import json

    from ctac.compare import compare, format_table, to_json
    from ctac.hw import load_hardware
    from ctac.pipeline import run_passes

    hw = load_hardware(args.hw)
    detected, _ = _front_end(args, "cta-detected")
    compressed = _compressed(detected.clone(), args)
    elsa = detected.clone()
    run_passes(elsa, _elsa_spec(args))
    results = compare(Path(args.model), detected, hw, compressed, args.seed, elsa)
    report = to_json(results)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(results))
    if args.out:
        from ctac.runtime.profile import plot_blocks

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_atomically(out / "compare.json", (json.dumps(report, indent=2) + "\n").encode())
        profiles = {r.mode.split(" ")[0]: r.profile for r in results if r.profile is not None}
        plot_blocks(profiles, out / "compare_cycles.png", out / "compare_energy.png")
        if not args.json:
            print(
                f"wrote {out / 'compare.json'}, {out / 'compare_cycles.png'}, {out / 'compare_energy.png'}"
            )
    return 0


def _compressed(module, args: argparse.Namespace):
    """The module with cta-compress applied for the CTA mode."""
    from ctac.pipeline import run_passes

    run_passes(module, _compress_spec(args))
    return module


def _elsa_spec(args: argparse.Namespace) -> str:
    return f"elsa-filter{{bits={args.elsa_bits} threshold={args.elsa_threshold}}}"


def _compress_spec(args: argparse.Namespace, extra: str = "") -> str:
    settings = _settings(args)
    if settings is not None:
        scale = ",".join(f"{f:.4f}" for f in settings.layer_scale)
        extra = " ".join(filter(None, [f"layer-scale={scale}" if scale else "", extra]))
    return (
        f"cta-compress{{tau-q={args.tau} tau-kv={args.tau_kv} hash-bits={args.hash_bits} "
        f"method={args.cta_method} granularity={args.cta_granularity} block={args.cta_block}"
        # only when asked: the default spec text stays as it was
        + (" values=pooled-input" if getattr(args, "cta_values", "") == "pooled-input" else "")
        + (" keys=shared" if getattr(args, "cta_keys", "") == "shared" else "")
        + (f" window={args.cta_window}" if getattr(args, "cta_window", 0) else "")
        + (f" keep-top={args.cta_keep_top}" if getattr(args, "cta_keep_top", 0) else "")
        + (f" {extra}" if extra else "")
        + "}"
    )


def _settings(args: argparse.Namespace):
    """The --cta-settings file, applied to args once (its thresholds replace the flags')."""
    path = getattr(args, "cta_settings", None)
    if not path:
        return None
    if getattr(args, "_settings", None) is None:
        from ctac.calibrate import read_settings

        settings = read_settings(path)
        args.tau, args.tau_kv, args.hash_bits = settings.tau_q, settings.tau_kv, settings.hash_bits
        args.cta_method, args.cta_granularity = settings.method, settings.granularity
        args.cta_window = settings.window
        args._settings = settings
    return args._settings


def _policy(detected, args: argparse.Namespace) -> str:
    """--cta-policy cost: decide per layer, print each decision, return the keep-exact option."""
    if getattr(args, "cta_policy", "cost") != "cost":
        return ""
    import json

    from xdsl.dialects.builtin import StringAttr

    from ctac.passes.lower_to_isa import POLICY_ATTRIBUTE
    from ctac.policy import keep_exact_option

    decisions = _decisions(detected, args)
    for decision in decisions:
        print(f"cta policy: {decision.name}: {decision.reason}", file=sys.stderr)
    # Carried into the program (its source table), so run and profile can report them.
    detected.attributes[POLICY_ATTRIBUTE] = StringAttr(
        json.dumps([decision.to_json() for decision in decisions], sort_keys=True)
    )
    return keep_exact_option(decisions)


def _decisions(detected, args: argparse.Namespace) -> list:
    """The cost policy's decision for each attention of the detected module (unchanged), at the
    --cluster-ratio or the --cta-settings file's ratios and buckets."""
    from ctac.hw import load_hardware
    from ctac.policy import decide

    settings = _settings(args)
    ratio = args.cluster_ratio
    if ratio is not None and not ratio > 0:
        raise CtacError(f"--cluster-ratio must be > 0, got {ratio}")
    if ratio is None:
        # A calibration's observed ratios, each layer and role its own; else no merging.
        ratio = settings.expectation() if settings is not None else 1.0
    buckets = settings.buckets if settings is not None else 1.0
    return decide(
        detected, _compress_spec(args), load_hardware(getattr(args, "hw", None)), ratio, buckets
    )


def _demo(args: argparse.Namespace) -> int:
    import json
    import time
    from importlib import resources

    from ctac.compare import compare, format_table, to_json
    from ctac.hw import load_hardware
    from ctac.runtime.profile import format_summary, plot_blocks, write_reports

    started = time.perf_counter()
    out = Path(args.out)
    model = Path(str(resources.files("ctac").joinpath("data/demo_bert.onnx")))
    steps = 4

    def step(number: int, text: str) -> None:
        print(f"[{number}/{steps}] {text} ({time.perf_counter() - started:.1f} s)", flush=True)

    print(
        f"ctac demo: a 2-layer BERT (hidden 64, 4 heads, random weights) shipped with ctac, batch 1 x {args.seq} tokens"
    )
    step(1, "importing, canonicalising and detecting attention")
    args.model, args.shape = str(model), [f"input_ids=1x{args.seq},attention_mask=1x{args.seq}"]
    args.max_tensor_bytes, args.verify_attention = DEFAULT_MAX_TENSOR_BYTES, True
    detected, reports = _front_end(args, "cta-detected")
    print(
        f"      {len(reports)} attention layers found: "
        + "; ".join(f"{r.layer} ({r.form})" for r in reports)
    )
    step(2, f"compressing attention (CTA, tau={args.tau}, {args.hash_bits} hash bits)")
    compressed = _compressed(detected.clone(), args)
    step(3, "compiling both to the CTA-ISA, running them on the accelerator model and onnxruntime")
    hw = load_hardware(None)
    results = compare(model, detected, hw, compressed, args.seed)
    print()
    print(format_table(results))
    print()
    step(4, f"writing the trace, plots and reports to {out}/")
    cta = next(r for r in results if r.mode.startswith("CTA"))
    exact = next(r for r in results if r.mode.startswith("exact"))
    for layer in cta.details["attention"]:
        print(
            f"      {layer['layer']}: {layer['tokens']} tokens -> {layer['query_clusters']} query / "
            f"{layer['kv_clusters']} key-value clusters per (sequence, head)"
        )
    _explain_demo(compressed, hw, cta, exact)
    paths = write_reports(cta.profile, out, "CTA")
    plot_blocks(
        {"exact": exact.profile, "CTA": cta.profile},
        out / "exact_vs_cta_cycles.png",
        out / "exact_vs_cta_energy.png",
    )
    write_atomically(out / "compare.json", (json.dumps(to_json(results), indent=2) + "\n").encode())
    print(format_summary(cta.profile, "CTA program on the accelerator:"))
    print()
    for path in [
        *paths.values(),
        out / "exact_vs_cta_cycles.png",
        out / "exact_vs_cta_energy.png",
        out / "compare.json",
    ]:
        print(f"wrote {path}")
    print(f"open {paths['trace']} in https://ui.perfetto.dev to see every unit's timeline")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def _explain_demo(compressed, hw, cta, exact) -> None:
    """Why CTA does or does not pay on the demo model, and at how few clusters per token it
    would (cost model, timing only, at this length)."""

    from ctac.emit import program_from_module
    from ctac.passes.lower_to_isa import lower_module
    from ctac.policy import ratio_sweep

    layers = cta.details["attention"]
    formed = [
        (layer["query_clusters"] + layer["kv_clusters"]) / 2 / max(layer["tokens"], 1)
        for layer in layers
    ]
    ratio = sum(formed) / max(len(formed), 1)
    relative = cta.profile.cycles / exact.profile.cycles
    verdict = "pays" if relative < 1 else "does not pay"
    print(
        f"      why: CTA {verdict} here ({relative:.2f}x exact's cycles): the random weights "
        f"repeat little ({ratio:.2f} clusters per token),\n      so attention shrinks by that "
        "much while hashing, clustering, pooling and recovery add their own work."
    )
    program = program_from_module(lower_module(compressed.clone(), hw))
    sweep = ratio_sweep(program, hw)
    points = ", ".join(f"{r:g}: {c / exact.profile.cycles:.2f}x" for r, c in sweep)
    paying = [r for r, c in sweep if c < exact.profile.cycles]
    crossover = (
        f"CTA pays at {max(paying):g} clusters per token or fewer"
        if paying
        else f"CTA does not pay even at {sweep[-1][0]:g} clusters per token at this length"
    )
    print(f"      crossover (cost model): {crossover}\n      (clusters per token: CTA / exact "
          f"cycles {points}); longer sequences pay sooner: bench/scaling.py")  # fmt: skip
    # What a user gets: `ctac compile --attention cta` decides with the same cost model at the
    # conservative 1 cluster per token (or a calibration's ratio) and keeps exact what loses.
    print(
        "      so `ctac compile --attention cta` (default --cta-policy cost) "
        + (
            "compresses attention on this model"
            if sweep[0][1] < exact.profile.cycles
            else "keeps attention exact on this model, never slower (with a calibration, "
            "`ctac calibrate`, it decides at the measured clusters per token)"
        )
        + ";\n      `--cta-policy always` compresses every layer, as above"
    )


def _sweep(args: argparse.Namespace) -> int:
    from ctac.sweep import main as sweep_main

    return sweep_main(args)


def _isa(args: argparse.Namespace) -> int:
    from ctac.runtime.isa import markdown_table

    sys.stdout.write(markdown_table())
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


def _inspect(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    detected, reports = _front_end(args, "cta")
    rows = [asdict(report) for report in reports]
    # What `ctac compile --attention cta` would decide for each layer (--cta-policy always: no
    # decision, every layer compressed); attentions and reports are both in program order.
    try:
        decisions = _decisions(detected, args) if args.cta_policy == "cost" and rows else []
    except CtacError as exc:  # the policy compiles the model; inspect still reports its layers
        reason = "not decided: the model cannot be compiled: " + str(exc).splitlines()[0]
        decisions = []
        for row in rows:
            row["cta_policy"] = {"compress": None, "reason": reason}
    for row, decision in zip(rows, decisions, strict=False):
        row["cta_policy"] = decision.to_json()
    if args.json:
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


def _eval(args: argparse.Namespace) -> int:
    from ctac.pipeline import parse_module
    from ctac.runtime.evaluator import check_value_sizes, evaluate, module_values, random_inputs

    path = Path(args.module)
    if not path.is_file():
        raise CtacError(f"module file '{path}' not found")
    module = parse_module(_read_utf8(path, "a module is the text `ctac compile` writes"), str(path))
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


def _model_arguments(parser: argparse.ArgumentParser) -> None:
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


def _window_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cta-window", type=int, default=DEFAULT_WINDOW, metavar="W",
        help="compare each token only with the W clusters its hash bucket opened last (bounded "
        f"clustering work per token; default {DEFAULT_WINDOW}; 0: every cluster of the bucket)",
    )  # fmt: skip


def _compression_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tau",
        type=float,
        default=0.5,
        help="CTA merge threshold for queries (default 0.5)",
    )
    parser.add_argument(
        "--tau-kv",
        type=float,
        default=0.3,
        help="CTA merge threshold for keys and values (default 0.3)",
    )
    parser.add_argument(
        "--hash-bits", type=int, default=4, help="sign-random-projection bits of the CTA buckets"
    )
    parser.add_argument(
        "--cta-granularity", choices=["head", "input"], default="head",
        help="cluster per (sequence, head) after the projections, or the layer input before them",
    )  # fmt: skip
    parser.add_argument(
        "--cta-block", type=int, default=64, help="block size of the causal CTA scheme"
    )
    parser.add_argument(
        "--cta-values", choices=["project", "pooled-input"], default="project",
        help="head placement: pool the projected V over the key clusters (project), or pool the "
        "layer input per head and project only the clusters (pooled-input; same values)",
    )  # fmt: skip
    _window_argument(parser)
    parser.add_argument(
        "--cta-keep-top", type=int, default=0, metavar="K",
        help="head placement: keep the K keys of each (sequence, head) with the largest "
        "estimated attention mass (mean query . key) out of clustering (0, the default: none)",
    )  # fmt: skip
    parser.add_argument(
        "--cta-keys", choices=["per-head", "shared"], default="per-head",
        help="head placement: cluster K per (sequence, head), or once per sequence over the "
        "concatenated keys of all heads (shared: ids and counts shared by the heads)",
    )  # fmt: skip
    parser.add_argument(
        "--cta-method",
        default="hash-leader",
        help="CTA clustering method (see docs/compression.md)",
    )
    parser.add_argument(
        "--cta-policy", choices=["always", "cost"], default="cost",
        help="compress only the layers whose compressed form the cost model finds cheaper at "
        "--cluster-ratio (cost, the default; see ctac/policy.py), or every attention (always)",
    )  # fmt: skip
    parser.add_argument(
        "--cluster-ratio", type=float, default=None,
        help="clusters per token the cost policy expects (default: the --cta-settings file's, "
        "else 1.0, no merging)",
    )  # fmt: skip
    parser.add_argument(
        "--cta-settings", metavar="FILE",
        help="thresholds and cluster ratios from `ctac calibrate` (override --tau, --tau-kv, "
        "--hash-bits, --cta-method, --cta-granularity)",
    )  # fmt: skip
    parser.add_argument("--elsa-bits", type=int, default=16, help="hash bits of the ELSA baseline")
    parser.add_argument(
        "--elsa-threshold",
        type=float,
        default=0.5,
        help="estimated-cosine threshold of the ELSA baseline",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctac",
        description="Compile ONNX transformers for a Compressed Token Attention accelerator.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"ctac {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    compile_parser = commands.add_parser(
        "compile",
        help="import an ONNX model and compile it",
        epilog=EXAMPLES_COMPILE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_arguments(compile_parser)
    compile_parser.add_argument(
        "--emit",
        choices=["onnx", "cta", "isa", "asm", "ctab"],
        default="ctab",
        help="what to produce: the program file (ctab, default: -o or MODEL.ctab), its assembly "
        "(asm), the ctaisa module (isa), the module after attention detection (cta) or the "
        "canonicalised onnx-dialect module (onnx); text goes to stdout without -o",
    )
    compile_parser.add_argument(
        "--attention",
        choices=["exact", "cta", "elsa"],
        default="exact",
        help="how attention runs on the accelerator: exact (default), cta (compressed tokens) or "
        "elsa (per-query candidate keys from hashed angle estimates, the baseline)",
    )
    _compression_arguments(compile_parser)
    compile_parser.add_argument("--hw", help="hardware config TOML (default: ctac's own)")
    compile_parser.add_argument("-o", "--output", help="output file")
    compile_parser.set_defaults(handler=_compile)

    calibrate_parser = commands.add_parser(
        "calibrate",
        help="thresholds that keep the outputs within a target cosine on calibration data",
        epilog="examples:\n  ctac calibrate model.onnx --shape input_ids=1x128,attention_mask=1x128 "
        "--data calib.npz -o cta.toml\n  ctac calibrate model.onnx --shape input_ids=1x128,attention_mask=1x128 "
        "--data texts/ --tokenizer tokenizer.json --methods hash-leader,leader -o cta.toml\n"
        "  ctac compile model.onnx --shape ... --attention cta "
        "--cta-settings cta.toml --cta-policy cost\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_arguments(calibrate_parser)
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
    _window_argument(calibrate_parser)
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
    calibrate_parser.set_defaults(handler=_calibrate)

    disasm_parser = commands.add_parser(
        "disasm",
        help="print a program file as assembly",
        epilog="examples:\n  ctac disasm bert.ctab -o bert.s\n  ctac disasm bert.ctab --no-data | less\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    disasm_parser.add_argument("program", help="a .ctab file")
    disasm_parser.add_argument("--hw", help="the hardware config it was compiled for")
    disasm_parser.add_argument("--no-data", action="store_true", help="leave out the data segment")
    disasm_parser.add_argument("-o", "--output", help="write to this file instead of stdout")
    disasm_parser.set_defaults(handler=_disasm)

    asm_parser = commands.add_parser(
        "asm",
        help="assemble a program from assembly",
        epilog="examples:\n  ctac asm bert.s -o bert.ctab\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    asm_parser.add_argument("source", help="an assembly file written by ctac disasm")
    asm_parser.add_argument("--hw", help="hardware config to check the program against")
    asm_parser.add_argument("-o", "--output", help="output .ctab (default: SOURCE.ctab)")
    asm_parser.set_defaults(handler=_asm)

    run_parser = commands.add_parser(
        "run",
        help="run a program on the accelerator model",
        epilog="examples:\n  ctac run bert.ctab --compare tests/models/bert_ts_eager.onnx\n"
        "  ctac run bert.ctab --input input_ids=ids.npy --input attention_mask=mask.npy -o out.npz --json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run_parser.add_argument("program", help="a .ctab file")
    run_parser.add_argument(
        "--input", action="append", default=[], metavar="NAME=FILE.npy", help="an input array"
    )
    run_parser.add_argument(
        "--seed", type=int, default=0, help="seed for inputs not given with --input"
    )
    run_parser.add_argument(
        "--compare", metavar="MODEL.onnx", help="compare the outputs with onnxruntime"
    )
    run_parser.add_argument("--json", action="store_true", help="print one JSON object")
    run_parser.add_argument("--hw", help="the hardware config it was compiled for")
    run_parser.add_argument("-o", "--output", help="save the outputs to this .npz file")
    run_parser.set_defaults(handler=_run)

    profile_parser = commands.add_parser(
        "profile",
        help="cycles, energy and traffic per unit and layer, with a trace and plots",
        epilog="examples:\n  ctac profile bert.ctab --out prof/\n  ctac profile bert.ctab --out prof/ --timing-only\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    profile_parser.add_argument(
        "--input", action="append", default=[], metavar="NAME=FILE.npy", help="an input array"
    )
    profile_parser.add_argument(
        "--seed", type=int, default=0, help="seed for inputs not given with --input"
    )
    profile_parser.add_argument("--hw", help="the hardware config it was compiled for")
    profile_parser.set_defaults(handler=_profile)

    compare_parser = commands.add_parser(
        "compare",
        help="exact vs CTA attention on the accelerator vs the GPU roofline, in one table",
        epilog="examples:\n  ctac compare tests/models/bert_ts_eager.onnx --shape input_ids=2x16,attention_mask=2x16 --tau 0.3\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_arguments(compare_parser)
    _compression_arguments(compare_parser)
    compare_parser.add_argument("--hw", help="hardware config TOML (default: ctac's own)")
    compare_parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    compare_parser.add_argument(
        "--json", action="store_true", help="print JSON instead of the table"
    )
    compare_parser.add_argument("--out", help="also write compare.json and side-by-side plots here")
    compare_parser.set_defaults(handler=_compare)

    sweep_parser = commands.add_parser(
        "sweep",
        help="a design-space sweep (models x settings x hardware) into a table and plots",
        epilog="examples:\n  ctac sweep examples/sweep.toml --jobs 2\n"
        "  ctac sweep examples/sweep.toml --ray            (a local Ray instance)\n"
        "  ctac sweep examples/sweep.toml --ray ray://head:10001 --cache /shared/ctac-cache\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    sweep_parser.set_defaults(handler=_sweep)

    demo_parser = commands.add_parser(
        "demo",
        help="the whole story on a small BERT: detect, compress, compile, run, compare, profile",
        epilog="examples:\n  ctac demo\n  ctac demo --out /tmp/ctac-demo --tau 0.4\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo_parser.add_argument(
        "--out", default="ctac-demo", help="folder for the artifacts (default: ./ctac-demo)"
    )
    demo_parser.add_argument(
        "--seq", type=int, default=64, help="tokens per sequence (at most 128)"
    )
    demo_parser.add_argument("--seed", type=int, default=0, help="seed of the random token ids")
    _compression_arguments(demo_parser)
    demo_parser.set_defaults(handler=_demo)

    isa_parser = commands.add_parser(
        "isa",
        help="print the instruction set table",
        epilog="examples:\n  ctac isa --markdown > docs/isa.md\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    isa_parser.add_argument("--markdown", action="store_true", help="as Markdown (the only format)")
    isa_parser.set_defaults(handler=_isa)

    inspect_parser = commands.add_parser(
        "inspect",
        help="list the attention layers ctac finds in a model",
        epilog=EXAMPLES_INSPECT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_arguments(inspect_parser)
    _compression_arguments(inspect_parser)
    inspect_parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect_parser.set_defaults(handler=_inspect)

    eval_parser = commands.add_parser(
        "eval",
        help="run a module with the numpy reference evaluator",
        epilog=EXAMPLES_EVAL,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    eval_parser.add_argument("module", help="a .mlir module printed by ctac")
    eval_parser.add_argument(
        "--input", action="append", default=[], metavar="NAME=FILE.npy", help="an input array"
    )
    eval_parser.add_argument(
        "--seed", type=int, default=0, help="seed for inputs not given with --input"
    )
    eval_parser.add_argument("-o", "--output", help="save the outputs to this .npz file")
    eval_parser.add_argument(
        "--max-tensor-bytes", type=int, default=DEFAULT_MAX_TENSOR_BYTES,
        help=f"refuse a module with a value larger than this (default {DEFAULT_MAX_TENSOR_BYTES})",
    )  # fmt: skip
    eval_parser.set_defaults(handler=_eval)
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
