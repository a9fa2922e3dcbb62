"""Which hardware would make CTA pay: the same real passages through all-MiniLM-L6-v2 (real
weights), exact and CTA (the CLI's defaults, every layer compressed), on the default accelerator
and on variants of it with one resource scaled: vector lanes (softmax, pooling), cluster lanes
(the leader step's distances), the PE array. Each program is compiled for its hardware, run on
the interpreter (the run decides the clusters) and costed; printed and saved per variant: CTA's
attention work (busy cycles of every attention instruction except the Q/K/V projections) and the
whole model's cycles and energy, relative to exact attention on the same hardware.

    python bench/cta_hw_sweep.py [--length 512] [--passages 2] [CTA flags ...]

Writes bench/results/cta_hw_sweep.json. A variant's numbers are hypothetical hardware: the
sources of the changed constants say "[assumed] scaled by bench/cta_hw_sweep.py".
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import minilm_model, passages, tokenizer  # noqa: E402
from common import REPO, RESULTS, compile_attention_stages, machine  # noqa: E402
from cta_breakdown import attention_breakdown  # noqa: E402

DEFAULT_HW = (REPO / "ctac" / "data" / "default_hw.toml").read_text()
# (name, [(TOML section, key, value)]): one resource scaled at a time, then two together.
VARIANTS: list[tuple[str, list[tuple[str, str, float]]]] = [
    ("default", []),
    ("vector lanes x2", [("vector", "lanes", 128)]),
    ("vector lanes x4", [("vector", "lanes", 256)]),
    ("cluster lanes x4", [("cluster", "lanes", 256)]),
    ("PE array 64x64", [("pe_array", "rows", 64), ("pe_array", "cols", 64)]),
    ("vector x4 + cluster x4", [("vector", "lanes", 256), ("cluster", "lanes", 256)]),
]


def variant_config(changes: list[tuple[str, str, float]]) -> str:
    """The default config with `changes`: `key = { value = V, source = ... }` in its section."""
    text = DEFAULT_HW
    for section, key, value in changes:
        start = text.index(f"[{section}]")
        end = text.find("\n[", start + 1)
        end = len(text) if end < 0 else end
        body, count = re.subn(
            rf"^{key} = \{{ value = [0-9.]+, source = \"[^\"]*\" \}}",
            f'{key} = {{ value = {value:g}, source = "[assumed] scaled by bench/cta_hw_sweep.py" }}',
            text[start:end],
            flags=re.M,
        )
        if count != 1:
            raise SystemExit(f"no {key} in [{section}] of the default config")
        text = text[:start] + body + text[end:]
    return text


def measure(hw, ids: np.ndarray, flags: list[str]) -> dict[str, dict[str, float]]:
    """Mean over passages of exact and CTA: whole-model cycles and energy, attention work."""
    from ctac.run import execute
    from ctac.runtime.costmodel import simulate

    length = ids.shape[1]
    shapes = {"input_ids": [1, length], "attention_mask": [1, length]}
    found: dict[str, dict[str, float]] = {}
    for mode, mode_flags in (("exact", []), ("cta", flags)):
        _, program = compile_attention_stages(
            minilm_model(), shapes, mode, hw, verify=False, flags=mode_flags
        )
        rows = []
        for row in ids:
            feeds = {"input_ids": row[None], "attention_mask": np.ones((1, length), np.int64)}
            _, stats = execute(program, hw, feeds, progress=False)
            profile = simulate(program, hw, stats.clusters)
            work = attention_breakdown(profile)
            rows.append((profile.cycles, profile.energy_pj, work["cycles"], work["energy_pj"]))
        cycles, energy, attention, attention_energy = np.mean(rows, axis=0)
        found[mode] = {"cycles": cycles, "energy_pj": energy, "attention_cycles": attention,
                       "attention_energy_pj": attention_energy}  # fmt: skip
    return found


def main(argv: list[str] | None = None) -> int:
    from ctac.hw import load_hardware

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--passages", type=int, default=2)
    args, flags = parser.parse_known_args(argv)
    flags = [*flags, "--cta-policy", "always"] if "--cta-policy" not in flags else flags
    ids = passages(tokenizer(), args.length, args.passages)[0]
    results = []
    start = time.perf_counter()
    print(f"all-MiniLM-L6-v2, {args.passages} passage(s) of {args.length} tokens, CTA flags: "
          f"{' '.join(flags)}")  # fmt: skip
    print(f"{'hardware':<26}{'exact attn':>12}{'CTA attn':>12}{'attn rel':>9}{'cycles rel':>11}"
          f"{'energy rel':>11}")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        for name, changes in VARIANTS:
            path = Path(folder) / "hw.toml"
            path.write_text(variant_config(changes))
            found = measure(load_hardware(path), ids, flags)
            exact, cta = found["exact"], found["cta"]
            row = {"hardware": name, "changes": changes, **{f"exact_{k}": v for k, v in exact.items()},
                   **{f"cta_{k}": v for k, v in cta.items()},
                   "attention_rel": cta["attention_cycles"] / exact["attention_cycles"],
                   "cycles_rel": cta["cycles"] / exact["cycles"],
                   "energy_rel": cta["energy_pj"] / exact["energy_pj"]}  # fmt: skip
            results.append(row)
            print(f"{name:<26}{exact['attention_cycles']:>12,.0f}{cta['attention_cycles']:>12,.0f}"
                  f"{row['attention_rel']:>9.3f}{row['cycles_rel']:>11.3f}{row['energy_rel']:>11.3f}",
                  flush=True)  # fmt: skip
    payload = {"benchmark": "cta_hw_sweep", "command": [sys.executable, *sys.argv],
               "machine": machine(), "length": args.length, "passages": args.passages,
               "cta_flags": flags, "attention": "busy cycles summed over units of every cta.* "
               "instruction except the projections (bench/cta_breakdown.py)", "results": results,
               "seconds": time.perf_counter() - start}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cta_hw_sweep.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS / 'cta_hw_sweep.json'} ({payload['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
