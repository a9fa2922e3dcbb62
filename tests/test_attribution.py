"""Profiles attribute every instruction to the right transformer block.

Layers come from the graph (passes/assign_layers.py), travel in each instruction's source string
(ctac.runtime.sources) and group the profile (runtime/profile.py). For every test model, both
exporters, exact and CTA attention: one block per transformer layer, every attention and
compression instruction in its attention's block, block spans a partition of the run.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import MODEL_ENTRIES, MODELS, manifest_inputs, shape_flags
from hypothesis import given
from hypothesis import strategies as st

from ctac.emit import program_from_module
from ctac.hw import load_hardware
from ctac.importer import import_model
from ctac.passes.detect_attention import detect_attention
from ctac.passes.lower_to_isa import lower_module
from ctac.pipeline import run_passes
from ctac.run import execute, profile_program
from ctac.runtime.profile import (
    block_name,
    blocks_in_order,
    first_decoder_layer,
    format_blocks,
    per_block,
)
from ctac.runtime.program import Program
from ctac.runtime.sources import format_source, parse_source

HW = load_hardware()
MODES = {
    "exact": None,
    "cta": "cta-compress{block=8}",
    "cta-input": "cta-compress{granularity=input block=8}",
}
ATTENTION = ("cta.attention", "cta.compressed_attention")
# TorchScript exports keep module paths in names; where a name says its block, the structural
# layer must agree with it.
NAMED_BLOCK = re.compile(r"(?:layers?|h)[._](\d+)[._]")
# Encoder-decoder names say the stack too (T5 `decoder_block.1_layer.0_`: block 1, sublayer 0).
NAMED_STACK_BLOCK = re.compile(r"(encoder|decoder)_(?:block|layers)[._](\d+)[._]")


def _program(entry: dict, mode: str) -> Program:
    imported = import_model(MODELS / entry["file"], shape_flags(entry))
    run_passes(imported.module, "onnx-canonicalize")
    detect_attention(imported.module, verify=False)
    if MODES[mode]:
        run_passes(imported.module, MODES[mode])
    return program_from_module(lower_module(imported.module, HW))


def _check_partition(profile, blocks: dict[str, dict[str, float]]) -> None:
    intervals = sorted((entry["span_start"], entry["span_end"]) for entry in blocks.values())
    assert intervals[0][0] == 0 and intervals[-1][1] == profile.cycles
    for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
        assert end == start  # contiguous and non-overlapping
    assert sum(entry["span_cycles"] for entry in blocks.values()) == profile.cycles
    for entry in blocks.values():
        assert entry["span_cycles"] == entry["span_end"] - entry["span_start"] >= 0


@pytest.mark.parametrize("mode", list(MODES))
def test_blocks_follow_the_transformer_layers(model_entry: dict, mode: str) -> None:
    program = _program(model_entry, mode)
    attentions = model_entry["num_attention_layers"]
    seq2seq = bool(model_entry.get("seq2seq"))
    # Encoder-decoder test models have stacks of equal depth: an encoder block holds one
    # attention, a decoder block two (self and cross), so 3 attentions per pair of blocks.
    encoder = attentions // 3 if seq2seq else attentions
    layers = 2 * encoder if seq2seq else attentions
    if seq2seq:
        expected_blocks = [f"encoder layer {k}" for k in range(encoder)]
        expected_blocks += [f"decoder layer {k}" for k in range(layers - encoder)]
        expected_attention_layers = [*range(encoder), *sorted(2 * list(range(encoder, layers)))]
    else:
        expected_blocks = [f"layer {k}" for k in range(layers)]
        expected_attention_layers = list(range(layers))
    _, stats = execute(program, HW, manifest_inputs(model_entry, seed=3), progress=False)
    profile = profile_program(program, HW, stats)
    blocks = per_block(profile)
    names = list(blocks)
    assert [n for n in names if n not in ("embeddings", "output")] == expected_blocks
    assert "embeddings" in names  # every test model embeds its tokens or patches
    _check_partition(profile, blocks)

    sources = [parse_source(source) for source in program.sources]
    assert all(s.layer is not None for s, (op, _) in zip(sources, program.instructions, strict=True) if op != "HALT")  # fmt: skip
    # Blocks are contiguous in program order, in layer order.
    order = [s.layer for s in sources if s.layer is not None]
    assert order == sorted(order)
    # Attention and compression: each run of consecutive `cta.*` instructions is one attention
    # layer (projections, clustering, pooling, attention, recovery) and sits in its block. T5
    # adds its position bias to the mask between the projections and the attention: a run of
    # projections alone belongs to the next attention's block.
    attention_layers = []
    run: list = []
    projections: list = []
    for source in [*sources, None]:
        if source is not None and source.is_attention:
            run.append(source)
            continue
        if run:
            anchors = {s.layer for s in run if s.kind in ATTENTION}
            if not anchors:
                assert {s.kind for s in run} == {"cta.project"}, run
                projections += run
                run = []
                continue
            assert len(anchors) == 1, run
            assert {s.layer for s in [*projections, *run]} == anchors, run
            attention_layers.append(anchors.pop())
            run, projections = [], []
    assert not projections
    assert attention_layers == expected_attention_layers
    # Every compression instruction shares its attention's layer name and block.
    by_name: dict[str, set[int | None]] = {}
    for source in sources:
        if source.kind.startswith(("cta.cluster", "cta.compressed_attention", "cta.attention")):
            by_name.setdefault(source.name, set()).add(source.layer)
    assert all(len(found) == 1 for found in by_name.values()), by_name
    if "cta" in mode:
        kinds = {s.kind.split(".")[1] for s in sources if s.is_attention}
        assert {"cluster", "compressed_attention"} <= kinds  # causal ones have no recover
    # Where TorchScript names say the block, they agree.
    if model_entry["exporter"] == "torchscript" and seq2seq:
        named = [(s, NAMED_STACK_BLOCK.search(s.name)) for s in sources]
        named = [
            (s, int(match.group(2)) + (encoder if match.group(1) == "decoder" else 0))
            for s, match in named
            if match
        ]
        assert {block for _, block in named} == set(range(layers))
        assert all(source.layer == block for source, block in named), named
    elif model_entry["exporter"] == "torchscript":
        named = [(s, NAMED_BLOCK.search(s.name)) for s in sources]
        named = [(s, int(match.group(1))) for s, match in named if match]
        assert {block for _, block in named} == set(range(layers))
        assert all(source.layer == block for source, block in named), named
    # Unit busy cycles are the instructions' own, whatever the spans.
    for unit, busy in profile.unit_busy.items():
        assert sum(entry.get(f"{unit}_cycles", 0.0) for entry in blocks.values()) == busy


def test_decoder_blocks_are_the_ones_holding_two_attentions() -> None:
    """A block with a self- and a cross-attention (two runs of attention instructions, each
    with its attention op) is a decoder block; projections alone are no second attention."""
    sources = [
        parse_source(text)
        for text in (
            "onnx.Gather:x@L-1",
            "cta.project:q0@L0",
            "onnx.Add:mask@L0",  # T5: the position bias between projections and attention
            "cta.attention:enc0@L0",
            "onnx.Add:r0@L0",
            "cta.attention:dec0.self@L1",
            "onnx.RMSNormalization:n@L1",
            "cta.project:cq0@L1",
            "cta.attention:dec0.cross@L1",
            "onnx.Add:r1@L1",
            "onnx.RMSNormalization:out@L2",
        )
    ]
    assert first_decoder_layer(sources) == 1
    assert first_decoder_layer(sources[:5]) is None  # encoder-only: names stay "layer k"
    names = [block_name(layer, 2, 1) for layer in (-1, 0, 1, 2)]
    assert names == ["embeddings", "encoder layer 0", "decoder layer 0", "output"]
    assert [block_name(layer, 2) for layer in (0, 1)] == ["layer 0", "layer 1"]


def test_untagged_programs_are_one_block() -> None:
    """Programs without layers in their sources (older files) still partition the run."""
    entry = next(m for m in MODEL_ENTRIES if m["file"] == "bert_dynamo_eager.onnx")
    program = _program(entry, "exact")
    untagged = replace(
        program, sources=[format_source(s.kind, s.name) for s in map(parse_source, program.sources)]
    )
    profile = profile_program(untagged, HW, None)
    blocks = per_block(profile)
    assert list(blocks) == ["program"]
    _check_partition(profile, blocks)
    assert set(blocks_in_order(profile)) == {"program"}


def test_ctac_profile_reports_blocks_and_spans(tmp_path: Path, capsys) -> None:
    """`ctac profile` of a dynamo BERT in CTA mode: embeddings, layer 0, layer 1; the table's
    header and profile.json say what a span is, and the spans add up to the cycles."""
    from ctac.cli import main

    binary = tmp_path / "bert.ctab"
    model = MODELS / "bert_dynamo_eager.onnx"
    shapes = "input_ids=2x16,attention_mask=2x16"
    argv = ["compile", str(model), "--shape", shapes, "--attention", "cta", "-o", str(binary)]
    assert main(argv) == 0
    assert main(["profile", str(binary), "--out", str(tmp_path / "prof")]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0:2] for line in out.splitlines() if re.match(r"(embeddings|layer \d|output)", line)]  # fmt: skip
    assert [" ".join(r) if r[0] == "layer" else r[0] for r in rows] == [
        "embeddings",
        "layer 0",
        "layer 1",
    ]
    assert "span cycles: a block runs from its earliest start" in out
    data = json.loads((tmp_path / "prof" / "profile.json").read_text())
    assert "partition" in data["span_definition"]
    assert list(data["blocks"]) == ["embeddings", "layer 0", "layer 1"]
    total = sum(entry["span_cycles"] for entry in data["blocks"].values())
    assert total == data["summary"]["cycles"]
    # Energy too: each block's dynamic energy plus its span's static energy; the blocks add up
    # to the summary in profile.json and in the text (uJ, three decimals each) ...
    blocks = data["blocks"].values()
    assert sum(e["energy_pj"] for e in blocks) == pytest.approx(data["summary"]["energy_pj"])
    assert sum(e["dynamic_energy_pj"] for e in blocks) == pytest.approx(
        data["summary"]["dynamic_energy_pj"]
    )
    text_total = float(re.search(r"energy +([\d,.]+) uJ", out).group(1).replace(",", ""))
    text_blocks = [float(line.split()[-2].replace(",", "")) for line in out.splitlines()
                   if re.match(r"(embeddings|layer \d|output) ", line)]  # fmt: skip
    assert sum(text_blocks) == pytest.approx(text_total, abs=0.002 * len(text_blocks))
    # ... and `ctac run --json` reports the same cycles and energy as profile.json.
    assert main(["run", str(binary), "--json"]) == 0
    run = json.loads(capsys.readouterr().out)["profile"]
    assert run["cycles"] == data["summary"]["cycles"]
    assert run["energy_pj"] == pytest.approx(data["summary"]["energy_pj"])
    trace = json.loads((tmp_path / "prof" / "trace.json").read_text())
    layers = {e["args"]["layer"] for e in trace["traceEvents"] if e["ph"] == "X"}
    assert {"embeddings", "layer 0", "layer 1"} <= layers


def test_format_blocks_has_one_row_per_block() -> None:
    entry = next(m for m in MODEL_ENTRIES if m["file"] == "gpt2_dynamo_eager.onnx")
    profile = profile_program(_program(entry, "exact"), HW, None)
    table = format_blocks(profile)
    names = [line[:10].strip() for line in table.splitlines()[6:]]
    assert names == ["embeddings", "layer 0", "layer 1", "output"]


@given(
    kind=st.from_regex(r"[a-z]+(\.[a-z_]+){1,2}", fullmatch=True),
    name=st.text(max_size=12),
    layer=st.one_of(st.none(), st.integers(-1, 99)),
)
def test_sources_parse_back(kind: str, name: str, layer: int | None) -> None:
    parsed = parse_source(format_source(kind, name, layer))
    assert (parsed.kind, parsed.name, parsed.layer) == (kind, name, layer)


@pytest.mark.parametrize(
    ("source", "kind", "name", "layer"),
    [
        ("onnx.Gather:model_wte_Gather@L-1", "onnx.Gather", "model_wte_Gather", -1),
        ("cta.cluster.kv:softmax.1@L1", "cta.cluster.kv", "softmax.1", 1),
        ("cta.pool@L0", "cta.pool", "", 0),
        ("onnx.Add:x@L3@L?", "onnx.Add", "x@L3", None),
        ("onnx.Add:a:b", "onnx.Add", "a:b", None),
        ("end", "end", "", None),
        ("", "", "", None),
    ],
)
def test_source_examples(source: str, kind: str, name: str, layer: int | None) -> None:
    assert parse_source(source) == parse_source(format_source(kind, name, layer))
    parsed = parse_source(source)
    assert (parsed.kind, parsed.name, parsed.layer) == (kind, name, layer)
