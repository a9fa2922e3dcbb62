"""Issue 17, the IR side: one test (or a few) per class; a refused input gives exit status 2, one
`error:` line and writes nothing.

1 computed tensors are size-checked; 2 negative axes in the reference evaluator; 3 compile refuses
what the program loader would; 4 outputs named like np.savez's parameters; 8 hostile --input
files; 11 --compare on a model without outputs; 14 --compare reads the model through ctac's
checked loader.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ctac.errors import CtacError
from ctac.importer import import_model
from ctac.runtime.evaluator import evaluate


def run_ctac(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ctac", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def save_model(path: Path, nodes, inputs, outputs, initializers=(), opset: int = 17) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return path


def value(name: str, element: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, element, shape)


def ints(name: str, values) -> TensorProto:
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], list(values))


def relu_model(tmp_path: Path, output: str = "y", element: int = TensorProto.FLOAT) -> Path:
    return save_model(
        tmp_path / f"relu_{output}.onnx",
        [helper.make_node("Relu", ["x"], [output])],
        [value("x", element, [2, 3])],
        [value(output, element, [2, 3])],
    )


def gather_model(tmp_path: Path) -> Path:
    table = numpy_helper.from_array(np.arange(40, dtype=np.float32).reshape(10, 4), "table")
    return save_model(
        tmp_path / "gather.onnx",
        [helper.make_node("Gather", ["table", "ids"], ["y"])],
        [value("ids", TensorProto.INT64, [2, 3])],
        [value("y", TensorProto.FLOAT, [2, 3, 4])],
        [table],
    )


def compiled(tmp_path: Path, model: Path) -> Path:
    program = model.with_suffix(".ctab")
    result = run_ctac("compile", str(model), "-o", str(program))
    assert result.returncode == 0, result.stderr
    return program


def without_model_record(program: Path) -> Path:
    """The program as an older ctac wrote it, recording no model: `--compare` then takes any
    model, so what onnxruntime's loader refuses can be tested with another model."""
    from ctac.runtime.program import read_program, write_program

    loaded = read_program(program)
    loaded.model = None
    write_program(loaded, program)
    return program


# --- class 1: computed tensors are size-checked -------------------------------------------------


def expand_model(tmp_path: Path) -> Path:
    return save_model(
        tmp_path / "expand.onnx",
        [helper.make_node("Expand", ["x", "s"], ["y"])],
        [value("x", TensorProto.FLOAT, [1, 1, 8])],
        [value("y", TensorProto.FLOAT, [2**20, 2**20, 8])],
        [ints("s", [2**20, 2**20, 8])],
    )


def constant_of_shape_model(tmp_path: Path) -> Path:
    return save_model(
        tmp_path / "cos.onnx",
        [
            helper.make_node("ConstantOfShape", ["s"], ["c"]),
            helper.make_node("Add", ["c", "x"], ["y"]),
        ],
        [value("x", TensorProto.FLOAT, [1])],
        [value("y", TensorProto.FLOAT, [2**16, 2**16, 2**10])],
        [ints("s", [2**16, 2**16, 2**10])],
    )


@pytest.mark.parametrize("make", [expand_model, constant_of_shape_model])
def test_computed_tensor_over_the_cap_is_refused_by_compile(tmp_path: Path, make) -> None:
    model = make(tmp_path)
    out = tmp_path / "out.ctab"
    result = run_ctac("compile", str(model), "-o", str(out))
    assert_refused(result, "over the cap of 4294967296", "--max-tensor-bytes")
    assert not out.exists()
    # The onnx module alone is refused too: the cap is on every value's static type.
    result = run_ctac("compile", str(model), "--emit", "onnx", "-o", str(tmp_path / "m.mlir"))
    assert_refused(result, "over the cap")
    assert not (tmp_path / "m.mlir").exists()


def test_computed_tensor_respects_a_small_cap(tmp_path: Path) -> None:
    model = save_model(
        tmp_path / "small.onnx",
        [helper.make_node("Expand", ["x", "s"], ["y"])],
        [value("x", TensorProto.FLOAT, [1, 8])],
        [value("y", TensorProto.FLOAT, [1024, 8])],
        [ints("s", [1024, 8])],
    )
    with pytest.raises(CtacError, match="would hold 32768 bytes, over the cap of 1000"):
        import_model(model, max_tensor_bytes=1000)
    assert import_model(model, max_tensor_bytes=32768).output_names == ["y"]


