"""Load forwarding (runtime/forwarding.py): a LOAD whose tile only GEMMs read hands them a view of
DRAM instead of copying, and every output stays bit for bit what the copying machine gives:
on a real model (fp16 and fp32, with and without the widened data segment), on fuzzed programs
whose instructions were mutated, and on hand-made hazards the plan must refuse."""

from __future__ import annotations

import gc
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
from conftest import MODELS

from ctac.errors import CtacError
from ctac.hw import load_hardware, with_precision
from ctac.run import capacities, random_inputs
from ctac.runtime import interpreter, isa
from ctac.runtime.forwarding import ForwardingPlan, forwarding_plan, widened_data
from ctac.runtime.interpreter import run_program
from ctac.runtime.program import Program, Symbol, storage_array

REPO = Path(__file__).resolve().parent.parent
HW = load_hardware()
CAPACITIES = capacities(HW)
ACT, WGT, ACC, VEC = isa.Buffer


def bits(outputs: dict) -> dict:
    return {name: np.ascontiguousarray(array).view(np.uint8).tobytes() for name, array in outputs.items()}  # fmt: skip


@pytest.fixture
def copying(monkeypatch):
    """Run programs with forwarding switched off: every LOAD copies."""

    def switch_off():
        monkeypatch.setattr(
            interpreter, "forwarding_plan", lambda program: ForwardingPlan(frozenset(), {})
        )

    return switch_off


def program_of(instructions: list, data: np.ndarray, dram: int, symbols: list) -> Program:
    decoded = [(name, isa.decode(isa.encode(name, fields))[1]) for name, fields in instructions]
    return Program(HW.digest, [*decoded, ("HALT", {})], data, dram, symbols, [])


def load(dst: int, dst_addr: int, src: int, rows: int, cols: int) -> tuple:
    return ("LOAD", {"dst": dst, "dst_addr": dst_addr, "src": src, "rows": rows, "cols": cols, "stride": cols})  # fmt: skip


def gemm(a_addr: int, b_addr: int, dst_addr: int, m: int, k: int, n: int, **more) -> tuple:
    fields = {"dst": ACC, "dst_addr": dst_addr, "a": ACT, "a_addr": a_addr, "b": WGT, "b_addr": b_addr, "m": m, "k": k, "n": n}  # fmt: skip
    return ("GEMM", {**fields, **more})


def store(src: int, src_addr: int, dst: int, rows: int, cols: int) -> tuple:
    return ("STORE", {"src": src, "src_addr": src_addr, "dst": dst, "rows": rows, "cols": cols, "stride": cols})  # fmt: skip


def vec(op: str, dst: int, dst_addr: int, a: int, a_addr: int, rows: int, cols: int) -> tuple:
    return ("VEC", {"op": op, "dst": dst, "dst_addr": dst_addr, "a": a, "a_addr": a_addr, "b": a, "b_addr": a_addr, "rows": rows, "cols": cols, "bcast": "imm", "imm": 1.0})  # fmt: skip


# A 4 x 4 weight in the data segment; the input x (4 x 4) at DRAM 16, the output y at 32.
WEIGHT = np.arange(16, dtype=np.float32).reshape(4, 4) / 8
SYMBOLS = [Symbol("x", "input", (4, 4), "float32", 16), Symbol("y", "output", (4, 4), "float32", 32)]  # fmt: skip
X = np.arange(16, dtype=np.float32).reshape(4, 4) - 5


def run_both(program: Program, copying, inputs: dict | None = None) -> tuple[dict, dict]:
    """The outputs forwarding, then copying."""
    inputs = {"x": X} if inputs is None else inputs
    forwarded, _ = run_program(program, CAPACITIES, inputs)
    copying()
    copied, _ = run_program(program, CAPACITIES, inputs)
    return forwarded, copied


def test_gemm_operands_are_forwarded_and_equal_the_copies(copying) -> None:
    program = program_of(
        [load(ACT, 0, 16, 4, 4), load(WGT, 0, 0, 4, 4), gemm(0, 0, 0, 4, 4, 4), store(ACC, 0, 32, 4, 4)],
        WEIGHT.reshape(-1), 48, SYMBOLS,
    )  # fmt: skip
    plan = forwarding_plan(program)
    assert plan.loads == {0, 1}
    assert plan.operands == {2: {"a": 0, "b": 1}}
    forwarded, copied = run_both(program, copying)
    assert bits(forwarded) == bits(copied)
    assert np.array_equal(forwarded["y"], X @ WEIGHT)


