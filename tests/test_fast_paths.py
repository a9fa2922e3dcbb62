"""The interpreter's kernels and the cost model's scoreboard are fast without changing a bit:
the in-place kernels give the plain numpy expressions' bits (special values included), and the
cost model's run-length scoreboard answers as the per-block arrays did."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ctac.hw import load_hardware
from ctac.runtime import costmodel, interpreter, isa, kernels
from ctac.runtime.program import Program

HW = load_hardware()
CAPACITIES = {b.index: b.capacity for b in HW.buffers}
ACT, WGT, ACC, VEC = isa.Buffer


def decoded(name: str, **fields) -> dict:
    """The fields as a program file carries them (every field, defaults filled in)."""
    return isa.decode(isa.encode(name, fields))[1]


SPECIALS = np.array(
    [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -3e38, 3e38, 7.5, -7.5, 40.0, -40.0]
)


def _tile(rng: np.random.Generator, rows: int, cols: int, scale: float) -> np.ndarray:
    values = (rng.normal(size=rows * cols) * scale).astype(np.float32)
    values[: len(SPECIALS)] = SPECIALS
    return values.reshape(rows, cols)


def _machine(**tiles: np.ndarray) -> interpreter.Machine:
    program = Program(HW.digest, [], np.zeros(0, np.float32), 16, [], [])
    machine = interpreter.Machine(program, CAPACITIES)
    for (buffer, address), values in zip(
        [(ACT, 0), (WGT, 0), (VEC, 0)], tiles.values(), strict=False
    ):
        machine.tile(buffer, address, *values.shape)[...] = values
    return machine


def _same_bits(got: np.ndarray, want: np.ndarray) -> bool:
    expected = np.empty(got.shape, np.float32)
    with np.errstate(all="ignore"):
        expected[...] = want
    return np.array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("op", [op for op in isa.VECTOR_OPS if op not in ("copy", "transpose")])
@pytest.mark.parametrize("bcast", ["full", "row", "imm"])
def test_vec_kernels_give_the_plain_expressions_bits(op: str, bcast: str) -> None:
    rng = np.random.default_rng(len(op))
    rows, cols = 5, 24
    a, b = _tile(rng, rows, cols, 4.0), _tile(rng, rows, cols, 2.0)
    machine = _machine(a=a, b=b)
    fields = dict(op=op, dst=ACC, dst_addr=0, a=ACT, a_addr=0, b=WGT, b_addr=0, rows=rows,
                  cols=cols, bcast=bcast, imm=1.25)  # fmt: skip
    interpreter.SEMANTICS["VEC"](machine, decoded("VEC", **fields))
    operand = {"full": b, "row": b[:1], "imm": np.float32(1.25)}[bcast]
    with np.errstate(all="ignore"):
        if op in kernels._UNARY:
            want = kernels._UNARY[op](a.astype(np.float64) if op in ("erf", "gelu") else a)
        else:
            want = kernels._BINARY[op](a, operand)
    assert _same_bits(machine.tile(ACC, 0, rows, cols), want)


def test_gelu_is_the_reference_erf_formula_on_a_bert_sized_tile() -> None:
    """Several tile shapes share the machine's scratch arrays; each result is still exact."""
    rng = np.random.default_rng(7)
    for rows, cols in [(18, 3072), (2, 3072), (18, 3072), (3, 5)]:
        a = _tile(rng, rows, cols, 3.0)
        machine = _machine(a=a)
        interpreter.SEMANTICS["VEC"](machine, decoded(
            "VEC", op="gelu", dst=ACC, dst_addr=0, a=ACT, a_addr=0, rows=rows, cols=cols,
            bcast="imm"))  # fmt: skip
        with np.errstate(all="ignore"):
            want = kernels._gelu(a.astype(np.float64))
        assert _same_bits(machine.tile(ACC, 0, rows, cols), want)


def _gelu_tile(a: np.ndarray) -> np.ndarray:
    rows, cols = a.shape
    machine = _machine(a=a)
    interpreter.SEMANTICS["VEC"](machine, decoded(
        "VEC", op="gelu", dst=ACC, dst_addr=0, a=ACT, a_addr=0, rows=rows, cols=cols,
        bcast="imm"))  # fmt: skip
    return machine.tile(ACC, 0, rows, cols)


