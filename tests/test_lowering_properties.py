"""Property tests of lower-to-isa with small on-chip buffers.

Random MatMul, Gemm, elementwise, LayerNormalization and Transpose modules (written in the
`onnx` dialect) are lowered for a hardware config whose act/wgt/acc buffers hold only 2-8 KiB,
so nearly every op is split into many tiles. For each program:
(a) every buffer range an instruction reads or writes lies inside its buffer, vec's tile slots
    below its persistent area (and persistent rows inside it);
(b) STOREs write every element of the output's DRAM region exactly once, and never write the
    data segment or an input;
(c) the interpreter's output equals numpy's.
A lowering may refuse an op with a CtacError naming a documented limit (a row or block that does
not fit a buffer half, tiles that do not fit their double-buffered slots, a transpose neither of whose output axes is contiguous); such examples are
assumed away. Anything else fails the test.

vec stays at 40-64 KiB in the random tests; test_reviewed_case pins the smaller vec sizes and the
other cases review found wrong (each must now give a clear CtacError or the right numbers).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import fp32_same_capacity
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ctac.emit import program_from_module
from ctac.errors import CtacError
from ctac.hw import Hardware, load_hardware
from ctac.passes.lower_to_isa import lower_module
from ctac.passes.lower_to_isa.memory import PERSISTENT
from ctac.pipeline import parse_module
from ctac.runtime import isa
from ctac.runtime.interpreter import run_program
from ctac.runtime.program import Program

REPO = Path(__file__).resolve().parent.parent
DEFAULT_HW = (REPO / "ctac" / "data" / "default_hw.toml").read_text()
SIZE_KIB = re.compile(r"size_kib = \{ value = [0-9.]+")
BUFFERS = isa.BUFFER_NAMES
VEC = isa.Buffer.VEC
# Refusals the lowering documents (Unsupported messages); any other error is a failure.
LIMITS = re.compile(
    r"do not fit a buffer half|does not fit a buffer half|no GEMM tiling fits"
    r"|neither output axis is contiguous"
)
SETTINGS = settings(max_examples=40, deadline=None)

SMALL = st.sampled_from([2, 4, 8])
SMALL_HW = st.tuples(SMALL, SMALL, SMALL, st.sampled_from([40, 48, 64]))


@pytest.fixture(scope="module")
def hw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hw")


def hardware(directory: Path, sizes: tuple[float, ...]) -> Hardware:
    """The default config with the buffers' size_kib replaced by `sizes` (act, wgt, acc, vec),
    at fp32 with the same element capacities: checked against numpy to float32 rounding."""
    path = directory / ("hw_" + "_".join(map(str, sizes)) + ".toml")
    if not path.exists():
        values = iter(sizes)
        text = SIZE_KIB.sub(lambda m: f"size_kib = {{ value = {next(values)}", DEFAULT_HW)
        path.write_text(fp32_same_capacity(text))
    return load_hardware(path)


def tensor_type(shape: tuple[int, ...], element: str = "f32") -> str:
    return f"tensor<{'x'.join(map(str, shape))}{'x' if shape else ''}{element}>"


def module_of(
    inputs: dict[str, tuple[int, ...]], outputs: dict[str, tuple[tuple[int, ...], str]], body: str
) -> str:
    args = ", ".join(f'%{n}: {tensor_type(s)} {{onnx.name = "{n}"}}' for n, s in inputs.items())
    results = ", ".join(
        f'{tensor_type(s, e)} {{onnx.name = "{n}"}}' for n, (s, e) in outputs.items()
    )
    names = ", ".join(f"%{n}" for n in outputs)
    types = ", ".join(tensor_type(s, e) for s, e in outputs.values())
    return f"func.func @main({args}) -> ({results}) {{\n{body}  func.return {names} : {types}\n}}\n"


def lower_or_assume(text: str, hw: Hardware) -> Program:
    """The program for `text`, or assume() the example away if the lowering refuses it with a
    documented limit."""
    module = parse_module(text)
    try:
        lowered = lower_module(module, hw)
    except CtacError as exc:
        if LIMITS.search(str(exc)):
            assume(False)
        raise
    return program_from_module(lowered)


def check_buffer_ranges(program: Program, hw: Hardware) -> None:
    capacity = {b.index: b.capacity for b in hw.buffers}
    half = {index: size // 2 for index, size in capacity.items()}
    # As the lowering splits vec: a persistent area of at most a quarter above two halves.
    half[VEC] = (capacity[VEC] - min(PERSISTENT, capacity[VEC] // 4)) // 2
    for index, (name, fields) in enumerate(program.instructions):
        spec = isa.BY_NAME[name]
        for where, start, size in spec.reads(fields) + spec.writes(fields):
            if where == "dram":
                assert start >= 0 and start + size <= program.dram_elements, (index, name, fields)
                continue
            what = f"instruction {index} {name} {fields}: {BUFFERS[where]}[{start}, {start + size})"
            assert start >= 0 and start + size <= capacity[where], f"{what} exceeds the buffer"
            # Tile slots (lowering streams) lie below vec's persistent area, persistent rows in it.
            areas = [(0, 2 * half[where])]
            if where == VEC:
                areas.append((2 * half[where], capacity[where]))
            assert any(lo <= start and start + size <= hi for lo, hi in areas), (
                f"{what} crosses into vec's persistent area"
            )


def check_stores(program: Program) -> None:
    writes = np.zeros(program.dram_elements, dtype=np.int64)
    for name, fields in program.instructions:
        if name != "STORE":
            continue
        rows, cols = np.arange(fields["rows"]), np.arange(fields["cols"])
        addresses = fields["dst"] + rows[:, None] * fields["stride"] + cols[None, :]
        np.add.at(writes, addresses.reshape(-1), 1)
    assert not writes[: len(program.data)].any(), "a STORE writes the data segment"
    for symbol in program.inputs:
        region = writes[symbol.address : symbol.address + symbol.size]
        assert not region.any(), f"a STORE writes input '{symbol.name}'"
    for symbol in program.outputs:
        region = writes[symbol.address : symbol.address + symbol.size]
        missing, repeated = np.flatnonzero(region == 0), np.flatnonzero(region > 1)
        assert not missing.size, f"output '{symbol.name}': elements {missing[:8]} never stored"
        assert not repeated.size, f"output '{symbol.name}': elements {repeated[:8]} stored twice"


def run(program: Program, hw: Hardware, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    result = run_program(program, {b.index: b.capacity for b in hw.buffers}, inputs)
    return result[0] if isinstance(result, tuple) else result


def check_program(
    text: str, hw: Hardware, inputs: dict[str, np.ndarray], expected: dict[str, np.ndarray]
) -> None:
    program = lower_or_assume(text, hw)
    check_buffer_ranges(program, hw)
    check_stores(program)
    outputs = run(program, hw, inputs)
    for name, want in expected.items():
        got = np.asarray(outputs[name], dtype=np.float64)
        want = np.asarray(want, dtype=np.float64)
        assert got.shape == want.shape, name
        scale = max(1.0, float(np.abs(want).max(initial=0.0)))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale, err_msg=name)


def dense_literal(array: np.ndarray) -> str:
    """Nested-list text of a float array for `dense<...>` (every number with a '.')."""
    if array.ndim == 0:
        return f"{float(array):.9e}"
    return "[" + ", ".join(dense_literal(part) for part in array) + "]"


def normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# GEMMs
# ---------------------------------------------------------------------------------------------

DIM = st.integers(1, 200)
BATCH = st.lists(st.integers(1, 3), min_size=1, max_size=2).filter(lambda b: np.prod(b) <= 4)


@st.composite
def matmul_shapes(draw) -> tuple[tuple[int, ...], tuple[int, ...]]:
    m, k, n = draw(DIM), draw(DIM), draw(DIM)
    kind = draw(st.sampled_from(["2d", "weight", "batched"]))
    if kind == "2d":
        return (m, k), (k, n)
    batch = tuple(draw(BATCH))
    if kind == "weight":
        return (*batch, m, k), (k, n)
    # b's batch: a suffix of a's, each axis either a's or 1; or the other way round.
    b_batch = tuple(d if draw(st.booleans()) else 1 for d in batch[draw(st.integers(0, 1)) :])
    if draw(st.booleans()):
        return (*batch, m, k), (*b_batch, k, n)
    return (*b_batch, m, k), (*batch, k, n)


@given(shapes=matmul_shapes(), sizes=SMALL_HW, seed=st.integers(0, 2**16))
@SETTINGS
def test_matmul(hw_dir: Path, shapes, sizes, seed: int) -> None:
    a_shape, b_shape = shapes
    rng = np.random.default_rng(seed)
    a, b = normal(rng, a_shape), normal(rng, b_shape)
    y_shape = np.matmul(a, b).shape
    body = f"  %y = onnx.MatMul %a, %b : ({tensor_type(a_shape)}, {tensor_type(b_shape)}) -> {tensor_type(y_shape)}\n"
    text = module_of({"a": a_shape, "b": b_shape}, {"y": (y_shape, "f32")}, body)
    expected = np.matmul(a.astype(np.float64), b.astype(np.float64))
    check_program(text, hardware(hw_dir, sizes), {"a": a, "b": b}, {"y": expected})


@given(
    m=DIM,
    k=DIM,
    n=DIM,
    trans_b=st.booleans(),
    bias_2d=st.booleans(),
    constant_weight=st.booleans(),
    sizes=SMALL_HW,
    seed=st.integers(0, 2**16),
)
@SETTINGS
def test_gemm_with_bias(
    hw_dir: Path, m, k, n, trans_b: bool, bias_2d: bool, constant_weight: bool, sizes, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    b_shape = (n, k) if trans_b else (k, n)
    c_shape = (1, n) if bias_2d else (n,)
    x, w, c = normal(rng, (m, k)), normal(rng, b_shape), normal(rng, c_shape)
    inputs = {"x": x, "c": c}
    body = ""
    if constant_weight:
        # A weight in the data segment instead of an input.
        body += f"  %w = onnx.Constant dense<{dense_literal(w)}> : {tensor_type(b_shape)}\n"
    else:
        inputs["w"] = w
    attributes = " {transB = 1 : i64}" if trans_b else ""
    body += (
        f"  %y = onnx.Gemm %x, %w, C %c{attributes} : ({tensor_type((m, k))}, "
        f"{tensor_type(b_shape)}, {tensor_type(c_shape)}) -> {tensor_type((m, n))}\n"
    )
    signature = {name: value.shape for name, value in inputs.items()}
    text = module_of(signature, {"y": ((m, n), "f32")}, body)
    expected = x.astype(np.float64) @ (w.T if trans_b else w).astype(np.float64) + c.reshape(1, n)
    check_program(text, hardware(hw_dir, sizes), inputs, {"y": expected})


# ---------------------------------------------------------------------------------------------
# Elementwise
# ---------------------------------------------------------------------------------------------

BINARY = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": np.divide,
    "Max": np.maximum,
    "Min": np.minimum,
    "Less": np.less,
    "Greater": np.greater,
    "LessOrEqual": np.less_equal,
    "Equal": np.equal,
}


@st.composite
def broadcast_shapes(draw) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """An output shape (rank 1-4, dims 1-9; sometimes a wide last axis that splits into column
    tiles) and two operand shapes that broadcast to it."""
    out = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=4)))
    if draw(st.integers(0, 4)) == 0:
        out = (*out[:-1], draw(st.integers(200, 3000)))
        out = out[-2:]

    def operand() -> tuple[int, ...]:
        rank = draw(st.integers(0, len(out)))
        return tuple(d if draw(st.booleans()) else 1 for d in out[len(out) - rank :])

    a, b = operand(), operand()
    # At least one operand has the output's shape up to leading ones, as exporters produce.
    if draw(st.booleans()):
        a = out
    elif np.broadcast_shapes(a, b) != out:
        b = out
    return out, a, b


@given(
    op=st.sampled_from(sorted(BINARY)),
    shapes=broadcast_shapes(),
    splat=st.sampled_from([None, "a", "b"]),
    sizes=SMALL_HW,
    seed=st.integers(0, 2**16),
)
@SETTINGS
def test_elementwise_binary(hw_dir: Path, op: str, shapes, splat, sizes, seed: int) -> None:
    out, a_shape, b_shape = shapes
    rng = np.random.default_rng(seed)
    a = normal(rng, a_shape)
    # Divisors away from zero; comparisons see some equal elements.
    b = (rng.uniform(0.5, 2.0, b_shape) * rng.choice([-1, 1], b_shape)).astype(np.float32)
    if op in ("Equal", "LessOrEqual") and a.shape == b.shape:
        b = np.where(rng.random(b_shape) < 0.5, a, b).astype(np.float32)
    values = {"a": a, "b": b}
    body = ""
    if splat is not None:
        value = np.float32(2.5 if splat == "b" else -1.25)
        values[splat] = np.full(values[splat].shape, value, dtype=np.float32)
        body += f"  %{splat} = onnx.Constant dense<{float(value)!r}> : {tensor_type(values[splat].shape)}\n"
    element = "i1" if op in ("Less", "Greater", "LessOrEqual", "Equal") else "f32"
    body += (
        f"  %y = onnx.{op} %a, %b : ({tensor_type(a_shape)}, {tensor_type(b_shape)}) -> "
        f"{tensor_type(out, element)}\n"
    )
    inputs = {name: value for name, value in values.items() if name != splat}
    signature = {name: value.shape for name, value in inputs.items()}
    text = module_of(signature, {"y": (out, element)}, body)
    expected = BINARY[op](values["a"], values["b"])
    check_program(text, hardware(hw_dir, sizes), inputs, {"y": expected})


# ---------------------------------------------------------------------------------------------
# LayerNormalization
# ---------------------------------------------------------------------------------------------


@given(
    lead=st.lists(st.integers(1, 9), min_size=1, max_size=2),
    columns=st.integers(2, 700),
    beta=st.sampled_from(["input", "splat", "none"]),
    epsilon=st.sampled_from([1e-5, 1e-6, 1e-3]),
    sizes=SMALL_HW,
    seed=st.integers(0, 2**16),
)
@SETTINGS
def test_layer_norm(hw_dir: Path, lead, columns: int, beta: str, epsilon, sizes, seed) -> None:
    shape = (*lead, columns)
    rng = np.random.default_rng(seed)
    x, gamma = normal(rng, shape), normal(rng, (columns,))
    inputs = {"x": x, "gamma": gamma}
    body, operands, types = "", "%x, %gamma", f"{tensor_type(shape)}, {tensor_type((columns,))}"
    bias = np.zeros(columns)
    if beta == "input":
        inputs["beta"] = bias = normal(rng, (columns,))
    elif beta == "splat":
        bias = np.full(columns, 0.75)
        body += f"  %beta = onnx.Constant dense<7.500000e-01> : {tensor_type((columns,))}\n"
    if beta != "none":
        operands += ", B %beta"
        types += f", {tensor_type((columns,))}"
    body += (
        f"  %y = onnx.LayerNormalization {operands} {{axis = -1 : i64, epsilon = {epsilon:.6e} : f32}}"
        f" : ({types}) -> {tensor_type(shape)}\n"
    )
    signature = {name: value.shape for name, value in inputs.items()}
    text = module_of(signature, {"y": (shape, "f32")}, body)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=-1, keepdims=True)
    variance = ((x64 - mean) ** 2).mean(axis=-1, keepdims=True)
    eps = float(np.float32(epsilon))
    expected = (x64 - mean) / np.sqrt(variance + eps) * gamma + bias
    check_program(text, hardware(hw_dir, sizes), inputs, {"y": expected})


# ---------------------------------------------------------------------------------------------
# Transpose
# ---------------------------------------------------------------------------------------------


@st.composite
def transposes(draw) -> tuple[tuple[int, ...], tuple[int, ...]]:
    rank = draw(st.integers(2, 4))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=rank, max_size=rank)))
    if draw(st.booleans()):
        # Head-sized blocks: wider last axes.
        shape = (*shape[:-2], draw(st.integers(1, 40)), draw(st.integers(1, 70)))
    perm = tuple(draw(st.permutations(range(rank))))
    return shape, perm


@given(case=transposes(), sizes=SMALL_HW, seed=st.integers(0, 2**16))
@SETTINGS
def test_transpose(hw_dir: Path, case, sizes, seed: int) -> None:
    shape, perm = case
    rng = np.random.default_rng(seed)
    x = normal(rng, shape)
    expected = np.transpose(x, perm)
    body = (
        f"  %y = onnx.Transpose %x {{perm = array<i64: {', '.join(map(str, perm))}>}} : "
        f"({tensor_type(shape)}) -> {tensor_type(expected.shape)}\n"
    )
    text = module_of({"x": shape}, {"y": (expected.shape, "f32")}, body)
    check_program(text, hardware(hw_dir, sizes), {"x": x}, {"y": expected})


# ---------------------------------------------------------------------------------------------
# Known bugs (strict xfail: remove a case's marker when the lowering is fixed; refusing the op
# with a CtacError counts as fixed)
# ---------------------------------------------------------------------------------------------


def _add_with_vec(vec_kib: int):
    body = "  %y = onnx.Add %a, %b : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>\n"
    rng = np.random.default_rng(0)
    a, b = normal(rng, (4, 8)), normal(rng, (4, 8))
    text = module_of({"a": (4, 8), "b": (4, 8)}, {"y": ((4, 8), "f32")}, body)
    return text, {"a": a, "b": b}, {"y": a + b}, (256, 256, 256, vec_kib)


def _attention(q_len: int, kv_len: int, head_dim: int, additive: bool, sizes):
    q, k = (1, 1, q_len, head_dim), (1, 1, kv_len, head_dim)
    rng = np.random.default_rng(0)
    inputs = {"q": normal(rng, q), "k": normal(rng, k), "v": normal(rng, k)}
    types, mask = f"{tensor_type(q)}, {tensor_type(k)}, {tensor_type(k)}", ""
    scores = inputs["q"][0, 0].astype(np.float64) @ inputs["k"][0, 0].T / 8
    if additive:
        inputs["m"] = normal(rng, (1, 1, q_len, kv_len))
        scores = scores + inputs["m"][0, 0]
        types += f", {tensor_type((1, 1, q_len, kv_len))}"
        mask = ', mask_kind = "additive"'
    body = (
        f"  %o = cta.attention %q, %k, %v{', mask %m' if additive else ''} {{num_heads = 1 : i64, "
        f"kv_heads = 1 : i64, head_dim = {head_dim} : i64, scale = 1.250000e-01 : f64{mask}}}"
        f" : ({types}) -> {tensor_type(q)}\n"
    )
    text = module_of({name: value.shape for name, value in inputs.items()}, {"o": (q, "f32")}, body)
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    expected = (weights / weights.sum(axis=1, keepdims=True)) @ inputs["v"][0, 0]
    return text, inputs, {"o": expected.reshape(q)}, sizes


def _cumsum_long_rows():
    x = normal(np.random.default_rng(0), (2, 3000))
    body = (
        "  %axis = onnx.Constant dense<1> : tensor<i64>\n"
        "  %y = onnx.CumSum %x, %axis : (tensor<2x3000xf32>, tensor<i64>) -> tensor<2x3000xf32>\n"
    )
    text = module_of({"x": (2, 3000)}, {"y": ((2, 3000), "f32")}, body)
    return text, {"x": x}, {"y": np.cumsum(x.astype(np.float64), axis=1)}, (256, 256, 256, 40)


def _gather_wide_rows():
    rng = np.random.default_rng(0)
    table, ids = normal(rng, (10, 700)), rng.integers(0, 10, (3, 5))
    body = (
        f"  %t = onnx.Constant dense<{dense_literal(table)}> : tensor<10x700xf32>\n"
        "  %y = onnx.Gather %t, %ids {axis = 0 : i64} : (tensor<10x700xf32>, tensor<3x5xi64>)"
        " -> tensor<3x5x700xf32>\n"
    )
    text = module_of({"ids": (3, 5)}, {"y": ((3, 5, 700), "f32")}, body)
    text = text.replace("%ids: tensor<3x5xf32>", "%ids: tensor<3x5xi64>")
    return text, {"ids": ids}, {"y": table[ids]}, (2, 2, 2, 40)


def _conv_bias_many_patches():
    rng = np.random.default_rng(0)
    img, w, b = normal(rng, (1, 1, 64, 64)), normal(rng, (2, 1, 2, 2)), normal(rng, (2,))
    body = (
        "  %y = onnx.Conv %img, %w, B %b {kernel_shape = array<i64: 2, 2>, strides = "
        "array<i64: 2, 2>} : (tensor<1x1x64x64xf32>, tensor<2x1x2x2xf32>, tensor<2xf32>) -> "
        "tensor<1x2x32x32xf32>\n"
    )
    patches = img[0].reshape(1, 32, 2, 32, 2)
    expected = np.einsum("cpiqj,ocij->opq", patches, w) + b[:, None, None]
    inputs = {"img": img, "w": w, "b": b}
    text = module_of({k: v.shape for k, v in inputs.items()}, {"y": ((1, 2, 32, 32), "f32")}, body)
    return text, inputs, {"y": expected[None]}, (2, 2, 2, 40)


def _bug(case, reason: str, fixed: bool = True):
    """A case review found wrong; fixed ones must stay fixed (a clear CtacError or right numbers)."""
    marks = [] if fixed else [pytest.mark.xfail(strict=True, reason=reason)]
    return pytest.param(case, marks=marks)


KNOWN_BUGS = [
    _bug(
        lambda: _add_with_vec(8),
        "vec < 32 KiB: the fixed 16384-element persistent area leaves negative halves; "
        "elementwise ops emit no instruction and the output is never written",
    ),
    _bug(
        lambda: _add_with_vec(32),
        "vec = 32 KiB: empty vec halves; lower_elementwise divides by zero",
    ),
    _bug(
        lambda: _attention(64, 32, 32, False, (4, 256, 256, 256)),
        "lower_attention sizes query blocks by max(kv_len, head_dim) but puts Q and P side by "
        "side in one act half: P runs past the half and the buffer (default config: 2048 "
        "queries, 64 keys, head_dim 64)",
    ),
    _bug(
        lambda: _attention(2048, 64, 16, True, (256, 256, 256, 40)),
        "an additive mask block (query block x kv_len) is loaded into one vec half, but the "
        "block size only respects the act/acc halves",
    ),
    _bug(
        _cumsum_long_rows,
        "CumSum rows wider than the elementwise tile are split into column tiles, and each tile "
        "restarts the scan: wrong numbers",
    ),
    _bug(
        _gather_wide_rows,
        "Gather rows wider than an act half: max(1, half // columns) still loads whole rows",
    ),
    _bug(
        _conv_bias_many_patches,
        "Conv bias pass loads rows of `patches` elements; with more patches than an act half "
        "holds, max(1, half // patches) still loads whole rows",
    ),
]


@pytest.mark.parametrize(
    "case",
    KNOWN_BUGS,
    ids=["vec-8k", "vec-32k", "attention-act", "attention-mask-vec", "cumsum", "gather", "conv"],
)
def test_reviewed_case(hw_dir: Path, case) -> None:
    text, inputs, expected, sizes = case()
    hw = hardware(hw_dir, sizes)
    try:
        program = program_from_module(lower_module(parse_module(text), hw))
    except CtacError:
        return
    check_buffer_ranges(program, hw)
    check_stores(program)
    outputs = run(program, hw, inputs)
    for name, want in expected.items():
        np.testing.assert_allclose(outputs[name], want, rtol=1e-4, atol=1e-3, err_msg=name)
