"""Reports of a simulated program: summary, per-block table, profile.json, Chrome trace, plots.

Blocks. Every instruction's source string (ctac.runtime.sources) carries the transformer block
of the op it was lowered from, decided from the graph by passes/assign_layers.py: -1 is
"embeddings", k is "layer k", L (after the last attention block) is "output". In an
encoder-decoder model the blocks holding two attentions (self- and cross-attention, joined by
assign-layers) are the decoder's: blocks are then "encoder layer k" and "decoder layer k", each
stack counted from 0. Names of ops are not read: dynamo exports call everything `val.12`, and compression ops have no names. An
instruction without a layer (an older program, a module without attention) takes the block of
the instruction before it; a program with no layers at all is one block, "program".

Spans. Units overlap, so the instructions of adjacent blocks overlap in time, and per-block
[first start, last end] intervals would overlap and sum to more than the run. A block's span is
instead its share of a partition of [0, total cycles): walking the program's runs of consecutive
instructions of one block, a run begins when its earliest instruction starts (kept monotone, the
first run at 0) and ends where the next run begins (the last at the total). Spans of all blocks
therefore sum to the total cycles and never overlap; the work of a block that runs on after the
next block has started is charged to the next block's span. Busy cycles per unit, energy, DRAM
bytes and MACs stay sums over the block's own instructions. A block's energy is its
instructions' dynamic energy plus the static energy of its span, so blocks sum to the run's
energy; its attention / rest energies are the dynamic energy of those instructions.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ctac.errors import CtacError
from ctac.files import write_atomically
from ctac.runtime import isa
from ctac.runtime.costmodel import Profile
from ctac.runtime.sources import Source, parse_source

SPAN_DEFINITION = (
    "span: a partition of [0, total cycles) in program order; a block begins when its earliest "
    "instruction starts (monotone over blocks, the first at 0) and ends where the next begins "
    "(the last at the total), so spans never overlap and sum to the total; unit busy cycles, "
    "energy and DRAM bytes are sums over the block's own instructions"
)
UNITS = tuple(unit for unit in isa.UNITS if unit != "control")


ATTENTION_KINDS = ("cta.attention", "cta.compressed_attention")


def is_attention(source: str) -> bool:
    """Attention work (a `cta.*` op: projection, clustering, attention, recovery)."""
    return parse_source(source).is_attention


def block_name(layer: int | None, blocks: int, decoder_from: int | None = None) -> str:
    """'embeddings' (-1), 'layer k' (0..blocks-1), 'output' (blocks), 'program' (no layer);
    with `decoder_from` (the first decoder block's layer) 'encoder layer k' below it and
    'decoder layer k' (k counted from it) from it on."""
    if layer is None:
        return "program"
    if layer < 0:
        return "embeddings"
    if layer >= blocks:
        return "output"
    if decoder_from is None:
        return f"layer {layer}"
    if layer < decoder_from:
        return f"encoder layer {layer}"
    return f"decoder layer {layer - decoder_from}"


def first_decoder_layer(sources: list[Source]) -> int | None:
    """The first layer holding two attentions (a decoder block: self- and cross-attention), or
    None. Attentions are counted as runs of consecutive attention instructions (projections,
    clustering, attention, recovery) with an attention op among them: one run per attention, as
    lower-to-isa emits an attention's group together."""
    runs: dict[int, int] = defaultdict(int)
    anchor: int | None = None
    for source in [*sources, None]:
        if source is not None and source.is_attention:
            if source.kind in ATTENTION_KINDS and source.layer is not None:
                anchor = source.layer
            continue
        if anchor is not None:
            runs[anchor] += 1
            anchor = None
    return min((layer for layer, count in runs.items() if count >= 2), default=None)


def summary(profile: Profile) -> dict:
    return {
        "cycles": profile.cycles,
        "seconds": profile.seconds,
        "energy_pj": profile.energy_pj,
        "dynamic_energy_pj": profile.dynamic_energy_pj,
        "static_energy_pj": profile.static_energy_pj,
        "dram_bytes": profile.dram_bytes,
        "macs": profile.macs,
        "int8_macs": profile.int8_macs,
        "instructions": len(profile.timings),
        "utilisation": profile.utilisation(),
        "energy_by_action_pj": profile.energy_by_action,
    }


def parsed_sources(profile: Profile) -> list[Source]:
    """Every instruction's parsed source; a program has thousands of instructions but a few
    hundred distinct source strings, each parsed once."""
    parsed: dict[str, Source] = {}
    sources = []
    for timing in profile.timings:
        source = parsed.get(timing.source)
        if source is None:
            source = parsed[timing.source] = parse_source(timing.source)
        sources.append(source)
    return sources


def blocks_in_order(profile: Profile, sources: list[Source] | None = None) -> list[str]:
    """The block of every instruction, from the layer in its source (see the module docstring).

    The number of transformer blocks is one more than the last layer holding an attention
    instruction, so a layer after it is the 'output' block."""
    sources = parsed_sources(profile) if sources is None else sources
    attention = [s.layer for s in sources if s.kind in ATTENTION_KINDS and s.layer is not None]
    known = [s.layer for s in sources if s.layer is not None]
    count = max(attention) + 1 if attention else max(known, default=-1) + 1
    decoder_from = first_decoder_layer(sources)
    layer = known[0] if known else None
    names = []
    for source in sources:
        layer = source.layer if source.layer is not None else layer
        names.append(block_name(layer, count, decoder_from))
    return names


def layer_block_names(profile: Profile) -> dict[int, str]:
    """The block name of every layer the profile's instructions carry."""
    sources = parsed_sources(profile)
    return {
        source.layer: name
        for source, name in zip(sources, blocks_in_order(profile, sources), strict=True)
        if source.layer is not None
    }


@dataclass
class _Run:
    """Consecutive instructions (in program order) of one block."""

    block: str
    first_start: int
    begin: int = 0
    end: int = 0


def _runs(profile: Profile, names: list[str]) -> list[_Run]:
    """Runs of one block, each with its partition interval [begin, end) of [0, total)."""
    runs: list[_Run] = []
    for timing, block in zip(profile.timings, names, strict=True):
        if timing.unit == "control":
            continue
        if runs and runs[-1].block == block:
            runs[-1].first_start = min(runs[-1].first_start, timing.start)
        else:
            runs.append(_Run(block, timing.start))
    boundary = 0
    for run in runs:
        boundary = run.begin = max(boundary, min(run.first_start, profile.cycles))
    for run, after in zip(runs, [*runs[1:], None], strict=True):
        run.end = after.begin if after is not None else profile.cycles
    if runs:
        runs[0].begin = 0
    return runs


def per_block(profile: Profile) -> dict[str, dict[str, float]]:
    """Busy cycles per unit, energy, DRAM bytes, split into attention and the rest, and the span
    (a partition of the run, see the module docstring), per block."""
    sources = parsed_sources(profile)
    names = blocks_in_order(profile, sources)
    blocks: dict[str, dict[str, float]] = {}
    for run in _runs(profile, names):
        entry = blocks.setdefault(run.block, defaultdict(float))
        entry["span_cycles"] += run.end - run.begin
        entry["span_start"] = min(entry.get("span_start", run.begin), run.begin)
        entry["span_end"] = max(entry.get("span_end", run.end), run.end)
    for timing, block, source in zip(profile.timings, names, sources, strict=True):
        if timing.unit == "control":
            continue
        entry = blocks[block]
        part = "attention" if source.is_attention else "rest"
        entry[f"{timing.unit}_cycles"] += timing.occupied
        entry[f"{part}_busy_cycles"] += timing.occupied
        entry["dynamic_energy_pj"] += timing.energy_pj
        entry[f"{part}_energy_pj"] += timing.energy_pj
        entry["dram_bytes"] += timing.dram_bytes
        entry["macs"] += timing.macs
    # Static (leakage) energy accrues with time: each block takes the share of its span, so the
    # blocks' energies add up to the run's.
    for entry in blocks.values():
        share = entry["span_cycles"] / profile.cycles if profile.cycles else 0.0
        entry["static_energy_pj"] = profile.static_energy_pj * share
        entry["energy_pj"] = entry["dynamic_energy_pj"] + entry["static_energy_pj"]
    return {
        name: dict(values)
        for name, values in sorted(blocks.items(), key=lambda kv: _block_key(kv[0]))
    }


def _block_key(name: str) -> tuple[int, int, int]:
    """Embeddings, then the (encoder's, then the decoder's) layers in order, then output."""
    match = re.fullmatch(r"(encoder |decoder )?layer (\d+)", name)
    if match:
        return (1, int(match.group(1) == "decoder "), int(match.group(2)))
    return {"embeddings": (0, 0, 0), "output": (2, 0, 0)}.get(name, (3, 0, 0))


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
    # Wide enough for "decoder layer 11" in encoder-decoder models; 10 ("embeddings") otherwise.
    width = max([10, *(len(name) for name in rows)])
    header = f"{'block':<{width}}{'span cycles':>13}{'pe':>11}{'vector':>10}{'dma':>11}{'attention %':>13}{'energy uJ':>11}{'DRAM MB':>10}"
    lines = [
        "span cycles: a block runs from its earliest start to the next block's (the first from "
        "0, the",
        "last to the end), so spans sum to the total; pe, vector, dma: its instructions' busy "
        "cycles;",
        "energy: its instructions' dynamic energy plus the static energy of its span (blocks sum "
        "to the total)",
        "",
        header,
        "-" * len(header),
    ]
    for name, entry in rows.items():
        busy = entry.get("attention_busy_cycles", 0.0) + entry.get("rest_busy_cycles", 0.0)
        share = entry.get("attention_busy_cycles", 0.0) / busy if busy else 0.0
        lines.append(
            f"{name:<{width}}{entry['span_cycles']:>13,.0f}{entry.get('pe_cycles', 0):>11,.0f}"
            f"{entry.get('vector_cycles', 0):>10,.0f}{entry.get('dma_in_cycles', 0) + entry.get('dma_out_cycles', 0):>11,.0f}{share:>13.0%}"
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
    sources = parsed_sources(profile)
    for timing, block, source in zip(
        profile.timings, blocks_in_order(profile, sources), sources, strict=True
    ):
        op = source.kind
        events.append(
            {
                "name": timing.name,
                "cat": op or "program",
                "ph": "X",
                # A DMA slice shows its transfer; its access latency overlaps the queue's
                # previous transfer (the issue cycle is in args).
                "ts": (timing.end - timing.occupied) * scale,
                "dur": max(timing.occupied, 1) * scale,
                "pid": 1,
                "tid": tracks[timing.unit],
                "args": {
                    "layer": block,
                    "source": timing.source,
                    "index": timing.index,
                    "energy_pj": timing.energy_pj,
                    "issue_cycle": timing.start,
                },
            }
        )
    return {"traceEvents": events, "displayTimeUnit": "ns"}


PLOT_FORMATS = ("png", "svg", "pdf")


def write_reports(
    profile: Profile,
    out: Path,
    label: str = "",
    policy: list[dict] | None = None,
    plot_format: str = "png",
    title: str = "",
    provenance: dict | None = None,
) -> dict[str, Path]:
    """profile.json, trace.json and the per-block plots (`plot_format`: png, svg or pdf; `title`
    heads each plot, e.g. the program and its model) into `out` (with the CTA policy's
    decisions, when the program carries them)."""
    if plot_format not in PLOT_FORMATS:
        raise CtacError(f"plot format {plot_format!r}: one of {', '.join(PLOT_FORMATS)}")
    if out.exists() and not out.is_dir():
        raise CtacError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "profile": out / "profile.json",
        "trace": out / "trace.json",
        "cycles_plot": out / f"cycles_per_layer.{plot_format}",
        "energy_plot": out / f"energy_per_layer.{plot_format}",
    }
    data = {
        "label": label,
        "summary": summary(profile),
        "span_definition": SPAN_DEFINITION,
        "blocks": per_block(profile),
    }
    if policy:
        data["cta_policy"] = policy
    if provenance:
        data["provenance"] = provenance  # where it came from (the driver's; see ctac/commands)
    _atomic_text(paths["profile"], json.dumps(data, indent=2) + "\n")
    _atomic_text(paths["trace"], json.dumps(chrome_trace(profile)) + "\n")
    plot_blocks({label or "program": profile}, paths["cycles_plot"], paths["energy_plot"], title)
    return paths


def _atomic_text(path: Path, text: str) -> None:
    write_atomically(path, text.encode())


def _save_figure(figure, path: Path) -> None:
    """Render the figure in memory in the format of the path's extension (png, svg or pdf), then
    write it whole (never a partial file on failure)."""
    from io import BytesIO

    plot_format = path.suffix.lstrip(".").lower() or "png"
    if plot_format not in PLOT_FORMATS:
        raise CtacError(f"plot '{path}': the extension must be one of {', '.join(PLOT_FORMATS)}")
    buffer = BytesIO()
    # svg and pdf: fixed dates and ids, so the same profile gives the same bytes
    metadata = {"png": None, "svg": {"Date": None}, "pdf": {"CreationDate": None}}[plot_format]
    figure.savefig(buffer, dpi=110, format=plot_format, metadata=metadata)
    write_atomically(path, buffer.getvalue())


def plot_blocks(
    profiles: dict[str, Profile], cycles_path: Path, energy_path: Path, title: str = ""
) -> None:
    """Bar charts per block: busy cycles stacked by unit, energy split attention / rest; several
    profiles (exact vs CTA) side by side. `title` (the program, its model, the settings) heads
    both; the format is the paths' extension (png, svg or pdf)."""
    heading = f"{title}\n" if title else ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = {label: per_block(profile) for label, profile in profiles.items()}
    blocks = sorted({name for table in tables.values() for name in table}, key=_block_key)
    width = 0.8 / max(len(tables), 1)
    colors = {
        "pe": "#4C72B0",
        "vector": "#55A868",
        "dma_in": "#C44E52",
        "dma_out": "#DA8BC3",
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
    _finish_block_plot(figure, axis, blocks, len(tables), "busy cycles (thousands)",
                       f"{heading}Busy cycles per block, by unit", cycles_path, ncols=2)  # fmt: skip
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
    _finish_block_plot(figure, axis, blocks, len(tables), "energy (uJ)",
                       f"{heading}Dynamic energy per block", energy_path)  # fmt: skip


def _finish_block_plot(figure, axis, blocks: list[str], profiles: int, ylabel: str, title: str,
                       path: Path, ncols: int = 1) -> None:  # fmt: skip
    """Block names under the middle of each group of bars, labels and legend; save and close."""
    import matplotlib.pyplot as plt

    width = 0.8 / max(profiles, 1)
    axis.set_xticks(
        [i + width * (profiles - 1) / 2 for i in range(len(blocks))],
        blocks,
        rotation=45,
        ha="right",
    )
    axis.set_ylabel(ylabel)
    heading, _, what = title.rpartition("\n")
    if heading:
        import textwrap

        # the heading (program, model, settings) wrapped to the figure's width, in smaller type
        heading = textwrap.fill(heading, int(figure.get_figwidth() * 13))
        axis.set_title(f"{heading}\n{what}", fontsize=9)
    else:
        axis.set_title(title)
    axis.legend(fontsize=7, ncols=ncols)
    figure.tight_layout()
    _save_figure(figure, path)
    plt.close(figure)