def test_the_gelu_table_gives_every_fp16_values_bits() -> None:
    """Every finite fp16 value, in one tile, through the table: the reference formula's bits."""
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    a = halves[np.isfinite(halves)].astype(np.float32).reshape(8, -1)  # 63,488 values
    assert kernels.gelu_by_table(_machine(), a, np.empty_like(a))
    assert _same_bits(_gelu_tile(a), kernels._gelu(a.astype(np.float64)))
    rng = np.random.default_rng(3)  # and a BERT FFN tile of fp16 values, as loads widen them
    a = (rng.normal(size=(18, 3072)) * 3).astype(np.float16).astype(np.float32)
    assert kernels.gelu_by_table(_machine(), a, np.empty_like(a))
    assert _same_bits(_gelu_tile(a), kernels._gelu(a.astype(np.float64)))


@pytest.mark.parametrize(
    "odd", [1 / 3, np.nan, np.inf, -np.inf, 1e6, 65520.0, 2.0**-40, 2.0**-25, 1e-45]
)
def test_the_gelu_table_refuses_a_tile_with_one_value_fp16_lacks(odd: float) -> None:
    rng = np.random.default_rng(4)
    a = (rng.normal(size=(18, 3072)) * 3).astype(np.float16).astype(np.float32)
    a[7, 1000] = odd
    out = np.full_like(a, 5.0)
    assert not kernels.gelu_by_table(_machine(), a, out)
    assert (out == 5.0).all()  # untouched: gelu_into computes the tile
    with np.errstate(all="ignore"):
        want = kernels._gelu(a.astype(np.float64))
    assert _same_bits(_gelu_tile(a), want)


@pytest.mark.parametrize("accumulate", [0, 1])
@pytest.mark.parametrize("has_bias", [0, 1])
@pytest.mark.parametrize("transpose_b", [0, 1])
def test_gemm_kernel_gives_the_plain_expressions_bits(accumulate, has_bias, transpose_b) -> None:
    rng = np.random.default_rng(accumulate + 2 * has_bias + 4 * transpose_b)
    m, k, n = 9, 33, 17
    a = rng.normal(size=(m, k)).astype(np.float32)
    b = rng.normal(size=(n, k) if transpose_b else (k, n)).astype(np.float32)
    bias = rng.normal(size=(1, n)).astype(np.float32)
    before = rng.normal(size=(m, n)).astype(np.float32)
    machine = _machine(a=a, b=b, bias=bias)
    machine.tile(ACC, 0, m, n)[...] = before
    interpreter.SEMANTICS["GEMM"](machine, decoded(
        "GEMM", dst=ACC, dst_addr=0, a=ACT, a_addr=0, b=WGT, b_addr=0, m=m, k=k, n=n,
        accumulate=accumulate, transpose_b=transpose_b, has_bias=has_bias, bias=VEC,
        bias_addr=0))  # fmt: skip
    product = a @ (b.T if transpose_b else b)
    if has_bias:
        product += bias
    want = before + product if accumulate else product
    assert _same_bits(machine.tile(ACC, 0, m, n), want)


def test_layernorm_kernel_gives_the_plain_expressions_bits() -> None:
    rng = np.random.default_rng(3)
    rows, cols = 6, 40
    x, gamma = rng.normal(size=(rows, cols)).astype(np.float32), _tile(rng, 1, cols, 1.0)
    gamma[~(np.abs(gamma) < 1e3)] = 0.5  # finite weights (-0.0 and the tiny one stay)
    machine = _machine(x=x, gamma=gamma)
    interpreter.SEMANTICS["LAYERNORM"](machine, decoded(
        "LAYERNORM", dst=ACC, dst_addr=0, src=ACT, src_addr=0, gamma=WGT, gamma_addr=0, beta=WGT,
        beta_addr=0, has_beta=1, rows=rows, cols=cols, eps=1e-5))  # fmt: skip
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=1, keepdims=True)
    variance = ((x64 - mean) ** 2).mean(axis=1, keepdims=True)
    eps = float(np.float32(1e-5))
    assert _same_bits(
        machine.tile(ACC, 0, rows, cols), (x64 - mean) / np.sqrt(variance + eps) * gamma + gamma
    )


