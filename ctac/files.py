"""Writing output files whole or not at all (`write_atomically`), for every writer in ctac: the
CLI, the API, the sweep, program files and the profiler's reports.

It sits below the runtime (it imports only ctac.errors), so runtime/program.py and
runtime/profile.py write through it without importing the command line."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from ctac.errors import CtacError


class _Signalled(BaseException):
    """SIGTERM or SIGHUP arrived while write_atomically was writing (its temporary is removed,
    then the signal is delivered again to the handler it had before)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _refuse_special(target: Path) -> None:
    """A CtacError if `target` exists and is not a regular file (see write_atomically)."""
    try:
        mode = os.lstat(target).st_mode
    except OSError:
        return  # missing (it will be created) or unreadable (the write reports it)
    if stat.S_ISREG(mode):
        return
    kind = (
        "a symbolic link" if stat.S_ISLNK(mode)
        else "a directory" if stat.S_ISDIR(mode)
        else "a FIFO" if stat.S_ISFIFO(mode)
        else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket" if stat.S_ISSOCK(mode)
        else "not a regular file"
    )  # fmt: skip
    raise CtacError(
        f"cannot write '{target}': it is {kind}; ctac only replaces regular files (give a new "
        "file name, or leave out -o/--output to print text to stdout)"
    )


def _remove_stale_temporaries(target: Path) -> None:
    """Remove `.NAME.PID.*.tmp` files of `target` whose writer process no longer exists (one
    killed by SIGKILL or a power cut cannot clean up after itself)."""
    prefix = f".{target.name}."
    try:
        names = [
            n for n in os.listdir(target.parent) if n.startswith(prefix) and n.endswith(".tmp")
        ]
    except OSError:
        return
    for name in names:
        pid = name[len(prefix) :].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                os.unlink(target.parent / name)
        except OSError:
            pass  # alive (another user's process) or unknowable: leave it


def write_atomically(path: str | os.PathLike[str], data: bytes | Iterable[bytes]) -> None:
    """Write a whole file or nothing: a temporary file `.NAME.PID.XXXX.tmp` in the same folder,
    then a rename.

    On any failure the temporary file is removed and an existing target is left as it was; an
    OSError (folder not writable, disk full) becomes a CtacError. SIGTERM and SIGHUP during the
    write remove the temporary too, then take their usual course; temporaries that a killed
    writer (SIGKILL) left behind are removed by the next write of the same file.

    Targets that exist and are not regular files are refused with a CtacError: a rename would
    replace a symbolic link, FIFO, socket or device node with a regular file. The one exception
    is /dev/null (os.devnull), which is written through, so `-o /dev/null` discards the output
    as usual. `data` may be an iterable of byte chunks, written as they come (a large file is
    never held whole)."""
    target = Path(path)
    chunks = [data] if isinstance(data, bytes | bytearray | memoryview) else data
    if os.path.abspath(target) == os.devnull:
        try:
            sink = os.open(os.devnull, os.O_WRONLY)
            try:
                os.write(sink, b"")  # /dev/null takes everything; nothing needs to move
                for _ in chunks:  # (a generator still runs, as it would for a file)
                    pass
            finally:
                os.close(sink)
        except OSError as exc:
            raise CtacError(f"cannot write '{target}': {exc.strerror or exc}") from None
        return
    _refuse_special(target)
    handlers = _catch_termination()
    temporary = None
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_temporaries(target)
            handle, temporary = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp"
            )
        except OSError as exc:
            raise CtacError(f"cannot write '{target}': {exc.strerror or exc}") from None
        with os.fdopen(handle, "wb") as stream:
            for chunk in chunks:
                if hasattr(chunk, "write_to"):  # a range of another file (ctac/mapped.py)
                    stream.flush()
                    chunk.write_to(stream.fileno())
                else:
                    stream.write(chunk)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, target)
        temporary = None
    except BaseException as exc:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CtacError(f"cannot write '{target}': {exc.strerror or exc}") from None
        if isinstance(exc, _Signalled):
            _restore_handlers(handlers)
            handlers = {}
            signal.raise_signal(exc.signum)
        raise
    finally:
        _restore_handlers(handlers)


def _catch_termination() -> dict:
    """While a file is written, SIGTERM and SIGHUP raise _Signalled (main thread only: Python
    delivers signals there); returns the previous handlers. A signal the process ignores (SIGHUP
    under nohup) stays ignored: its usual course is to change nothing."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def interrupt(signum, frame):
        raise _Signalled(signum)

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, interrupt)
    return previous


def _restore_handlers(handlers: dict) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, as hex (read a MB at a time)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
