"""Where a CTA program's attention cycles go, on one real passage: all-MiniLM-L6-v2 (real weights)
compiled exact and with the given `ctac compile --attention cta` flags, run on the interpreter for
one pydoc passage of L tokens, then costed with the clusters that run formed. Prints, per program,
the whole model's cycles and energy and the busy cycles of the attention work (every `cta.*`
instruction except the Q/K/V projections) by unit, by op kind and by instruction.

    python bench/cta_breakdown.py 512                       # exact vs the CLI's CTA defaults
    python bench/cta_breakdown.py 512 --cta-window 0        # any ctac compile CTA flags
    python bench/cta_breakdown.py 512 --cta-policy always --tau 0.6 --tau-kv 0.4

The MiniLM export comes from bench/accuracy.py (scripts/export_test_models.py --minilm, cached).
CTA programs compile with `--cta-policy always` unless the flags say otherwise, so the
compression itself is measured.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import minilm_model, passages, tokenizer  # noqa: E402
from common import compile_attention_stages  # noqa: E402


def attention_breakdown(profile) -> Counter:
    """Busy cycles of attention work (not projections) by unit, 'kind:' and 'op:', and its energy."""
    from ctac.runtime.sources import parse_source

    found: Counter = Counter()
    for timing in profile.timings:
        kind = parse_source(timing.source).kind
        if kind.startswith("cta.") and not kind.endswith(".project"):
            found[timing.unit] += timing.occupied
            found[f"kind:{kind}"] += timing.occupied
            found[f"op:{timing.name}/{timing.unit}"] += timing.occupied
            found["energy_pj"] += timing.energy_pj
            found["cycles"] += timing.occupied
    return found


def main(argv: list[str]) -> int:
    from ctac.hw import load_hardware
    from ctac.run import execute
    from ctac.runtime.costmodel import simulate

    if not argv or not argv[0].isdigit():
        print(__doc__)
        return 2
    length, flags = int(argv[0]), argv[1:]
    if "--cta-policy" not in flags:
        flags = [*flags, "--cta-policy", "always"]
    hw = load_hardware(None)
    ids = passages(tokenizer(), length, 1)[0]
    shapes = {"input_ids": [1, length], "attention_mask": [1, length]}
    feeds = {"input_ids": ids[:1], "attention_mask": np.ones((1, length), np.int64)}
    for mode, mode_flags in (("exact", []), ("cta", flags)):
        _, program = compile_attention_stages(
            minilm_model(), shapes, mode, hw, verify=False, flags=mode_flags
        )
        _, stats = execute(program, hw, feeds, progress=False)
        profile = simulate(program, hw, stats.clusters)
        found = attention_breakdown(profile)
        title = mode if mode == "exact" else f"cta {' '.join(flags)}"
        print(f"{title}: {profile.cycles:,} cycles, {profile.energy_pj / 1e6:,.1f} uJ; attention "
              f"work {found['cycles']:,} busy cycles, {found['energy_pj'] / 1e6:,.1f} uJ")  # fmt: skip
        for key, value in sorted(found.items(), key=lambda item: -item[1]):
            if key not in ("cycles", "energy_pj") and value:
                print(f"    {key:<48}{value:>12,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
