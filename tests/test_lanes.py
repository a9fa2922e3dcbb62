"""Two-lane execution (runtime/lanes.py, runtime/lane_worker.py): the interpreter runs a program's
tile chains on two lanes, threads or a worker process beside the caller, and every output and
error stays bit for bit the in-order run's: on a real model (fp16
and fp32, with and without forwarded views), on fuzzed programs, and on hand-made programs whose
chains meet in DRAM every way the plan must order."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import MODELS
from test_forwarding import ACC, ACT, CAPACITIES, HW, VEC, WGT, bits, gemm, load, program_of, store

from ctac.errors import CtacError
from ctac.hw import with_precision
from ctac.run import random_inputs
from ctac.runtime import interpreter, isa, lane_worker, lanes
from ctac.runtime.forwarding import forwarding_plan
from ctac.runtime.interpreter import run_program
from ctac.runtime.program import Program, Symbol

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, params=["worker", "threads"])
def engine(request, monkeypatch) -> str:
    """Every test with the second lane in a worker process (runtime/lane_worker.py; Linux),
    and again on two threads (lanes.run_lanes, as elsewhere)."""
    if request.param == "threads":
        monkeypatch.setattr(lane_worker, "usable", lambda: False)
    elif not lane_worker.usable():
        pytest.skip("a forked worker needs Linux")
    return request.param


def both(program: Program, inputs: dict) -> tuple:
    """In order, then on two lanes: (outputs' bits or the error message, the statistics' items
    in their order, the progress reported)."""
    found = []
    for two in (False, True):
        stats, seen = interpreter.ExecutionStats(), []
        try:
            with np.errstate(all="ignore"):
                run = run_program(program, CAPACITIES, inputs, seen.append, stats, lanes=two)
            result = bits(run[0])
        except CtacError as exc:
            result = str(exc)
        found.append((result, list(stats.clusters.items()), seen))
    return tuple(found)


def plan_of(program: Program, check: bool = True) -> lanes.LanePlan:
    """The program's lane plan, checked by brute force (`assert_plan_keeps_the_order`)."""
    plan = lanes.lane_plan(program, forwarding_plan(program), program.dram_elements)
    assert plan is not None
    if check:
        assert_plan_keeps_the_order(program, plan)
    return plan


def elements(program: Program, index: int) -> tuple[set, set]:
    """Every (place, element) instruction `index` reads and writes, one by one: DMA tiles row
    by row, a GEMM's forwarded operands also in DRAM."""
    name, fields = program.instructions[index]
    spec = isa.BY_NAME[name]
    found = []
    for accesses in (spec.reads(fields), spec.writes(fields)):
        touched = set()
        for where, start, size in accesses:
            if where == "dram" and name in ("LOAD", "STORE") and fields["stride"] > fields["cols"]:
                origin = fields["src" if name == "LOAD" else "dst"]
                rows = range(origin, origin + fields["rows"] * fields["stride"], fields["stride"])
                touched |= {("dram", r + c) for r in rows for c in range(fields["cols"])}
            else:
                touched |= {(where, e) for e in range(start, start + max(size, 0))}
        found.append(touched)
    for loaded in forwarding_plan(program).operands.get(index, {}).values():
        found[0] |= {e for e in elements(program, loaded)[0] if e[0] == "dram"}
    return found[0], found[1]


def touched(program: Program) -> int:
    """Elements the program's instructions name, counted with repeats."""
    return sum(
        max(size, 0)
        for name, fields in program.instructions
        for _, _, size in isa.BY_NAME[name].reads(fields) + isa.BY_NAME[name].writes(fields)
    )


