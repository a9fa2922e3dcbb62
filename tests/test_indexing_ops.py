"""ScatterND, ScatterElements and Resize (issue 14): the reference semantics
(runtime/reference_indexing.py) and the compiled programs (passes/lower_to_isa/indexing.py)
against onnxruntime on small graphs, and against the ONNX node suite's Resize expectations
with their scales/sizes/roi made constant (the suite's own cases feed them as inputs, which
ctac refuses: the output shape would depend on input values)."""

from __future__ import annotations

import re
import warnings
from functools import cache
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import FP32_HW, fp32_same_capacity
from onnx import TensorProto, helper, numpy_helper

from ctac.dialects import onnx as ox
from ctac.emit import program_from_module
from ctac.errors import CtacError
from ctac.hw import hardware_from_text, load_hardware
from ctac.importer import import_model
from ctac.passes.lower_to_isa import lower_module
from ctac.pipeline import run_passes
from ctac.runtime.evaluator import evaluate
from ctac.runtime.interpreter import run_program

CAPACITIES = {b.index: b.capacity for b in FP32_HW.buffers}
rng = np.random.default_rng(14)
F = TensorProto.FLOAT
REDUCTIONS = ["none", "add", "mul", "max", "min"]


def _save(nodes, inputs, outputs, initializers, path: Path, opset: int = 19) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, path)
    return path


def _onnxruntime(path: Path, feeds: dict) -> dict:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def _compile(path: Path):
    module = import_model(path).module
    run_passes(module, "onnx-canonicalize")
    return module


def _accelerate(module, feeds: dict) -> tuple[dict, list[str]]:
    """Outputs of the compiled program, and the names of the instructions it ran."""
    program = program_from_module(lower_module(module, FP32_HW))
    outputs, _ = run_program(program, CAPACITIES, feeds)
    return outputs, [name for name, _ in program.instructions]


def _check(path: Path, feeds: dict, accelerator: bool = True, rtol: float = 1e-5) -> list[str]:
    expected = _onnxruntime(path, feeds)
    module = _compile(path)
    got = evaluate(module, feeds)
    machine, names = _accelerate(module, feeds) if accelerator else ({}, [])
    for name, want in expected.items():
        np.testing.assert_allclose(got[name], want, rtol=rtol, atol=1e-5, err_msg="reference")
        if accelerator:
            np.testing.assert_allclose(machine[name], want, rtol=rtol, atol=1e-5, err_msg="isa")
    return names


def _scatter_nd_graph(tmp_path, reduction, indices, data_shape, updates_shape, constant):
    inputs = [helper.make_tensor_value_info("data", F, data_shape)]
    inputs.append(helper.make_tensor_value_info("updates", F, updates_shape))
    initializers = [numpy_helper.from_array(indices, "indices")] if constant else []
    if not constant:
        inputs.append(helper.make_tensor_value_info("indices", TensorProto.INT64, indices.shape))
    node = helper.make_node("ScatterND", ["data", "indices", "updates"], ["y"], reduction=reduction)
    out = [helper.make_tensor_value_info("y", F, data_shape)]
    return _save([node], inputs, out, initializers, tmp_path / "scatter_nd.onnx")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_scatter_nd_constant_indices(reduction: str, tmp_path: Path) -> None:
    """Slices of a (4, 3, 5) tensor by (row, column) pairs, negative ones among them; every
    reduction but none hits one slice twice (ONNX combines duplicates in order)."""
    pairs = [[0, 1], [-1, 2], [2, -3], [1, 0]] if reduction == "none" else [[0, 1], [-1, 2], [0, 1]]
    indices = np.array(pairs, dtype=np.int64)
    updates_shape = [len(pairs), 5]
    path = _scatter_nd_graph(tmp_path, reduction, indices, [4, 3, 5], updates_shape, True)
    feeds = {
        "data": rng.standard_normal((4, 3, 5)).astype(np.float32),
        "updates": rng.standard_normal(updates_shape).astype(np.float32),
    }
    names = _check(path, feeds)
    # constant indices: DMA runs at fixed addresses (and VEC for the reductions), no scatter unit
    assert "SCATTER_ADD" not in names and "GATHER_BUF" not in names
    assert ("VEC" in names) == (reduction != "none")


