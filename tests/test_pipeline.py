"""The software-pipelined tile emitter (passes/lower_to_isa/pipeline.py): the skewed order, the
dependence check that falls back to the written order, and that every test model's loops are
pipelined."""

from __future__ import annotations

import json

import pytest
from conftest import MODELS, shape_flags

from ctac.hw import load_hardware
from ctac.importer import import_model
from ctac.passes.lower_to_isa.core import Emitted, Lowering
from ctac.passes.lower_to_isa.pipeline import Pipeline
from ctac.pipeline import run_passes
from ctac.runtime.isa import Buffer

HW = load_hardware()
ACT, WGT, ACC, VEC = Buffer


class _Host:
    """The parts of Lowering a Pipeline uses."""

    def __init__(self) -> None:
        self.program: list[Emitted] = []
        self.sink = self.program.append
        self.capacity = {b.index: b.capacity for b in HW.buffers}
        self.unpipelined_loops = 0

    def emit(self, name: str, **fields) -> Emitted:
        emitted = Emitted(name, fields, "")
        self.sink(emitted)
        return emitted


def _tile(host: _Host, pipeline: Pipeline, slot: int, label: int, in_place: bool = False) -> None:
    pipeline.tile()
    host.emit("LOAD", dst=ACT, dst_addr=slot, src=label * 64, rows=1, cols=64, stride=64)
    target = (ACT, slot) if in_place else (VEC, slot)
    host.emit("VEC", op="exp", dst=target[0], dst_addr=target[1], a=ACT, a_addr=slot, rows=1,
              cols=64, bcast="imm")  # fmt: skip
    host.emit("STORE", src=target[0], src_addr=target[1], dst=10000 + label * 64, rows=1,
              cols=64, stride=64)  # fmt: skip


def test_tiles_are_emitted_as_a_modulo_schedule() -> None:
    host = _Host()
    pipeline = Pipeline(host).open()
    for label in range(4):
        _tile(host, pipeline, (label % 2) * 64, label)
    pipeline.close()
    order = [(e.name, e.fields.get("src", e.fields.get("dst"))) for e in host.program]
    # Step t: tile t's load, tile t-1's compute, tile t-2's store.
    names = [name for name, _ in order]
    assert names == ["LOAD", "LOAD", "VEC", "LOAD", "VEC", "STORE", "LOAD", "VEC", "STORE",
                     "VEC", "STORE", "STORE"]  # fmt: skip
    assert host.unpipelined_loops == 0


def test_a_loop_whose_values_outlive_their_slots_is_emitted_as_written() -> None:
    """In place: the load's slot is read by the store two stages later, so tile i+2's load
    would overwrite it first; the check finds that and keeps the written order."""
    host = _Host()
    pipeline = Pipeline(host).open()
    for label in range(4):
        _tile(host, pipeline, (label % 2) * 64, label, in_place=True)
    pipeline.close()
    assert [e.name for e in host.program[:3]] == ["LOAD", "VEC", "STORE"]
    assert host.unpipelined_loops == 1


MANIFEST = json.loads((MODELS / "manifest.json").read_text())["models"]


@pytest.mark.parametrize("entry", MANIFEST, ids=[m["file"].removesuffix(".onnx") for m in MANIFEST])
def test_every_loop_of_the_test_models_is_pipelined(entry: dict) -> None:
    for spec in (
        "onnx-canonicalize,detect-attention,legalize-for-isa",
        "onnx-canonicalize,detect-attention,cta-compress,legalize-for-isa",
    ):
        module = import_model(MODELS / entry["file"], shape_flags(entry)).module
        run_passes(module, spec)
        lowering = Lowering(module, HW)
        lowering.run()
        assert lowering.unpipelined_loops == 0, spec


@pytest.mark.parametrize(("name", "length"), [("bert_long", 2048), ("gpt2_long", 1024)])
def test_long_sequences_with_many_key_tiles_are_pipelined(name: str, length: int) -> None:
    """Several key tiles per query tile: each step's rescale is copied out of the running state
    before the next key tile's softmax rewrites it, so the attention loop stays pipelined."""
    shapes = {"input_ids": [1, length], "attention_mask": [1, length]}
    for spec in (
        "onnx-canonicalize,detect-attention",
        "onnx-canonicalize,detect-attention,cta-compress",
    ):
        module = import_model(MODELS / f"{name}.onnx", shapes).module
        run_passes(module, spec)
        lowering = Lowering(module, HW)
        lowering.run()
        assert lowering.unpipelined_loops == 0, spec