@pytest.mark.parametrize("mask", ["none", "keys", "additive", "counts", "causal"])
def test_softmax_kernel_gives_the_plain_expressions_bits(mask: str) -> None:
    rng = np.random.default_rng(11)
    rows, cols = 6, 40
    scores = (rng.normal(size=(rows, cols)) * 3).astype(np.float32)
    keys = (rng.random((1, cols)) > 0.3).astype(np.float32)
    additive = np.where(rng.random((rows, cols)) > 0.5, 0.0, -np.inf).astype(np.float32)
    additive[2] = -np.inf  # a row that sees nothing
    counts = rng.integers(0, 4, (1, cols)).astype(np.float32)
    operand = {"keys": keys, "additive": additive, "counts": counts}.get(mask, keys)
    machine = _machine(scores=scores, operand=operand)
    interpreter.SEMANTICS["SOFTMAX"](machine, decoded(
        "SOFTMAX", dst=ACC, dst_addr=0, src=ACT, src_addr=0, rows=rows, cols=cols, scale=0.5,
        softcap=2.0, mask=mask if mask in ("keys", "additive") else "none", mask_buf=WGT,
        mask_addr=0, has_counts=int(mask == "counts"), counts=WGT, counts_addr=0,
        causal=int(mask == "causal"), row0=1, causal_offset=2))  # fmt: skip
    # SOFTMAX as the interpreter first wrote it
    s = scores.astype(np.float64) * 0.5
    s = 2.0 * np.tanh(s / 2.0)
    visible = np.ones((rows, cols), dtype=bool)
    if mask == "keys":
        visible &= keys != 0
    elif mask == "additive":
        s = s + additive
    if mask == "causal":
        visible &= np.arange(cols)[None, :] <= np.arange(rows)[:, None] + 1 + 2
    if mask == "counts":
        visible &= counts > 0
    s = np.where(visible, s, -np.inf)
    peak = s.max(axis=1, keepdims=True)
    weights = np.exp(s - np.where(np.isfinite(peak), peak, 0.0))
    if mask == "counts":
        weights = weights * counts
    total = weights.sum(axis=1, keepdims=True)
    want = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    assert _same_bits(machine.tile(ACC, 0, rows, cols), want)


class _BlockArrays:
    """The cost model's scoreboard as it was: one int per block of addresses."""

    def __init__(self, block: int, size: int) -> None:
        self.block = block
        self.write = np.zeros(size // block + 2, np.int64)
        self.read = np.zeros(size // block + 2, np.int64)

    def span(self, start: int, size: int) -> slice:
        return slice(start // self.block, (start + max(size, 1) - 1) // self.block + 1)

    def ready(self, reads: list, writes: list) -> int:
        ready = [int(self.write[self.span(s, n)].max(initial=0)) for s, n in reads]
        ready += [int(self.write[self.span(s, n)].max(initial=0)) for s, n in writes]
        ready += [int(self.read[self.span(s, n)].max(initial=0)) for s, n in writes]
        return max(ready, default=0)

    def record(self, reads: list, writes: list, end: int) -> None:
        for start, size in reads:
            span = self.span(start, size)
            self.read[span] = np.maximum(self.read[span], end)
        for start, size in writes:
            self.write[self.span(start, size)] = end


@pytest.mark.parametrize("seed", range(20))
def test_scoreboard_runs_answer_as_block_arrays(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = 4096  # 66 blocks of 64; regions may run past the end, as numpy slices clip them
    board, reference = costmodel._Scoreboard({0: size}), _BlockArrays(costmodel.BUFFER_BLOCK, size)
    for _ in range(300):
        regions = [
            (int(rng.integers(0, size + 200)), int(rng.choice([0, 1, 63, 64, 65, 500, 3000])))
            for _ in range(int(rng.integers(0, 4)))
        ]
        cut = int(rng.integers(0, len(regions) + 1))
        reads, writes = regions[:cut], regions[cut:]
        ready = board.ready([(0, s, n) for s, n in reads], [(0, s, n) for s, n in writes])
        assert ready == reference.ready(reads, writes)
        end = ready + int(rng.integers(-50, 100))  # units run out of order: ends go back too
        board.record([(0, s, n) for s, n in reads], [(0, s, n) for s, n in writes], end)
        reference.record(reads, writes, end)
    blocks = board.blocks[0]
    assert len(blocks.starts) <= math.ceil(size / costmodel.BUFFER_BLOCK) + 2
