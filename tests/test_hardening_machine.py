"""Issue 17, the machine side: hostile program headers, CLUSTER's work, assembly, special output
files, hardware configs, signals during a write and megabyte-long tokens in messages.

Each class ends the same way for the user: exit status 2, one `error:` line, no output file
(and no temporary) left behind, in bounded time. The sampled fuzzers are in test_fuzz.py; the
full run is `python bench/fuzz_program.py --cases 1000`.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import MODELS

from ctac.cli import main
from ctac.errors import CtacError, brief, shorten
from ctac.hw import load_hardware
from ctac.runtime import isa
from ctac.runtime.assembly import disassemble
from ctac.runtime.program import (
    MAX_DRAM_ELEMENTS,
    Program,
    decode_program,
    encode_program,
)

REPO = Path(__file__).resolve().parent.parent
BERT = MODELS / "bert_ts_eager.onnx"
DEFAULT_HW = (REPO / "ctac" / "data" / "default_hw.toml").read_text()


def user_error(argv: list[str], capsys) -> str:
    """Run the CLI in-process; it must exit 2 with exactly one `error:` line (returned)."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[:2000]
    assert "internal error" not in err
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    """A compiled BERT program (2 x 16 tokens)."""
    path = tmp_path_factory.mktemp("program") / "bert.ctab"
    assert main(["compile", str(BERT), "--shape", "input_ids=2x16,attention_mask=2x16",
                 "-o", str(path)]) == 0  # fmt: skip
    return path


def rewritten(program: Path, folder: Path, name: str, change) -> Path:
    """The program with `change(Program)` applied, re-encoded (a valid checksum)."""
    decoded = decode_program(program.read_bytes())
    change(decoded)
    path = folder / name
    path.write_bytes(encode_program(decoded))
    return path


# ---------------------------------------------------------------------------------------------
# Class 5: the header and symbol table are validated against what the file and the ISA allow
# ---------------------------------------------------------------------------------------------


def _dram(size):
    def change(p):
        p.dram_elements = size

    return change


def _symbol(index, **fields):
    def change(p):
        p.symbols[index] = dataclasses.replace(p.symbols[index], **fields)

    return change


def _big_input(p):
    p.dram_elements = (1 << 33) + 200_000
    p.symbols[1] = dataclasses.replace(p.symbols[1], shape=(1 << 33,), address=200_000)


def _big_output(p):
    # inside the ISA's 2^32 elements, but more than any test machine's memory
    p.dram_elements = 1 << 32
    p.symbols[2] = dataclasses.replace(p.symbols[2], shape=((1 << 32) - 200_000,), address=200_000)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (_dram(1 << 34), "DRAM size 17179869184"),
        (_dram((1 << 64) - 1), "DRAM size"),
        (_symbol(1, shape=(1,) * 63 + (2, 16)), "65 dimensions"),
        (_symbol(0, vocab=10**30), "vocab"),
        (_symbol(0, vocab=(1 << 24) + 1), "vocab"),
        (_big_input, "DRAM size"),
        (_big_output, "GiB"),
    ],
    ids=["dram-2^34", "dram-2^64", "rank-65", "vocab-1e30", "vocab-2^24+1", "input-2^33", "output-16GiB"],
)  # fmt: skip
def test_class5_header_limits(program: Path, tmp_path: Path, capsys, change, fragment) -> None:
    hostile = rewritten(program, tmp_path, "hostile.ctab", change)
    start = time.perf_counter()
    line = user_error(["run", str(hostile), "-o", str(tmp_path / "out.npz")], capsys)
    assert fragment in line and time.perf_counter() - start < 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.ctab"]


