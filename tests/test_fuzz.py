"""Hardening: seeded samples of both fuzzers, the size cap, and no partial output files.

The full runs are `python bench/fuzz_import.py --cases 1000` and
`python bench/fuzz_program.py --cases 10000`; here about 100 cases of each run in seconds.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import MODELS

from ctac.errors import CtacError

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import fuzz_import  # noqa: E402
import fuzz_program  # noqa: E402

BERT = MODELS / "bert_ts_eager.onnx"
BERT_SHAPES = "input_ids=2x16,attention_mask=2x16"


def _failures(report: dict) -> list[str]:
    return [f"case {f['case']} {f['kind']}: {f['why']}" for f in report["failed_cases"]]


def test_import_fuzz_sample() -> None:
    report = fuzz_import.run(cases=100, seed=20261128)
    assert report["failures"] == 0, _failures(report)
    outcomes = {o for counts in report["by_kind"].values() for o in counts}
    assert {"ok", "ctac_error"} <= outcomes  # both genuine and hostile models were exercised


@pytest.fixture(scope="module")
def corpus() -> dict[str, bytes]:
    return fuzz_program.compile_programs()


def test_program_fuzz_sample(corpus: dict[str, bytes]) -> None:
    report = fuzz_program.run(cases=120, seed=20261128, corpus=corpus)
    assert report["failures"] == 0, _failures(report)
    outcomes = {o for counts in report["by_kind"].values() for o in counts}
    assert {"rejected", "ran"} <= outcomes


def test_program_fuzz_kinds_each_fail_cleanly(corpus: dict[str, bytes]) -> None:
    """A few cases of every mutation kind, whatever the random draw above picked."""
    from ctac.hw import load_hardware

    hw = load_hardware()
    capacities = {b.index: b.capacity for b in hw.buffers}
    kinds = [*fuzz_program.MUTATIONS, *fuzz_program.SCENARIOS]
    seen = dict.fromkeys(kinds, 0)
    index = 0
    while min(seen.values()) < 3 and index < 5000:
        result = fuzz_program.run_case(index, 7, corpus, hw, capacities)
        seen[result["kind"]] += 1
        assert result["outcome"] != "FAIL", result
        index += 1
    assert min(seen.values()) >= 3


def test_tensor_cap_is_enforced_and_overflow_safe(tmp_path: Path) -> None:
    from ctac.importer import import_model

    model = onnx.load(str(BERT))
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    with pytest.raises(CtacError, match="over the cap"):
        import_model(BERT, {"input_ids": [2, 16], "attention_mask": [2, 16]}, 1024)
    # dims whose product wraps around in int64 must still count as huge
    del tensor.dims[:]
    tensor.dims.extend([1 << 32, 1 << 32, 16])
    path = tmp_path / "wrap.onnx"
    onnx.save(model, str(path))
    with pytest.raises(CtacError, match="over the cap"):
        import_model(path, {"input_ids": [2, 16], "attention_mask": [2, 16]})


def test_max_tensor_bytes_flag_reaches_the_importer(tmp_path: Path, capsys) -> None:
    from ctac.cli import main
    from ctac.onnx_loader import DEFAULT_MAX_TENSOR_BYTES

    assert 0 < DEFAULT_MAX_TENSOR_BYTES <= 1 << 40
    out = tmp_path / "m.ctab"
    args = ["compile", str(BERT), "--shape", BERT_SHAPES, "-o", str(out)]
    assert main([*args, "--max-tensor-bytes", "1000"]) == 2
    assert "over the cap of 1000" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# No partial output files
# ---------------------------------------------------------------------------------------------


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_write_atomically_leaves_old_file_on_failure(tmp_path: Path, monkeypatch) -> None:
    from ctac import files

    target = tmp_path / "out.ctab"
    target.write_bytes(b"old")

    class Boom(RuntimeError):
        pass

    def failing_replace(source, destination):
        raise Boom("disk vanished")

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(Boom):
        files.write_atomically(target, b"new" * 1000)
    assert target.read_bytes() == b"old" and _leftovers(tmp_path) == []
    monkeypatch.undo()

    def failing_fdopen(handle, mode):
        os.close(handle)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fdopen", failing_fdopen)
    with pytest.raises(CtacError, match="cannot write .*No space left"):
        files.write_atomically(target, b"new")
    assert target.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_cli_failures_leave_no_output(tmp_path: Path, capsys) -> None:
    from ctac.cli import main

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(BERT.read_bytes()[:5000])
    for command in (
        ["compile", str(broken), "--shape", BERT_SHAPES, "-o", str(tmp_path / "a.ctab")],
        ["compile", str(broken), "--shape", BERT_SHAPES, "--emit", "asm", "-o", str(tmp_path / "a.s")],
        ["disasm", str(tmp_path / "missing.ctab"), "-o", str(tmp_path / "b.s")],
    ):  # fmt: skip
        assert main(command) == 2
    program = tmp_path / "good.ctab"
    assert main(["compile", str(BERT), "--shape", BERT_SHAPES, "-o", str(program)]) == 0
    corrupt = tmp_path / "corrupt.ctab"
    corrupt.write_bytes(program.read_bytes()[:-7])
    assert main(["run", str(corrupt), "-o", str(tmp_path / "out.npz")]) == 2
    assert main(["profile", str(corrupt), "--out", str(tmp_path / "prof")]) == 2
    # an output path that cannot be written is a user error, and nothing is left behind
    (tmp_path / "taken").mkdir()
    assert main(["compile", str(BERT), "--shape", BERT_SHAPES, "-o", str(tmp_path / "taken")]) == 2
    assert "cannot write" in capsys.readouterr().err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["broken.onnx", "corrupt.ctab", "good.ctab", "taken"], names


def test_profile_plots_are_written_atomically(tmp_path: Path, monkeypatch) -> None:
    import matplotlib.figure

    from ctac.cli import main

    program = tmp_path / "good.ctab"
    assert main(["compile", str(BERT), "--shape", BERT_SHAPES, "-o", str(program)]) == 0
    real_savefig = matplotlib.figure.Figure.savefig
    calls = []

    def half_then_fail(self, target, *args, **kwargs):
        calls.append(target)
        if len(calls) == 2:  # the second plot: write some bytes, then fail
            buffer = io.BytesIO()
            real_savefig(self, buffer, *args, **kwargs)
            target.write(buffer.getvalue()[:100])
            raise RuntimeError("renderer crashed")
        return real_savefig(self, target, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half_then_fail)
    out = tmp_path / "prof"
    with pytest.raises(RuntimeError):
        main(["--debug", "profile", str(program), "--out", str(out), "--timing-only"])
    written = sorted(p.name for p in out.iterdir())
    assert "energy_per_layer.png" not in written and _leftovers(out) == []
    assert (out / "cycles_per_layer.png").read_bytes().startswith(b"\x89PNG")


def test_every_writer_goes_through_write_atomically() -> None:
    """No direct file writes in the CLI, the run helpers or the profiler."""
    direct = re.compile(
        r"\bopen\([^)]*['\"][wa]b?['\"]|\.write_text\(|\.write_bytes\(|savefig\((?!buffer)"
        r"|np\.save[zt]?\((?!buffer)|\.tofile\("
    )
    paths = [REPO / "ctac/cli.py", *sorted((REPO / "ctac/commands").glob("*.py"))]
    paths += [REPO / "ctac/run.py", REPO / "runtime/profile.py"]
    for path in paths:
        name = path.relative_to(REPO).as_posix()
        text = path.read_text()
        hits = [line.strip() for line in text.splitlines() if direct.search(line)]
        assert hits == [], f"{name} writes files directly: {hits}"


def test_decoder_refuses_resigned_field_edits() -> None:
    """Representative re-signed corruptions, each refused with a CtacError naming the problem."""
    from ctac.hw import load_hardware
    from ctac.runtime.program import decode_program

    hw = load_hardware()
    capacities = {b.index: b.capacity for b in hw.buffers}
    blob = _small_blob()
    fields, words, data, symbols, sources = fuzz_program._split(blob)

    def resigned(**changes) -> bytes:
        parts = {"words": list(words), "data": data, "symbols": symbols, "sources": sources}
        parts.update(changes)
        return fuzz_program._join(
            list(fields), parts["words"], parts["data"], parts["symbols"], parts["sources"]
        )

    cases = {
        "huge symbol shape": resigned(
            symbols=symbols.replace(b'"shape":[2,16]', b'"shape":[4294967296,4294967296]', 1)
        ),
        "dynamic field not a string": resigned(
            sources=sources.replace(b'"dynamic":[]', b'"dynamic":[[0,["rows"],0]]')
        ),
        "deeply nested JSON": resigned(symbols=b"[" * 50000 + b"]" * 50000),
        "infinite address": resigned(
            symbols=re.sub(rb'"address":\d+', b'"address":Infinity', symbols, count=1)
        ),
    }
    for what, corrupt in cases.items():
        with pytest.raises(CtacError, match="corrupt program"):
            decode_program(corrupt, hw.digest, capacities)
        assert hashlib.sha256(corrupt[:-32]).digest() == corrupt[-32:], what
    with pytest.raises(CtacError, match="DRAM size"):
        decode_program(blob, hw.digest, capacities, max_dram_elements=1000)


_BLOB: list[bytes] = []


def _small_blob() -> bytes:
    if not _BLOB:
        from ctac.emit import program_from_module
        from ctac.hw import load_hardware
        from ctac.importer import import_model
        from ctac.passes.detect_attention import detect_attention
        from ctac.passes.lower_to_isa import lower_module
        from ctac.pipeline import run_passes
        from ctac.runtime.program import encode_program

        imported = import_model(BERT, {"input_ids": [2, 16], "attention_mask": [2, 16]})
        run_passes(imported.module, "onnx-canonicalize")
        detect_attention(imported.module)
        program = program_from_module(lower_module(imported.module, load_hardware()))
        _BLOB.append(encode_program(program))
    return _BLOB[0]


def test_interpreter_checks_tiles_when_decoded_without_capacities() -> None:
    from ctac.hw import load_hardware
    from ctac.runtime.interpreter import run_program
    from ctac.runtime.program import decode_program

    hw = load_hardware()
    program = decode_program(_small_blob(), hw.digest)
    small = {b.index: 64 for b in hw.buffers}
    inputs = {
        "input_ids": np.zeros((2, 16), dtype=np.int64),
        "attention_mask": np.ones((2, 16), dtype=np.int64),
    }
    with pytest.raises(CtacError, match="exceeds its 64 elements"):
        run_program(program, small, inputs)
