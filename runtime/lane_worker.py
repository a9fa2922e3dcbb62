"""The second lane in a process of its own: runtime/lanes.py's plan, without the GIL between the
lanes.

Two threads share one GIL: every numpy call releases and retakes it, and with two lanes wanting
it each call can hand it to the other lane and wait to get it back. bench/interp_speed.py put
BERT-base's two lanes at 1.32-2.03x onnxruntime's one-thread inference on threads (sixteen
runs) and at 1.11-1.24x with the worker (one lane: 1.75x). So on Linux the second lane runs in a
worker process, forked from the caller once and kept for the program's next runs:
- DRAM's heap is one shared mapping, which both processes' machines use (the plan keeps their
  accesses ordered, as between threads). The data segment and its widened copy are the
  caller's, shared by the fork and never written (the plan refuses programs that write them).
- Each process has its own buffers: the worker's machine is `Machine.for_second_lane` of the
  machine it was forked with, restarted for every run.
- A shared control block holds each lane's last finished instruction, its next one, where it
  stopped on an error, and whether it waits; a lane that must wait sleeps on its eventfd, which
  the other lane signals as it finishes an instruction (a wake-up lost between the two cores costs
  a 1 ms timeout, not a hang).
- The worker sends its errors and statistics back through a pipe; the caller ends the run as
  the thread engine does (lanes.finish): outputs, first error, statistics and progress of the
  in-order run.

One worker exists at a time. It goes when its program does, when another program needs one, at
exit, or after IDLE_SECONDS without a run. Being a fork, it shares the caller's memory as it was:
pages the caller writes afterwards get copied, so it is kept no longer than that. It ignores
Ctrl-C: the caller stops it. Where fork or eventfd is missing (not Linux), or the worker is busy
with another thread's run, the lanes run as threads (runtime/lanes.py's run_lanes).
"""

from __future__ import annotations

import atexit
import contextlib
import mmap
import os
import pickle
import select
import signal
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable

import numpy as np

from ctac.errors import CtacError
from ctac.runtime.lanes import FINISHED, LanePlan, finish, progress_reporter

IDLE_SECONDS = 60.0
# The control block: per lane (0, 1), its last finished instruction, its next one, where it
# stopped (an error's index, or -1: stop now), and whether it waits for the other lane.
_DONE, _NEXT, _STOP, _WAITING = 0, 2, 4, 6
_CONTROL_WORDS = 8
_WAIT_SECONDS = 1e-3  # the longest a lane sleeps before it looks again
_REPLY_SECONDS = 10.0  # how long a stopped worker may take to answer before it is killed


def usable() -> bool:
    """Whether this platform can run the second lane in a forked worker."""
    return sys.platform == "linux" and hasattr(os, "fork") and hasattr(os, "eventfd")