def test_class5_dram_is_allocated_lazily(program: Path, tmp_path: Path) -> None:
    """A header may declare the ISA's whole 2^32-element DRAM; only what the instructions and
    symbols reach is allocated, and the program runs as before."""
    from ctac.runtime.interpreter import Machine, dram_reach, run_program

    hw = load_hardware()
    capacities = {b.index: b.capacity for b in hw.buffers}
    original = decode_program(program.read_bytes())
    huge = decode_program(program.read_bytes())
    huge.dram_elements = MAX_DRAM_ELEMENTS
    machine = Machine(huge, capacities)
    assert machine.base + len(machine.heap) == dram_reach(huge) <= original.dram_elements
    inputs = {
        "input_ids": np.arange(32).reshape(2, 16) % 200,
        "attention_mask": np.ones((2, 16), dtype=np.int64),
    }
    expected, _ = run_program(original, capacities, inputs)
    got, _ = run_program(huge, capacities, inputs)
    assert all(np.array_equal(expected[k], got[k]) for k in expected)


def test_a_small_declared_dram_is_allocated_without_walking_the_instructions(
    program: Path, monkeypatch
) -> None:
    """A heap of at most ALWAYS_ALLOCATED_HEAP elements is allocated whole (walking the
    instructions for their reach cost a small program 8% of its run); one element more and
    only the reach is."""
    from ctac.runtime import interpreter

    hw = load_hardware()
    capacities = {b.index: b.capacity for b in hw.buffers}
    walked = []
    reach = interpreter.dram_reach
    monkeypatch.setattr(interpreter, "dram_reach", lambda p: walked.append(1) or reach(p))
    small = decode_program(program.read_bytes())
    machine = interpreter.Machine(small, capacities)
    assert not walked and machine.base + len(machine.heap) == small.dram_elements
    small.dram_elements = machine.base + interpreter.ALWAYS_ALLOCATED_HEAP
    assert len(interpreter.Machine(small, capacities).heap) == interpreter.ALWAYS_ALLOCATED_HEAP
    assert not walked
    small.dram_elements += 1
    machine = interpreter.Machine(small, capacities)
    assert walked and machine.base + len(machine.heap) == reach(small)


# ---------------------------------------------------------------------------------------------
# Class 6: CLUSTER's functional model does work near-linear in its tokens; impossible sizes are
# refused by the decoder
# ---------------------------------------------------------------------------------------------


def test_class6_cluster_of_65535_distinct_tokens_is_near_linear() -> None:
    from ctac.runtime.cluster_unit import ClusterTable

    n = 65_535  # the most a CLUSTER holds (16-bit rows; 2 features fill act's 131,072 elements)
    tokens = (np.random.default_rng(0).standard_normal((n, 2)) * 100).astype(np.float32)
    table = ClusterTable(2)
    start = time.perf_counter()
    ids, comparisons = table.cluster(tokens, np.zeros(n, dtype=np.int64), None, 0.001)
    seconds = time.perf_counter() - start
    assert table.used > 0.99 * n  # nearly every token opens its own row
    assert comparisons > n * (n - 1) // 2 * 0.99  # the reference's count: quadratic
    assert table.computed < 1000 * n  # the model's work: near-linear (was the count above)
    assert seconds < 60  # generous: about 3 s on a shared 2-core machine, 100 s before