def test_a_store_over_the_source_before_the_gemm_keeps_the_copy(copying) -> None:
    """x is overwritten in DRAM after its LOAD: a view would show the new values."""
    program = program_of(
        [
            load(ACT, 0, 16, 4, 4), load(WGT, 0, 0, 4, 4),
            vec("add", VEC, 0, WGT, 0, 4, 4), store(VEC, 0, 16, 4, 4),  # x := w + 1
            gemm(0, 0, 0, 4, 4, 4), store(ACC, 0, 32, 4, 4),
        ],
        WEIGHT.reshape(-1), 48, SYMBOLS,
    )  # fmt: skip
    plan = forwarding_plan(program)
    assert 0 not in plan.loads  # x's LOAD copies
    assert 1 not in plan.loads  # the VEC reads the weight tile too
    forwarded, copied = run_both(program, copying)
    assert bits(forwarded) == bits(copied)
    assert np.array_equal(forwarded["y"], X @ WEIGHT)


def test_a_source_written_after_the_last_read_is_still_forwarded(copying) -> None:
    program = program_of(
        [
            load(ACT, 0, 16, 4, 4), load(WGT, 0, 0, 4, 4), gemm(0, 0, 0, 4, 4, 4),
            store(ACC, 0, 16, 4, 4), store(ACC, 0, 32, 4, 4),  # x's DRAM reused afterwards
        ],
        WEIGHT.reshape(-1), 48, SYMBOLS,
    )  # fmt: skip
    assert forwarding_plan(program).loads == {0, 1}
    forwarded, copied = run_both(program, copying)
    assert bits(forwarded) == bits(copied)


def test_a_partly_overwritten_tile_stays_in_the_buffer(copying) -> None:
    """Half the loaded tile is overwritten, the other half read by a VEC: the LOAD must copy."""
    program = program_of(
        [
            load(ACT, 0, 16, 4, 4), load(WGT, 0, 0, 4, 4), gemm(0, 0, 0, 4, 4, 4),
            vec("neg", ACT, 0, ACC, 0, 2, 4),  # rows 0-1 of x's tile overwritten
            vec("add", ACC, 8, ACT, 8, 2, 4),  # rows 2-3 read (into the result's rows 2-3)
            store(ACC, 0, 32, 4, 4),
        ],
        WEIGHT.reshape(-1), 48, SYMBOLS,
    )  # fmt: skip
    assert 0 not in forwarding_plan(program).loads
    forwarded, copied = run_both(program, copying)
    assert bits(forwarded) == bits(copied)
    expected = X @ WEIGHT
    expected[2:] = X[2:] + 1
    assert np.array_equal(forwarded["y"], expected)


def test_an_accumulator_read_of_the_loaded_tile_keeps_the_copy(copying) -> None:
    """The GEMM's accumulator (its third read) is the loaded tile itself, with the a operand's
    range and shape: only a and b may be views."""
    program = program_of(
        [
            load(ACC, 0, 16, 4, 4), load(WGT, 0, 0, 4, 4),
            ("GEMM", {"dst": ACC, "dst_addr": 0, "a": ACC, "a_addr": 0, "b": WGT, "b_addr": 0,
                      "m": 4, "k": 4, "n": 4, "accumulate": 1}),
            store(ACC, 0, 32, 4, 4),
        ],
        WEIGHT.reshape(-1), 48, SYMBOLS,
    )  # fmt: skip
    plan = forwarding_plan(program)
    assert plan.loads == {1}
    forwarded, copied = run_both(program, copying)
    assert bits(forwarded) == bits(copied)
    assert np.array_equal(forwarded["y"], X + X @ WEIGHT)


def test_a_transposed_operand_and_a_reused_buffer_tile(copying) -> None:
    """b stored n x k (transpose_b), and the buffer tile loaded again for a second GEMM."""
    program = program_of(
        [
            load(ACT, 0, 16, 4, 4), load(WGT, 0, 0, 4, 4),
            gemm(0, 0, 0, 4, 4, 4, transpose_b=1),
            load(WGT, 0, 0, 4, 4),  # the weight tile loaded again
            gemm(0, 0, 16, 4, 4, 4, accumulate=0),
            ("VEC", {"op": "add", "dst": ACC, "dst_addr": 0, "a": ACC, "a_addr": 0, "b": ACC,
                     "b_addr": 16, "rows": 4, "cols": 4, "bcast": "full"}),
            store(ACC, 0, 32, 4, 4),
        ],
        WEIGHT.reshape(-1), 48, SYMBOLS,
    )  # fmt: skip
    assert forwarding_plan(program).loads == {0, 1, 3}
    forwarded, copied = run_both(program, copying)
    assert bits(forwarded) == bits(copied)
    assert np.array_equal(forwarded["y"], X @ WEIGHT.T + X @ WEIGHT)