def _send(fd: int, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(struct.pack("<Q", len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _receive(fd: int) -> object | None:
    """The next message, or None where the other end has closed."""
    header = _read_exactly(fd, 8)
    if header is None:
        return None
    data = _read_exactly(fd, struct.unpack("<Q", header)[0])
    return None if data is None else pickle.loads(data)


def _read_exactly(fd: int, size: int) -> bytes | None:
    parts, left = [], size
    while left:
        part = os.read(fd, left)
        if not part:
            return None
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


class _Lanes:
    """Both processes' view of the shared control block and the eventfds."""

    def __init__(self, control: np.ndarray, wake: tuple[int, int]) -> None:
        self.control = control
        self.wake = wake

    def stopped_at(self) -> int:
        return int(min(self.control[_STOP], self.control[_STOP + 1]))

    def wait(self, lane: int, need: int, alive: Callable[[], None]) -> None:
        """Sleep until the other lane has finished instruction `need`."""
        control, other = self.control, 1 - lane
        while control[_DONE + other] < need:
            control[_WAITING + lane] = 1
            if control[_DONE + other] >= need:
                break
            ready, _, _ = select.select([self.wake[lane]], [], [], _WAIT_SECONDS)
            if ready:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(self.wake[lane])
            else:
                alive()
        control[_WAITING + lane] = 0

    def signal(self, lane: int) -> None:
        """Wake `lane` if it sleeps."""
        if self.control[_WAITING + lane]:
            os.eventfd_write(self.wake[lane], 1)

    def run(
        self,
        lane: int,
        machine,
        plan: LanePlan,
        step: Callable,
        errors: dict[int, BaseException],
        alive: Callable[[], None],
        report: Callable[[int], None] | None = None,
    ) -> None:
        """Run `lane`'s instructions in order, each after the other lane's it waits for; an
        error is recorded in `errors` and stops the lane."""
        control, other = self.control, 1 - lane
        order, waits = plan.orders[lane], plan.waits[lane]
        index = -1
        try:
            for position, (index, need) in enumerate(zip(order, waits, strict=True)):
                if control[_DONE + other] < need:
                    self.wait(lane, need, alive)
                if index >= self.stopped_at():
                    break
                step(machine, index)
                control[_DONE + lane] = index
                control[_NEXT + lane] = (
                    order[position + 1] if position + 1 < len(order) else FINISHED
                )
                self.signal(other)
                if report is not None:
                    report(int(min(control[_NEXT], control[_NEXT + 1])))
        except Exception as exc:  # the caller raises the lowest index's first
            errors[index] = exc
            control[_STOP + lane] = index
        finally:
            control[_DONE + lane] = FINISHED
            control[_NEXT + lane] = FINISHED
            self.signal(other)


class _Worker:
    """A forked process running lane 1 of `plan` for every run it is sent."""

    def __init__(self, key: tuple, machine, plan: LanePlan, step: Callable) -> None:
        self.key = key
        self.plan = plan
        self.step = step
        self.busy = threading.Lock()
        self.ended = "the interpreter's second lane (a worker process) was stopped"
        size = len(machine.heap)
        mapping = mmap.mmap(-1, 4 * size + 8 * _CONTROL_WORDS)
        self.heap = np.frombuffer(mapping, dtype=np.float32, count=size)
        control = np.frombuffer(mapping, np.int64, _CONTROL_WORDS, offset=4 * size)
        flags = os.EFD_NONBLOCK | os.EFD_CLOEXEC
        self.lanes = _Lanes(control, (os.eventfd(0, flags), os.eventfd(0, flags)))
        commands, self.commands = os.pipe()
        self.replies, replies = os.pipe()
        second = machine.for_second_lane()
        second.heap = self.heap
        parent = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:  # the worker: never returns into the caller's code
            try:
                os.close(self.commands)
                os.close(self.replies)
                _serve(second, plan, step, self.lanes, commands, replies, parent)
            finally:
                os._exit(0)
        os.close(commands)
        os.close(replies)

    def alive(self) -> None:
        """Raise if the worker has ended."""
        if self.pid:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid:
                self.pid = 0
                self.ended = (
                    "the interpreter's second lane (a worker process) ended"
                    + (f" (signal {os.WTERMSIG(status)})" if os.WIFSIGNALED(status) else "")
                    + "; CTAC_THREADS=1 runs on one lane"
                )
        if not self.pid:
            raise CtacError(self.ended)

    def running(self) -> bool:
        try:
            self.alive()
        except CtacError:
            return False
        return True

    def run(self, machine, progress: Callable[[int], object] | None) -> bool:
        """One run of the program on `machine` (lane 0, here) and the worker (lane 1); False,
        having run nothing, where the worker has just gone (idle)."""
        plan, lanes = self.plan, self.lanes
        count = len(machine.program.instructions)
        control = lanes.control
        control[_DONE : _DONE + 2] = -1
        control[_WAITING : _WAITING + 2] = 0
        control[_STOP : _STOP + 2] = count
        for lane in (0, 1):
            control[_NEXT + lane] = plan.orders[lane][0] if plan.orders[lane] else FINISHED
        stats_before = dict(machine.stats.clusters)
        report = progress_reporter(progress, count)
        reporting = report if progress is not None else None
        errors: dict[int, BaseException] = {}
        self.heap[...] = machine.heap  # the inputs the caller wrote
        try:
            _send(self.commands, ("run", np.geterr()))
        except OSError:  # it left, idle, after it was last seen running
            self.close(force=True)
            return False
        machine.heap = self.heap
        try:
            lanes.run(0, machine, plan, self.step, errors, self.alive, reporting)
            reply = self._reply()
            assert reply is not None  # no timeout: an answer, or the worker's end raised
        except BaseException:  # Ctrl-C, or the worker gone: stop its lane too, then stop
            if self.pid:
                # a worker that has not answered this run is killed: its lane may still run,
                # and its answer would be taken for the next run's
                answered = False
                try:
                    control[_STOP] = -1
                    os.eventfd_write(lanes.wake[1], 1)
                    answered = self._reply(_REPLY_SECONDS) is not None
                finally:
                    if not answered:
                        self.close(force=True)
            raise
        errors.update(reply["errors"])
        machine.stats.clusters.update(reply["stats"])
        finish(machine, stats_before, errors, count, report)
        return True

    def _reply(self, timeout: float | None = None) -> dict | None:
        """The worker's answer to a run; None after `timeout` seconds without one. Raises where
        the worker has ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self.replies], [], [], 0.1)
            if ready:
                reply = _receive(self.replies)
                if reply is None:
                    self.alive()
                    raise CtacError("the interpreter's second lane stopped answering")
                return reply
            if deadline is not None and time.monotonic() > deadline:
                return None
            self.alive()

    def close(self, force: bool = False) -> None:
        """Stop the worker and free what it holds."""
        if self.pid:
            try:
                if force:
                    os.kill(self.pid, signal.SIGKILL)
                else:
                    _send(self.commands, ("quit", None))
            except OSError:
                pass
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = 0
        for fd in (self.commands, self.replies, *self.lanes.wake):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.commands = self.replies = -1
        self.lanes.wake = (-1, -1)
        self.heap = None  # the shared mapping goes with the last view of it


def _serve(second, plan, step, lanes: _Lanes, commands: int, replies: int, parent: int) -> None:
    """The worker's loop: a run for each command, until the caller quits, goes, or is idle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def alive() -> None:
        if os.getppid() != parent:
            os._exit(0)

    while True:
        ready, _, _ = select.select([commands], [], [], IDLE_SECONDS)
        if not ready:
            return
        message = _receive(commands)
        if message is None or message[0] != "run":
            return
        np.seterr(**message[1])
        second.restart()
        errors: dict[int, BaseException] = {}
        lanes.run(1, second, plan, step, errors, alive)
        _send(replies, {"errors": _picklable(errors), "stats": dict(second.stats.clusters)})


def _picklable(errors: dict[int, BaseException]) -> dict[int, BaseException]:
    kept = {}
    for index, error in errors.items():
        try:
            pickle.dumps(error)
            kept[index] = error
        except Exception:  # an error numpy or a kernel raised that cannot cross processes
            kept[index] = CtacError(f"{type(error).__name__}: {error}")
    return kept


_worker: _Worker | None = None
_workers_lock = threading.Lock()


def run_in_worker(
    machine, plan: LanePlan, step: Callable, progress: Callable[[int], object] | None
) -> bool:
    """Run `plan` with its second lane in the worker process (made or remade for this program
    as needed); False, having run nothing, where no worker can take it (then run_lanes runs it
    on threads)."""
    global _worker
    if not usable():
        return False
    program = machine.program
    key = (
        id(program),
        id(program.instructions),
        len(program.instructions),
        id(machine.widened),
        machine.base,
        len(machine.heap),
        tuple((index, len(memory)) for index, memory in sorted(machine.buffers.items())),
        id(plan),
        id(step),
    )
    with _workers_lock:
        worker = _worker
        if worker is not None and (worker.key != key or not worker.running()):
            if not worker.busy.acquire(blocking=False):
                return False  # another thread's run uses it
            worker.close()
            worker.busy.release()
            _worker = worker = None
        if worker is None:
            worker = _worker = _Worker(key, machine, plan, step)
            weakref.finalize(program, _close_if_current, worker)
        if not worker.busy.acquire(blocking=False):
            return False
    try:
        return worker.run(machine, progress)
    finally:
        worker.busy.release()


def _close_if_current(worker: _Worker) -> None:
    global _worker
    with _workers_lock:
        if _worker is worker:
            _worker = None
    worker.close()


@atexit.register
def _close_at_exit() -> None:
    if _worker is not None:
        _worker.close()


def _forget_in_child() -> None:
    """In a process forked from this one (a sweep's pool, or a worker itself), the worker is
    the parent's: closing it there would stop the parent's. Its copies of the pipes go."""
    global _worker
    worker, _worker = _worker, None
    if worker is not None:
        worker.pid = 0
        worker.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def worker_cpu_seconds() -> float:
    """CPU seconds the current worker process has used so far (0.0 without one), which the
    caller's own process_time does not count."""
    worker = _worker
    if worker is None or not worker.pid:
        return 0.0
    try:
        with open(f"/proc/{worker.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
