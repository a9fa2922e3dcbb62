"""The second lane in a worker process (runtime/lane_worker.py): it runs the plan's second lane
in a process of its own, is kept for the program's next runs, and a run whose worker is killed,
interrupted or gone idle fails clearly or forks another; a process forked from the caller leaves
the caller's worker alone. (tests/test_lanes.py runs its bit-for-bit tests on both engines.)"""

from __future__ import annotations

import mmap
import os
import select
import signal
import time

import numpy as np
import pytest
from test_forwarding import ACC, ACT, CAPACITIES, VEC, WGT, bits, gemm, load, store
from test_lanes import X, acting_at, bert, chain, hand_made, interrupt, plan_of, x, y0, y1  # noqa: F401  (bert: fixture)

from ctac.errors import CtacError
from ctac.run import random_inputs
from ctac.runtime import interpreter, lane_worker
from ctac.runtime.interpreter import run_program

pytestmark = pytest.mark.skipif(not lane_worker.usable(), reason="a forked worker needs Linux")


def machine_for(program, seed: int = 1) -> interpreter.Machine:
    machine = interpreter.Machine(program, CAPACITIES)
    for symbol in program.inputs:
        machine.write_input(symbol, random_inputs(program, seed=seed)[symbol.name])
    return machine


def outputs_of(machine: interpreter.Machine) -> dict:
    return {
        s.name: machine.dram_tile(s.address, 1, s.size, s.size)[0].reshape(s.shape).copy()
        for s in machine.program.outputs
    }


def test_the_second_lane_runs_in_another_process_kept_for_the_next_runs(bert) -> None:  # noqa: F811
    """Each instruction records the process that ran it: the second lane's ran in the worker,
    the first lane's here, and the next run uses the same worker."""
    program = bert["fp32"]
    plan = plan_of(program, check=False)
    count = len(program.instructions)
    ran = np.frombuffer(mmap.mmap(-1, 8 * count), dtype=np.int64)  # shared with the worker
    step = interpreter._step

    def recording(machine, index: int) -> None:
        ran[index] = os.getpid()
        step(machine, index)

    expected, _ = run_program(program, CAPACITIES, random_inputs(program, seed=1), lanes=False)
    pids = []
    for _ in range(2):
        ran[:] = 0
        machine = machine_for(program)
        assert lane_worker.run_in_worker(machine, plan, recording, None)
        assert bits(outputs_of(machine)) == bits(expected)
        pids.append(lane_worker._worker.pid)
        only = [set(order) - plan.shared for order in plan.orders]
        assert {int(ran[i]) for i in only[0]} == {os.getpid()}
        assert {int(ran[i]) for i in only[1]} == {pids[-1]}
    assert pids[0] == pids[1] != os.getpid()


def test_another_program_gets_another_worker_and_the_first_one_ends(bert) -> None:  # noqa: F811
    first, second = bert["fp16"], bert["fp32"]
    run_program(first, CAPACITIES, random_inputs(first, seed=1), lanes=True)
    old = lane_worker._worker.pid
    run_program(second, CAPACITIES, random_inputs(second, seed=1), lanes=True)
    assert lane_worker._worker.pid != old
    with pytest.raises(ChildProcessError):  # reaped: no such child any more
        os.waitpid(old, os.WNOHANG)


def assert_the_next_run_is_right(program) -> None:
    inputs = random_inputs(program, seed=1)
    again, _ = run_program(program, CAPACITIES, inputs, lanes=True)
    in_order, _ = run_program(program, CAPACITIES, inputs, lanes=False)
    assert bits(again) == bits(in_order)


def test_a_killed_worker_fails_the_run_clearly_and_the_next_run_forks_another(bert) -> None:  # noqa: F811
    program = bert["fp32"]
    plan, killing = acting_at(program, 1 / 3, lambda: os.kill(lane_worker._worker.pid, signal.SIGKILL))  # fmt: skip
    with pytest.raises(CtacError, match="second lane .*ended.*signal 9.*CTAC_THREADS=1"):
        lane_worker.run_in_worker(machine_for(program), plan, killing, None)
    assert_the_next_run_is_right(program)


def test_an_interrupt_stops_the_workers_lane_and_the_next_run_works(bert) -> None:  # noqa: F811
    program = bert["fp32"]
    plan, interrupted = acting_at(program, 0.5, interrupt)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        lane_worker.run_in_worker(machine_for(program), plan, interrupted, None)
    assert time.monotonic() - started < lane_worker._REPLY_SECONDS
    worker = lane_worker._worker
    assert worker.running() and not worker.busy.locked()  # it answered: kept
    assert_the_next_run_is_right(program)