@pytest.mark.parametrize("window", [0, 3])
@pytest.mark.parametrize("tau", [0.05, 0.3, 0.9, 1.5])
def test_class6_indexed_search_decides_as_the_reference(
    monkeypatch, tau: float, window: int
) -> None:
    """With the per-group path and its index switched on early, the ids, the comparison count
    and the table (bit for bit) equal the lockstep model's and the reference's decisions."""
    from ctac.runtime import cluster_unit, compression

    rng = np.random.default_rng(int(tau * 100) + window)
    n, cols = 1500, 3
    centres = rng.standard_normal((200, cols)) * 5
    tokens = (centres[rng.integers(0, 200, n)] + rng.standard_normal((n, cols)) * 0.1).astype(np.float32)  # fmt: skip
    tokens[7] = 3e38
    codes = compression.hash_codes(tokens.astype(np.float64), 2, 3)
    valid = rng.random(n) > 0.1

    def run(alone: int, rows: int):
        monkeypatch.setattr(cluster_unit, "ALONE_MIN_TOKENS", alone)
        monkeypatch.setattr(cluster_unit, "INDEX_MIN_ROWS", rows)
        monkeypatch.setattr(cluster_unit, "INDEX_REBUILD", 7)
        table = cluster_unit.ClusterTable(cols)
        results = [table.cluster(tokens[a:b], codes[a:b], valid[a:b], tau, window)
                   for a, b in ((0, 600), (600, n))]  # fmt: skip
        return table, results

    with np.errstate(all="ignore"):
        lockstep, expected = run(10**9, 10**9)
        indexed, got = run(8, 4)
    for (ids_a, count_a), (ids_b, count_b) in zip(expected, got, strict=True):
        assert np.array_equal(ids_a, ids_b) and count_a == count_b
    used = lockstep.used
    assert indexed.used == used
    for name in ("means", "norms", "members", "keys"):
        assert np.array_equal(getattr(lockstep, name)[:used], getattr(indexed, name)[:used], equal_nan=True)  # fmt: skip
    if window == 0 and tau <= 0.3:  # (a wide threshold's band holds every row)
        assert indexed.computed < lockstep.computed  # the index did prune
    # and the reference (one call over the whole sequence) forms the same clusters
    with np.errstate(all="ignore"):
        reference = compression.cluster(
            tokens[None], valid[None], tau=tau, hash_bits=2, seed=3, window=window
        )
    assert np.array_equal(np.concatenate([ids for ids, _ in got]), reference.ids[0])
    assert sum(count for _, count in got) == reference.comparisons


def _cluster_program(table_rows: int, rows: int) -> Program:
    hw = load_hardware()
    fields = {"rows": rows, "cols": 1, "table_rows": table_rows, "first": 1, "threshold": 0.5,
              "resident": 16}  # fmt: skip
    instructions = [(name, isa.decode(isa.encode(name, f))[1])
                    for name, f in (("CLUSTER", fields), ("HALT", {}))]  # fmt: skip
    return Program(hw.digest, instructions, np.zeros(0, np.float32), 1 << 20, [], ["", ""])


def test_class6_decoder_refuses_tables_the_unit_cannot_hold() -> None:
    decode_program(encode_program(_cluster_program(65_000, 535)))  # 65,535 rows: the most
    with pytest.raises(CtacError, match="holds at most 65535"):
        decode_program(encode_program(_cluster_program(65_000, 536)))


def test_class6_a_table_beyond_its_declared_rows_is_an_error() -> None:
    from ctac.runtime.interpreter import run_program

    program = _cluster_program(0, 4)
    program.data = np.array([1, 10, 100, 1000], dtype=np.float32)  # 4 tokens, 4 rows
    load = {"dst": isa.ACT_BUFFER, "dst_addr": 0, "src": 0, "rows": 4, "cols": 1, "stride": 1}
    second = dict(program.instructions[0][1], first=0, table_rows=2)
    program.instructions[:0] = [("LOAD", isa.decode(isa.encode("LOAD", load))[1])]
    program.instructions.insert(2, ("CLUSTER", second))
    program.sources[:0] = ["", ""]
    capacities = {b.index: b.capacity for b in load_hardware().buffers}
    with pytest.raises(CtacError, match="already holds 4 rows, more than its table_rows 2"):
        run_program(program, capacities, {})


# ---------------------------------------------------------------------------------------------
# Class 7: the assembler names the line and the fix
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def assembly(program: Path) -> str:
    return disassemble(decode_program(program.read_bytes()))