def assert_plan_keeps_the_order(program: Program, plan: lanes.LanePlan) -> None:
    """The plan checked one element at a time, by brute force: every buffer element an
    instruction reads was last written by its own lane; every pair of instructions in two lanes
    that touch one DRAM element (not both reading) is ordered by a wait."""
    base = min(len(program.data), program.dram_elements)
    runs = [set(order) for order in plan.orders]
    access = [elements(program, i) for i in range(len(program.instructions))]
    last_writer: dict = {}
    for index, (reads, writes) in enumerate(access):
        for lane in (0, 1):
            if index in runs[lane]:
                for element in reads:
                    writer = last_writer.get(element)
                    if element[0] != "dram" and writer is not None:
                        assert writer in runs[lane], (index, element, writer)
        for element in writes:
            last_writer[element] = index
    heap = [
        tuple({e for e in part if e[0] == "dram" and e[1] >= base} for part in pair)
        for pair in access
    ]
    for lane in (0, 1):
        others = [i for i in plan.orders[1 - lane] if heap[i][0] or heap[i][1]]
        for later, wait in zip(plan.orders[lane], plan.waits[lane], strict=True):
            reads, writes = heap[later]
            if not (reads or writes):
                continue
            for earlier in others:
                if earlier >= later:
                    break
                their_reads, their_writes = heap[earlier]
                if writes & (their_reads | their_writes) or reads & their_writes:
                    assert wait >= earlier, (later, earlier, wait)


@pytest.fixture(scope="module")
def bert() -> dict:
    """The test BERT compiled for fp16 and fp32."""
    sys.path.insert(0, str(REPO / "bench"))
    from common import compile_stages

    programs = {}
    for precision in ("fp16", "fp32"):
        _, programs[precision] = compile_stages(
            MODELS / "bert_ts_eager.onnx", {"input_ids": [2, 16], "attention_mask": [2, 16]},
            with_precision(HW, precision), verify=False,
        )  # fmt: skip
    return programs


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_a_real_model_runs_bit_for_bit_on_two_lanes(bert, precision: str) -> None:
    program = bert[precision]
    inputs = random_inputs(program, seed=5)
    in_order, _ = run_program(program, CAPACITIES, inputs, lanes=False)
    two, _ = run_program(program, CAPACITIES, inputs, lanes=True)
    kept, _ = run_program(program, CAPACITIES, inputs, lanes=True, keep_widened=True)
    assert bits(two) == bits(kept) == bits(in_order)


def test_the_plan_of_a_real_model_orders_every_conflict(bert) -> None:
    plan_of(bert["fp16"])


def test_the_lanes_split_the_gemms_and_run_ahead_of_each_other(bert) -> None:
    """Both lanes multiply, and each runs GEMMs that do not wait for the other lane's earlier
    GEMMs: the two lanes' work overlaps."""
    program = bert["fp16"]
    plan = plan_of(program, check=False)
    gemms = [[i for i in order if program.instructions[i][0] == "GEMM"] for order in plan.orders]
    assert min(len(g) for g in gemms) > 0.3 * sum(len(g) for g in gemms)
    for lane in (0, 1):
        waits = dict(zip(plan.orders[lane], plan.waits[lane], strict=True))
        other = gemms[1 - lane]
        free = [
            index
            for index in gemms[lane]
            if any(waits[index] < earlier < index for earlier in other)
        ]
        assert len(free) > len(gemms[lane]) // 2  # run while an earlier GEMM may still run
    assert min(plan.work) > 0.8 * max(plan.work)


def test_both_threads_run_instructions(bert) -> None:
    program = bert["fp32"]
    ran: dict[str, set] = {}
    step = interpreter._step

    def recording(machine, index: int) -> None:
        ran.setdefault(threading.current_thread().name, set()).add(index)
        step(machine, index)

    plan = plan_of(program, check=False)
    machine = interpreter.Machine(program, CAPACITIES)
    for symbol in program.inputs:
        machine.write_input(symbol, random_inputs(program, seed=1)[symbol.name])
    lanes.run_lanes(machine, plan, recording)
    assert set(ran) == {threading.current_thread().name, "ctac-lane-1"}
    assert ran["ctac-lane-1"] == set(plan.orders[1])


# Hand-made chains. The data segment holds two 4 x 4 weights, W at 0 and V at 16; the input x
# (4 x 4) is at DRAM 32 and output y_i at 48 + 16 i. Every chain multiplies a DRAM tile by a
# weight in buffer tiles of its own and stores the product.
W = (np.arange(16, dtype=np.float32).reshape(4, 4) - 3) / 8
V = np.eye(4, dtype=np.float32)[::-1] * 2
X = np.arange(16, dtype=np.float32).reshape(4, 4) / 4 - 1
x, y0, y1, y2, y3 = 32, 48, 64, 80, 96