@pytest.mark.parametrize("reduction", ["none", "add"])
def test_scatter_nd_runtime_indices(reduction: str, tmp_path: Path) -> None:
    """Indices as a graph input: linearised on the vector unit, then SCATTER_ADD."""
    indices = np.array([[[1], [-3]], [[4], [0]]], dtype=np.int64)  # (2, 2, 1): rows of (5, 6)
    if reduction == "add":
        indices[1, 1, 0] = 1  # a duplicate: add accumulates both
    path = _scatter_nd_graph(tmp_path, reduction, indices, [5, 6], [2, 2, 6], False)
    feeds = {
        "data": rng.standard_normal((5, 6)).astype(np.float32),
        "updates": rng.standard_normal((2, 2, 6)).astype(np.float32),
        "indices": indices,
    }
    names = _check(path, feeds)
    assert "SCATTER_ADD" in names


def test_scatter_nd_runtime_index_tuples(tmp_path: Path) -> None:
    """Run-time (row, column) pairs of a (4, 5, 3) tensor, negative components among them:
    the tuple is wrapped per axis and linearised (Horner) on the vector unit."""
    indices = np.array([[0, -1], [3, 2], [-3, 0], [2, -5]], dtype=np.int64)
    path = _scatter_nd_graph(tmp_path, "add", indices, [4, 5, 3], [4, 3], False)
    feeds = {
        "data": rng.standard_normal((4, 5, 3)).astype(np.float32),
        "updates": rng.standard_normal((4, 3)).astype(np.float32),
        "indices": indices,
    }
    assert "SCATTER_ADD" in _check(path, feeds)


def test_scatter_nd_full_index_depth(tmp_path: Path) -> None:
    """Index tuples as deep as data's rank: single elements."""
    indices = np.array([[0, 0, 1], [3, 2, -1], [1, -2, 4]], dtype=np.int64)
    path = _scatter_nd_graph(tmp_path, "add", indices, [4, 3, 5], [3], True)
    feeds = {
        "data": rng.standard_normal((4, 3, 5)).astype(np.float32),
        "updates": rng.standard_normal(3).astype(np.float32),
    }
    _check(path, feeds)


def _scatter_elements_graph(tmp_path, reduction, axis, indices, data_shape, constant):
    inputs = [helper.make_tensor_value_info("data", F, data_shape)]
    inputs.append(helper.make_tensor_value_info("updates", F, indices.shape))
    initializers = [numpy_helper.from_array(indices, "indices")] if constant else []
    if not constant:
        inputs.append(helper.make_tensor_value_info("indices", TensorProto.INT64, indices.shape))
    node = helper.make_node(
        "ScatterElements", ["data", "indices", "updates"], ["y"], axis=axis, reduction=reduction
    )
    out = [helper.make_tensor_value_info("y", F, data_shape)]
    return _save([node], inputs, out, initializers, tmp_path / "scatter_elements.onnx")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_scatter_elements_constant_indices(reduction: str, axis: int, tmp_path: Path) -> None:
    data_shape = (3, 4, 5)
    size = data_shape[axis]
    index_shape = (2, 3, 4)
    if reduction == "none":  # distinct targets along the axis (ONNX leaves duplicates undefined)
        indices = _distinct(index_shape, axis, size)
    else:
        indices = rng.integers(-size, size, size=index_shape)  # duplicates and negatives
    indices = indices.astype(np.int64)
    path = _scatter_elements_graph(tmp_path, reduction, axis, indices, list(data_shape), True)
    feeds = {
        "data": rng.standard_normal(data_shape).astype(np.float32),
        "updates": rng.standard_normal(index_shape).astype(np.float32),
    }
    _check(path, feeds)


