"""The cost model against hand-computed cycles and energy, and the run/profile commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import MODELS

from ctac.hw import load_hardware
from ctac.runtime import isa
from ctac.runtime.costmodel import simulate
from ctac.runtime.program import Program

HW = load_hardware()
# Default config: 32x32 PE array, 64 vector lanes, pipeline 8, 512 B/cycle DRAM, latency 100,
# 2-byte elements; energies 1.74 pJ/MAC, 1.31 pJ/vector op, 10.9 pJ/buffer element, 31.2 pJ/DRAM byte.


def program(*instructions) -> Program:
    """A program of the given instructions (missing fields zero, as the encoder fills them)."""
    decoded = [(name, isa.decode(isa.encode(name, fields))[1]) for name, fields in instructions]
    return Program(HW.digest, [*decoded, ("HALT", {})], np.zeros(0, np.float32), 1 << 20, [], [])


def test_gemm_cycles_follow_scale_sim() -> None:
    # m=100, k=64, n=96 on 32x32: ceil(64/32)*ceil(96/32) = 6 folds of 2*32 + 32 + 100 - 2 = 194.
    gemm = ("GEMM", {"dst": 2, "dst_addr": 0, "a": 0, "a_addr": 0, "b": 1, "b_addr": 0, "m": 100, "k": 64, "n": 96,
                     "accumulate": 0, "transpose_b": 0, "has_bias": 0, "bias": 3, "bias_addr": 0})  # fmt: skip
    profile = simulate(program(gemm), HW)
    assert profile.timings[0].end - profile.timings[0].start == 6 * 194
    macs = 100 * 64 * 96
    reads = 100 * 64 * 3 + 64 * 96  # A streamed once per column fold, B once
    writes = 100 * 96
    assert profile.macs == macs
    assert profile.timings[0].energy_pj == pytest.approx(macs * 1.74 + (reads + writes) * 10.9)


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
    assert timings[2].start == timings[0].end  # the next tile's DMA overlaps the GEMM
    assert timings[2].start < timings[1].end
    assert timings[3].start >= timings[1].end  # overwriting A waits for the GEMM that reads it


def test_dynamic_sizes_follow_the_clusters() -> None:
    cluster = ("CLUSTER", {"src": 0, "codes": 3, "centroids": 3, "centroids_addr": 4096, "counts": 3, "counts_addr": 8192,
                           "ids": 3, "ids_addr": 9000, "rows": 128, "cols": 32, "threshold": 0.1})  # fmt: skip
    gemm = ("GEMM", {"dst": 2, "dst_addr": 0, "a": 3, "a_addr": 4096, "b": 1, "b_addr": 0, "m": 128, "k": 32, "n": 32,
                     "accumulate": 0, "transpose_b": 0, "has_bias": 0, "bias": 3, "bias_addr": 0})  # fmt: skip
    compiled = program(cluster, gemm)
    compiled.dynamic = [(1, "m", 0)]
    nominal = simulate(compiled, HW)
    measured = simulate(compiled, HW, clusters={0: 64})
    assert nominal.macs == 2 * measured.macs
    assert measured.timings[1].end - measured.timings[1].start == 2 * 32 + 32 + 64 - 2


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
    assert report["outputs"]["last_hidden_state"]["max_abs_err"] <= 1e-4
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
