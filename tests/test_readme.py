"""Every README block marked runnable runs as shown (in a scratch folder that sees tests/)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"<!-- runnable -->\s*```sh\n(.*?)```", re.S)


def runnable_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return [line for block in BLOCK.findall(text) for line in block.splitlines() if line.strip()]


def test_readme_has_runnable_blocks() -> None:
    assert len(runnable_commands()) >= 5


def test_runnable_readme_commands(tmp_path: Path) -> None:
    os.symlink(REPO / "tests", tmp_path / "tests")
    for command in runnable_commands():
        assert command.startswith("ctac ")
        argv = [sys.executable, "-m", "ctac", *command.split()[1:]]
        result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{command}\n{result.stderr}"
    assert (tmp_path / "gpt2-again.ctab").read_bytes() == (tmp_path / "gpt2.ctab").read_bytes()
    assert (tmp_path / "prof" / "trace.json").exists()


def test_quick_start_is_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    quick = text[text.index("## Quick start") : text.index("## Worked example")]
    blocks = re.findall(r"```sh\n(.*?)```", quick, re.S)
    assert [len(b.strip().splitlines()) for b in blocks] == [1, 1]
    assert "ctac demo" in blocks[0] and "pytest" in blocks[1]
