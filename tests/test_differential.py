"""Differential testing: random attention graphs, compiled in exact mode, against onnxruntime.

Hypothesis draws an attention configuration (1-16 heads, GQA key/value heads, sequence 1-257,
head dim 8-128, no mask / key-padding mask / additive mask, causal, each scale form, both K^T
layouts), `build_model` writes it with onnx.helper, and `compile_and_run` imports it, detects the
attention, lowers it to the accelerator, runs the program and returns the outputs; they must
equal onnxruntime's within 1e-4 (relative to the output's magnitude, at least 1). pytest runs a
seeded sample; `python bench/differential.py --examples 500` runs the full count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import FP32_HW
from hypothesis import HealthCheck, assume, given, seed, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from ctac.emit import program_from_module
from ctac.importer import import_model
from ctac.passes.detect_attention import detect_attention
from ctac.passes.lower_to_isa import lower_module
from ctac.pipeline import run_passes
from ctac.runtime.interpreter import run_program

HW = FP32_HW  # the compiler's arithmetic to 1e-4: float32 storage
CAPACITIES = {b.index: b.capacity for b in HW.buffers}
TOLERANCE = 1e-4
SCALE_FORMS = ("none", "mul_after", "div_after", "mul_q", "div_q", "split")
MASKS = ("none", "key_padding", "additive")


@dataclass(frozen=True)
class Config:
    batch: int
    heads: int
    kv_heads: int
    q_len: int
    kv_len: int
    head_dim: int
    mask: str
    causal: bool
    scale_form: str
    k_layout: str  # "bhsd": K^T = Transpose[0,1,3,2] of (B,H,S,D); "bshd": Transpose[0,2,3,1]
    seed: int

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.head_dim)


@st.composite
def configs(draw, max_elements: int = 1 << 21) -> Config:
    """An attention configuration whose tensors stay modest (B*H*Sq*Skv <= max_elements)."""
    heads = draw(st.integers(1, 16))
    kv_heads = draw(st.sampled_from([d for d in range(1, heads + 1) if heads % d == 0]))
    if draw(st.booleans()):
        kv_heads = heads  # plain multi-head attention half of the time
    causal = draw(st.booleans())
    q_len = draw(st.integers(1, 257))
    kv_len = q_len if causal or draw(st.booleans()) else draw(st.integers(1, 257))
    batch = draw(st.integers(1, 2))
    head_dim = draw(st.sampled_from([8, 16, 24, 32, 64, 80, 128]))
    while batch * heads * q_len * kv_len > max_elements or batch * heads * q_len * head_dim > (
        max_elements
    ):
        q_len = max(1, q_len // 2)
        kv_len = q_len if causal else max(1, kv_len // 2)
    return Config(
        batch=batch,
        heads=heads,
        kv_heads=kv_heads,
        q_len=q_len,
        kv_len=kv_len,
        head_dim=head_dim,
        mask=draw(st.sampled_from(MASKS)),
        causal=causal,
        scale_form=draw(st.sampled_from(SCALE_FORMS)),
        k_layout="bhsd" if kv_heads != heads else draw(st.sampled_from(["bhsd", "bshd"])),
        seed=draw(st.integers(0, 2**16)),
    )


def _const(name: str, value, dtype=np.float32) -> onnx.NodeProto:
    array = np.asarray(value, dtype=dtype)
    return helper.make_node(
        "Constant", [], [name], value=onnx.numpy_helper.from_array(array, name + "_value")
    )


def build_model(c: Config) -> onnx.ModelProto:
    """Q (B,H,Sq,D), K and V with kv_heads heads, optional mask input; one attention."""
    nodes: list[onnx.NodeProto] = []
    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("q", f32, [c.batch, c.heads, c.q_len, c.head_dim])]
    k_shape = (
        [c.batch, c.kv_heads, c.kv_len, c.head_dim]
        if c.k_layout == "bhsd"
        else [c.batch, c.kv_len, c.kv_heads, c.head_dim]
    )
    inputs += [
        helper.make_tensor_value_info("k", f32, k_shape),
        helper.make_tensor_value_info("v", f32, [c.batch, c.kv_heads, c.kv_len, c.head_dim]),
    ]
    key, value = "k", "v"
    if c.kv_heads != c.heads:  # GQA as HF's repeat_kv: Unsqueeze / Expand / Reshape of (B,Hkv,S,D)
        repeat = c.heads // c.kv_heads
        for name in ("k", "v"):
            nodes += [
                _const(f"{name}_axes", [2], np.int64),
                helper.make_node("Unsqueeze", [name, f"{name}_axes"], [f"{name}_u"]),
                _const(
                    f"{name}_expand",
                    [c.batch, c.kv_heads, repeat, c.kv_len, c.head_dim],
                    np.int64,
                ),
                helper.make_node("Expand", [f"{name}_u", f"{name}_expand"], [f"{name}_e"]),
                _const(f"{name}_shape", [c.batch, c.heads, c.kv_len, c.head_dim], np.int64),
                helper.make_node("Reshape", [f"{name}_e", f"{name}_shape"], [f"{name}_r"]),
            ]
        key, value = "k_r", "v_r"
    perm = [0, 1, 3, 2] if c.k_layout == "bhsd" else [0, 2, 3, 1]
    nodes.append(helper.make_node("Transpose", [key], ["kt"], perm=perm))
    key = "kt"
    query = "q"
    if c.scale_form in ("mul_q", "div_q", "split"):
        root = math.sqrt(c.scale) if c.scale_form == "split" else c.scale
        op, factor = ("Div", 1.0 / root) if c.scale_form == "div_q" else ("Mul", root)
        nodes += [_const("q_scale", factor), helper.make_node(op, ["q", "q_scale"], ["q_s"])]
        query = "q_s"
        if c.scale_form == "split":
            nodes += [_const("k_scale", root), helper.make_node("Mul", [key, "k_scale"], ["k_s"])]
            key = "k_s"
    nodes.append(helper.make_node("MatMul", [query, key], ["scores"]))
    scores = "scores"
    if c.scale_form == "mul_after":
        nodes += [_const("s_scale", c.scale), helper.make_node("Mul", [scores, "s_scale"], ["s1"])]
        scores = "s1"
    elif c.scale_form == "div_after":
        nodes += [
            _const("s_div", math.sqrt(c.head_dim)),
            helper.make_node("Div", [scores, "s_div"], ["s1"]),
        ]
        scores = "s1"
    if c.mask == "key_padding":  # HF style: (1 - mask) * -10000, shaped (B, 1, 1, Skv)
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.INT64, [c.batch, c.kv_len]))
        nodes += [
            helper.make_node("Cast", ["mask"], ["mask_f"], to=f32),
            _const("one", 1.0),
            helper.make_node("Sub", ["one", "mask_f"], ["inverted"]),
            _const("big", -10000.0),
            helper.make_node("Mul", ["inverted", "big"], ["bias"]),
            _const("mask_axes", [1, 2], np.int64),
            helper.make_node("Unsqueeze", ["bias", "mask_axes"], ["bias4"]),
            helper.make_node("Add", [scores, "bias4"], ["s2"]),
        ]
        scores = "s2"
    elif c.mask == "additive":
        inputs.append(helper.make_tensor_value_info("bias", f32, [c.batch, 1, c.q_len, c.kv_len]))
        nodes.append(helper.make_node("Add", [scores, "bias"], ["s2"]))
        scores = "s2"
    if c.causal:
        lower = np.tril(np.ones((c.q_len, c.kv_len), dtype=bool))
        nodes += [
            _const("causal", lower, np.bool_),
            _const("neg", -3.4028234663852886e38),
            helper.make_node("Where", ["causal", scores, "neg"], ["s3"]),
        ]
        scores = "s3"
    nodes += [
        helper.make_node("Softmax", [scores], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", value], ["out"]),
    ]
    output = helper.make_tensor_value_info("out", f32, [c.batch, c.heads, c.q_len, c.head_dim])
    graph = helper.make_graph(nodes, "attention", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def make_inputs(c: Config) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(c.seed)
    k_shape = (
        (c.batch, c.kv_heads, c.kv_len, c.head_dim)
        if c.k_layout == "bhsd"
        else (c.batch, c.kv_len, c.kv_heads, c.head_dim)
    )
    inputs = {
        "q": rng.standard_normal((c.batch, c.heads, c.q_len, c.head_dim)).astype(np.float32),
        "k": rng.standard_normal(k_shape).astype(np.float32),
        "v": rng.standard_normal((c.batch, c.kv_heads, c.kv_len, c.head_dim)).astype(np.float32),
    }
    if c.mask == "key_padding":  # the last row's tail padded; the first key always real
        mask = np.ones((c.batch, c.kv_len), dtype=np.int64)
        mask[-1, max(1, c.kv_len * 3 // 4) :] = 0
        inputs["mask"] = mask
    elif c.mask == "additive":
        inputs["bias"] = rng.standard_normal((c.batch, 1, c.q_len, c.kv_len)).astype(np.float32)
    return inputs


def compile_and_run(path: Path, inputs: dict[str, np.ndarray]) -> tuple[list[np.ndarray], int]:
    """ctac's outputs (exact mode, on the instruction-level model) and the attention ops found."""
    imported = import_model(path)
    run_passes(imported.module, "onnx-canonicalize")
    reports, _ = detect_attention(imported.module)
    program = program_from_module(lower_module(imported.module, HW))
    outputs, _ = run_program(program, CAPACITIES, inputs)
    return list(outputs.values()), len(reports)


