"""What a program file records of its making (issue 15): the model it was compiled from (so
`ctac run --compare` refuses another model) and its hardware config (so run, profile and disasm
need no --hw); and the misuses around them: one `error:` line, exit status 2, nothing written."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import MODELS

from ctac.cli import main
from ctac.errors import CtacError
from ctac.files import file_sha256
from ctac.hw import load_hardware
from ctac.runtime.assembly import assemble, disassemble
from ctac.runtime.program import (
    decode_program,
    encode_program,
    read_program,
    write_program,
)

BERT = MODELS / "bert_ts_eager.onnx"
GPT2 = MODELS / "gpt2_ts_eager.onnx"
SHAPE = "input_ids=1x16,attention_mask=1x16"


def user_error(argv: list[str], capsys) -> str:
    """Run the CLI expecting a user error; its one `error:` line."""
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert captured.out == ""
    return lines[0]


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> dict[str, Path]:
    """BERT compiled for ctac's default config and for a copy of it with another hash (a comment
    added: the same machine, another file), and the latter without its records (an older file)."""
    folder = tmp_path_factory.mktemp("records")
    config = folder / "copy.toml"
    config.write_text(load_hardware().text + "\n# a copy\n")
    default, other = folder / "bert.ctab", folder / "bert_copy.ctab"
    assert main(["compile", str(BERT), "--shape", SHAPE, "-o", str(default)]) == 0
    argv = ["compile", str(BERT), "--shape", SHAPE, "--hw", str(config), "-o", str(other)]
    assert main(argv) == 0
    old = folder / "bert_old.ctab"
    program = read_program(other)
    write_program(dataclasses.replace(program, model=None, hardware=None), old)
    return {"default": default, "copy": other, "old": old, "config": config}


def test_program_records_model_and_hardware(programs) -> None:
    program = read_program(programs["copy"])
    assert program.model == {"path": str(BERT.resolve()), "sha256": file_sha256(BERT)}
    assert program.hardware is not None
    assert program.hardware["toml"] == programs["config"].read_text()
    assert program.hardware["path"] == str(programs["config"])


def test_compare_with_another_model_is_refused(programs, tmp_path, capsys) -> None:
    """`ctac run P --compare OTHER.onnx` used to print "max abs err 4.58" and exit 0."""
    out = tmp_path / "out.npz"
    line = user_error(
        ["run", str(programs["default"]), "--compare", str(GPT2), "-o", str(out)], capsys
    )
    assert str(GPT2) in line and str(BERT.resolve()) in line and "SHA-256" in line, line
    assert not out.exists()


def test_compare_with_its_model_and_without_a_record(programs, capsys) -> None:
    assert main(["run", str(programs["default"]), "--compare", str(BERT)]) == 0
    assert "vs onnxruntime" in capsys.readouterr().out
    # An older program (no model record) is compared as given.
    argv = ["run", str(programs["old"]), "--hw", str(programs["config"]), "--compare", str(BERT)]
    assert main(argv) == 0
    assert "vs onnxruntime" in capsys.readouterr().out


def test_run_profile_disasm_need_no_hw(programs, tmp_path, capsys) -> None:
    """A program compiled with --hw FILE runs, profiles and disassembles without it."""
    program = str(programs["copy"])
    assert main(["run", program]) == 0
    assert main(["profile", program, "--out", str(tmp_path / "prof"), "--timing-only"]) == 0
    assert (tmp_path / "prof" / "profile.json").is_file()
    assert main(["disasm", program, "--no-data", "-o", str(tmp_path / "p.s")]) == 0
    assert ".hardware" in (tmp_path / "p.s").read_text()
    # the same file given again is accepted
    assert main(["run", program, "--hw", str(programs["config"])]) == 0


@pytest.mark.parametrize("command", ["run", "profile", "disasm"])
def test_hw_other_than_the_embedded_one_is_refused(programs, tmp_path, capsys, command) -> None:
    out = tmp_path / "out"
    extra = {"run": ["-o", str(out)], "profile": ["--out", str(out)], "disasm": ["-o", str(out)]}
    # ctac's default config is not the one the program embeds (a copy with another hash)
    default = tmp_path / "default.toml"
    default.write_text(load_hardware().text)
    argv = [command, str(programs["copy"]), "--hw", str(default), *extra[command]]
    line = user_error(argv, capsys)
    assert "--hw" in line and "is not the hardware config" in line and "leave --hw out" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["default.toml"]


def test_older_program_still_needs_its_hw(programs, tmp_path, capsys) -> None:
    """Without an embedded config, the default (or --hw) is used as before."""
    out = tmp_path / "out.npz"
    line = user_error(["run", str(programs["old"]), "-o", str(out)], capsys)
    assert "compiled for another hardware config" in line
    assert not out.exists()
    assert main(["run", str(programs["old"]), "--hw", str(programs["config"])]) == 0


def test_records_survive_disasm_and_asm_byte_for_byte(programs) -> None:
    blob = programs["copy"].read_bytes()
    text = disassemble(decode_program(blob))
    assert ".model " in text and ".toml " in text
    assert encode_program(assemble(text)) == blob


def test_tampered_embedded_config_is_corrupt(programs) -> None:
    program = read_program(programs["copy"])
    assert program.hardware is not None
    bad = dataclasses.replace(program, hardware={"path": "x", "toml": "[accelerator]\n"})
    with pytest.raises(CtacError, match="embedded hardware config does not match"):
        decode_program(encode_program(bad))
    text = disassemble(program).replace('.toml ""', '.toml "# edited"', 1)
    with pytest.raises(CtacError, match="not the hardware config of .hw"):
        assemble(text)
    with pytest.raises(CtacError, match="'model' must be"):
        decode_program(encode_program(dataclasses.replace(program, model={"path": "m"})))


# ---------------------------------------------------------------------------------------------
# -o's extension decides what `ctac compile` writes, unless --emit says, never contradicting it
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, start",
    [("m.mlir", "builtin.module"), ("m.s", "; ctac CTA-ISA assembly"), ("m.ctab", "CTAB")],
)
def test_output_extension_decides_the_format(tmp_path, name, start) -> None:
    """`-o model.mlir` (an example in `--help`) used to write a binary program."""
    out = tmp_path / name
    assert main(["compile", str(BERT), "--shape", SHAPE, "-o", str(out)]) == 0
    head = out.read_bytes()[:200].decode(errors="replace")
    assert head.startswith(start), head
    if name == "m.mlir":
        assert "ctaisa." in out.read_text()


@pytest.mark.parametrize(
    "emit, name", [("ctab", "x.mlir"), ("asm", "x.ctab"), ("isa", "x.s"), ("onnx", "x.ctab")]
)
def test_emit_contradicting_the_extension_is_refused(tmp_path, capsys, emit, name) -> None:
    out = tmp_path / name
    argv = ["compile", str(BERT), "--shape", SHAPE, "--emit", emit, "-o", str(out)]
    line = user_error(argv, capsys)
    assert f"--emit {emit}" in line and name in line and "leave --emit out" in line, line
    assert list(tmp_path.iterdir()) == []


def test_emit_agreeing_with_the_extension(tmp_path) -> None:
    out = tmp_path / "detected.mlir"
    assert main(["compile", str(BERT), "--shape", SHAPE, "--emit", "cta", "-o", str(out)]) == 0
    assert "cta.attention" in out.read_text()


# ---------------------------------------------------------------------------------------------
# A sequence longer than the model's position table is named as such
# ---------------------------------------------------------------------------------------------


def test_sequence_longer_than_the_position_table(tmp_path, capsys) -> None:
    """It used to fail inside shape inference ("node '/model/embeddings/Expand_1' (Expand): ONNX
    shape inference failed")."""
    out = tmp_path / "long.ctab"
    argv = ["compile", str(BERT), "--shape", "input_ids=1x129,attention_mask=1x129", "-o", str(out)]
    line = user_error(argv, capsys)
    assert "input_ids: 129 tokens > the model's 128 positions" in line, line
    assert "position table 'model.embeddings.position_embeddings.weight' has 128 rows" in line
    assert "import failed with: node '/model/embeddings/Expand_1'" in line  # the cause
    assert not out.exists()


@pytest.mark.parametrize(
    "model, shapes, fragment",
    [
        ("gpt2_ts_eager", {"input_ids": [1, 129], "attention_mask": [1, 129]},
         "129 tokens > the model's 128 positions (position table 'model.wpe.weight' has 128 rows)"),
        ("bart_ts_eager",
         {"input_ids": [1, 129], "attention_mask": [1, 129], "decoder_input_ids": [1, 8]},
         "128 positions (position table 'model.encoder.embed_positions.weight' has 130 rows, "
         "the first 2 an offset)"),
    ],
)  # fmt: skip
def test_position_tables_of_other_models(model, shapes, fragment) -> None:
    from ctac.importer import import_model

    with pytest.raises(CtacError, match="input_ids: 129 tokens") as caught:
        import_model(MODELS / f"{model}.onnx", shapes)
    assert fragment in str(caught.value)
    # at the table's length it imports
    import_model(
        MODELS / f"{model}.onnx", {k: [1, 128] if v[1] == 129 else v for k, v in shapes.items()}
    )


# ---------------------------------------------------------------------------------------------
# Profile plots: --format png|svg|pdf, titled with the program, its model and the run
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("plot_format, magic", [("svg", b"<?xml"), ("pdf", b"%PDF"), ("png", b"\x89PNG")])  # fmt: skip
def test_profile_plot_format_and_title(programs, tmp_path, plot_format, magic) -> None:
    out = tmp_path / "prof"
    argv = ["profile", str(programs["default"]), "--out", str(out), "--timing-only",
            "--cluster-ratio", "0.5", "--format", plot_format]  # fmt: skip
    assert main(argv) == 0
    for name in ("cycles_per_layer", "energy_per_layer"):
        assert (out / f"{name}.{plot_format}").read_bytes().startswith(magic)
    assert sorted(p.suffix for p in out.iterdir()).count(f".{plot_format}") == 2
    if plot_format == "svg":  # matplotlib keeps each text as a comment beside its paths
        import re

        svg = (out / "cycles_per_layer.svg").read_text()
        text = " ".join(re.findall(r"<!-- (.*?) -->", svg))  # the title wraps over comments
        assert "bert.ctab, model bert_ts_eager.onnx" in text
        assert "timing only, 0.5 clusters per token" in text


def test_profile_plot_format_is_checked(programs, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["profile", str(programs["default"]), "--out", str(tmp_path / "p"), "--format", "jpg"])
    assert caught.value.code == 2 and "invalid choice: 'jpg'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_every_json_result_carries_one_provenance_record(tmp_path: Path, capsys) -> None:
    """run --json, profile.json, compare --json and the API's to_dict carry one flat provenance
    record (ctac.api.provenance): the same keys and, for the same model and hardware, the same
    values; only `program` (the file run) and `settings` (how it ran) differ."""
    import json

    import pandas as pd

    import ctac
    from ctac import __version__

    model = MODELS / "bert_ts_eager.onnx"
    shapes = "input_ids=2x16,attention_mask=2x16"
    program = tmp_path / "p.ctab"
    assert main(["compile", str(model), "--shape", shapes, "-o", str(program)]) == 0
    capsys.readouterr()
    assert main(["run", str(program), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "model" not in report  # the model is the provenance's, not a second record
    assert main(["profile", str(program), "--out", str(tmp_path / "prof")]) == 0
    profile = json.loads((tmp_path / "prof" / "profile.json").read_text())["provenance"]
    capsys.readouterr()
    assert main(["compare", str(model), "--shape", shapes, "--json"]) == 0
    compare = json.loads(capsys.readouterr().out)["provenance"]
    api_run = ctac.run(ctac.compile(model, {"input_ids": (2, 16), "attention_mask": (2, 16)}))
    records = {
        "run --json": report["provenance"],
        "profile.json": profile,
        "compare --json": compare,
        "ctac.run": api_run.to_dict()["provenance"],
        "ctac.profile": ctac.profile(api_run).to_dict()["provenance"],
        "ctac.compare": ctac.compare([api_run]).to_dict()["modes"][0]["provenance"],
    }
    hw = load_hardware()
    identity = {
        "model_path": str(model.resolve()),
        "model_sha256": file_sha256(model),
        "hardware": "cta-default",
        "hardware_config": hw.path,
        "hardware_sha256": hw.digest.hex(),
        "ctac_version": __version__,
    }
    for name, record in records.items():
        assert set(record) == {*identity, "program", "settings"}, name
        assert {key: record[key] for key in identity} == identity, name
    assert report["provenance"]["program"] == profile["program"] == str(program)
    assert compare["program"] is None and records["ctac.run"]["program"] is None
    # how each ran: `ctac profile` and ctac.run record a run alike (ctac.api.run_settings)
    assert profile["settings"] == {"timing_only": False, "seed": 0}
    assert {"timing_only": False, "seed": 0}.items() <= records["ctac.run"]["settings"].items()
    assert report["provenance"]["settings"] == {"seed": 0, "inputs": []}
    assert compare["settings"]["tau"] == 0.5 and compare["settings"]["seed"] == 0
    # flat identity keys: the records are one pandas table, a column per key
    table = pd.json_normalize(list(records.values()))
    assert len(table) == 6 and table["model_sha256"].nunique() == 1
    assert table["hardware_sha256"].nunique() == 1 and "settings.tau" in table.columns