def _distinct(shape: tuple[int, ...], axis: int, size: int) -> np.ndarray:
    """Indices distinct along `axis` (each line a permutation prefix), half of them negative."""
    moved = np.moveaxis(np.zeros(shape, dtype=np.int64), axis, -1)
    lines = moved.reshape(-1, moved.shape[-1])
    for line in lines:
        line[:] = rng.permutation(size)[: len(line)]
        line[::2] -= size
    return np.moveaxis(lines.reshape(moved.shape), -1, axis)


@pytest.mark.parametrize("reduction", ["none", "add"])
def test_scatter_elements_runtime_indices(reduction: str, tmp_path: Path) -> None:
    indices = _distinct((2, 3), 1, 4) if reduction == "none" else np.array([[1, -1, 1], [0, 3, -4]])
    indices = indices.astype(np.int64)
    path = _scatter_elements_graph(tmp_path, reduction, 1, indices, [2, 4], False)
    feeds = {
        "data": rng.standard_normal((2, 4)).astype(np.float32),
        "updates": rng.standard_normal((2, 3)).astype(np.float32),
        "indices": indices,
    }
    assert "SCATTER_ADD" in _check(path, feeds)


def test_runtime_indices_with_reduction_mul_are_refused(tmp_path: Path) -> None:
    indices = np.array([[1], [2]], dtype=np.int64)
    path = _scatter_nd_graph(tmp_path, "mul", indices, [4, 3], [2, 3], False)
    module = _compile(path)
    with pytest.raises(CtacError, match=r"reduction mul with run-time indices"):
        lower_module(module, FP32_HW)


def test_out_of_range_index_is_an_error(tmp_path: Path) -> None:
    indices = np.array([[4]], dtype=np.int64)
    path = _scatter_nd_graph(tmp_path, "none", indices, [4, 3], [1, 3], False)
    module = _compile(path)
    feeds = {"data": np.zeros((4, 3), np.float32), "updates": np.ones((1, 3), np.float32)}
    with pytest.raises(CtacError, match=r"onnx.ScatterND: an index is outside its axis"):
        evaluate(module, {**feeds, "indices": indices})


def test_opset_10_resize_is_refused(tmp_path: Path) -> None:
    """Opset 10's Resize takes (X, scales): read as opset 11's (X, roi) it would go wrong."""
    scales = numpy_helper.from_array(np.array([1, 2], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "scales"], ["y"])
    x = helper.make_tensor_value_info("x", F, [1, 2])
    y = helper.make_tensor_value_info("y", F, [1, 4])
    path = _save([node], [x], [y], [scales], tmp_path / "resize10.onnx", opset=10)
    with pytest.raises(CtacError, match="Resize before opset 11 is not supported"):
        import_model(path)


def _scatter_runs_row_by_row(targets: np.ndarray, rows: int, reduction: str) -> list[tuple]:
    """The plan scatter_runs makes, built one output row at a time (its first version)."""
    hits: list[list[int]] = [[] for _ in range(rows)]
    for update in np.argsort(targets, kind="stable"):
        hits[int(targets[update])].append(int(update))
    runs: list[tuple] = []
    for row, updates in enumerate(hits):
        sources = tuple(updates[-1:]) if reduction == "none" else tuple(updates)
        reads_data = reduction != "none" or not updates
        if runs and runs[-1][2] == reads_data:
            first, count, data, starts = runs[-1]
            if starts == tuple(s - count for s in sources):
                runs[-1] = (first, count + 1, data, starts)
                continue
        runs.append((row, 1, reads_data, sources))
    return runs


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_plan_matches_a_row_by_row_plan(reduction: str) -> None:
    from ctac.passes.lower_to_isa.indexing import scatter_runs

    rng = np.random.default_rng(5)
    empty = np.zeros(0, dtype=np.int64)
    assert scatter_runs(empty, 0, reduction) == _scatter_runs_row_by_row(empty, 0, reduction)
    for trial in range(200):
        rows = int(rng.integers(1, 40))
        updates = int(rng.integers(0, 30))
        if trial % 3 == 0:  # runs of consecutive targets, which merge
            start = int(rng.integers(0, rows))
            targets = (start + np.arange(updates)) % rows
        else:
            targets = rng.integers(0, rows, updates)
        targets = np.asarray(targets, dtype=np.int64)
        assert scatter_runs(targets, rows, reduction) == _scatter_runs_row_by_row(
            targets, rows, reduction
        ), (rows, targets.tolist())