def test_eval_refuses_a_module_with_a_huge_value(tmp_path: Path) -> None:
    model = expand_model(tmp_path)
    module = tmp_path / "expand.mlir"
    result = run_ctac(
        "compile", str(model), "--emit", "onnx", "--max-tensor-bytes", str(2**50), "-o", str(module)
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out.npz"
    result = run_ctac("eval", str(module), "-o", str(out))
    assert_refused(result, "value 'y' (onnx.Expand)", "over the cap")
    assert not out.exists()


# --- class 2: negative axes in the reference evaluator -------------------------------------------

NEGATIVE_AXIS_CASES = [
    ("Flatten", {"axis": -1}, [[2, 3, 4, 5]], [24, 5]),
    ("Flatten", {"axis": -3}, [[2, 3, 4, 5]], [2, 60]),
    ("Flatten", {"axis": -4}, [[2, 3, 4, 5]], [1, 120]),
    ("Softmax", {"axis": -2}, [[2, 3, 4]], [2, 3, 4]),
    ("Concat", {"axis": -2}, [[2, 3, 4], [2, 5, 4]], [2, 8, 4]),
    ("Gather", {"axis": -1}, [[2, 3, 4]], [2, 3, 2]),
    ("CumSum", {}, [[2, 3, 4]], [2, 3, 4]),
    ("Split", {"axis": -1, "num_outputs": 2}, [[2, 3, 4]], [2, 3, 2]),
    ("LogSoftmax", {"axis": -2}, [[2, 3, 4]], [2, 3, 4]),
    ("ReduceSum", {"keepdims": 0}, [[2, 3, 4]], [2, 4]),
    ("Unsqueeze", {}, [[2, 3]], [2, 3, 1]),
    ("Squeeze", {}, [[2, 1, 3]], [2, 3]),
    ("Slice", {}, [[2, 3, 4]], [2, 3, 2]),
    ("LayerNormalization", {"axis": -2}, [[2, 3, 4]], [2, 3, 4]),
]


@pytest.mark.parametrize(
    "op, attributes, shapes, out_shape",
    NEGATIVE_AXIS_CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(NEGATIVE_AXIS_CASES)],
)
def test_negative_axes_match_onnxruntime(tmp_path, op, attributes, shapes, out_shape) -> None:
    import onnxruntime as ort

    names = [f"x{i}" for i in range(len(shapes))]
    extra_inputs, initializers = [], []
    if op == "Gather":
        initializers = [ints("idx", [3, -4])]
        extra_inputs = ["idx"]
    elif op == "CumSum":
        initializers = [ints("axis", [-2])]
        extra_inputs = ["axis"]
    elif op in ("ReduceSum", "Squeeze"):
        initializers = [ints("axes", [-2])]
        extra_inputs = ["axes"]
    elif op == "Unsqueeze":
        initializers = [ints("axes", [-1])]
        extra_inputs = ["axes"]
    elif op == "Slice":
        initializers = [ints("st", [-3]), ints("en", [-1]), ints("ax", [-1])]
        extra_inputs = ["st", "en", "ax"]
    elif op == "LayerNormalization":
        initializers = [
            numpy_helper.from_array(np.full((3, 4), 1.5, np.float32), "scale"),
        ]
        extra_inputs = ["scale"]
    outputs = ["y", "z"] if op == "Split" else ["y"]
    opset = 18 if op in ("Split", "ReduceSum") else 17
    node = helper.make_node(op, names + extra_inputs, outputs, **attributes)
    model = save_model(
        tmp_path / "m.onnx",
        [node],
        [value(n, TensorProto.FLOAT, s) for n, s in zip(names, shapes, strict=True)],
        [value(o, TensorProto.FLOAT, out_shape) for o in outputs],
        initializers,
        opset=opset,
    )
    rng = np.random.default_rng(0)
    feeds = {
        n: rng.standard_normal(s).astype(np.float32) for n, s in zip(names, shapes, strict=True)
    }
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    got = evaluate(import_model(model).module, feeds)
    for name, want in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6)


