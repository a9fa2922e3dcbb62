"""The cost model against hand-computed cycles and energy, and the run/profile commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FP16_ATOL, MODELS

from ctac.hw import load_hardware
from ctac.runtime import isa
from ctac.runtime.costmodel import simulate
from ctac.runtime.program import Program

HW = load_hardware()
# Default config: 32x32 PE array, 64 vector lanes, pipeline 8, 512 B/cycle DRAM, latency 100,
# 2-byte elements; energies 1.74 pJ/MAC, 1.31 pJ/vector op, 10.9 pJ/buffer element, 31.2 pJ/DRAM byte.


def variant(tmp_path: Path, **numbers: str) -> object:
    """The default config with some `key = { value = X` numbers replaced (first occurrence)."""
    text = HW.text
    for key, value in numbers.items():
        start = text.index(f"{key} = {{ value = ") + len(f"{key} = {{ value = ")
        end = text.index(",", start)
        text = text[:start] + value + text[end:]
    path = tmp_path / "hw.toml"
    path.write_text(text)
    return load_hardware(path)


def program(*instructions, hw=HW) -> Program:
    """A program of the given instructions (missing fields zero, as the encoder fills them)."""
    decoded = [(name, isa.decode(isa.encode(name, fields))[1]) for name, fields in instructions]
    return Program(hw.digest, [*decoded, ("HALT", {})], np.zeros(0, np.float32), 1 << 20, [], [])


GEMM_100x64x96 = ("GEMM", {"dst": 2, "dst_addr": 0, "a": 0, "a_addr": 0, "b": 1, "b_addr": 0, "m": 100, "k": 64,
                           "n": 96, "accumulate": 0, "transpose_b": 0, "has_bias": 0, "bias": 3, "bias_addr": 0})  # fmt: skip


def test_gemm_cycles_follow_scale_sim_with_single_buffered_weights(tmp_path: Path) -> None:
    # m=100, k=64, n=96 on 32x32: ceil(64/32)*ceil(96/32) = 6 folds of 2*32 + 32 + 100 - 2 = 194.
    hw = variant(tmp_path, weight_buffers="1")
    profile = simulate(program(GEMM_100x64x96, hw=hw), hw)
    assert profile.timings[0].end - profile.timings[0].start == 6 * 194
    macs = 100 * 64 * 96
    reads = 100 * 64 * 3 + 64 * 96  # A streamed once per column fold, B once
    writes = 100 * 96
    assert profile.macs == macs
    assert profile.timings[0].energy_pj == pytest.approx(macs * 1.74 + (reads + writes) * 10.9)


def test_gemm_folds_run_back_to_back_with_double_buffered_weights() -> None:
    # Default config (weight FIFO): first weights 32, 6 folds of max(100, 32) rows, drain 32 + 32 - 2.
    profile = simulate(program(GEMM_100x64x96), HW)
    assert profile.timings[0].end - profile.timings[0].start == 32 + 6 * 100 + 62
    # A short fold (m < R) still waits for the next fold's R weight rows to shift in.
    short = ("GEMM", {**GEMM_100x64x96[1], "m": 8})
    profile = simulate(program(short), HW)
    assert profile.timings[0].end - profile.timings[0].start == 32 + 6 * 32 + 62


def test_dma_cycles_are_latency_plus_bandwidth() -> None:
    load = ("LOAD", {"dst": 0, "dst_addr": 0, "src": 0, "rows": 64, "cols": 128, "stride": 128})
    profile = simulate(program(load), HW)
    # 64*128 elements * 2 bytes / 512 B per cycle = 32 cycles + 100 latency.
    assert profile.timings[0].end - profile.timings[0].start == 132
    assert profile.dram_bytes == 64 * 128 * 2
    assert profile.timings[0].energy_pj == pytest.approx(64 * 128 * 2 * 31.2 + 64 * 128 * 10.9)


def test_vector_cycles_count_passes() -> None:
    add = (
        "VEC",
        {
            "op": "add",
            "dst": 3,
            "dst_addr": 0,
            "a": 0,
            "a_addr": 0,
            "b": 1,
            "b_addr": 0,
            "rows": 10,
            "cols": 100,
            "bcast": "full",
            "imm": 0.0,
        },
    )
    exp = (
        "VEC",
        {
            "op": "exp",
            "dst": 3,
            "dst_addr": 4096,
            "a": 0,
            "a_addr": 8192,
            "b": 1,
            "b_addr": 0,
            "rows": 10,
            "cols": 100,
            "bcast": "imm",
            "imm": 0.0,
        },
    )
    profile = simulate(program(add, exp), HW)
    assert profile.timings[0].end - profile.timings[0].start == 16 + 8  # ceil(1000/64) + depth
    assert profile.timings[1].end - profile.timings[1].start == 2 * 16 + 8  # special function
    # Independent tiles on one unit run back to back; HALT waits for them.
    assert profile.timings[1].start == profile.timings[0].end
    assert profile.cycles == profile.timings[1].end + 1


def test_units_overlap_but_respect_dependencies() -> None:
    load = ("LOAD", {"dst": 0, "dst_addr": 0, "src": 0, "rows": 32, "cols": 32, "stride": 32})
    gemm = ("GEMM", {"dst": 2, "dst_addr": 0, "a": 0, "a_addr": 0, "b": 1, "b_addr": 0, "m": 32, "k": 32, "n": 32,
                     "accumulate": 0, "transpose_b": 0, "has_bias": 0, "bias": 3, "bias_addr": 0})  # fmt: skip
    other_load = (
        "LOAD",
        {"dst": 0, "dst_addr": 65536, "src": 4096, "rows": 32, "cols": 32, "stride": 32},
    )
    overwrite = (
        "LOAD",
        {"dst": 0, "dst_addr": 0, "src": 8192, "rows": 32, "cols": 32, "stride": 32},
    )
    timings = simulate(program(load, gemm, other_load, overwrite), HW).timings
    assert timings[1].start == timings[0].end  # the GEMM reads what the LOAD wrote
    # The next tile's DMA issues behind the first transfer and lands during the GEMM.
    assert timings[2].start == timings[0].start + timings[0].occupied
    assert timings[2].end < timings[1].end
    assert timings[3].start >= timings[1].end  # overwriting A waits for the GEMM that reads it


def _load(buffer: int, address: int, source: int, rows: int, cols: int) -> tuple[str, dict]:
    return (
        "LOAD",
        {
            "dst": buffer,
            "dst_addr": address,
            "src": source,
            "rows": rows,
            "cols": cols,
            "stride": cols,
        },
    )


def _store(address: int, target: int, rows: int, cols: int) -> tuple[str, dict]:
    return (
        "STORE",
        {"src": 2, "src_addr": address, "dst": target, "rows": rows, "cols": cols, "stride": cols},
    )


def test_store_queue_never_holds_up_loads() -> None:
    """VTA-style decoupling: a STORE waiting for its GEMM does not delay the next tile's LOAD."""
    half = 65536
    gemm = (
        "GEMM",
        {
            "dst": 2,
            "dst_addr": 0,
            "a": 0,
            "a_addr": 0,
            "b": 1,
            "b_addr": 0,
            "m": 32,
            "k": 32,
            "n": 32,
        },
    )
    load_next = _load(0, half, 8192, 32, 32)
    timings = simulate(
        program(_load(0, 0, 0, 32, 32), gemm, _store(0, 4096, 32, 32), load_next), HW
    ).timings
    assert timings[0].unit == timings[3].unit == "dma_in" and timings[2].unit == "dma_out"
    assert timings[2].start == timings[1].end  # the store waits for its GEMM ...
    assert timings[3].end < timings[1].end  # ... while the next load has already landed
    # The load queue issues its next request while the previous one's data is in flight:
    # 32x32 fp16 = 2048 B = 4 cycles at 512 B/cycle after 100 cycles of latency.
    assert (timings[0].start, timings[0].end) == (0, 104)
    assert (timings[3].start, timings[3].end) == (4, 108)


