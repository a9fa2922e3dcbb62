"""The second lane in a process of its own: runtime/lanes.py's plan, without the GIL between the
lanes.

Two threads share one GIL: every numpy call releases and retakes it, and with two lanes wanting
it each call can hand it to the other lane and wait to get it back. bench/interp_speed.py put
BERT-base's two lanes at 1.32-2.03x onnxruntime's one-thread inference on threads (sixteen
runs) and at 1.11-1.37x with the worker (five runs; one lane: 1.75-1.81x). So on Linux the
second lane runs in a worker process, forked from the caller once and kept for the program's
next runs:
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
exit, or IDLE_SECONDS after its last run (the caller's timer: a worker never leaves on its own
while a run may be on its way). Being a fork, it keeps the caller's memory as it was at the fork:
pages the caller writes or frees afterwards stay in the worker until it goes. It keeps no other
file the caller had open. It ignores Ctrl-C: the caller stops its lane, or kills it if it does
not answer. Programs are not to be changed in place once run (the plans kept on them assume so;
the worker runs its copy). Where fork or eventfd is missing (not Linux), on processors that may
reorder stores (the lanes' order rests on x86's), or while the worker serves another thread's run,
the lanes run as threads (runtime/lanes.py's run_lanes).
"""

from __future__ import annotations

import atexit
import contextlib
import mmap
import os
import pickle
import platform
import select
import signal
import struct
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable

import numpy as np

from ctac.errors import CtacError
from ctac.runtime.lanes import (
    CONTROL_WORDS,
    DONE,
    STOP,
    WAITING,
    LanePlan,
    finish,
    progress_reporter,
    run_lane,
    start_control,
)

IDLE_SECONDS = 60.0
_WAIT_SECONDS = 1e-3  # the longest a lane sleeps before it looks again
_REPLY_SECONDS = 10.0  # how long a stopped worker may take to answer before it is killed


def usable() -> bool:
    """Whether this platform can run the second lane in a forked worker: Linux (fork, eventfd)
    on x86-64, whose stores other cores see in program order (a lane's results before its
    "done"); other processors would need memory barriers Python does not give."""
    return (
        sys.platform == "linux"
        and hasattr(os, "fork")
        and hasattr(os, "eventfd")
        and platform.machine() in ("x86_64", "AMD64")
    )


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
    if data is None:
        return None
    try:
        return pickle.loads(data)
    except Exception as exc:  # an error class the other side could pickle but this cannot load
        raise CtacError(f"the interpreter's second lane sent what cannot be read: {exc}") from None


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
    """Both processes' view of the shared control block and the eventfds: lanes.run_lane's wait
    and signal across processes. `alive` raises (or exits) where the other process is gone."""

    def __init__(self, control: np.ndarray, wake: tuple[int, int]) -> None:
        self.control = control
        self.wake = wake
        self.alive: Callable[[], None] = lambda: None

    def wait(self, lane: int, need: int) -> None:
        """Sleep until the other lane has finished instruction `need`."""
        control, other = self.control, 1 - lane
        while control[DONE + other] < need:
            control[WAITING + lane] = 1
            if control[DONE + other] >= need:
                break
            ready, _, _ = select.select([self.wake[lane]], [], [], _WAIT_SECONDS)
            if ready:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(self.wake[lane])
            else:
                self.alive()
        control[WAITING + lane] = 0

    def signal(self, lane: int) -> None:
        """Wake `lane` if it sleeps."""
        if self.control[WAITING + lane]:
            os.eventfd_write(self.wake[lane], 1)