def test_a_forwarded_load_still_checks_its_destination() -> None:
    capacity = CAPACITIES[ACT]
    program = program_of(
        [load(ACT, capacity - 8, 16, 4, 4), load(WGT, 0, 0, 4, 4), gemm(capacity - 8, 0, 0, 4, 4, 4)],
        WEIGHT.reshape(-1), 48, SYMBOLS,
    )  # fmt: skip
    assert 0 in forwarding_plan(program).loads
    with pytest.raises(CtacError, match=r"instruction 0 \(LOAD.*exceeds its"):
        run_program(program, CAPACITIES, {"x": X})


def test_segment_views_are_made_once_and_follow_a_changed_load() -> None:
    """A forwarded LOAD of the data segment hands out one view across runs; a LOAD whose fields
    changed in place (the same program object) gets a view of its new tile."""
    weight = np.arange(32, dtype=np.float32) / 8
    program = program_of(
        [load(ACT, 0, 32, 4, 4), load(WGT, 0, 0, 4, 4), gemm(0, 0, 0, 4, 4, 4), store(ACC, 0, 48, 4, 4)],
        weight, 64, [Symbol("x", "input", (4, 4), "float32", 32), Symbol("y", "output", (4, 4), "float32", 48)],
    )  # fmt: skip
    first, _ = run_program(program, CAPACITIES, {"x": X})
    views = dict(program._segment_views[2])
    assert set(views) == {1}
    again, _ = run_program(program, CAPACITIES, {"x": X})
    assert program._segment_views[2][1][1] is views[1][1]
    assert bits(again) == bits(first)
    program.instructions[1][1]["src"] = 16  # the weight's second half
    moved, _ = run_program(program, CAPACITIES, {"x": X})
    assert np.array_equal(moved["y"], X @ weight[16:].reshape(4, 4))


def test_a_kept_tile_view_does_not_skip_the_checks_of_another() -> None:
    """Tile views are kept by (buffer, address, rows, cols): a tile that exceeds its buffer is
    refused although a smaller one at the same place was used before."""
    capacity = CAPACITIES[VEC]
    program = program_of(
        [vec("add", VEC, capacity - 16, VEC, capacity - 16, 4, 4), vec("add", VEC, capacity - 16, VEC, capacity - 16, 4, 8)],
        WEIGHT.reshape(-1), 48, SYMBOLS,
    )  # fmt: skip
    with pytest.raises(CtacError, match=r"instruction 1 \(VEC.*exceeds its"):
        run_program(program, CAPACITIES, {"x": X})


@pytest.fixture(scope="module")
def bert() -> dict:
    """The test BERT compiled for fp16 and fp32."""
    sys.path.insert(0, str(REPO / "bench"))
    from common import compile_stages

    programs = {}
    for precision in ("fp16", "fp32"):
        hw = with_precision(HW, precision)
        _, program = compile_stages(
            MODELS / "bert_ts_eager.onnx", {"input_ids": [2, 16], "attention_mask": [2, 16]},
            hw, verify=False,
        )  # fmt: skip
        programs[precision] = program
    return programs


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_a_real_model_runs_bit_for_bit_with_forwarding(bert, precision: str, copying) -> None:
    program = bert[precision]
    inputs = random_inputs(program, seed=3)
    plan = forwarding_plan(program)
    loads = [i for i, (name, _) in enumerate(program.instructions) if name == "LOAD"]
    assert len(plan.loads) > len(loads) // 3  # most GEMM operand tiles copy nothing
    kept, _ = run_program(program, CAPACITIES, inputs, keep_widened=True)
    forwarded, _ = run_program(program, CAPACITIES, inputs)
    copying()
    copied, _ = run_program(program, CAPACITIES, inputs)
    assert bits(kept) == bits(forwarded) == bits(copied)


def test_the_widened_data_segment_is_exact_and_kept_for_one_program(bert) -> None:
    first, second = bert["fp16"], program_of([], np.ones(8, np.float16), 16, [])
    second.element_type = "fp16"
    widened = widened_data(first)
    assert widened.dtype == np.float32 and not widened.flags.writeable
    assert np.array_equal(widened, storage_array(first).astype(np.float32))
    assert widened_data(first) is widened  # kept for the program's next run
    widened_data(second)
    assert first._widened is None  # one program's copy at a time
    assert widened_data(first) is not widened


def test_no_widened_copy_where_memory_is_short() -> None:
    program = program_of([], np.ones(1 << 10, np.float16), 1 << 11, [])
    program.element_type = "fp16"
    assert widened_data(program, lambda: 8 * (1 << 10)) is None  # 4 KiB would be half of 8 KiB
    assert getattr(program, "_widened", None) is None
    kept = widened_data(program, lambda: 8 * (1 << 10) + 2)
    assert kept is not None
    assert widened_data(program, lambda: 0) is kept  # a kept copy asks for no memory


def test_the_widened_copy_goes_with_its_program() -> None:
    program = program_of([], np.ones(1 << 16, np.float16), 1 << 17, [])
    program.element_type = "fp16"
    copy = weakref.ref(widened_data(program))
    del program
    gc.collect()
    assert copy() is None