def test_dma_engines_share_the_dram_channel(tmp_path: Path) -> None:
    loads = [_load(0, 0, 0, 64, 128), _load(1, 0, 65536, 64, 128)]  # 32 transfer cycles each
    # Two load engines on one shared channel: the second transfer follows the first.
    shared = variant(tmp_path, load_engines="2")
    first, second = simulate(program(*loads, hw=shared), shared).timings[:2]
    assert (first.start, first.end, second.start, second.end) == (0, 132, 0, 164)
    # Split bandwidth: each engine streams at half the rate, both at once.
    (tmp_path / "split").mkdir()
    split_text = shared.text.replace('bandwidth_sharing = "shared"', 'bandwidth_sharing = "split"')
    (tmp_path / "split" / "hw.toml").write_text(split_text)
    split = load_hardware(tmp_path / "split" / "hw.toml")
    first, second = simulate(program(*loads, hw=split), split).timings[:2]
    # 2 load + 1 store engines share 512 B/cycle: 170.67 B/cycle each, 16384 B -> 96 cycles.
    assert (first.end, second.end) == (196, 196)


def test_tiled_gemm_chain_is_software_pipelined(tmp_path: Path) -> None:
    """A hand-computed schedule: C_i = A_i @ B_i for 6 tiles, A (128x128) and B (128x32) in
    alternate halves of act/wgt, C (128x32) in alternate halves of acc, issued in software-
    pipelined order (tile i+1's loads, tile i's GEMM, tile i-1's store), at 128 B/cycle.
    Transfers: A 32 KiB = 256 cycles, B 8 KiB = 64, C 8 KiB = 64, each after 100 cycles of
    latency; GEMM: 4 folds, 32 + 4 * 128 + 62 = 606 cycles."""
    hw = variant(tmp_path, bandwidth_gb_s="128.0")
    half, tiles = 65536, 6

    def loads(i: int) -> list:
        parity = (i % 2) * half
        return [_load(0, parity, i * 16384, 128, 128), _load(1, parity, 200000 + i * 4096, 128, 32)]

    def gemm(i: int) -> list:
        parity = (i % 2) * half
        return [("GEMM", {"dst": 2, "dst_addr": parity, "a": 0, "a_addr": parity, "b": 1, "b_addr": parity,
                          "m": 128, "k": 128, "n": 32})]  # fmt: skip

    def store(i: int) -> list:
        return [_store((i % 2) * half, 400000 + i * 4096, 128, 32)]

    instructions = []
    for step in range(tiles + 2):
        instructions += loads(step) if step < tiles else []
        instructions += gemm(step - 1) if 0 <= step - 1 < tiles else []
        instructions += store(step - 2) if 0 <= step - 2 < tiles else []
    profile = simulate(program(*instructions, hw=hw), hw)
    gemms = [t for t in profile.timings if t.name == "GEMM"]
    stores = [t for t in profile.timings if t.name == "STORE"]
    loads_done = [t for t in profile.timings if t.name == "LOAD"]
    # A_0's data lands at 100 + 256; the engine issues B_0 at 256, its data follows on the
    # channel at 356 and lands at 420: the first GEMM starts there.
    assert (loads_done[0].start, loads_done[0].end) == (0, 356)
    assert (loads_done[1].start, loads_done[1].end) == (256, 420)
    assert gemms[0].start == 420
    # Then the PE array never waits: every later tile's A and B (320 transfer cycles + 100 of
    # latency) arrive during the previous GEMM (606), and its store overlaps the next GEMM.
    for previous, current in zip(gemms, gemms[1:], strict=False):
        assert current.start == previous.end
    for gemm_timing, store_timing in zip(gemms[:-1], stores[:-1], strict=True):
        assert gemm_timing.end <= store_timing.start < store_timing.end < gemm_timing.end + 606
    # Span: prologue 420, six GEMMs, the last store (100 + 64), HALT (1).
    assert profile.cycles == 420 + tiles * 606 + 164 + 1
    busy = sum(profile.unit_busy.values())
    assert busy == tiles * (256 + 64 + 606 + 64)
    assert profile.cycles < 0.75 * busy