def test_flatten_negative_axis_in_ctac_eval(tmp_path: Path) -> None:
    model = save_model(
        tmp_path / "flatten.onnx",
        [helper.make_node("Flatten", ["x"], ["y"], axis=-1)],
        [value("x", TensorProto.FLOAT, [2, 3, 4, 5])],
        [value("y", TensorProto.FLOAT, [24, 5])],
    )
    module = tmp_path / "flatten.mlir"
    assert run_ctac("compile", str(model), "--emit", "onnx", "-o", str(module)).returncode == 0
    x = np.arange(120, dtype=np.float32).reshape(2, 3, 4, 5)
    np.save(tmp_path / "x.npy", x)
    result = run_ctac(
        "eval", str(module), "--input", f"x={tmp_path / 'x.npy'}", "-o", str(tmp_path / "o.npz")
    )
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "o.npz")["y"], x.reshape(24, 5))


# --- class 3: compile refuses what the loader refuses --------------------------------------------


@pytest.mark.parametrize(
    "element, name", [(TensorProto.DOUBLE, "float64"), (TensorProto.INT16, "int16")]
)
def test_compile_refuses_input_dtypes_the_program_cannot_hold(tmp_path, element, name) -> None:
    model = save_model(
        tmp_path / "m.onnx",
        [helper.make_node("Identity", ["x"], ["y"])],
        [value("x", element, [2, 3])],
        [value("y", element, [2, 3])],
    )
    for emit, out in (("ctab", tmp_path / "m.ctab"), ("asm", tmp_path / "m.s")):
        result = run_ctac("compile", str(model), "--emit", emit, "-o", str(out))
        assert_refused(result, f"input 'x' is {name}", "float32")
        assert not out.exists()


def test_compile_refuses_zero_size_outputs(tmp_path: Path) -> None:
    model = save_model(
        tmp_path / "m.onnx",
        [helper.make_node("Shape", ["x"], ["y"], start=2, end=1)],
        [value("x", TensorProto.FLOAT, [2, 3, 4])],
        [value("y", TensorProto.INT64, [0])],
    )
    out = tmp_path / "m.ctab"
    result = run_ctac("compile", str(model), "-o", str(out))
    assert_refused(result, "output 'y' has shape [0] with no elements")
    assert not out.exists()


# --- class 4: an output named like np.savez's parameters -----------------------------------------