def test_a_scatter_needing_too_many_runs_is_refused() -> None:
    from ctac.passes.lower_to_isa.indexing import MAX_RUNS, scatter_runs
    from ctac.passes.lower_to_isa.memory import Unsupported

    # every other row updated: each update and each gap between two is a run of its own
    fits = np.arange(0, MAX_RUNS - 1, 2, dtype=np.int64)
    assert len(scatter_runs(fits, MAX_RUNS, "none")) == MAX_RUNS
    beyond = np.arange(0, MAX_RUNS + 1, 2, dtype=np.int64)
    with pytest.raises(Unsupported, match="more than"):
        scatter_runs(beyond, MAX_RUNS + 2, "none")


def test_scatter_plan_does_not_grow_with_the_data() -> None:
    """A few updates into 50 M elements plan in a few runs, without a list per element (the
    row-by-row plan built 50 M Python lists: gigabytes and a minute)."""
    import tracemalloc

    from ctac.passes.lower_to_isa.indexing import scatter_runs

    targets = np.array([7, 8, 9, 49_999_990], dtype=np.int64)
    tracemalloc.start()
    runs = scatter_runs(targets, 50_000_000, "none")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert runs == [
        (0, 7, True, ()),
        (7, 3, False, (0,)),
        (10, 49_999_980, True, ()),
        (49_999_990, 1, False, (3,)),
        (49_999_991, 9, True, ()),
    ]
    assert peak < 1_000_000


