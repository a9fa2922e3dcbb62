"""SOFTMAX_ONLINE over key tiles, with the output rescaled and accumulated as the attention
lowering does, equals one SOFTMAX over all keys followed by P V (masks, counts, causal frontier,
fully masked rows)."""

from __future__ import annotations

import numpy as np
import pytest

from ctac.hw import load_hardware
from ctac.runtime import isa
from ctac.runtime.interpreter import SEMANTICS, Machine
from ctac.runtime.program import Program

HW = load_hardware()
ACT, WGT, ACC, VEC = isa.Buffer


def machine() -> Machine:
    program = Program(HW.digest, [], np.zeros(0, np.float32), 16, [], [])
    return Machine(program, {b.index: b.capacity for b in HW.buffers})


def run(m: Machine, name: str, **fields) -> None:
    _, decoded = isa.decode(isa.encode(name, fields))  # what a program file would carry
    SEMANTICS[name](m, decoded)


@pytest.mark.parametrize("mode", ["none", "keys", "additive", "counts", "causal"])
@pytest.mark.parametrize("tile", [7, 16, 48])
def test_key_tiles_equal_one_softmax(mode: str, tile: int) -> None:
    rng = np.random.default_rng(tile)
    rows, keys, dim = 5, 48, 8
    scores = rng.normal(size=(rows, keys)).astype(np.float32) * 3
    values = rng.normal(size=(keys, dim)).astype(np.float32)
    key_mask = (rng.random(keys) > 0.3).astype(np.float32)
    key_mask[:20] = 0  # whole key tiles with no visible key
    additive = np.where(rng.random((rows, keys)) > 0.5, 0.0, -np.inf).astype(np.float32)
    additive[2] = -np.inf  # a row that sees nothing
    counts = rng.integers(0, 4, keys).astype(np.float32)
    fields = {"scale": 0.5, "softcap": 0.0}
    m = machine()
    m.tile(ACC, 0, rows, keys)[...] = scores
    m.tile(VEC, 0, 1, keys)[...] = key_mask if mode == "keys" else counts
    m.tile(VEC, 1000, rows, keys)[...] = additive
    if mode in ("keys", "additive"):
        fields.update(mask=mode, mask_buf=VEC, mask_addr=0 if mode == "keys" else 1000)
    if mode == "counts":
        fields.update(has_counts=1, counts=VEC, counts_addr=0)
    if mode == "causal":
        fields.update(causal=1, row0=3, causal_offset=-6)
    run(m, "SOFTMAX", dst=ACT, dst_addr=0, src=ACC, src_addr=0, rows=rows, cols=keys, **fields)
    expected = m.tile(ACT, 0, rows, keys).astype(np.float64) @ values
    # Key-tiled: weights of each tile into act, O (acc at 10000) rescaled then accumulated.
    output = np.zeros((rows, dim))
    starts = list(range(0, keys, tile))
    for index, k0 in enumerate(starts):
        cols = min(tile, keys - k0)
        m.tile(ACC, 5000, rows, cols)[...] = scores[:, k0 : k0 + cols]
        online = {"scale": 0.5, "softcap": 0.0}
        if mode in ("keys", "additive"):
            source = (
                key_mask[None, k0 : k0 + cols] if mode == "keys" else additive[:, k0 : k0 + cols]
            )
            m.tile(VEC, 3000, *source.shape)[...] = source
            online.update(mask=mode, mask_addr=3000)
        if mode == "counts":
            m.tile(VEC, 3000, 1, cols)[...] = counts[None, k0 : k0 + cols]
            online.update(has_counts=1, counts_addr=3000)
        if mode == "causal":
            online.update(causal=1, causal_offset=3 - 6 - k0)
        run(m, "SOFTMAX_ONLINE", dst=ACT, dst_addr=0, src=ACC, src_addr=5000, rows=rows, cols=cols,
            state_addr=8000, first=int(index == 0), last=int(index == len(starts) - 1), **online)  # fmt: skip
        weights = m.tile(ACT, 0, rows, cols).astype(np.float64)
        rescale = m.tile(VEC, 8000 + 2 * rows, rows, 1)[:, 0].astype(np.float64)
        output = (output * rescale[:, None] if index else 0) + weights @ values[k0 : k0 + cols]
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-6)
    if mode == "additive":
        assert not output[2].any()  # a row with no visible key is zeros, not NaN