def chain(source: int, tile: int, target: int, weight: int = 0) -> list:
    """target := DRAM[source] @ weight, in ACT, WGT and ACC tiles at `tile`."""
    return [
        load(ACT, tile, source, 4, 4), load(WGT, tile, weight, 4, 4),
        gemm(tile, tile, tile, 4, 4, 4), store(ACC, tile, target, 4, 4),
    ]  # fmt: skip


def hand_made(chains: list, dram: int = 192) -> Program:
    symbols = [Symbol("x", "input", (4, 4), "float32", x)] + [
        Symbol(f"y{i}", "output", (4, 4), "float32", y0 + 16 * i) for i in range(4)
    ]
    data = np.concatenate([W.reshape(-1), V.reshape(-1)])
    return program_of([step for part in chains for step in part], data, dram, symbols)


@pytest.mark.parametrize(
    "name, chains, expected",
    [
        # read after write: the second chain reads what the first stored
        ("raw", [chain(x, 0, y0), chain(y0, 16, y1)], {"y0": X @ W, "y1": X @ W @ W}),
        # write after read: the third chain overwrites what the second reads
        ("war", [chain(x, 0, y0), chain(y0, 16, y1), chain(x, 32, y0, 16)],
         {"y0": X @ V, "y1": X @ W @ W}),
        # write after write: two chains store to one place, the later wins
        ("waw", [chain(x, 0, y2), chain(x, 16, y2, 16)], {"y2": X @ V}),
        ("independent", [chain(x, 0, y0), chain(x, 16, y1, 16), chain(x, 32, y2)],
         {"y0": X @ W, "y1": X @ V, "y2": X @ W}),
        # one set of buffer tiles for four chains in turn, each reading the last one's output
        ("reused tiles", [chain(x, 0, y0), chain(y0, 0, y1), chain(y1, 0, y2), chain(y2, 0, y3)],
         {"y3": X @ W @ W @ W @ W}),
    ],
)  # fmt: skip
def test_chains_meeting_in_dram_run_as_in_order(name: str, chains: list, expected: dict) -> None:
    program = hand_made(chains)
    plan = plan_of(program)
    assert plan.orders[0] and plan.orders[1]  # the chains are split
    in_order, two = both(program, {"x": X})
    assert two == in_order and isinstance(two[0], dict)
    outputs, _ = run_program(program, CAPACITIES, {"x": X}, lanes=True)
    for symbol, value in expected.items():
        np.testing.assert_allclose(outputs[symbol], value, rtol=1e-6, err_msg=symbol)


def test_chains_are_lanes_and_loads_go_where_they_are_read() -> None:
    """Two independent chains go to two lanes; a tile both read is loaded by both."""
    program = hand_made(
        [
            [load(ACT, 0, x, 4, 4), load(WGT, 0, 0, 4, 4), gemm(0, 0, 0, 4, 4, 4)],
            [load(ACT, 16, x, 4, 4), gemm(16, 0, 16, 4, 4, 4)],
            [store(ACC, 0, y0, 4, 4), store(ACC, 16, y1, 4, 4)],
        ]
    )
    plan = plan_of(program)
    lane_of = {i: lane for lane in (0, 1) for i in plan.orders[lane]}
    assert lane_of[2] != lane_of[4]  # the two GEMMs
    assert lane_of[5] == lane_of[2] and lane_of[6] == lane_of[4]  # each store with its GEMM
    assert 1 in plan.orders[0] and 1 in plan.orders[1]  # the weight tile: loaded by both
    assert plan.shared == {1}
    in_order, two = both(program, {"x": X})
    assert two == in_order


def test_column_tiles_of_one_matrix_do_not_conflict() -> None:
    """DRAM conflicts follow the DMA's rows: two column tiles of one matrix (rows 64 apart,
    32 columns each) touch no common block; a tile across both touches both."""
    table = lanes._DramTable(base=100, heap=1 << 12)
    left, right, across = ((100 + c, 8, 32, 64) for c in (0, 32, 16))
    table.record(0, 5, [], [table.blocks(left)])
    assert table.conflict(1, [table.blocks(right)], [table.blocks(right)]) == -1
    assert table.conflict(1, [table.blocks(across)], []) == 5  # read after write
    table.record(1, 6, [table.blocks(right)], [])
    assert table.conflict(0, [], [table.blocks(across)]) == 6  # write after read
    assert table.conflict(0, [table.blocks(right)], []) == -1  # read after read
    assert table.blocks((0, 4, 16, 16)) is None  # in the data segment: never written