class _Worker:
    """A forked process running lane 1 of `plan` for every run it is sent."""

    def __init__(self, key: tuple, machine, plan: LanePlan, step: Callable) -> None:
        self.key = key
        self.plan = plan
        self.step = step
        self.busy = threading.Lock()
        self.ended = "the interpreter's second lane (a worker process) was stopped"
        self.orphaned = False  # its program is gone
        self.runs = 0
        self.last_run = time.monotonic()
        self.timer: threading.Timer | None = None
        self.finalizer: weakref.finalize | None = None
        size = len(machine.heap)
        # the control block first: its words aligned, none across a cache line
        mapping = mmap.mmap(-1, 8 * CONTROL_WORDS + 4 * size)
        control = np.frombuffer(mapping, np.int64, CONTROL_WORDS)
        self.heap = np.frombuffer(mapping, np.float32, size, offset=8 * CONTROL_WORDS)
        flags = os.EFD_NONBLOCK | os.EFD_CLOEXEC
        self.lanes = _Lanes(control, (os.eventfd(0, flags), os.eventfd(0, flags)))
        self.lanes.alive = self.alive
        commands, self.commands = os.pipe()
        self.replies, replies = os.pipe()
        second = machine.for_second_lane()
        second.heap = self.heap
        parent = os.getpid()
        with warnings.catch_warnings():  # Python 3.12 warns of forking with threads running
            warnings.simplefilter("ignore", DeprecationWarning)
            self.pid = os.fork()
        if self.pid == 0:  # the worker: never returns into the caller's code
            try:
                _close_all_but((commands, replies, *self.lanes.wake))
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
        having run nothing, where the worker is gone before it got the run."""
        plan, lanes = self.plan, self.lanes
        count = len(machine.program.instructions)
        start_control(lanes.control, plan, count)
        stats_before = dict(machine.stats.clusters)
        report = progress_reporter(progress, count)
        reporting = report if progress is not None else None
        errors: dict[int, BaseException] = {}
        own = machine.heap
        self.heap[...] = own  # the inputs the caller wrote
        self.runs += 1
        sent = False
        try:
            machine.heap = self.heap
            _send(self.commands, ("run", self.runs, np.geterr(), warnings.filters))
            sent = True
            run_lane(0, machine, plan, self.step, lanes.control, errors, lanes.wait, lanes.signal, reporting)  # fmt: skip
            reply = self._reply()
            if reply is None or reply["run"] != self.runs:
                raise CtacError("the interpreter's second lane answered out of step")
        except BaseException as exc:
            if not sent and isinstance(exc, OSError):  # it left before it got the run
                machine.heap = own
                self.close(force=True)
                return False
            self._stop(sent)
            raise
        finally:
            self.last_run = time.monotonic()
        for message, category, filename, lineno in reply["warnings"]:
            warnings.warn_explicit(message, category, filename, lineno)
        errors.update(reply["errors"])
        machine.stats.clusters.update(reply["stats"])
        finish(machine, stats_before, errors, count, report)
        return True

    def _stop(self, sent: bool) -> None:
        """After an interrupt or failure mid-run: the worker's lane stopped and its answer read,
        or the worker killed (a late answer must not be taken for the next run's)."""
        if not self.pid:
            return
        answered = False
        try:
            if sent:
                self.lanes.control[STOP] = -1
                os.eventfd_write(self.lanes.wake[1], 1)
                reply = self._reply(_REPLY_SECONDS)
                answered = reply is not None and reply["run"] == self.runs
        except (CtacError, OSError):
            pass
        finally:
            if not answered:
                self.close(force=True)

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
        """Stop the worker and free what it holds. The caller holds `busy` (two closes at once
        could close a descriptor number another file has since been given)."""
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
        # the shared mapping goes with the last view of it
        self.heap = self.lanes.control = None
        if self.finalizer is not None:
            self.finalizer.detach()
        if self.timer is not None:
            self.timer.cancel()

    def close_when_idle(self) -> None:
        """Close the worker IDLE_SECONDS after its last run, unless another run came."""
        if self.timer is not None:
            self.timer.cancel()
        self.timer = threading.Timer(IDLE_SECONDS, self._close_if_idle)
        self.timer.daemon = True
        self.timer.start()

    def _close_if_idle(self) -> None:
        if self.busy.acquire(blocking=False):
            try:
                if time.monotonic() - self.last_run >= IDLE_SECONDS * 0.99:
                    self.close()
            finally:
                self.busy.release()


def _close_all_but(kept: tuple[int, ...]) -> None:
    """In the worker: close every file the caller had open but the standard streams and
    `kept` (a pipe or socket the caller closes must see its end)."""
    keep = {0, 1, 2, *kept}
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in open_fds:
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _serve(second, plan, step, lanes: _Lanes, commands: int, replies: int, parent: int) -> None:
    """The worker's loop: a run for each command, until the caller quits or goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def alive() -> None:
        if os.getppid() != parent:
            os._exit(0)

    lanes.alive = alive
    while True:
        message = _receive(commands)  # None: the caller has gone or closed the pipe
        if message is None or message[0] != "run":
            return
        _, run, error_state, filters = message
        np.seterr(**error_state)
        second.restart()
        errors: dict[int, BaseException] = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.filters[:] = filters  # the caller's, at this run: "error" raises here too
            _filters_changed()
            run_lane(1, second, plan, step, lanes.control, errors, lanes.wait, lanes.signal)
        _send(
            replies,
            {
                "run": run,
                "errors": _picklable(errors),
                "stats": dict(second.stats.clusters),
                "warnings": [(str(w.message), w.category, w.filename, w.lineno) for w in caught],
            },
        )


def _filters_changed() -> None:
    """Tell the warnings machinery its filter list was replaced (a private hook, named
    differently across Python versions)."""
    for name in ("_filters_mutated", "_filters_mutated_lock_held"):
        hook = getattr(warnings, name, None)
        if hook is not None:
            hook()
            return


def _picklable(errors: dict[int, BaseException]) -> dict[int, BaseException]:
    kept = {}
    for index, error in errors.items():
        try:
            pickle.loads(pickle.dumps(error))
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
        id(program.data),
        len(program.data),
        program.element_type,
        id(machine.widened),
        machine.base,
        len(machine.heap),
        tuple((index, len(memory)) for index, memory in sorted(machine.buffers.items())),
        id(plan),
        id(step),
    )
    with _workers_lock:
        worker = _worker
        if worker is not None and (worker.orphaned or worker.key != key or not worker.running()):
            if not worker.busy.acquire(blocking=False):
                return False  # another thread's run uses it
            worker.close()
            worker.busy.release()
            _worker = worker = None
        if worker is None:
            worker = _worker = _Worker(key, machine, plan, step)
            worker.finalizer = weakref.finalize(program, _orphan, worker)
        if not worker.busy.acquire(blocking=False):
            return False
    try:
        return worker.run(machine, progress)
    finally:
        worker.busy.release()
        worker.close_when_idle()


def close_worker() -> None:
    """Stop the worker process, if there is one, after any run it serves (the next two-lane run
    forks another)."""
    global _worker
    with _workers_lock:
        worker, _worker = _worker, None
    if worker is not None:
        with worker.busy:
            worker.close()


def _orphan(worker: _Worker) -> None:
    """Its program is gone (a weakref.finalize callback, which the garbage collector may run
    anywhere, `_workers_lock` held or not): close it now where no run holds it, else at the
    next run."""
    worker.orphaned = True
    if worker.busy.acquire(blocking=False):
        try:
            worker.close()
        finally:
            worker.busy.release()


@atexit.register
def _close_at_exit() -> None:
    worker = _worker
    # closes only once no run, idle timer or finalizer is closing it (each holds `busy`)
    if worker is not None and worker.busy.acquire(timeout=_REPLY_SECONDS):
        try:
            worker.close()
        finally:
            worker.busy.release()


def _forget_in_child() -> None:
    """In a process forked from this one (a sweep's pool, or a worker itself), the worker is
    the parent's: closing it there would stop the parent's. Its copies of the pipes go, and the
    module lock is made anew (another thread may have held it at the fork)."""
    global _worker, _workers_lock
    _workers_lock = threading.Lock()
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