@pytest.mark.parametrize("output", ["file", "allow_pickle", "args"])
def test_outputs_named_like_savez_parameters(tmp_path: Path, output: str) -> None:
    model = relu_model(tmp_path, output)
    program = compiled(tmp_path, model)
    out = tmp_path / "run.npz"
    result = run_ctac("run", str(program), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert list(np.load(out)) == [output]
    module = tmp_path / "m.mlir"
    assert run_ctac("compile", str(model), "--emit", "onnx", "-o", str(module)).returncode == 0
    out = tmp_path / "eval.npz"
    result = run_ctac("eval", str(module), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert np.load(out)[output].shape == (2, 3)


# --- class 8: hostile --input files ---------------------------------------------------------------


def _npy_with_header(path: Path, descr: str, shape: tuple, data: bytes = b"\0" * 16) -> Path:
    with open(path, "wb") as stream:
        header = {"descr": descr, "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(stream, header)
        stream.write(data)
    return path


HOSTILE_INPUTS = {
    "string": (lambda p: np.save(p, np.array([["a", "b", "c"]] * 2)), "holds <U1 values"),
    "structured": (
        lambda p: np.save(p, np.zeros((2, 3), dtype=[("a", "i4"), ("b", "f4")])),
        "inputs must be numbers",
    ),
    "complex": (lambda p: np.save(p, np.zeros((2, 3), complex)), "holds complex128"),
    "object": (
        lambda p: _npy_with_header(p, "|O", (2, 3)),
        "holds object values",
    ),
    "huge_header": (
        lambda p: _npy_with_header(p, "<f4", (10**12,)),
        "declares 4000000000000 bytes",
    ),
    "truncated": (lambda p: _npy_with_header(p, "<f4", (2, 3)), "(truncated)"),
    "wrong_shape": (lambda p: np.save(p, np.zeros((3, 2), np.float32)), "has shape (3, 2)"),
    "not_npy": (lambda p: p.write_bytes(b"hello"), "cannot read"),
}


@pytest.mark.parametrize("kind", list(HOSTILE_INPUTS))
def test_hostile_input_files_are_refused(tmp_path: Path, kind: str) -> None:
    model = relu_model(tmp_path)
    program = compiled(tmp_path, model)
    write, fragment = HOSTILE_INPUTS[kind]
    path = tmp_path / "x.npy"
    write(path)
    out = tmp_path / "o.npz"
    result = run_ctac("run", str(program), "--input", f"x={path}", "-o", str(out))
    assert_refused(result, "--input x", fragment)
    assert not out.exists()


def test_evaluate_refuses_non_numeric_arrays(tmp_path: Path) -> None:
    module = import_model(relu_model(tmp_path)).module
    for array in (np.full((2, 3), "a"), np.zeros((2, 3), complex), np.zeros((2, 3), "V4")):
        with pytest.raises(CtacError, match="input 'x' holds"):
            evaluate(module, {"x": array})


def test_big_endian_and_other_float_widths_are_converted(tmp_path: Path) -> None:
    model = relu_model(tmp_path)
    program = compiled(tmp_path, model)
    x = np.arange(-3, 3, dtype=">f8").reshape(2, 3)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "o.npz"
    result = run_ctac(
        "run", str(program), "--input", f"x={tmp_path / 'x.npy'}", "--compare", str(model),
        "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "max abs err 0" in result.stdout
    np.testing.assert_array_equal(np.load(out)["y"], np.maximum(x, 0).astype(np.float32))


def test_float_token_ids_are_refused_not_truncated(tmp_path: Path) -> None:
    model = gather_model(tmp_path)
    program = compiled(tmp_path, model)
    np.save(tmp_path / "ids.npy", np.array([[1.5, 2, 3], [4, 5, 6]]))
    result = run_ctac("run", str(program), "--input", f"ids={tmp_path / 'ids.npy'}")
    assert_refused(result, "takes int64 values but the file holds float64")
    module = tmp_path / "g.mlir"
    assert run_ctac("compile", str(model), "--emit", "onnx", "-o", str(module)).returncode == 0
    result = run_ctac("eval", str(module), "--input", f"ids={tmp_path / 'ids.npy'}")
    assert_refused(result, "takes int64 values")


def test_other_integer_widths_are_converted_under_compare(tmp_path: Path) -> None:
    model = gather_model(tmp_path)
    program = compiled(tmp_path, model)
    np.save(tmp_path / "ids.npy", np.array([[1, 2, 3], [4, 5, 9]], dtype=np.int32))
    result = run_ctac(
        "run", str(program), "--input", f"ids={tmp_path / 'ids.npy'}", "--compare", str(model)
    )
    assert result.returncode == 0, result.stderr
    assert "max abs err 0" in result.stdout
    np.save(tmp_path / "ids.npy", np.array([[1, 2, 3], [4, 5, 2**63]], dtype=np.uint64))
    result = run_ctac("run", str(program), "--input", f"ids={tmp_path / 'ids.npy'}")
    assert_refused(result, "outside the range")


# --- class 11: --compare on a model without outputs ------------------------------------------------


def test_compare_with_a_model_without_outputs(tmp_path: Path) -> None:
    model = relu_model(tmp_path)
    program = without_model_record(compiled(tmp_path, model))
    empty = save_model(
        tmp_path / "empty.onnx",
        [helper.make_node("Relu", ["x"], ["y"])],
        [value("x", TensorProto.FLOAT, [2, 3])],
        [],
    )
    result = run_ctac("run", str(program), "--compare", str(empty))
    assert_refused(result, "has no outputs to compare")


# --- class 14: --compare loads the model through ctac's checked loader -----------------------------


def test_compare_refuses_external_data_outside_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    model_path = save_model(
        folder / "m.onnx",
        [helper.make_node("Add", ["x", "w"], ["y"])],
        [value("x", TensorProto.FLOAT, [2, 3])],
        [value("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(np.ones((2, 3), np.float32), "w")],
    )
    program = without_model_record(compiled(tmp_path, model_path))
    (tmp_path / "secret.bin").write_bytes(np.arange(6, dtype=np.float32).tobytes())
    model = onnx.load(str(model_path))
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, val in (("location", "../secret.bin"), ("offset", "0"), ("length", "24")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, val
    onnx.save(model, str(model_path))
    result = run_ctac("run", str(program), "--compare", str(model_path))
    assert_refused(result, "points outside the model's folder")