def test_the_cluster_unit_is_one_chain() -> None:
    """CLUSTER and CLUSTER_READ share the unit's table, not a buffer: one lane runs them all,
    though the chains between them alternate."""

    def cluster(src_addr: int, first: int, table_rows: int) -> tuple:
        return ("CLUSTER", {"rows": 4, "cols": 4, "src_addr": src_addr, "codes_addr": 0, "ids_addr": 8 + 4 * first, "threshold": 0.5, "first": first, "table_rows": table_rows, "resident": 64})  # fmt: skip

    read = ("CLUSTER_READ", {"rows": 8, "cols": 4, "row0": 0, "dst": ACT, "dst_addr": 32, "counts_addr": 16, "resident": 64})  # fmt: skip
    program = hand_made(
        [[cluster(0, 1, 0)], chain(x, 64, y0), [cluster(16, 0, 4)], chain(x, 96, y1), [read],
         [store(ACT, 32, y2, 4, 4)]]
    )  # fmt: skip
    plan = plan_of(program)
    lane_of = {i: lane for lane in (0, 1) for i in plan.orders[lane]}
    units = [i for i, (name, _) in enumerate(program.instructions) if isa.BY_NAME[name].unit == "cluster"]  # fmt: skip
    assert len(units) == 3 and len({lane_of[i] for i in units}) == 1
    assert len(plan.orders[0]) and len(plan.orders[1])
    in_order, two = both(program, {"x": X})
    assert two == in_order and isinstance(two[0], dict)


