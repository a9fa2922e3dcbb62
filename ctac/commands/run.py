"""`ctac run`, `ctac profile` and `ctac compare`: programs on the accelerator model, its
profile, and the attention modes side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from ctac.errors import CtacError
from ctac.files import write_atomically

# Heavy modules (xDSL, the passes, the runtime) are imported inside the commands, so that
# `ctac --help` and argument errors answer at once (start-up speed, not a cycle).


def _load_program(args: argparse.Namespace):
    """The hardware config (the program's own, else --hw) and the program file checked
    against it."""
    from ctac.run import load_program, program_hardware

    hw = program_hardware(args.program, args.hw)
    return hw, load_program(args.program, hw)


def _check_compared_model(program, program_path: str, model: str) -> None:
    """--compare MODEL.onnx must be the model the program was compiled from, when the program
    records it (older programs and `ctac asm` output without the record are compared as given)."""
    if program.model is None:
        return
    from ctac.files import file_sha256

    try:
        digest = file_sha256(model)
    except OSError as exc:
        raise CtacError(f"--compare: cannot read '{model}': {exc.strerror}") from None
    if digest != program.model["sha256"]:
        raise CtacError(
            f"--compare {model} (SHA-256 {digest[:12]}...) is not the model '{program_path}' was "
            f"compiled from ({program.model['path']}, SHA-256 {program.model['sha256'][:12]}...); "
            "compare with that model, or recompile"
        )


def provenance(program_path: str | None, model: dict | None, hw, settings: dict) -> dict:
    """A JSON result's provenance record, the API's (`ctac.provenance.provenance`): the program file
    (None: compiled in memory), the model it was compiled from when the program records it, the
    hardware config, ctac's version and the settings it ran with."""
    from ctac.provenance import provenance as record

    path, sha256 = (model["path"], model["sha256"]) if model is not None else (None, None)
    return record(path, sha256, hw, settings, program_path).to_dict()


def _say_neutral_inputs(program, given: list[str]) -> None:
    """Name the inputs random_inputs set to zeros rather than drew (a float mask: nothing
    masked; token types: segment 0), unless --input gave them."""
    import sys

    import numpy as np

    from ctac.runtime.input_names import neutral_input

    named = {flag.partition("=")[0] for flag in given}
    for symbol in program.inputs:
        if symbol.name not in named and neutral_input(symbol.name, np.dtype(symbol.dtype)):
            kind = (
                "an additive mask or bias: nothing masked"
                if np.dtype(symbol.dtype).kind == "f"
                else "token types: segment 0"
            )
            print(
                f"note: input '{symbol.name}' ({symbol.dtype}) is all zeros ({kind}); give "
                f"--input {symbol.name}=FILE.npy for other values",
                file=sys.stderr,
            )


def _execute(program, hw, args: argparse.Namespace):
    """(inputs, outputs, stats) of a functional run: --input arrays, the rest random (--seed)."""
    from ctac.run import execute, load_inputs, random_inputs

    inputs = random_inputs(program, args.seed)
    _say_neutral_inputs(program, args.input)
    inputs.update(load_inputs(args.input, inputs))
    outputs, stats = execute(program, hw, inputs)
    return inputs, outputs, stats


def run_command(args: argparse.Namespace) -> int:
    import json

    from ctac.run import attention_report, compare_with_onnxruntime, profile_json, profile_program

    hw, program = _load_program(args)
    if args.compare:
        _check_compared_model(program, args.program, args.compare)
    inputs, outputs, stats = _execute(program, hw, args)
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
                        # What the error is of: an fp16 machine's rounding (a result of the
                        # modelled precision, not a failure) or an fp32 one's (near 1e-6).
                        "storage": program.element_type,
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
    report["provenance"] = provenance(args.program, program.model, hw,
                                      {"seed": args.seed, "inputs": list(args.input)})  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for name, entry in report["outputs"].items():
        line = f"{name}: {outputs[name].dtype}{entry['shape']}"
        if "max_abs_err" in entry:
            line += f"  vs onnxruntime ({entry['storage']} storage): max abs err {entry['max_abs_err']:.3g}, max rel err {entry['max_rel_err']:.3g}, min row cosine {entry['min_cosine']:.6f}"
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


def profile_command(args: argparse.Namespace) -> int:
    from ctac.run import profile_program, timing_clusters
    from ctac.runtime.profile import format_blocks, format_summary, write_reports

    hw, program = _load_program(args)
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
        _, _, stats = _execute(program, hw, args)
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
    from ctac.provenance import run_settings

    run = run_settings(args.timing_only, args.seed, args.cluster_ratio, args.cta_settings)
    paths = write_reports(profile, Path(args.out), Path(args.program).stem, program.policy,
                          args.format, _plot_title(args, program, hw),
                          provenance(args.program, program.model, hw, run))  # fmt: skip
    print()
    for kind, path in paths.items():
        print(f"wrote {path}  ({kind})")
    print(
        "open trace.json in https://ui.perfetto.dev (Open trace file) to see every unit's timeline"
    )
    return 0


def _plot_title(args: argparse.Namespace, program, hw) -> str:
    """What a profile's plots are of: the program, its model, the machine and the run."""
    parts = [Path(args.program).name]
    if program.model is not None:
        parts.append(f"model {Path(program.model['path']).name}")
    parts.append(str(hw.raw.get("accelerator", {}).get("name", Path(hw.path).stem)))
    if program.policy:
        compressed = sum(1 for decision in program.policy if decision.get("compress"))
        parts.append(f"CTA on {compressed} of {len(program.policy)} attention layers")
    if not args.timing_only:
        parts.append(f"functional run, seed {args.seed}")
    elif args.cluster_ratio is not None:
        parts.append(f"timing only, {args.cluster_ratio:g} clusters per token")
    elif args.cta_settings is not None:
        parts.append(f"timing only, ratios of {Path(args.cta_settings).name}")
    else:
        parts.append("timing only, nominal sizes")
    return ", ".join(parts)


def compare_command(args: argparse.Namespace) -> int:
    import json

    from ctac.compare import compare, format_table, to_json
    from ctac.frontend import compress_module, elsa_spec, front_end
    from ctac.hw import load_hardware, with_precision
    from ctac.pipeline import run_passes

    # --precision makes another machine; the CTA policy in front_end sees it too.
    hw = args.hw = with_precision(load_hardware(args.hw), args.precision)
    detected, _ = front_end(args, "cta-detected")
    compressed = compress_module(detected.clone(), args)
    elsa = detected.clone()
    run_passes(elsa, elsa_spec(args))
    results = compare(Path(args.model), detected, hw, compressed, args.seed, elsa)
    report = to_json(results)
    from ctac.files import file_sha256

    model = {"path": str(Path(args.model).resolve()), "sha256": file_sha256(args.model)}
    settings = {key: getattr(args, key) for key in ("tau", "tau_kv", "hash_bits", "cta_method",
                "cta_granularity", "cta_window", "elsa_bits", "elsa_threshold")}  # fmt: skip
    report["provenance"] = provenance(
        None, model, hw, {"seed": args.seed, "shapes": list(args.shape), **settings}
    )
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
        title = (
            f"{Path(args.model).name} ({' '.join(args.shape)}), {hw.raw['accelerator'].get('name', 'accelerator')}: "
            f"exact, CTA (tau {args.tau}/{args.tau_kv}, {args.hash_bits} bits), ELSA"
        )
        plot_blocks(profiles, out / "compare_cycles.png", out / "compare_energy.png", title)
        if not args.json:
            print(
                f"wrote {out / 'compare.json'}, {out / 'compare_cycles.png'}, {out / 'compare_energy.png'}"
            )
    return 0
