"""Roofline efficiency of the generated program, per BERT-base layer.

For each block (embeddings, layer 0..11, output; layers decided from the IR) of the compiled
program: modelled cycles (the block's span in the cost model's schedule: spans partition the run,
so a pipelined machine's overlapping blocks are not counted twice) vs the roofline bound
max(MACs / peak MACs per cycle, bytes / DRAM bytes per cycle), with peak = PE rows x cols and the
DRAM bandwidth / clock of the hardware description. Bytes are the block's compulsory traffic (each
distinct DRAM element it reads or writes, once), and also, as a second column, the traffic the
program actually moves. Efficiency = bound / modelled cycles (targets: >= 80% on every BERT-base
layer at 128 tokens, >= 90% at 512).
Timing-only: the cost model runs without the numerics. Prints a table and writes
bench/results/roofline.json.

    python bench/roofline.py [--seq 128 512] [--quick]     # --quick: sequence 128 only
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bert_base_model, compile_stages, machine, save_result, shapes_for  # noqa: E402


def _distinct_elements(spans: list[tuple[int, int, int, int]]) -> int:
    """Distinct DRAM elements covered by (start, rows, cols, stride) accesses."""
    starts, ends = [], []
    for start, rows, cols, stride in spans:
        if rows <= 0 or cols <= 0:
            continue
        if stride == cols or rows == 1:
            starts.append(np.array([start]))
            ends.append(np.array([start + (rows - 1) * stride + cols]))
        else:
            row_starts = start + stride * np.arange(rows)
            starts.append(row_starts)
            ends.append(row_starts + cols)
    if not starts:
        return 0
    s, e = np.concatenate(starts), np.concatenate(ends)
    order = np.argsort(s, kind="stable")
    s, e = s[order], e[order]
    running_end = np.maximum.accumulate(e)
    # a new interval begins where it starts after every earlier one ended
    new = np.ones(len(s), dtype=bool)
    new[1:] = s[1:] >= running_end[:-1]
    group = np.cumsum(new) - 1
    group_start = s[new]
    group_end = np.zeros(group[-1] + 1, dtype=np.int64)
    np.maximum.at(group_end, group, e)
    return int((group_end - group_start).sum())


def dram_spans(name: str, f: dict) -> list[tuple[int, int, int, int]]:
    if name == "LOAD":
        return [(f["src"], f["rows"], f["cols"], f["stride"])]
    if name == "STORE":
        return [(f["dst"], f["rows"], f["cols"], f["stride"])]
    return []


def analyse(program, hw, profile) -> list[dict]:
    from ctac.runtime.profile import blocks_in_order, per_block

    peak = hw.view().pe_rows * hw.view().pe_cols
    element_bytes = hw.number("dram", "element_bytes")
    bytes_per_cycle = hw.number("dram", "bandwidth_gb_s") * 1e9 / hw.clock_hz
    blocks: dict[str, dict] = {}
    spans = per_block(profile)
    for timing, block in zip(profile.timings, blocks_in_order(profile), strict=True):
        if timing.unit == "control":
            continue
        entry = blocks.setdefault(
            block,
            {
                "block": block,
                "macs": 0.0,
                "moved_bytes": 0.0,
                "start": timing.start,
                "end": timing.end,
                "spans": [],
                "pe_cycles": 0,
                "gathered": 0,
            },
        )
        entry["macs"] += timing.macs
        entry["moved_bytes"] += timing.dram_bytes
        entry["start"] = min(entry["start"], timing.start)
        entry["end"] = max(entry["end"], timing.end)
        if timing.unit == "pe":
            entry["pe_cycles"] += timing.occupied
        name, fields = program.instructions[timing.index]
        entry["spans"] += dram_spans(name, fields)
        if name == "GATHER":  # the table rows it reads (distinct ids assumed)
            entry["gathered"] += fields["rows"] * fields["cols"]
    rows = []
    for entry in blocks.values():
        # The block's share of the run: spans partition [0, total) (runtime/profile.py), so
        # overlapping blocks of a pipelined machine are not counted twice.
        cycles = int(spans[entry["block"]]["span_cycles"])
        compulsory = (
            _distinct_elements(entry.pop("spans")) + entry.pop("gathered")
        ) * element_bytes
        compute_bound = entry["macs"] / peak
        bound = max(compute_bound, compulsory / bytes_per_cycle)
        bound_moved = max(compute_bound, entry["moved_bytes"] / bytes_per_cycle)
        rows.append(
            {
                **entry,
                "cycles": cycles,
                "compulsory_bytes": compulsory,
                "bound_cycles": bound,
                "bound_kind": "compute"
                if compute_bound >= compulsory / bytes_per_cycle
                else "memory",
                "efficiency": bound / cycles if cycles else 0.0,
                "efficiency_moved_bytes": bound_moved / cycles if cycles else 0.0,
                "pe_efficiency": entry["macs"] / peak / entry["pe_cycles"]
                if entry["pe_cycles"]
                else 0.0,
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, nargs="*", help="sequence lengths (default 128 512)")
    parser.add_argument("--quick", action="store_true", help="sequence 128 only")
    args = parser.parse_args()
    seqs = args.seq or ([128] if args.quick else [128, 512])
    from ctac.hw import load_hardware
    from ctac.runtime.costmodel import simulate

    hw = load_hardware(None)
    view = hw.view()
    model = bert_base_model()
    result = {
        "benchmark": "roofline",
        "model": str(model),
        "peak_macs_per_cycle": view.pe_rows * view.pe_cols,
        "dram_bytes_per_cycle": hw.number("dram", "bandwidth_gb_s") * 1e9 / hw.clock_hz,
        # Per layer: >= 80% of the bound at 128 tokens, >= 90% at 512 and longer.
        "target_efficiency": {"128": 0.8, "512": 0.9},
        "sequences": {},
        "machine": machine(),
    }
    for seq in seqs:
        target = 0.8 if seq < 512 else 0.9
        _, program = compile_stages(model, shapes_for(model, seq), hw, verify=False)
        profile = simulate(program, hw)
        rows = analyse(program, hw, profile)
        layers = [r for r in rows if r["block"].startswith("layer")]
        effs = [r["efficiency"] for r in layers]
        total_macs = sum(r["macs"] for r in rows)
        print(
            f"BERT-base seq {seq}: {len(program.instructions)} instructions, {profile.cycles:,} cycles, "
            f"peak {result['peak_macs_per_cycle']} MACs/cycle, {result['dram_bytes_per_cycle']:.0f} B/cycle"
        )
        header = (
            f"{'block':<12}{'cycles':>12}{'bound':>12}{'kind':>9}{'eff':>8}"
            f"{'eff(moved B)':>14}{'PE eff':>8}{'GMACs':>8}{'MB moved':>10}{'MB compuls.':>12}"
        )
        print(header)
        print("-" * len(header))
        for r in rows:
            print(
                f"{r['block']:<12}{r['cycles']:>12,}{r['bound_cycles']:>12,.0f}{r['bound_kind']:>9}"
                f"{r['efficiency']:>8.1%}{r['efficiency_moved_bytes']:>14.1%}{r['pe_efficiency']:>8.1%}"
                f"{r['macs'] / 1e9:>8.3f}{r['moved_bytes'] / 1e6:>10.2f}{r['compulsory_bytes'] / 1e6:>12.2f}"
            )
        whole_bound = total_macs / result["peak_macs_per_cycle"]
        print(
            f"layers: median efficiency {statistics.median(effs):.1%} (min {min(effs):.1%}, max "
            f"{max(effs):.1%}); target >= {target:.0%}; whole program {whole_bound / profile.cycles:.1%} of compute bound"
        )
        result["sequences"][str(seq)] = {
            "instructions": len(program.instructions),
            "cycles": profile.cycles,
            "blocks": rows,
            "layer_efficiency": {
                "median": statistics.median(effs),
                "min": min(effs),
                "max": max(effs),
            },
            "target": target,
            "meets_target": min(effs) >= target,
        }
    save_result("roofline", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