def strided_program(m: int, k: int, n: int, a_stride: int, b_stride: int) -> Program:
    """x (m x k, rows a_stride apart) @ w (k x n, rows b_stride apart) from the data segment."""
    a_span = max(a_stride, k) * (m - 1) + k  # what the ISA declares a LOAD reads
    b_span = max(b_stride, n) * (k - 1) + n
    data = np.random.default_rng(1).standard_normal(a_span + b_span).astype(np.float32)
    out = len(data)
    program = program_of(
        [
            ("LOAD", {"dst": ACT, "dst_addr": 0, "src": 0, "rows": m, "cols": k, "stride": a_stride}),
            ("LOAD", {"dst": WGT, "dst_addr": 0, "src": a_span, "rows": k, "cols": n, "stride": b_stride}),
            gemm(0, 0, 0, m, k, n), store(ACC, 0, out, m, n),
        ],
        data, out + m * n, [Symbol("y", "output", (m, n), "float32", out)],
    )  # fmt: skip
    program.element_type = "fp32"
    return program


@pytest.mark.parametrize(
    "m, k, n, a_stride, b_stride, forwarded",
    [
        (10, 67, 3, 0, 3, {1}),  # stride 0: one row repeated
        (33, 53, 32, 53, 0, {0}),
        (47, 63, 1, 16, 1, {1}),  # stride < cols: overlapping rows
        (25, 5, 1, 13, 1, {1}),  # a column block of a matrix-vector GEMM (n = 1)
        (1, 40, 30, 40, 37, {0}),  # m = 1, b a column block
        (33, 20, 24, 29, 31, {0, 1}),  # column blocks of a matrix GEMM are views
    ],
)  # fmt: skip
def test_views_only_where_numpy_sums_them_as_the_dense_tile(m, k, n, a_stride, b_stride, forwarded, copying) -> None:  # fmt: skip
    """numpy's matmul cannot hand rows that overlap to BLAS, and takes a matrix-vector routine
    for a column block with a dimension of 1: each sums in another order than the dense buffer
    tile's GEMM (the review found 1-849 outputs differing)."""
    program = strided_program(m, k, n, a_stride, b_stride)
    assert forwarding_plan(program).loads == forwarded
    viewed, copied = run_both(program, copying, {})
    assert bits(viewed) == bits(copied)


@pytest.mark.parametrize("m, k", [(16, 64), (5, 300)])
def test_one_dram_tile_as_a_and_b_transposed_is_copied(m: int, k: int, copying) -> None:
    """Views of one DRAM tile as a and b.T share a pointer: numpy's matmul would take its A @ A.T
    routine (syrk), which the two buffer tiles of the copying machine never get."""
    data = np.random.default_rng(m).standard_normal(m * k).astype(np.float32)
    out = m * k
    program = program_of(
        [load(ACT, 0, 0, m, k), load(WGT, 0, 0, m, k), gemm(0, 0, 0, m, k, m, transpose_b=1), store(ACC, 0, out, m, m)],
        data, out + m * m, [Symbol("y", "output", (m, m), "float32", out)],
    )  # fmt: skip
    program.element_type = "fp32"
    assert forwarding_plan(program).loads == set()
    viewed, copied = run_both(program, copying, {})
    assert bits(viewed) == bits(copied)


def test_fuzzed_programs_run_alike_forwarding_or_copying(copying) -> None:
    """Programs whose instructions were mutated (fields, order, duplicates) by the program
    fuzzer: each gives the same outputs or the same error with and without forwarding."""
    sys.path.insert(0, str(REPO / "bench"))
    import random

    import fuzz_program

    from ctac.runtime.program import decode_program

    corpus = fuzz_program.compile_programs()
    mutations = [fuzz_program.s_instruction_field, fuzz_program.s_instructions]
    outcomes = {}
    for seed in range(60):
        rng = random.Random(seed)
        name = sorted(corpus)[seed % len(corpus)]
        try:
            program = decode_program(mutations[seed % 2](rng, corpus[name]), HW.digest, CAPACITIES)
        except (CtacError, ValueError, IndexError):
            continue
        outcomes[seed] = (program, fuzz_program._inputs_for(program, seed))
    assert len(outcomes) > 20

    def results() -> dict:
        found = {}
        for seed, (program, inputs) in outcomes.items():
            try:
                with np.errstate(all="ignore"):
                    found[seed] = bits(run_program(program, CAPACITIES, inputs)[0])
            except CtacError as exc:
                found[seed] = str(exc)
        return found

    forwarded = results()
    copying()
    assert results() == forwarded
    assert sum(isinstance(r, dict) for r in forwarded.values()) > 10