def known_limit(c: Config) -> str | None:
    """Why ctac refuses configuration `c` by design, or None; the generator then skips it.

    Empty today: the last entry (a one-key additive mask, read as a key-axis broadcast)
    was fixed in lower-to-isa and is pinned by test_additive_mask_with_one_key.
    """
    del c
    return None


def check(c: Config, directory: Path) -> dict:
    """Compile and run one configuration; raises AssertionError on a mismatch."""
    path = directory / "attention.onnx"
    onnx.save(build_model(c), str(path))
    inputs = make_inputs(c)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, inputs)
    got, found = compile_and_run(path, inputs)
    assert found == 1, f"{c}: detect-attention found {found} attention ops, not 1"
    error = 0.0
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.shape == theirs.shape
        scale = max(1.0, float(np.abs(theirs).max()))
        error = max(error, float(np.abs(ours - theirs).max()) / scale)
    assert error <= TOLERANCE, f"{c}: max error {error:.2e} over {TOLERANCE}"
    return {"config": c.__dict__, "max_error": error}


@seed(20261128)
@settings(
    max_examples=100,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(configs(max_elements=1 << 15))
def test_attention_equals_onnxruntime(tmp_path: Path, config: Config) -> None:
    assume(known_limit(config) is None)
    check(config, tmp_path)


def test_additive_mask_with_one_key(tmp_path: Path) -> None:
    """A (B, 1, Sq, 1) additive mask is a per-row bias, not a broadcast along the keys."""
    check(Config(2, 4, 4, 6, 1, 16, "additive", False, "div_after", "bhsd", 3), tmp_path)
    check(Config(1, 2, 1, 1, 1, 8, "additive", False, "mul_q", "bhsd", 4), tmp_path)


def test_every_form_is_covered(tmp_path: Path) -> None:
    """One fixed example per scale form and mask (the random sample may miss one)."""
    for index, form in enumerate(SCALE_FORMS):
        mask = MASKS[index % len(MASKS)]
        check(Config(1, 4, 2, 9, 9, 8, mask, index % 2 == 0, form, "bhsd", index), tmp_path)
        check(Config(2, 3, 3, 5, 7, 16, mask, False, form, "bshd", index), tmp_path)
