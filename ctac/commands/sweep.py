"""`ctac sweep`: a design-space sweep (ctac/sweep.py does the work)."""

from __future__ import annotations

import argparse

# Heavy modules (xDSL, the passes, the runtime) are imported inside the commands, so that
# `ctac --help` and argument errors answer at once (start-up speed, not a cycle).


def sweep_command(args: argparse.Namespace) -> int:
    from ctac.sweep import main as sweep_main

    return sweep_main(args)