def _first_code_line(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


ASM_CASES = {
    "dram-abc": (".dram ", ".dram abc\n; ", "whole number"),
    "dram-negative": (".dram ", ".dram -5\n; ", "should be in [0, 4294967296]"),
    "imm-abc": ("imm=0.0", "imm=abc", "not a float32 number"),
    "imm-1e300": ("imm=0.0", "imm=1e300", "not a float32 number"),
    "rows-abc": ("rows=32", "rows=abc", "is not an integer"),
    "source-not-json": (';@ "onnx', ';@ {"onnx', "not valid JSON"),
    "source-nested": (';@ "onnx', ";@ " + "[" * 100_000 + '"onnx', "nests deeper than 32"),
    "sizes-nested": (';@ "onnx', ';@ "x" ' + '{"a":' * 5000 + "1" + "}" * 5000 + ' "onnx', "nests"),
    "sizes-wrong": (';@ "end"', ';@ "end" {"rows": [1, 2, 3]}', "optionally a JSON object"),
    "policy-nested": (".data ", ".policy " + "[" * 100_000 + "\n.data ", "nests deeper"),
    "input-nested": ('.input "input_ids"', ".input " + "{" * 100_000 + '"input_ids"', "nests"),
    "hw-short": (".hw ", ".hw abcd\n; ", "64 hex digits"),
}


@pytest.mark.parametrize("case", list(ASM_CASES))
def test_class7_assembler_errors_name_line_and_fix(
    assembly: str, tmp_path: Path, capsys, case: str
) -> None:
    old, new, fragment = ASM_CASES[case]
    text = assembly.replace(old, new, 1)
    source = tmp_path / "bad.s"
    source.write_text(text)
    line = user_error(["asm", str(source), "-o", str(tmp_path / "out.ctab")], capsys)
    number = _first_code_line(text, new.split("\n")[0][:40])
    assert f"bad.s:{number}:" in line or case == "source-not-json", line
    assert fragment in line and len(line) < 400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.s"]


def test_class7_bytes_that_are_not_utf8(assembly: str, tmp_path: Path, capsys) -> None:
    source = tmp_path / "bad.s"
    source.write_bytes(assembly.encode()[:300] + b"\xff\xfe" + assembly.encode()[300:])
    line = user_error(["asm", str(source), "-o", str(tmp_path / "out.ctab")], capsys)
    assert "not UTF-8" in line and "byte 300" in line
    module = tmp_path / "bad.mlir"
    module.write_bytes(b"module {\xff}")
    assert "not UTF-8" in user_error(["eval", str(module)], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mlir", "bad.s"]


# ---------------------------------------------------------------------------------------------
# Class 9: special output files are refused (except /dev/null, written through)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "symlink", "dangling-symlink", "directory", "device"])
def test_class9_special_targets_are_refused(program: Path, tmp_path: Path, capsys, kind: str) -> None:  # fmt: skip
    target = tmp_path / "target"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "symlink":
        (tmp_path / "real").write_text("keep")
        target.symlink_to(tmp_path / "real")
    elif kind == "dangling-symlink":
        target.symlink_to(tmp_path / "missing")
    elif kind == "directory":
        target.mkdir()
    else:
        target = Path("/dev/zero")
    mode = os.lstat(target).st_mode
    line = user_error(["disasm", str(program), "--no-data", "-o", str(target)], capsys)
    assert "cannot write" in line and "regular file" in line
    assert stat.S_IFMT(os.lstat(target).st_mode) == stat.S_IFMT(mode)
    if kind == "symlink":
        assert (tmp_path / "real").read_text() == "keep"
    assert leftovers(tmp_path) == [] and not (tmp_path / "missing").exists()


def test_class9_dev_null_is_written_through(program: Path, capsys) -> None:
    assert main(["disasm", str(program), "--no-data", "-o", os.devnull]) == 0
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


# ---------------------------------------------------------------------------------------------
# Class 10: the hardware config's types and ranges, with the key named
# ---------------------------------------------------------------------------------------------

HW_CASES = {
    "element-bytes-half": (
        "element_bytes = { value = 2,",
        "element_bytes = { value = 0.5,",
        "dram.element_bytes",
    ),  # fmt: skip
    "buffer-without-name": ('name = "wgt"\n', "", "buffers[1] needs a name"),
    "buffer-4-GiB": (
        "size_kib = { value = 256,",
        "size_kib = { value = 4194304,",
        "buffers[0].size_kib",
    ),  # fmt: skip
    "bandwidth-nan": (
        "bandwidth_gb_s = { value = 512.0,",
        "bandwidth_gb_s = { value = nan,",
        "dram.bandwidth_gb_s",
    ),  # fmt: skip
    "rows-33.5": ("rows = { value = 32,", "rows = { value = 33.5,", "pe_array.rows"),
    "clock-inf": (
        "clock_ghz = { value = 1.0,",
        "clock_ghz = { value = inf,",
        "accelerator.clock_ghz",
    ),  # fmt: skip
    "lanes-huge": ("lanes = { value = 64,", "lanes = { value = 1e300,", "vector.lanes"),
    "table-string": (
        "table_kib = { value = 256,",
        'table_kib = { value = "big",',
        "cluster.table_kib",
    ),  # fmt: skip
    "buffer-size-missing": (
        "size_kib = { value = 256,",
        "size_kb = { value = 256,",
        "buffers[0] needs size_kib",
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", list(HW_CASES))
def test_class10_hardware_config_names_the_key(program: Path, tmp_path: Path, capsys, case: str) -> None:  # fmt: skip
    old, new, key = HW_CASES[case]
    assert old in DEFAULT_HW
    config = tmp_path / "bad.toml"
    config.write_text(DEFAULT_HW.replace(old, new, 1))
    line = user_error(["disasm", str(program), "--hw", str(config), "-o", str(tmp_path / "o.s")], capsys)  # fmt: skip
    assert key in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_class10_binary_config(program: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "bad.toml"
    config.write_bytes(b"\xff\xfe[accelerator]")
    assert "not UTF-8" in user_error(["disasm", str(program), "--hw", str(config)], capsys)


# ---------------------------------------------------------------------------------------------
# Class 12: SIGTERM during a write removes the temporary; a SIGKILLed writer's is removed next time
# ---------------------------------------------------------------------------------------------

SLOW_WRITER = """
import os, sys, time
from ctac import files
real = os.replace
def slow(a, b):
    print("writing", flush=True)
    time.sleep(60)
    real(a, b)
files.os.replace = slow
files.write_atomically(sys.argv[1], b"x" * 100000)
"""


def _default_hangup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def test_class12_an_ignored_hangup_stays_ignored_while_writing(tmp_path: Path) -> None:
    """Under nohup SIGHUP is ignored; a write must not turn it into an abort."""
    from ctac.files import _catch_termination, _restore_handlers

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        handlers = _catch_termination()
        try:
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.SIGHUP not in handlers and signal.SIGTERM in handlers
        finally:
            _restore_handlers(handlers)
    finally:
        signal.signal(signal.SIGHUP, previous)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_class12_signals_leave_no_temporary(tmp_path: Path, signum: int) -> None:
    from ctac.files import write_atomically

    target = tmp_path / "out.ctab"
    target.write_bytes(b"old")
    # The signals' default course in the writer, even when this run inherited an ignored SIGHUP
    # (nohup), which the writer would rightly keep ignoring.
    writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target)],
                              stdout=subprocess.PIPE, cwd=REPO,
                              preexec_fn=_default_hangup)  # fmt: skip
    assert writer.stdout.readline() == b"writing\n"
    assert len(leftovers(tmp_path)) == 1
    writer.send_signal(signum)
    assert writer.wait(timeout=30) == -signum  # the signal's usual course: the process ends
    assert target.read_bytes() == b"old"
    if signum != signal.SIGKILL:
        assert leftovers(tmp_path) == []
    write_atomically(target, b"new")  # removes a dead writer's temporary
    assert leftovers(tmp_path) == [] and target.read_bytes() == b"new"


def test_class12_a_live_writers_temporary_is_kept(tmp_path: Path) -> None:
    from ctac.files import write_atomically

    target = tmp_path / "out.ctab"
    live = tmp_path / f".out.ctab.{os.getppid()}.abcd.tmp"  # pytest's parent: alive
    other = tmp_path / ".out.ctab.notapid.tmp"
    live.write_bytes(b"")
    other.write_bytes(b"")
    write_atomically(target, b"new")
    assert live.exists() and other.exists()


# ---------------------------------------------------------------------------------------------
# Class 13: what messages quote is cut
# ---------------------------------------------------------------------------------------------


def test_class13_long_tokens_are_cut(assembly: str, program: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "long.s"
    source.write_text(assembly.replace("imm=0.0", "imm=" + "x" * 1_000_000, 1))
    line = user_error(["asm", str(source)], capsys)
    assert "..." in line and len(line) < 300
    name = rewritten(program, tmp_path, "name.ctab", _symbol(0, name="n" * 1_000_000, vocab=-1))
    line = user_error(["run", str(name)], capsys)
    assert "vocab" in line and len(line) < 400
    # whatever a CtacError quotes, the CLI prints at most a couple of thousand characters
    assert len(brief("x" * 10**6)) <= 2000 and len(brief("a b " * 10**5)) <= 2000
    assert shorten("short") == "short" and len(shorten("y" * 10**6)) == 80


# ---------------------------------------------------------------------------------------------
# The new fuzz scenarios, a few cases each
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_program_module():
    sys.path.insert(0, str(REPO / "bench"))
    import fuzz_program

    return fuzz_program


@pytest.mark.parametrize("kind", ["assembler", "hardware_toml", "special_files", "cluster_chunk"])
def test_fuzz_scenarios_fail_cleanly(fuzz_program_module, program: Path, kind: str) -> None:
    import random

    corpus = {"bert": program.read_bytes()}
    for index in range(12):
        result = fuzz_program_module.run_scenario(kind, random.Random(index), index, corpus)
        assert result["outcome"] in ("ran", "rejected"), result


@pytest.mark.parametrize("kind", ["header_limits", "cluster_sizes"])
def test_fuzz_mutations_fail_cleanly(fuzz_program_module, program: Path, kind: str) -> None:
    import random

    from ctac.runtime.interpreter import run_program

    hw = load_hardware()
    capacities = {b.index: b.capacity for b in hw.buffers}
    mutate, _ = fuzz_program_module.MUTATIONS[kind]
    for index in range(12):
        blob = mutate(random.Random(index), program.read_bytes())
        try:
            decoded = decode_program(blob, hw.digest, capacities, 1 << 22)
            with np.errstate(all="ignore"):
                run_program(decoded, capacities, fuzz_program_module._inputs_for(decoded, index))
        except CtacError:
            pass


def test_class5_random_inputs_are_checked_before_allocation(monkeypatch) -> None:
    """`ctac run` without --input makes random inputs of the declared sizes: a header declaring
    inputs larger than the memory available is refused before numpy allocates them."""
    from ctac.run import random_inputs
    from ctac.runtime import interpreter
    from ctac.runtime.program import Symbol

    program = Program(b"\0" * 32, [], np.zeros(0, np.float32), 1 << 32, [])
    program.symbols.append(Symbol("x", "input", (1 << 16, 1 << 15), "float32", 0))
    monkeypatch.setattr(interpreter, "available_memory", lambda: 1 << 30)
    with pytest.raises(CtacError, match="the program's inputs need 16.0 GiB"):
        random_inputs(program)


def test_class6_cluster_tables_larger_than_the_unit_are_refused(tmp_path: Path) -> None:
    """A CLUSTER keeping more table rows resident than the cluster unit's SRAM holds models a
    machine that does not exist: loading it for that hardware is refused (the lowering sizes
    `resident` from the same config, so compiled programs pass)."""
    import re

    from ctac.cli import main
    from ctac.hw import hardware_from_text, load_hardware
    from ctac.run import check_cluster_tables
    from ctac.runtime.program import read_program

    binary = tmp_path / "cta.ctab"
    assert main(["compile", str(MODELS / "bert_ts_eager.onnx"), "--shape",
                 "input_ids=2x16,attention_mask=2x16", "--attention", "cta", "--cta-policy",
                 "always", "-o", str(binary)]) == 0  # fmt: skip
    program = read_program(binary)
    default = load_hardware(None)
    check_cluster_tables(program, default)  # as compiled: fine
    small_text = re.sub(
        r"table_kib = \{ value = [0-9.]+", "table_kib = { value = 0.01", default.text
    )
    small = hardware_from_text(small_text, "a tiny cluster table", "tiny")
    with pytest.raises(CtacError, match=r"keeps \d+ table rows .* which holds 0 on this hardware"):
        check_cluster_tables(program, small, str(binary))
