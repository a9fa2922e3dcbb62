"""Reports of a simulated program: summary, per-layer table, profile.json, Chrome trace, plots.

Sources of instructions are "<op>:<name>" (set by lower-to-isa); the transformer block an
instruction belongs to is read from the name (`layer.3`, `layers.3`, `h.3`, `layer_3` ...), so
tables and plots group by block, and attention (`cta.*` ops) is told apart from the rest.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from ctac.errors import CtacError
from ctac.runtime.costmodel import Profile

BLOCK = re.compile(r"(?:layers?|h|blocks?)[._](\d+)")
UNITS = ("dma", "pe", "vector", "hash", "cluster")


def split_source(source: str) -> tuple[str, str]:
    op, _, name = source.partition(":")
    return (op, name) if name else ("", source)


def block_of(source: str) -> str:
    _, name = split_source(source)
    match = BLOCK.search(name)
    if match:
        return f"layer {int(match.group(1))}"
    return "other"


def is_attention(source: str) -> bool:
    return split_source(source)[0].startswith("cta.")


def summary(profile: Profile) -> dict:
    return {
        "cycles": profile.cycles,
        "seconds": profile.seconds,
        "energy_pj": profile.energy_pj,
        "dynamic_energy_pj": profile.dynamic_energy_pj,
        "static_energy_pj": profile.static_energy_pj,
        "dram_bytes": profile.dram_bytes,
        "macs": profile.macs,
        "instructions": len(profile.timings),
        "utilisation": profile.utilisation(),
        "energy_by_action_pj": profile.energy_by_action,
    }


def _blocks_in_order(profile: Profile) -> list[str]:
    """Block of every instruction; unnamed ones before the first layer are 'embeddings', after
    the last 'output'."""
    names = [block_of(timing.source) for timing in profile.timings]
    layered = [i for i, name in enumerate(names) if name != "other"]
    first, last = (layered[0], layered[-1]) if layered else (len(names), -1)
    return [
        name
        if name != "other"
        else ("embeddings" if i < first else "output" if i > last else "other")
        for i, name in enumerate(names)
    ]


def per_block(profile: Profile) -> dict[str, dict[str, float]]:
    """Busy cycles per unit, energy, DRAM bytes, split into attention and the rest, per block."""
    blocks: dict[str, dict[str, float]] = {}
    for timing, block in zip(profile.timings, _blocks_in_order(profile), strict=True):
        if timing.unit == "control":
            continue
        entry = blocks.setdefault(block, defaultdict(float))
        part = "attention" if is_attention(timing.source) else "rest"
        entry[f"{timing.unit}_cycles"] += timing.end - timing.start
        entry[f"{part}_busy_cycles"] += timing.end - timing.start
        entry["energy_pj"] += timing.energy_pj
        entry[f"{part}_energy_pj"] += timing.energy_pj
        entry["dram_bytes"] += timing.dram_bytes
        entry["macs"] += timing.macs
        entry["span_start"] = min(entry.get("span_start", timing.start), timing.start)
        entry["span_end"] = max(entry.get("span_end", timing.end), timing.end)
    return {
        name: dict(values)
        for name, values in sorted(blocks.items(), key=lambda kv: _block_key(kv[0]))
    }


def _block_key(name: str) -> tuple[int, int]:
    match = re.match(r"layer (\d+)", name)
    if match:
        return (1, int(match.group(1)))
    return {"embeddings": (0, 0), "output": (2, 0)}.get(name, (3, 0))


def format_summary(profile: Profile, title: str = "") -> str:
    data = summary(profile)
    lines = [title] if title else []
    lines += [
        f"cycles          {data['cycles']:,} ({data['seconds'] * 1e3:.3f} ms at {profile.clock_hz / 1e9:g} GHz)",
        f"energy          {data['energy_pj'] / 1e6:,.3f} uJ (dynamic {data['dynamic_energy_pj'] / 1e6:,.3f}, static {data['static_energy_pj'] / 1e6:,.3f})",
        f"DRAM traffic    {data['dram_bytes'] / 1e6:,.3f} MB",
        f"MACs            {data['macs'] / 1e6:,.1f} M",
        "utilisation     "
        + ", ".join(f"{unit} {value:.0%}" for unit, value in data["utilisation"].items()),
    ]
    return "\n".join(lines)


def format_blocks(profile: Profile) -> str:
    rows = per_block(profile)
    header = f"{'block':<10}{'span cycles':>13}{'pe':>11}{'vector':>10}{'dma':>11}{'attention %':>13}{'energy uJ':>11}{'DRAM MB':>10}"
    lines = [header, "-" * len(header)]
    for name, entry in rows.items():
        busy = entry.get("attention_busy_cycles", 0.0) + entry.get("rest_busy_cycles", 0.0)
        share = entry.get("attention_busy_cycles", 0.0) / busy if busy else 0.0
        lines.append(
            f"{name:<10}{entry['span_end'] - entry['span_start']:>13,.0f}{entry.get('pe_cycles', 0):>11,.0f}"
            f"{entry.get('vector_cycles', 0):>10,.0f}{entry.get('dma_cycles', 0):>11,.0f}{share:>13.0%}"
            f"{entry['energy_pj'] / 1e6:>11,.3f}{entry['dram_bytes'] / 1e6:>10,.3f}"
        )
    return "\n".join(lines)


def chrome_trace(profile: Profile) -> dict:
    """Chrome trace-event JSON (loads in Perfetto): one track per unit, one event per instruction,
    timestamps in microseconds of accelerator time."""
    scale = 1e6 / profile.clock_hz
    tracks = {unit: index for index, unit in enumerate((*UNITS, "control"), start=1)}
    events = [
        {"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": unit}}
        for unit, tid in tracks.items()
    ]
    events.append(
        {"name": "process_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": "CTA accelerator"}}
    )
    for timing in profile.timings:
        op, name = split_source(timing.source)
        events.append(
            {
                "name": timing.name,
                "cat": op or "program",
                "ph": "X",
                "ts": timing.start * scale,
                "dur": max(timing.end - timing.start, 1) * scale,
                "pid": 1,
                "tid": tracks[timing.unit],
                "args": {"layer": name, "index": timing.index, "energy_pj": timing.energy_pj},
            }
        )
    return {"traceEvents": events, "displayTimeUnit": "ns"}


def write_reports(profile: Profile, out: Path, label: str = "") -> dict[str, Path]:
    """profile.json, trace.json and the per-block plots into `out`."""
    if out.exists() and not out.is_dir():
        raise CtacError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "profile": out / "profile.json",
        "trace": out / "trace.json",
        "cycles_plot": out / "cycles_per_layer.png",
        "energy_plot": out / "energy_per_layer.png",
    }
    data = {"label": label, "summary": summary(profile), "blocks": per_block(profile)}
    _atomic_text(paths["profile"], json.dumps(data, indent=2) + "\n")
    _atomic_text(paths["trace"], json.dumps(chrome_trace(profile)) + "\n")
    plot_blocks({label or "program": profile}, paths["cycles_plot"], paths["energy_plot"])
    return paths


def _atomic_text(path: Path, text: str) -> None:
    from ctac.cli import write_atomically

    write_atomically(path, text.encode())


def _save_figure(figure, path: Path) -> None:
    """Render the PNG in memory, then write it whole (never a partial file on failure)."""
    from io import BytesIO

    from ctac.cli import write_atomically

    buffer = BytesIO()
    figure.savefig(buffer, dpi=110, format="png")
    write_atomically(path, buffer.getvalue())


def plot_blocks(profiles: dict[str, Profile], cycles_path: Path, energy_path: Path) -> None:
    """Bar charts per block: busy cycles stacked by unit, energy split attention / rest; several
    profiles (exact vs CTA) side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = {label: per_block(profile) for label, profile in profiles.items()}
    blocks = sorted({name for table in tables.values() for name in table}, key=_block_key)
    width = 0.8 / max(len(tables), 1)
    colors = {
        "pe": "#4C72B0",
        "vector": "#55A868",
        "dma": "#C44E52",
        "hash": "#8172B2",
        "cluster": "#CCB974",
    }
    hatches = ["", "//", "..", "xx"]
    figure, axis = plt.subplots(figsize=(max(6, len(blocks) * 0.9), 4))
    for column, (label, table) in enumerate(tables.items()):
        bottom = [0.0] * len(blocks)
        positions = [i + column * width for i in range(len(blocks))]
        for unit in UNITS:
            values = [table.get(block, {}).get(f"{unit}_cycles", 0.0) / 1e3 for block in blocks]
            if not any(values):
                continue
            axis.bar(positions, values, width, bottom=bottom, color=colors[unit], hatch=hatches[column % 4],
                     edgecolor="white", label=f"{unit} ({label})" if len(tables) > 1 else unit)  # fmt: skip
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axis.set_xticks(
        [i + width * (len(tables) - 1) / 2 for i in range(len(blocks))],
        blocks,
        rotation=45,
        ha="right",
    )
    axis.set_ylabel("busy cycles (thousands)")
    axis.set_title("Busy cycles per block, by unit")
    axis.legend(fontsize=7, ncols=2)
    figure.tight_layout()
    _save_figure(figure, cycles_path)
    plt.close(figure)
    figure, axis = plt.subplots(figsize=(max(6, len(blocks) * 0.9), 4))
    for column, (label, table) in enumerate(tables.items()):
        positions = [i + column * width for i in range(len(blocks))]
        attention = [table.get(block, {}).get("attention_energy_pj", 0.0) / 1e6 for block in blocks]
        rest = [table.get(block, {}).get("rest_energy_pj", 0.0) / 1e6 for block in blocks]
        suffix = f" ({label})" if len(tables) > 1 else ""
        axis.bar(
            positions,
            attention,
            width,
            color="#DD8452",
            hatch=hatches[column % 4],
            edgecolor="white",
            label="attention" + suffix,
        )
        axis.bar(
            positions,
            rest,
            width,
            bottom=attention,
            color="#4C72B0",
            hatch=hatches[column % 4],
            edgecolor="white",
            label="rest" + suffix,
        )
    axis.set_xticks(
        [i + width * (len(tables) - 1) / 2 for i in range(len(blocks))],
        blocks,
        rotation=45,
        ha="right",
    )
    axis.set_ylabel("energy (uJ)")
    axis.set_title("Dynamic energy per block")
    axis.legend(fontsize=7)
    figure.tight_layout()
    _save_figure(figure, energy_path)
    plt.close(figure)
