"""`ctac demo`: the whole story on the small BERT shipped with ctac."""

from __future__ import annotations

import argparse
from pathlib import Path

from ctac.files import write_atomically
from ctac.limits import DEFAULT_MAX_TENSOR_BYTES

# Heavy modules (xDSL, the passes, the runtime) are imported inside the commands, so that
# `ctac --help` and argument errors answer at once (start-up speed, not a cycle).


def demo_command(args: argparse.Namespace) -> int:
    import json
    import time
    from importlib import resources

    from ctac.compare import compare, format_table, to_json
    from ctac.frontend import compress_module, front_end
    from ctac.hw import load_hardware
    from ctac.runtime.profile import format_summary, plot_blocks, write_reports

    started = time.perf_counter()
    out = Path(args.out)
    model = Path(str(resources.files("ctac").joinpath("data/demo_bert.onnx")))
    steps = 4 if args.no_real_weights else 5

    def step(number: int, text: str) -> None:
        print(f"[{number}/{steps}] {text} ({time.perf_counter() - started:.1f} s)", flush=True)

    print(
        f"ctac demo: a 2-layer BERT (hidden 64, 4 heads, random weights) shipped with ctac, batch 1 x {args.seq} tokens"
    )
    step(1, "importing, canonicalising and detecting attention")
    args.model, args.shape = str(model), [f"input_ids=1x{args.seq},attention_mask=1x{args.seq}"]
    args.max_tensor_bytes, args.verify_attention = DEFAULT_MAX_TENSOR_BYTES, True
    detected, reports = front_end(args, "cta-detected")
    print(
        f"      {len(reports)} attention layers found: "
        + "; ".join(f"{r.layer} ({r.form})" for r in reports)
    )
    step(2, f"compressing attention (CTA, tau={args.tau}, {args.hash_bits} hash bits)")
    compressed = compress_module(detected.clone(), args)
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
        f"ctac demo: {model.name} at {args.seq} tokens, CTA tau {args.tau}/{args.tau_kv}, "
        f"{args.hash_bits} hash bits, every layer compressed",
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
    if not args.no_real_weights:
        from ctac.commands.demo_real import real_weight_step

        print()
        step(5, "the calibrated result on real weights and real prose")
        real_weight_step(args.real_seq, lambda line: print(f"      {line}", flush=True))
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def _explain_demo(compressed, hw, cta, exact) -> None:
    """Why CTA does or does not pay on the demo model, and at how few clusters per token it
    would (cost model, timing only, at this length)."""

    from ctac.emit import compile_module
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
    program = compile_module(compressed.clone(), hw)
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
