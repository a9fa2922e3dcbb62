"""The compiler's front end, shared by the Python API (ctac/api.py) and the commands: import,
canonicalize, detect attention, the CTA cost policy and compression, and the cta-compress and
elsa-filter pass specs from a `ctac compile` argument namespace (the flags of
ctac/arguments.py; `compile_arguments` gives one with the CLI's defaults)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ctac.errors import CtacError

# Heavy modules (xDSL, the passes, the runtime) are imported inside the functions, so that
# `ctac --help` and argument errors answer at once (start-up speed, not a cycle).


# Flags that only mean something in one attention mode of `ctac compile`.
MODE_FLAGS = {
    "cta": ("tau", "tau_kv", "hash_bits", "cta_granularity", "cta_block", "cta_values",
            "cta_window", "cta_keep_top", "cta_keys", "cta_method", "cta_policy",
            "cluster_ratio", "cta_settings"),
    "elsa": ("elsa_bits", "elsa_threshold"),
}  # fmt: skip
# A merge threshold is a relative distance (||x - c|| <= tau ||c||): at 2 any token merges
# with any cluster of its norm, so larger values mean nothing more.
MAX_TAU = 2.0


def check_compression_flags(args: argparse.Namespace) -> None:
    """Refuse flags the chosen --attention mode ignores, and thresholds out of range."""
    mode = getattr(args, "attention", None)
    given = getattr(args, "given", frozenset())
    for flag_mode, flags in MODE_FLAGS.items():
        ignored = [f for f in flags if f in given]
        if mode is not None and mode != flag_mode and ignored:
            names = ", ".join("--" + f.replace("_", "-") for f in ignored)
            raise CtacError(
                f"{names} {'apply' if len(ignored) > 1 else 'applies'} only to --attention "
                f"{flag_mode}, but this compile is --attention {mode}; add --attention "
                f"{flag_mode} or leave {'them' if len(ignored) > 1 else 'it'} out"
            )
    block = getattr(args, "cta_block", None)
    if block is not None and block < 1:
        raise CtacError(f"--cta-block {block} is out of range: a causal block holds >= 1 position")
    for name in ("tau", "tau_kv"):
        value = getattr(args, name, None)
        if value is not None and not 0 <= value <= MAX_TAU:
            raise CtacError(
                f"--{name.replace('_', '-')} {value:g} is out of range: a merge threshold is a "
                f"relative distance in [0, {MAX_TAU:g}] (0 merges only identical tokens)"
            )


def front_end(args: argparse.Namespace, emit: str, reuse: dict | None = None):
    """Import, canonicalize and (for emit != 'onnx') detect attention; returns (module, reports).
    With `reuse` (a dict): where the CTA policy compiled the final module already, as it does
    when every layer decides alike, reuse["program"] is that program (compile it once, not
    twice)."""
    from ctac.importer import import_model
    from ctac.model_interface import parse_shape_flags

    check_compression_flags(args)
    from ctac.passes.detect_attention import detect_attention
    from ctac.pipeline import run_passes

    outputs = getattr(args, "outputs", None)  # the CLI's "a,b" or the API's list of names
    if isinstance(outputs, str):
        outputs = [name.strip() for name in outputs.split(",") if name.strip()]
    imported = import_model(
        args.model, parse_shape_flags(args.shape), args.max_tensor_bytes, outputs=outputs or None
    )
    run_passes(imported.module, "onnx-canonicalize")
    reports, refused = [], []
    if emit != "onnx":
        reports, refused = detect_attention(imported.module, verify=args.verify_attention)
        for line in refused:
            print(f"warning: attention match refused at {line}", file=sys.stderr)
        if getattr(args, "attention", "exact") == "cta" and emit != "cta-detected":
            from ctac.passes.cta_compress import uncompressible

            for layer, reason in uncompressible(imported.module):
                print(f"warning: attention '{layer}' stays exact: {reason}", file=sys.stderr)
            candidates = [] if reuse is not None else None
            keep_exact = _policy(imported.module, args, candidates)
            run_passes(imported.module, compress_spec(args, keep_exact))
            if candidates:
                import gc

                from ctac.policy import compiled_form

                program = compiled_form(imported.module, candidates)
                if program is not None:
                    reuse["program"] = program
                # The other forms' IR is cyclic garbage: freed now, not at the write's peak.
                candidates.clear()
                gc.collect()
        if getattr(args, "attention", "exact") == "elsa" and emit != "cta-detected":
            run_passes(imported.module, elsa_spec(args))
    return imported.module, reports


def compress_module(module, args: argparse.Namespace):
    """The module with cta-compress applied for the CTA mode."""
    from ctac.pipeline import run_passes

    run_passes(module, compress_spec(args))
    return module


def elsa_spec(args: argparse.Namespace) -> str:
    return f"elsa-filter{{bits={args.elsa_bits} threshold={args.elsa_threshold}}}"


def compress_spec(args: argparse.Namespace, extra: str = "") -> str:
    from ctac.passes.cta_compress import CompressOptions

    settings = cta_settings(args)
    if settings is not None:
        scale = ",".join(f"{f:.4f}" for f in settings.layer_scale)
        extra = " ".join(filter(None, [f"layer-scale={scale}" if scale else "", extra]))
    return (
        f"cta-compress{{tau-q={args.tau} tau-kv={args.tau_kv} hash-bits={args.hash_bits} "
        f"method={args.cta_method} granularity={args.cta_granularity} "
        # without --cta-block: the pass's own default (the policy sizes causal blocks itself)
        f"block={args.cta_block or CompressOptions.block}"
        # only when asked: the default spec text stays as it was
        + (" values=pooled-input" if getattr(args, "cta_values", "") == "pooled-input" else "")
        + (" keys=shared" if getattr(args, "cta_keys", "") == "shared" else "")
        + (f" window={args.cta_window}" if getattr(args, "cta_window", 0) else "")
        + (f" keep-top={args.cta_keep_top}" if getattr(args, "cta_keep_top", 0) else "")
        + (f" {extra}" if extra else "")
        + "}"
    )


def cta_settings(args: argparse.Namespace):
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


def _policy(detected, args: argparse.Namespace, candidates: list | None = None) -> str:
    """--cta-policy cost: decide per layer, print each decision, return the cta-compress options
    that carry them out (keep-exact, compressed-blocks). `candidates` receives the forms the
    policy compiled (policy.decide)."""
    if getattr(args, "cta_policy", "cost") != "cost":
        return ""
    import json

    from xdsl.dialects.builtin import StringAttr

    from ctac.passes.lower_to_isa import POLICY_ATTRIBUTE
    from ctac.policy import policy_options

    decisions = policy_decisions(detected, args, candidates)
    for decision in decisions:
        print(f"cta policy: {decision.name}: {decision.reason}", file=sys.stderr)
    # Carried into the program (its source table), so run and profile can report them.
    detected.attributes[POLICY_ATTRIBUTE] = StringAttr(
        json.dumps([decision.to_json() for decision in decisions], sort_keys=True)
    )
    return policy_options(decisions)


def policy_decisions(detected, args: argparse.Namespace, candidates: list | None = None) -> list:
    """The cost policy's decision for each attention of the detected module (unchanged), at the
    --cluster-ratio or the --cta-settings file's ratios and buckets; `candidates` as decide's."""
    from ctac.hw import load_hardware
    from ctac.policy import CAUSAL_BLOCK_SIZES, decide

    settings = cta_settings(args)
    ratio = args.cluster_ratio
    if ratio is not None and not ratio > 0:
        raise CtacError(f"--cluster-ratio must be > 0, got {ratio}")
    if ratio is None:
        # A calibration's observed ratios, each layer and role its own; else no merging.
        ratio = settings.expectation() if settings is not None else 1.0
    buckets = settings.buckets if settings is not None else 1.0
    # Without --cta-block, a causal layer's key blocks are the policy's to size.
    sizes = (args.cta_block,) if args.cta_block else CAUSAL_BLOCK_SIZES
    bar = None
    if sys.stderr.isatty():  # the policy compiles the model 2 to ~12 times: say so
        from tqdm import tqdm

        bar = tqdm(desc="cta policy", unit=" compiles", leave=False, file=sys.stderr)

    def compiled(form: str) -> None:
        bar.set_postfix_str(form, refresh=False)
        bar.update()

    try:
        return decide(
            detected, compress_spec(args), load_hardware(getattr(args, "hw", None)), ratio,
            buckets, sizes, compiled if bar is not None else None, candidates,
        )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()


def compile_arguments(model: str, **values: object) -> argparse.Namespace:
    """A `ctac compile` argument namespace with the CLI's own defaults (the flags of
    ctac/arguments.py, which the parser also uses), then `values`: so the API and the CLI
    cannot drift apart."""
    from ctac.arguments import compression_arguments, model_arguments

    parser = argparse.ArgumentParser(add_help=False)
    model_arguments(parser)
    compression_arguments(parser)
    args = parser.parse_args(["--", model])
    args.attention, args.hw = "exact", None  # ctac compile's --attention and --hw defaults
    for key, value in values.items():
        setattr(args, key, value)
    return args


def record_origin(program, model: str | Path, hw, sha256: str | None = None) -> None:
    """Record in a program the model it was compiled from (path and SHA-256, `sha256` if the
    caller already has it: `ctac run --compare` refuses another model) and embed its hardware
    config (run, profile and disasm need no --hw)."""
    from ctac.files import file_sha256

    digest = sha256 if sha256 is not None else file_sha256(model)
    program.model = {"path": str(Path(model).resolve()), "sha256": digest}
    program.hardware = {"path": hw.path, "toml": hw.text}
