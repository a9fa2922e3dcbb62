"""What several commands share: text in and out. The front end (import, canonicalize, detect
attention, the cost policy, compression) sits below the commands and the API, in
ctac/frontend.py."""

from __future__ import annotations

import sys
from pathlib import Path

from ctac.errors import CtacError
from ctac.files import write_atomically


def write_text(path: str | None, text: str) -> None:
    if path:
        write_atomically(path, text.encode())
    else:
        sys.stdout.write(text)


def read_utf8(path: Path, what: str) -> str:
    """A text file's contents; bytes that are not UTF-8 are a CtacError saying what it should be."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CtacError(f"'{path}' is not UTF-8 text (byte {exc.start}); {what}") from None