def test_an_idle_worker_leaves_and_the_next_run_forks_another(bert, monkeypatch) -> None:  # noqa: F811
    program = bert["fp32"]
    monkeypatch.setattr(lane_worker, "IDLE_SECONDS", 0.2)  # the caller's timer after each run
    inputs = random_inputs(program, seed=1)
    first, _ = run_program(program, CAPACITIES, inputs, lanes=True)
    worker = lane_worker._worker
    deadline = time.monotonic() + 10
    while worker.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not worker.running()
    again, _ = run_program(program, CAPACITIES, inputs, lanes=True)
    assert lane_worker._worker is not worker
    assert bits(again) == bits(first)


def test_a_forked_child_leaves_the_callers_worker_alone(bert) -> None:  # noqa: F811
    """A process forked from the caller (a sweep's pool) that runs on two lanes gets its own
    worker; the caller's keeps running."""
    program = bert["fp32"]
    inputs = random_inputs(program, seed=1)
    expected, _ = run_program(program, CAPACITIES, inputs, lanes=True)
    worker = lane_worker._worker
    small = hand_made([chain(x, 0, y0), chain(x, 16, y1)])
    child = os.fork()
    if child == 0:
        status = 1
        try:
            two, _ = run_program(small, CAPACITIES, {"x": X}, lanes=True)
            one, _ = run_program(small, CAPACITIES, {"x": X}, lanes=False)
            status = 0 if bits(two) == bits(one) and lane_worker._worker is not worker else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(child, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert lane_worker._worker is worker and worker.running()
    again, _ = run_program(program, CAPACITIES, inputs, lanes=True)
    assert bits(again) == bits(expected)


def test_each_run_starts_from_zeroed_buffers() -> None:
    """GEMMs that accumulate onto tiles the run never wrote read zeros, in every run the worker
    serves: its buffers are zeroed for each (the in-order machine's are new)."""

    def accumulating(source: int, tile: int, target: int) -> list:
        return [
            load(ACT, tile, source, 4, 4), load(WGT, tile, 0, 4, 4),
            gemm(tile, tile, tile, 4, 4, 4, accumulate=1), store(ACC, tile, target, 4, 4),
        ]  # fmt: skip

    program = hand_made([accumulating(x, 0, y0), accumulating(x, 16, y1)])
    plan = plan_of(program)
    assert all(plan.orders)
    in_order, _ = run_program(program, CAPACITIES, {"x": X}, lanes=False)
    for _ in range(3):
        two, _ = run_program(program, CAPACITIES, {"x": X}, lanes=True)
        assert bits(two) == bits(in_order)


def test_the_worker_keeps_no_file_the_caller_opened(bert) -> None:  # noqa: F811
    """A pipe the caller opened before the worker was forked ends when the caller closes it:
    the worker holds no copy of its write end."""
    lane_worker.close_worker()
    reader, writer = os.pipe()
    try:
        program = bert["fp32"]
        run_program(program, CAPACITIES, random_inputs(program, seed=1), lanes=True)
        assert lane_worker._worker.running()
        os.close(writer)
        writer = -1
        ready, _, _ = select.select([reader], [], [], 10)  # no copy of the write end left
        assert ready and os.read(reader, 1) == b""
    finally:
        os.close(reader)
        if writer >= 0:
            os.close(writer)


def test_warnings_in_the_workers_lane_follow_the_callers_filters() -> None:
    """A lane's numpy warning (a REDUCE that overflows) reaches the caller as in order: shown
    where the caller's filters show it, raised where they make it an error, also when the
    worker was forked under other filters."""
    import warnings

    reduce = ("REDUCE", {"op": "sum", "dst": VEC, "dst_addr": 32, "src": VEC, "src_addr": 0, "rows": 4, "cols": 4})  # fmt: skip
    program = hand_made([chain(x, 0, y0), [load(VEC, 0, x, 4, 4), reduce, store(VEC, 32, y1, 1, 4)]])  # fmt: skip
    plan = plan_of(program)
    worker_lane = set(plan.orders[1]) - plan.shared
    assert any(program.instructions[i][0] == "REDUCE" for i in worker_lane)
    big = {"x": np.full((4, 4), 3e38, np.float32)}
    run_program(program, CAPACITIES, {"x": X}, lanes=True)  # the worker forked, default filters
    with pytest.warns(RuntimeWarning, match="overflow"):
        run_program(program, CAPACITIES, big, lanes=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(RuntimeWarning, match="overflow"):
            run_program(program, CAPACITIES, big, lanes=False)
        with pytest.raises(RuntimeWarning, match="overflow"):
            run_program(program, CAPACITIES, big, lanes=True)
