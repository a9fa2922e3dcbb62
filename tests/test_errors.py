"""User errors: one `error:` line, exit status 2, no traceback, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import MODELS
from onnx import TensorProto, helper, numpy_helper

from ctac.errors import CtacError
from ctac.importer import import_model
from ctac.model_interface import parse_shape_flags

BERT = MODELS / "bert_ts_eager.onnx"
BERT_SHAPES = "input_ids=2x16,attention_mask=2x16"


def run_ctac(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ctac", *args], capture_output=True, text=True, cwd=cwd
    )


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""


def test_truncated_model(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(BERT.read_bytes()[:20_000])
    assert_user_error(
        run_ctac("compile", str(truncated), "--shape", BERT_SHAPES), "truncated.onnx", "corrupt"
    )


def test_missing_and_empty_files(tmp_path: Path) -> None:
    assert_user_error(run_ctac("compile", str(tmp_path / "nope.onnx")), "not found")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert_user_error(run_ctac("compile", str(empty)), "empty.onnx")


def test_unsupported_ops_are_all_listed(tmp_path: Path) -> None:
    model = onnx.load(str(BERT))
    renamed = []
    for node in model.graph.node:
        if node.op_type == "Softmax":
            node.op_type = "Hardmax"
            renamed.append(node.name)
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    for node in model.graph.node:
        if node.op_type == "Erf":
            node.domain = "com.example"
            node.op_type = "FancyErf"
            renamed.append(node.name)
    path = tmp_path / "unsupported.onnx"
    onnx.save(model, str(path))
    result = run_ctac("compile", str(path), "--shape", BERT_SHAPES)
    assert_user_error(result, "4 node(s)", "(Hardmax)", "(com.example.FancyErf)")
    for name in renamed:
        assert name in result.stderr


def test_unset_symbolic_dimension_names_input_and_flag() -> None:
    assert_user_error(
        run_ctac("compile", str(BERT)),
        "'input_ids' has 'batch', 'sequence'",
        "--shape input_ids=<batch>x<sequence>,attention_mask=<batch>x<sequence>",
    )


@pytest.mark.parametrize(
    ("flag", "fragment"),
    [
        ("foo=2x16", "unknown input(s) ['foo']"),
        ("input_ids=2x16x3,attention_mask=2x16", "has rank 3"),
        ("input_ids=2xQ", "must be integers"),
        ("input_ids=0x16,attention_mask=2x16", "must be positive"),
    ],
)
def test_bad_shape_flags(flag: str, fragment: str) -> None:
    assert_user_error(run_ctac("compile", str(BERT), "--shape", flag), fragment)


def test_shape_flags_repeat_or_comma_separate() -> None:
    assert parse_shape_flags(["a=1x2", "b=3"]) == parse_shape_flags(["a=1x2,b=3"])


def test_failed_compile_leaves_no_output_file(tmp_path: Path) -> None:
    output = tmp_path / "out.mlir"
    assert_user_error(run_ctac("compile", str(BERT), "-o", str(output)), "symbolic")
    assert list(tmp_path.iterdir()) == []


def test_successful_compile_writes_readable_file(tmp_path: Path) -> None:
    output = tmp_path / "out.mlir"
    result = run_ctac(
        "compile", str(BERT), "--shape", BERT_SHAPES, "--emit", "onnx", "-o", str(output)
    )
    assert result.returncode == 0, result.stderr
    assert output.read_text().startswith("builtin.module")
    assert oct(output.stat().st_mode & 0o444) == oct(0o444)


def _external_data_model(folder: Path, location: str) -> Path:
    weight = numpy_helper.from_array(np.ones((4, 4), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_outside_model_folder_is_refused(tmp_path: Path, location: str) -> None:
    (tmp_path / "secret.bin").write_bytes(np.ones(16, np.float32).tobytes())
    path = _external_data_model(tmp_path / "model", location)
    with pytest.raises(CtacError, match="external data"):
        import_model(path)


def test_external_data_symlink_out_of_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(np.ones(16, np.float32).tobytes())
    folder = tmp_path / "model"
    path = _external_data_model(folder, "weights.bin")
    os.symlink(tmp_path / "secret.bin", folder / "weights.bin")
    with pytest.raises(CtacError, match="outside the model's folder"):
        import_model(path)


def test_external_data_inside_folder_loads(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    path = _external_data_model(folder, "weights.bin")
    (folder / "weights.bin").write_bytes(np.full(16, 2.0, np.float32).tobytes())
    imported = import_model(path)
    from ctac.runtime.evaluator import evaluate

    result = evaluate(imported.module, {"x": np.eye(4, dtype=np.float32)})["y"]
    np.testing.assert_array_equal(result, np.full((4, 4), 2.0, np.float32))


def test_external_data_shorter_than_declared_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    path = _external_data_model(folder, "weights.bin")
    (folder / "weights.bin").write_bytes(b"\0" * 10)
    with pytest.raises(CtacError, match="holds 10 bytes"):
        import_model(path)


def test_eval_of_missing_module(tmp_path: Path) -> None:
    result = run_ctac("eval", str(tmp_path / "missing.mlir"))
    assert_user_error(result, "not found")


def test_corrupt_module_text_is_a_user_error(tmp_path: Path) -> None:
    module = tmp_path / "bad.mlir"
    module.write_text("builtin.module { this is not ir }")
    assert_user_error(run_ctac("eval", str(module)), "bad.mlir")


def test_version() -> None:
    from ctac import __version__

    result = run_ctac("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"ctac {__version__}"


@pytest.mark.parametrize("command", ["profile", "run", "disasm"])
def test_a_reader_that_leaves_early_is_no_error(tmp_path: Path, command: str) -> None:
    """`ctac profile P --out D | head -1` (and run, disasm): the pipe closes after one line, yet
    the command exits 0 without an internal error and still writes its files."""
    program = tmp_path / "gpt2.ctab"
    shape = "input_ids=2x16,attention_mask=2x16"
    compiled = run_ctac("compile", str(MODELS / "gpt2_ts_eager.onnx"), "--shape", shape, "-o",
                        str(program))  # fmt: skip
    assert compiled.returncode == 0, compiled.stderr
    extra = {"profile": ["--out", str(tmp_path / "prof")], "run": [], "disasm": []}[command]
    process = subprocess.Popen(
        [sys.executable, "-m", "ctac", command, str(program), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None and process.stdout.readline()
    process.stdout.close()  # the reader leaves, as `head -1` does
    stderr = process.stderr.read() if process.stderr else ""
    assert process.wait(timeout=120) == 0, stderr
    assert "error" not in stderr
    if command == "profile":
        assert (tmp_path / "prof" / "profile.json").is_file()
        assert (tmp_path / "prof" / "trace.json").is_file()


def test_files_of_the_wrong_kind_are_named(tmp_path: Path) -> None:
    """An ONNX model where a program belongs, a folder where a model belongs, a missing module
    and a misspelt pass for ctac-opt: one clear error each, exit 2, no traceback."""
    assert_user_error(run_ctac("run", str(MODELS / "gpt2_ts_eager.onnx")), "not a ctac program",
                      "ctac compile")  # fmt: skip
    assert_user_error(run_ctac("compile", str(MODELS)), "is a directory")
    missing = subprocess.run([sys.executable, "-m", "ctac.opt", str(tmp_path / "missing.mlir")],
                             capture_output=True, text=True)  # fmt: skip
    assert_user_error(missing, "cannot read", "missing.mlir")
    module = tmp_path / "m.mlir"
    module.write_text("builtin.module {\n}\n")
    misspelt = subprocess.run([sys.executable, "-m", "ctac.opt", str(module), "-p",
                               "canonicalise"], capture_output=True, text=True)  # fmt: skip
    assert_user_error(misspelt, "canonicalise", "canonicalize")
    # An option the pass does not have, and a mistyped one (xDSL's ValueErrors, once tracebacks).
    for spec, named in (("onnx-canonicalize{x=1}", '"x"'), ("cta-compress{tau-q=yes}", "yes")):
        bad = subprocess.run([sys.executable, "-m", "ctac.opt", str(module), "-p", spec],
                             capture_output=True, text=True)  # fmt: skip
        assert_user_error(bad, "bad pass options", named)


def test_a_misspelt_input_name_is_an_error(tmp_path: Path) -> None:
    """`--input idz=x.npy` used to leave input_ids random and exit 0."""
    program = tmp_path / "gpt2.ctab"
    assert run_ctac("compile", str(MODELS / "gpt2_ts_eager.onnx"), "--shape",
                    "input_ids=2x16,attention_mask=2x16", "-o", str(program)).returncode == 0  # fmt: skip
    np.save(tmp_path / "ids.npy", np.zeros((2, 16), dtype=np.int64))
    for command in (["run", str(program)], ["profile", str(program), "--out", str(tmp_path / "p")]):
        result = run_ctac(*command, "--input", f"idz={tmp_path / 'ids.npy'}")
        assert_user_error(result, "--input idz", "input_ids", "attention_mask")
    assert run_ctac("run", str(program), "--input",
                    f"input_ids={tmp_path / 'ids.npy'}").returncode == 0  # fmt: skip


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tau", "0.4"], "--tau applies only to --attention cta, but this compile is --attention exact"),
        (["--attention", "elsa", "--tau-kv", "0.2", "--cta-policy", "always"],
         "--tau-kv, --cta-policy apply only to --attention cta"),
        (["--attention", "cta", "--elsa-bits", "8"], "--elsa-bits applies only to --attention elsa"),
        (["--attention", "cta", "--tau", "7"], "--tau 7 is out of range"),
        (["--attention", "cta", "--tau-kv", "-0.1"], "--tau-kv -0.1 is out of range"),
    ],
)  # fmt: skip
def test_compile_refuses_flags_its_mode_ignores(flags, message, tmp_path, capsys) -> None:
    """A compression flag the chosen --attention mode ignores, or a threshold out of range, is
    one error line naming the fix; nothing is written (it used to be silently accepted)."""
    from ctac.cli import main

    out = tmp_path / "p.ctab"
    argv = ["compile", str(MODELS / "bert_ts_eager.onnx"), "--shape",
            "input_ids=2x16,attention_mask=2x16", *flags, "-o", str(out)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and message in err, err
    assert not out.exists()