def test_dynamic_sizes_follow_the_clusters() -> None:
    # The table's readout (its instruction reports the clusters formed), then a GEMM over it.
    cluster = ("CLUSTER_READ", {"dst": 3, "dst_addr": 4096, "counts_addr": 8192, "rows": 128, "cols": 32,
                                "resident": 128})  # fmt: skip
    gemm = ("GEMM", {"dst": 2, "dst_addr": 0, "a": 3, "a_addr": 4096, "b": 1, "b_addr": 0, "m": 128, "k": 32, "n": 32,
                     "accumulate": 0, "transpose_b": 0, "has_bias": 0, "bias": 3, "bias_addr": 0})  # fmt: skip
    compiled = program(cluster, gemm)
    compiled.dynamic = [(1, "m", 0)]
    nominal = simulate(compiled, HW)
    measured = simulate(compiled, HW, clusters={0: 64})
    assert nominal.macs == 2 * measured.macs
    assert measured.timings[1].end - measured.timings[1].start == 32 + 64 + 32 + 32 - 2


def test_run_and_profile_commands(tmp_path: Path, capsys) -> None:
    from ctac.cli import main

    model = MODELS / "bert_ts_eager.onnx"
    binary = tmp_path / "bert.ctab"
    assert (
        main(
            [
                "compile",
                str(model),
                "--shape",
                "input_ids=2x16,attention_mask=2x16",
                "-o",
                str(binary),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            ["run", str(binary), "--compare", str(model), "--json", "-o", str(tmp_path / "out.npz")]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    # ctac's default machine stores fp16: its error against onnxruntime is reported, honestly
    output = report["outputs"]["last_hidden_state"]
    assert output["storage"] == "fp16" and 0 < output["max_abs_err"] <= FP16_ATOL
    assert report["profile"]["cycles"] > 0 and report["profile"]["energy_pj"] > 0
    assert [entry["tokens"] for entry in report["attention"]] == [16, 16]
    assert np.load(tmp_path / "out.npz")["last_hidden_state"].shape == (2, 16, 64)
    assert main(["profile", str(binary), "--out", str(tmp_path / "prof")]) == 0
    trace = json.loads((tmp_path / "prof" / "trace.json").read_text())
    events = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert events and all({"name", "ph", "ts", "dur", "pid", "tid"} <= set(e) for e in events)
    profile = json.loads((tmp_path / "prof" / "profile.json").read_text())
    assert {"layer 0", "layer 1"} <= set(profile["blocks"])
    assert (tmp_path / "prof" / "cycles_per_layer.png").stat().st_size > 1000


def test_readme_gpt2_profile_trace_shows_dma_overlapping_the_pe(tmp_path: Path, capsys) -> None:
    """The README's GPT-2 example: in trace.json, DMA transfers (dma_in / dma_out tracks) run
    while the PE array computes. (At 2 x 16 tokens the tiles are tiny and the run is bound by
    DRAM latency, so its span still exceeds the units' summed busy cycles; the GEMM-chain test
    above shows the span below it.)"""
    from ctac.cli import main

    model = MODELS / "gpt2_ts_eager.onnx"
    binary = tmp_path / "gpt2.ctab"
    shape = "input_ids=2x16,attention_mask=2x16"
    assert main(["compile", str(model), "--shape", shape, "-o", str(binary)]) == 0
    assert main(["profile", str(binary), "--out", str(tmp_path / "prof")]) == 0
    capsys.readouterr()
    trace = json.loads((tmp_path / "prof" / "trace.json").read_text())
    names = {
        e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"
    }
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    pe = sorted((e["ts"], e["ts"] + e["dur"]) for e in slices if names[e["tid"]] == "pe")
    dma = [(e["ts"], e["ts"] + e["dur"]) for e in slices if names[e["tid"]].startswith("dma")]
    overlapping = sum(
        1 for start, end in dma if any(p_start < end and start < p_end for p_start, p_end in pe)
    )
    assert pe and dma
    assert overlapping >= len(dma) // 4, f"{overlapping} of {len(dma)} DMA slices overlap the PE"


def test_cluster_spill_traffic_takes_its_turn_on_the_dram_channel() -> None:
    """A CLUSTER whose table rows spill to DRAM streams 302,304 bytes (591 cycles at 512 B/cycle)
    from its start; a LOAD issued meanwhile finds the shared channel busy until then."""
    cluster = ("CLUSTER", {"src_addr": 0, "codes_addr": 0, "valid_addr": 0, "ids_addr": 100,
                           "rows": 64, "cols": 64, "threshold": 0.1, "first": 0, "spill": 50000,
                           "resident": 0, "table_rows": 1000, "scan": 0, "window": 0})  # fmt: skip
    load = _load(1, 0, 0, 64, 128)  # 16 KiB: 32 transfer cycles
    spill, loaded = simulate(program(cluster, load), HW).timings[:2]
    assert spill.dram_bytes == 302304
    assert (loaded.start, loaded.end) == (0, 591 + 32)  # alone it would end at 100 + 32
