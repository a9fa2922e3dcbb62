"""Run the lit/FileCheck suite (tests/lit) as part of `pytest`."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

LIT_DIR = Path(__file__).resolve().parent / "lit"
# lit has no `__main__` module (so no `python -m lit`): call its entry point like its script does.
RUN_LIT = "import sys; from lit.main import main; sys.argv[0] = 'lit'; sys.exit(main())"


def test_lit_suite() -> None:
    for module in ("lit", "filecheck"):
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"'{module}' is not installed; run: pip install -e '.[dev]'")
    completed = subprocess.run(
        [sys.executable, "-c", RUN_LIT, "-v", str(LIT_DIR)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = f"{completed.stdout}\n{completed.stderr}"
    discovered = re.search(r"Total Discovered Tests:\s*(\d+)", output)
    count = int(discovered.group(1)) if discovered else 0
    if completed.returncode != 0 or count == 0:
        print(output)
    assert count > 0, f"lit found no tests under {LIT_DIR}:\n{output}"
    assert completed.returncode == 0, f"lit failed (exit status {completed.returncode}):\n{output}"