def test_the_first_error_in_program_order_is_raised() -> None:
    """Two chains in two lanes both fail; the lower instruction's error is the one raised, as
    in order, whichever lane gets there first."""
    # stores of more rows than the accumulator holds, from the tiles chains 2 and 3 wrote
    bad = store(ACC, 16, y3, CAPACITIES[ACC] // 4, 4)
    worse = store(ACC, 32, y3, CAPACITIES[ACC] // 4, 4)
    chains = [chain(x, 0, y0), chain(x, 16, y1), [bad], chain(x, 32, y2), [worse], chain(x, 48, y3)]  # fmt: skip
    program = hand_made(chains, dram=1 << 18)
    plan = plan_of(program)
    lane_of = {i: lane for lane in (0, 1) for i in plan.orders[lane]}
    assert lane_of[8] != lane_of[13]  # the failing stores
    in_order, two = both(program, {"x": X})
    assert "exceeds" in in_order[0] and two == in_order


def test_progress_counts_every_instruction_once(bert) -> None:
    program = bert["fp32"]
    counts = {}
    for two in (False, True):
        seen = []
        run_program(program, CAPACITIES, random_inputs(program, seed=2), seen.append, lanes=two)
        counts[two] = sum(seen)
    assert counts[True] == counts[False] == len(program.instructions) // 256 * 256


def acting_at(program: Program, fraction: float, action) -> tuple[lanes.LanePlan, object]:
    """The program's plan, and a step that calls `action()` before it runs the first lane's
    instruction `fraction` of the way through its order."""
    plan = plan_of(program, check=False)
    at = plan.orders[0][int(len(plan.orders[0]) * fraction)]
    step = interpreter._step

    def acting(machine, index: int) -> None:
        if index == at:
            action()
        step(machine, index)

    return plan, acting


def interrupt() -> None:
    raise KeyboardInterrupt


def test_an_interrupt_stops_both_lanes(bert) -> None:
    program = bert["fp32"]
    plan, interrupted = acting_at(program, 0.5, interrupt)
    machine = interpreter.Machine(program, CAPACITIES)
    before = threading.active_count()
    with pytest.raises(KeyboardInterrupt):
        lanes.run_lanes(machine, plan, interrupted)
    assert threading.active_count() == before


def test_programs_that_write_the_data_segment_run_in_order() -> None:
    """A store into the data segment makes the machine copy the whole DRAM mid-run: no lanes."""
    program = hand_made([chain(x, 0, y0), chain(x, 16, 8)])
    assert lanes.lane_plan(program, forwarding_plan(program), program.dram_elements) is None
    in_order, two = both(program, {"x": X})
    assert two == in_order


def test_small_programs_run_in_order_by_default(bert) -> None:
    """The test BERT is ~1 ms of work: two threads would cost more than they gain."""
    plan = plan_of(bert["fp32"], check=False)
    assert sum(plan.work) < lanes.MIN_WORK_SECONDS
    assert not lanes.worth_two_lanes(plan)
    assert not interpreter.runs_on_two_lanes(bert["fp32"])
    big = lanes.LanePlan(plan.orders, plan.waits, plan.shared, (0.01, 0.01))
    assert lanes.worth_two_lanes(big) == (lanes.threads() >= 2)
    lopsided = lanes.LanePlan(plan.orders, plan.waits, plan.shared, (0.1, 0.001))
    assert not lanes.worth_two_lanes(lopsided)


def test_fuzzed_programs_run_alike_in_order_or_on_two_lanes() -> None:
    """Programs whose instructions were mutated (fields, order, duplicates) by the program
    fuzzer: each gives the same outputs or the same error on two lanes."""
    sys.path.insert(0, str(REPO / "bench"))
    import random

    import fuzz_program

    from ctac.runtime.program import decode_program

    corpus = fuzz_program.compile_programs()
    mutations = [fuzz_program.s_instruction_field, fuzz_program.s_instructions]
    compared = checked = 0
    for seed in range(150):
        rng = random.Random(1000 + seed)
        name = sorted(corpus)[seed % len(corpus)]
        try:
            program = decode_program(mutations[seed % 2](rng, corpus[name]), HW.digest, CAPACITIES)
        except (CtacError, ValueError, IndexError):
            continue
        plan = lanes.lane_plan(program, forwarding_plan(program), program.dram_elements)
        if plan is not None and seed % 5 == 0:  # the brute force takes ~1 s
            assert_plan_keeps_the_order(program, plan)
            checked += 1
        in_order, two = both(program, fuzz_program._inputs_for(program, seed))
        assert two == in_order, (seed, name)
        compared += 1
    assert compared > 45 and checked >= 6


def test_the_callers_numpy_error_state_holds_in_both_lanes() -> None:
    """np.errstate is a context variable; the second lane runs in the caller's context. The
    second chain multiplies by a weight holding inf and 0 (inf * 0: an invalid value)."""
    poisoned = np.where(np.eye(4, dtype=bool), np.inf, 0).astype(np.float32)
    symbols = [Symbol("x", "input", (4, 4), "float32", 64), Symbol("y", "output", (4, 8), "float32", 80)]  # fmt: skip
    program = program_of(
        chain(64, 0, 80) + chain(64, 16, 96, weight=32),
        np.concatenate([W.reshape(-1), V.reshape(-1), poisoned.reshape(-1)]), 128, symbols,
    )  # fmt: skip
    plan = plan_of(program)
    assert 6 in plan.orders[1]  # the poisoned GEMM runs in the second lane's thread
    for two in (False, True):
        with np.errstate(all="raise"), pytest.raises(FloatingPointError):
            run_program(program, CAPACITIES, {"x": X}, lanes=two)


def test_ctac_threads_limits_the_lanes(bert, monkeypatch) -> None:
    plan = plan_of(bert["fp32"], check=False)
    big = lanes.LanePlan(plan.orders, plan.waits, plan.shared, (0.01, 0.01))
    monkeypatch.setenv("CTAC_THREADS", "1")
    assert not lanes.worth_two_lanes(big)
    monkeypatch.setenv("CTAC_THREADS", "2")
    assert lanes.worth_two_lanes(big)
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("CTAC_THREADS", bad)
        with pytest.raises(CtacError, match="CTAC_THREADS"):
            lanes.worth_two_lanes(big)


def bump(rows: int = 4) -> tuple:
    """VEC tile at 200 += 1."""
    return ("VEC", {"op": "add", "dst": VEC, "dst_addr": 200, "a": VEC, "a_addr": 200, "b": VEC, "b_addr": 200, "rows": rows, "cols": 4, "bcast": "imm", "imm": 1.0})  # fmt: skip


def test_a_cluster_read_of_the_data_segment_copies_no_dram() -> None:
    """CLUSTER_READ only reads its spilled rows: a spill address in the data segment must not
    make one lane's machine copy the whole DRAM (its later stores would be lost; found by
    review)."""
    cluster = ("CLUSTER", {"rows": 4, "cols": 4, "src_addr": 0, "codes_addr": 0, "ids_addr": 12, "threshold": 0.5, "first": 1, "table_rows": 0, "resident": 0, "spill": 128})  # fmt: skip
    read = ("CLUSTER_READ", {"rows": 2, "cols": 4, "row0": 0, "dst": ACT, "dst_addr": 200, "counts_addr": 40, "resident": 0, "spill": 0})  # fmt: skip
    program = hand_made(
        [chain(x, 32, y3, 16), [cluster], chain(x, 64, y0), [read], chain(x, 96, y1, 16),
         [store(ACT, 200, y2, 2, 4)]],
        dram=256,
    )  # fmt: skip
    plan = plan_of(program)
    assert 4 in plan.orders[1] and 9 in plan.orders[1]  # the cluster unit: the second lane
    in_order, two = both(program, {"x": X})
    assert two == in_order and isinstance(two[0], dict)


def test_a_failed_run_leaves_the_statistics_and_progress_of_the_in_order_run() -> None:
    """A lane may run past the other lane's error before it stops: what it recorded there
    (a CLUSTER's statistics) and counted (progress) is the in-order run's, which never got
    there (found by review)."""
    overrun = store(ACC, 0, y3, CAPACITIES[ACC] // 4 + 1, 4)
    cluster = ("CLUSTER", {"rows": 4, "cols": 4, "src_addr": 512, "codes_addr": 64, "ids_addr": 72, "threshold": 0.5, "first": 1, "table_rows": 0, "resident": 64})  # fmt: skip
    multiplies = [load(ACT, 0, x, 4, 4), load(WGT, 0, 0, 4, 4), *[gemm(0, 0, 0, 4, 4, 4, accumulate=1)] * 300]  # fmt: skip
    program = hand_made([multiplies, [overrun], [cluster], [bump()] * 300], dram=1 << 18)
    plan = plan_of(program, check=False)
    assert 302 in plan.orders[0] and 303 in plan.orders[1]  # the error, and a CLUSTER after it
    in_order, two = both(program, {"x": X})
    assert in_order[0].startswith("instruction 302 (STORE") and in_order[1:] == ([], [256])
    assert two == in_order
    # and where the failing lane is the second, after 300 instructions the first never ran
    program = hand_made([chain(x, 0, y0), [bump()] * 300, [bump(CAPACITIES[VEC] // 4)]])
    plan = plan_of(program, check=False)
    assert 304 in plan.orders[1] and len(plan.orders[0]) < 256
    in_order, two = both(program, {"x": X})
    assert in_order[2] == [256] and two == in_order


def test_an_interrupt_while_waiting_for_the_other_lane_stops_it() -> None:
    """Ctrl-C after the first lane has finished, while it waits for the second: the second
    stops too before the interrupt reaches the caller (found by review: a join that Ctrl-C
    interrupts can report the thread finished while it still runs)."""
    import os
    import signal
    import time

    program = hand_made([chain(x, 0, y0), [bump()] * 50], dram=256)
    plan = plan_of(program, check=False)
    ran_after = []
    interrupted = threading.Event()
    step = interpreter._step

    def slow_second_lane(machine, index: int) -> None:
        if threading.current_thread().name == "ctac-lane-1":
            if index == plan.orders[1][5]:
                time.sleep(0.3)  # the first lane has long finished: the caller is waiting
                os.kill(os.getpid(), signal.SIGINT)  # interrupts the caller's wait
                interrupted.wait(2)
            elif interrupted.is_set():
                ran_after.append(index)
        step(machine, index)

    before = threading.active_count()
    with pytest.raises(KeyboardInterrupt):
        lanes.run_lanes(interpreter.Machine(program, CAPACITIES), plan, slow_second_lane)
    interrupted.set()
    assert threading.active_count() == before and not ran_after
