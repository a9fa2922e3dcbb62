"""The Python API (ctac/api.py): results, their to_dict schema, agreement with the CLI, errors."""

from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import FP16_ATOL

import ctac
from ctac import CtacError
from ctac.cli import main as cli_main
from ctac.runtime.program import encode_program

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "tests" / "models" / "gpt2_ts_eager.onnx"
OTHER = REPO / "tests" / "models" / "bert_ts_eager.onnx"
SHAPES = {"input_ids": (2, 16), "attention_mask": (2, 16)}
UNIT_KEYS = {"cycles", "seconds", "energy_pj", "dram_bytes"}


@pytest.fixture(scope="module")
def programs():
    exact = ctac.compile(MODEL, SHAPES)
    cta = ctac.compile(MODEL, SHAPES, "cta", tau=0.5, cta_policy="always")
    return exact, cta


@pytest.fixture(scope="module")
def runs(programs):
    return [ctac.run(program, seed=0, check=True) for program in programs]


def _provenance_ok(provenance: dict, model: Path = MODEL) -> None:
    assert provenance["model_path"] == str(model.resolve())
    assert re.fullmatch(r"[0-9a-f]{64}", provenance["model_sha256"])
    assert provenance["hardware"] == "cta-default" and provenance["program"] is None
    assert re.fullmatch(r"[0-9a-f]{64}", provenance["hardware_sha256"])
    assert provenance["ctac_version"] == ctac.__version__
    assert provenance["settings"]["shapes"] == {"input_ids": [2, 16], "attention_mask": [2, 16]}


def test_package_exports_the_api() -> None:
    for name in ("compile", "run", "profile", "compare", "compare_modes", "hardware"):
        assert callable(getattr(ctac, name)), name
    importlib.import_module("ctac.run")  # the submodule must not replace the function
    importlib.import_module("ctac.compare")
    assert callable(ctac.run) and callable(ctac.compare)


def test_compile_records_mode_settings_and_provenance(programs) -> None:
    exact, cta = programs
    assert exact.mode == "exact" and cta.mode == "cta"
    assert cta.instructions > exact.instructions > 0
    assert exact.inputs == {"input_ids": (2, 16), "attention_mask": (2, 16)}
    data = cta.to_dict()
    json.dumps(data)
    _provenance_ok(data["provenance"])
    settings = data["provenance"]["settings"]
    assert settings["attention"] == "cta" and settings["tau"] == 0.5
    assert settings["cta_policy"] == "always"
    assert "tau" not in exact.provenance.settings


def test_api_program_is_the_cli_program(programs, tmp_path: Path) -> None:
    target = tmp_path / "cli.ctab"
    argv = ["compile", str(MODEL), "--shape", "input_ids=2x16,attention_mask=2x16",
            "--attention", "cta", "--tau", "0.5", "--cta-policy", "always", "-o", str(target)]  # fmt: skip
    assert cli_main(argv) == 0
    assert target.read_bytes() == encode_program(programs[1].program)
    saved = programs[1].save(tmp_path / "api.ctab")
    assert saved.read_bytes() == target.read_bytes()


def test_api_takes_the_policys_program_as_the_cli_does(tmp_path: Path, monkeypatch) -> None:
    """With the cost policy, the final module is one the policy compiled (both layers stay exact
    at 2 x 16): the API compiles the model twice (exact, compressed), not three times, and
    saves the bytes `ctac compile` writes."""
    import ctac.emit

    compiles = []
    compile_module = ctac.emit.compile_module
    monkeypatch.setattr(
        ctac.emit, "compile_module", lambda *a: compiles.append(1) or compile_module(*a)
    )
    program = ctac.compile(MODEL, SHAPES, "cta")
    assert len(compiles) == 2 and not any(d["compress"] for d in program.policy)
    target = tmp_path / "cli.ctab"
    argv = ["compile", str(MODEL), "--shape", "input_ids=2x16,attention_mask=2x16",
            "--attention", "cta", "-o", str(target)]  # fmt: skip
    assert cli_main(argv) == 0
    assert program.save(tmp_path / "api.ctab").read_bytes() == target.read_bytes()


def test_run_results_and_to_dict(runs) -> None:
    exact, cta = runs
    for result in runs:
        data = result.to_dict()
        assert set(data) >= UNIT_KEYS
        assert data["cycles"] == result.cycles > 0
        assert data["energy_pj"] > 0 and data["dram_bytes"] > 0 and data["seconds"] > 0
        assert data["outputs"]["last_hidden_state"]["shape"] == [2, 16, 64]
        # against onnxruntime, on the same inputs: ctac's default machine stores fp16
        assert data["max_abs_err"] < FP16_ATOL
        assert data["provenance"]["settings"]["timing_only"] is False
        _provenance_ok(data["provenance"])
        json.dumps(data)
    assert cta.attention and all(layer["tokens"] == 16 for layer in cta.attention)


def test_timing_only_and_cluster_ratio(programs) -> None:
    cta = programs[1]
    nominal = ctac.run(cta, timing_only=True)
    fewer = ctac.run(cta, timing_only=True, cluster_ratio=0.25)
    assert nominal.outputs == {} and nominal.timing_only
    assert fewer.cycles < nominal.cycles
    assert fewer.to_dict()["provenance"]["settings"]["timing_cluster_ratio"] == 0.25


def test_inputs_are_used(programs) -> None:
    ids = np.zeros((2, 16), dtype=np.int64)
    first = ctac.run(programs[0], {"input_ids": ids}, seed=1)
    second = ctac.run(programs[0], {"input_ids": ids}, seed=2)  # the mask is ones either way
    np.testing.assert_array_equal(
        first.outputs["last_hidden_state"], second.outputs["last_hidden_state"]
    )


