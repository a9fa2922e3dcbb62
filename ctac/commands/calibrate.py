"""`ctac calibrate`: thresholds that keep the outputs within a target cosine."""

from __future__ import annotations

import argparse
import sys

from ctac.files import write_atomically

# Heavy modules (xDSL, the passes, the runtime) are imported inside the commands, so that
# `ctac --help` and argument errors answer at once (start-up speed, not a cycle).


def calibrate_command(args: argparse.Namespace) -> int:
    from ctac.calibrate import calibrate
    from ctac.calibration_data import load_calibration_data
    from ctac.frontend import front_end
    from ctac.hw import load_hardware

    module, _ = front_end(args, "cta-detected")
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