def test_scatter_nd_on_constants_folds_away(tmp_path: Path) -> None:
    """A decoder's shifted inputs: ScatterND of constants becomes one onnx.Constant."""
    data = numpy_helper.from_array(np.zeros((2, 4), np.float32), "data")
    indices = numpy_helper.from_array(np.array([[0, 0], [1, 0]], np.int64), "indices")
    updates = numpy_helper.from_array(np.array([7.0, 8.0], np.float32), "updates")
    x = helper.make_tensor_value_info("x", F, [2, 4])
    nodes = [
        helper.make_node("ScatterND", ["data", "indices", "updates"], ["s"]),
        helper.make_node("Add", ["x", "s"], ["y"]),
    ]
    out = [helper.make_tensor_value_info("y", F, [2, 4])]
    path = _save(nodes, [x], out, [data, indices, updates], tmp_path / "fold.onnx")
    module = _compile(path)
    ops = list(module.walk())
    assert not any(isinstance(op, ox.ScatterNDOp) for op in ops)
    feeds = {"x": rng.standard_normal((2, 4)).astype(np.float32)}
    want = feeds["x"] + np.array([[7, 0, 0, 0], [8, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(evaluate(module, feeds)["y"], want)


# ---------------------------------------------------------------------------------------------
# Resize
# ---------------------------------------------------------------------------------------------


def _resize_graph(
    tmp_path, shape, out_shape, attributes, scales=None, sizes=None, roi=None, axes=None
):
    names = ["x", "roi" if roi is not None else "", "scales" if scales is not None else ""]
    initializers = []
    for name, values, dtype in (("roi", roi, np.float32), ("scales", scales, np.float32)):
        if values is not None:
            initializers.append(numpy_helper.from_array(np.array(values, dtype), name))
    if sizes is not None:
        names.append("sizes")
        initializers.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
    if axes is not None:
        attributes = {**attributes, "axes": axes}
    node = helper.make_node("Resize", names, ["y"], **attributes)
    x = helper.make_tensor_value_info("x", F, shape)
    out = helper.make_tensor_value_info("y", F, out_shape)
    return _save([node], [x], [out], initializers, tmp_path / "resize.onnx")


COORDINATES = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]


@pytest.mark.parametrize(
    "nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
)
@pytest.mark.parametrize("coordinates", COORDINATES)
def test_resize_nearest(nearest_mode: str, coordinates: str, tmp_path: Path) -> None:
    """Up on one axis and down on the other, by non-integer factors: DMA only."""
    attributes = {
        "mode": "nearest",
        "nearest_mode": nearest_mode,
        "coordinate_transformation_mode": coordinates,
    }
    # binary-exact scales and whole output sizes: onnxruntime rounds where ONNX does not
    path = _resize_graph(tmp_path, [1, 2, 4, 6], [1, 2, 6, 3], attributes, scales=[1, 1, 1.5, 0.5])
    feeds = {"x": rng.standard_normal((1, 2, 4, 6)).astype(np.float32)}
    names = _check(path, feeds)
    assert set(names) <= {"LOAD", "STORE", "HALT"}


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("coordinates", COORDINATES)
def test_resize_interpolating(mode: str, coordinates: str, tmp_path: Path) -> None:
    """Both spatial axes, up and down: one GEMM per axis with a constant matrix. (Whole output
    sizes: onnxruntime's align_corners uses the rounded size where ONNX uses in * scale.)"""
    attributes = {"mode": mode, "coordinate_transformation_mode": coordinates}
    path = _resize_graph(tmp_path, [1, 3, 4, 6], [1, 3, 8, 3], attributes, scales=[1, 1, 2.0, 0.5])
    feeds = {"x": rng.standard_normal((1, 3, 4, 6)).astype(np.float32)}
    names = _check(path, feeds, rtol=1e-4)
    assert names.count("GEMM") >= 2


def test_resize_sizes_with_axes_and_exclude_outside(tmp_path: Path) -> None:
    """A ViT position-embedding style resize (sizes, axes) of a run-time grid."""
    attributes = {"mode": "cubic", "exclude_outside": 1, "cubic_coeff_a": -0.5}
    shape = [1, 4, 4, 8]
    path = _resize_graph(tmp_path, shape, [1, 7, 6, 8], attributes, sizes=[7, 6], axes=[1, 2])
    feeds = {"x": rng.standard_normal((1, 4, 4, 8)).astype(np.float32)}
    _check(path, feeds, rtol=1e-4)


def test_resize_axes_order_changes_the_slab_shape(tmp_path: Path) -> None:
    """axes=[3, 2]: the last axis (size 1) grows first, so the linear step on axis 2 sees
    slabs, not rows; its matrix must be laid out for the shape it meets."""
    attributes = {"mode": "linear"}
    shape, out_shape = [1, 2, 4, 1], [1, 2, 6, 2]
    path = _resize_graph(tmp_path, shape, out_shape, attributes, scales=[2.0, 1.5], axes=[3, 2])
    feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
    _check(path, feeds, rtol=1e-4)


def test_resize_antialias_reference(tmp_path: Path) -> None:
    """Downsampling with antialias (a wider, renormalised kernel), linear on the last axis."""
    attributes = {"mode": "linear", "antialias": 1}
    path = _resize_graph(tmp_path, [2, 3, 12], [2, 3, 4], attributes, scales=[1, 1, 0.4])
    feeds = {"x": rng.standard_normal((2, 3, 12)).astype(np.float32)}
    _check(path, feeds, rtol=1e-4)


def test_resize_nearest_antialias_is_refused(tmp_path: Path) -> None:
    attributes = {"mode": "nearest", "antialias": 1}
    path = _resize_graph(tmp_path, [1, 4], [1, 2], attributes, scales=[1, 0.5])
    module = _compile(path)
    with pytest.raises(CtacError, match="antialias applies to linear and cubic modes only"):
        evaluate(module, {"x": np.zeros((1, 4), np.float32)})
    with pytest.raises(CtacError, match="antialias with mode nearest"):
        lower_module(module, FP32_HW)


@cache
def _resize_cases() -> list:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return [c for c in cases if c.kind == "node" and c.name.startswith("test_resize_")]


def _array(value) -> np.ndarray:
    return (
        numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else np.asarray(value)
    )


def _constant_inputs(case) -> tuple[onnx.ModelProto, dict]:
    """The case's model with roi/scales/sizes as initializers, and its X feed."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    inputs = [_array(v) for v in case.data_sets[0][0]]
    graph_inputs = list(model.graph.input)
    feeds = {}
    del model.graph.input[:]
    for value, array in zip(graph_inputs, inputs, strict=True):
        if value.name == "X":
            model.graph.input.append(value)
            feeds["X"] = array
        else:
            model.graph.initializer.append(numpy_helper.from_array(array, value.name))
    return model, feeds


@pytest.mark.parametrize("name", [c.name for c in _resize_cases()])
def test_resize_node_suite_cases(name: str, tmp_path: Path) -> None:
    """Every Resize case of the ONNX node suite, with its scales/sizes/roi made constant: the
    reference matches ONNX's expected output, and the accelerator does or refuses clearly."""
    case = next(c for c in _resize_cases() if c.name == name)
    model, feeds = _constant_inputs(case)
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    want = _array(case.data_sets[0][1][0])
    module = _compile(path)
    np.testing.assert_allclose(evaluate(module, feeds)["Y"], want, rtol=1e-5, atol=1e-5)
    try:
        machine, _ = _accelerate(module, feeds)
    except CtacError as exc:
        assert "tf_crop_and_resize with output positions outside" in str(exc), str(exc)
        return
    np.testing.assert_allclose(machine["Y"], want, rtol=1e-4, atol=1e-5)


def test_tiling_with_small_buffers(tmp_path: Path) -> None:
    """With 2 KiB buffers (512 elements a half) a scatter's runs, a nearest axis' blocks and an
    interpolation GEMM all split into many tiles and still match the reference."""
    text = re.sub(
        r"size_kib = \{ value = [0-9.]+", "size_kib = { value = 2", load_hardware(None).text
    )
    small = hardware_from_text(fp32_same_capacity(text), "2 KiB buffers")
    capacities = {b.index: b.capacity for b in small.buffers}
    indices = np.array([[3], [-1], [0], [3]], dtype=np.int64)
    scatter = _scatter_nd_graph(tmp_path, "max", indices, [6, 700], [4, 700], True)
    resize_nearest = _resize_graph(
        tmp_path, [2, 24, 40], [2, 48, 60], {"mode": "nearest"}, scales=[1, 2.0, 1.5]
    )
    nearest_feeds = {"x": rng.standard_normal((2, 24, 40)).astype(np.float32)}
    scatter_feeds = {
        "data": rng.standard_normal((6, 700)).astype(np.float32),
        "updates": rng.standard_normal((4, 700)).astype(np.float32),
    }
    for path, feeds in ((scatter, scatter_feeds), (resize_nearest, nearest_feeds)):
        module = _compile(path)
        want = evaluate(module, feeds)["y"]
        program = program_from_module(lower_module(module, small))
        got, _ = run_program(program, capacities, feeds)
        np.testing.assert_allclose(got["y"], want, rtol=1e-5, atol=1e-5)
    linear = _resize_graph(
        tmp_path, [2, 30, 50], [2, 45, 25], {"mode": "linear"}, scales=[1, 1.5, 0.5]
    )
    module = _compile(linear)
    feeds = {"x": rng.standard_normal((2, 30, 50)).astype(np.float32)}
    program = program_from_module(lower_module(module, small))
    got, _ = run_program(program, capacities, feeds)
    np.testing.assert_allclose(got["y"], evaluate(module, feeds)["y"], rtol=1e-4, atol=1e-5)