def test_profile_writes_reports_and_agrees_with_run(runs, tmp_path: Path) -> None:
    report = ctac.profile(runs[1], out=tmp_path / "prof")
    assert report.cycles == runs[1].cycles and report.energy_pj == runs[1].energy_pj
    assert set(report.files) == {"profile", "trace", "cycles_plot", "energy_plot"}
    for path in report.files.values():
        assert Path(path).is_file()
    data = report.to_dict()
    assert set(data) >= UNIT_KEYS and "layer 0" in data["blocks"]
    assert sum(block["span_cycles"] for block in data["blocks"].values()) == report.cycles
    _provenance_ok(data["provenance"])
    fresh = ctac.profile(ctac.compile(MODEL, SHAPES), timing_only=True)
    assert fresh.files == {} and fresh.cycles > 0


def test_compare_is_relative_to_exact(runs) -> None:
    comparison = ctac.compare(runs)
    assert comparison.baseline == "exact"
    rows = {row["mode"]: row for row in comparison.to_dict()["modes"]}
    assert rows["exact"]["speedup"] == 1.0 and rows["exact"]["energy_saving"] == 1.0
    assert rows["cta"]["speedup"] == pytest.approx(runs[0].cycles / runs[1].cycles)
    assert set(rows["cta"]) >= UNIT_KEYS
    table = comparison.table()
    assert "exact's cycles and energy" in table and "cta" in table
    json.dumps(comparison.to_dict())


def test_compare_modes_on_timing_only() -> None:
    comparison = ctac.compare_modes(MODEL, SHAPES, ("exact", "cta", "elsa"), timing_only=True,
                                    tau=0.5, cta_policy="always")  # fmt: skip
    assert [row["mode"] for row in comparison.rows] == ["exact", "cta", "elsa"]
    assert all(row["timing_only"] for row in comparison.rows)


def test_hardware_overrides_change_the_machine() -> None:
    small = ctac.hardware(overrides={"pe_array.rows": 16, "pe_array.cols": 16})
    default = ctac.hardware()
    assert small.digest != default.digest and small.view().pe_rows == 16
    base = ctac.run(ctac.compile(MODEL, SHAPES), timing_only=True)
    slow = ctac.run(ctac.compile(MODEL, SHAPES, hw=small), timing_only=True)
    assert slow.cycles > base.cycles
    assert slow.provenance.hardware_sha256 == small.digest.hex()
    assert "pe_array.rows=16" in slow.provenance.hardware_config
    same = ctac.compile(MODEL, SHAPES, hw_overrides={"pe_array.rows": 16, "pe_array.cols": 16})
    assert same.hw.digest == small.digest


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ctac.compile(MODEL, SHAPES, "fast"), "attention must be one of"),
        (lambda: ctac.compile(MODEL, SHAPES, tau=0.4), "only apply to attention='cta'"),
        (lambda: ctac.compile(MODEL, SHAPES, "cta", tau=7), "tau must be a number in [0, 1]"),
        (lambda: ctac.compile(MODEL, SHAPES, "cta", tua=0.4), "unknown option tua"),
        (lambda: ctac.compile(MODEL, {"input_ids": (2.5, 16)}), "dimensions must be integers"),
        (lambda: ctac.compile(REPO / "missing.onnx", SHAPES), "is not a file"),
        (lambda: ctac.hardware(overrides={"pe_array.rowz": 4}), "unknown hardware key 'pe_array.rowz'"),
        (lambda: ctac.hardware(overrides={"pe_array.rows": 33.5}), "must be an integer"),
        (lambda: ctac.hardware(overrides={"pe_array.rows": 0}), "positive"),
        (lambda: ctac.hardware(REPO / "nope.toml"), "cannot read hardware config"),
        (lambda: ctac.run("model.ctab"), "expected a CompiledProgram"),
        (lambda: ctac.compare([]), "expected RunResults"),
    ],
)  # fmt: skip
def test_bad_arguments_raise_ctac_error(call, message) -> None:
    with pytest.raises(CtacError, match=re.escape(message)):
        call()


def test_bad_run_arguments_raise_ctac_error(programs, runs) -> None:
    with pytest.raises(CtacError, match="no input named input_idz; the inputs are input_ids"):
        ctac.run(programs[0], {"input_idz": np.zeros((2, 16), np.int64)})
    with pytest.raises(CtacError, match="need timing_only=True"):
        ctac.run(programs[1], cluster_ratio=0.5)
    with pytest.raises(CtacError, match="cluster_ratio must be > 0"):
        ctac.run(programs[1], timing_only=True, cluster_ratio=0)
    with pytest.raises(CtacError, match="no run named 'elsa'"):
        ctac.compare(runs, baseline="elsa")
    other = ctac.run(ctac.compile(OTHER, SHAPES), timing_only=True)
    with pytest.raises(CtacError, match="different models"):
        ctac.compare({"exact": runs[0], "bert": other})


def test_readme_python_session(tmp_path: Path) -> None:
    """The README's Python session runs as shown (acceptance 1 of issue 15)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API") :]
    blocks = re.findall(r"<!-- runnable -->\s*```python\n(.*?)```", section, re.S)
    assert blocks, "no runnable Python block in the README's Python API section"
    session = blocks[0]
    assert len(session.strip().splitlines()) <= 10
    os.symlink(REPO / "tests", tmp_path / "tests")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(session, "README.md", "exec"), {})  # noqa: S102
    finally:
        os.chdir(cwd)
    assert (tmp_path / "prof-cta" / "profile.json").is_file()
