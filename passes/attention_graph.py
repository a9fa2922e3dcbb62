"""What detect-attention reads from the graph: small value helpers, attention heads (Q, K, V
laid out as [batch, heads, sequence, head_dim], GQA repeats) and the linear projections that make
them (passes/detect_attention.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from xdsl.ir import Operation, SSAValue

from ctac.dialects import onnx as ox
from ctac.passes.attention_quant import fake_quant_of
from ctac.passes.canonicalize import scalar_of

# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def static_shape(value: SSAValue) -> tuple[int, ...]:
    return ox.shape_of(value)


def is_float(value: SSAValue) -> bool:
    return ox.numpy_dtype(ox.element_of(value)).kind == "f"


def single_use(value: SSAValue) -> bool:
    return value.has_one_use()


def constant_ints(value: SSAValue) -> list[int] | None:
    owner = value.owner
    if isinstance(owner, ox.ConstantOp):
        return [int(v) for v in owner.to_numpy().reshape(-1)]
    return None


def is_constant(value: SSAValue) -> bool:
    return isinstance(value.owner, ox.ConstantOp | ox.WeightOp)


def peel_scalars(value: SSAValue) -> tuple[SSAValue, float, list[Operation]]:
    """Strip scalar Mul/Div (either operand order for Mul) and float Casts, stopping at a
    dequantized value (its Mul by the scale belongs to the quantize -> dequantize pair)."""
    factor = 1.0
    absorbed: list[Operation] = []
    while True:
        owner = value.owner
        if isinstance(owner, ox.MulOp) and fake_quant_of(value) is not None:
            return value, factor, absorbed
        if isinstance(owner, ox.MulOp):
            for candidate, other in ((owner.A, owner.B), (owner.B, owner.A)):
                constant = scalar_of(other)
                if constant is not None and static_shape(candidate) == static_shape(owner.C):
                    factor *= constant
                    absorbed.append(owner)
                    value = candidate
                    break
            else:
                return value, factor, absorbed
            continue
        if isinstance(owner, ox.DivOp):
            constant = scalar_of(owner.B)
            if (
                constant is not None
                and constant != 0
                and static_shape(owner.A) == static_shape(owner.C)
            ):
                factor /= constant
                absorbed.append(owner)
                value = owner.A
                continue
            return value, factor, absorbed
        if isinstance(owner, ox.CastOp) and is_float(owner.input) and is_float(owner.output):
            absorbed.append(owner)
            value = owner.input
            continue
        return value, factor, absorbed


# ---------------------------------------------------------------------------------------------
# Heads: how to obtain a (B, H, S, D) tensor
# ---------------------------------------------------------------------------------------------


@dataclass
class Heads:
    """A head tensor: `value` is (B, H, S, D) when `layout == 'bhsd'`, (B, S, H, D) when 'bshd',
    (B, H, D, S) when 'bhds' (a quantized K^T, transposed back by a new op).
    `repeat` > 1 when GQA repeated `value`'s heads that many times."""

    value: SSAValue
    layout: str
    repeat: int = 1
    form: list[str] = field(default_factory=list)
    # A run-time scale (DynamicQuantizeLinear's) that dequantizes `value` by a new Mul.
    times: SSAValue | None = None

    @property
    def heads(self) -> int:
        shape = static_shape(self.value)
        return shape[2] if self.layout == "bshd" else shape[1]


def _unrepeat(value: SSAValue) -> tuple[SSAValue, int]:
    """GQA: Reshape(Expand(Unsqueeze(kv, [2]), (B, Hkv, n, S, D)), (B, Hkv*n, S, D)) -> (kv, n)."""
    reshape = value.owner
    if not isinstance(reshape, ox.ReshapeOp):
        return value, 1
    expand = reshape.data.owner
    if not isinstance(expand, ox.ExpandOp) or len(static_shape(expand.output)) != 5:
        return value, 1
    unsqueeze = expand.input.owner
    if not isinstance(unsqueeze, ox.UnsqueezeOp) or constant_ints(unsqueeze.axes) not in (
        [2],
        [-3],
    ):
        return value, 1
    kv = unsqueeze.data
    b, hkv, n, s, d = static_shape(expand.output)
    if static_shape(kv) != (b, hkv, s, d) or static_shape(reshape.reshaped) != (b, hkv * n, s, d):
        return value, 1
    return kv, n


def heads_of(value: SSAValue) -> Heads:
    """Q or V heads (B, H, S, D): see through a head-split Transpose and GQA repeats."""
    value, repeat = _unrepeat(value)
    owner = value.owner
    if isinstance(owner, ox.TransposeOp) and owner.permutation() == (0, 2, 1, 3):
        return Heads(owner.data, "bshd", repeat, ["Transpose[0,2,1,3]"])
    return Heads(value, "bhsd", repeat)


def key_heads_of_transposed(kt: SSAValue) -> tuple[Heads, float] | None:
    """K heads from K^T (B, H, D, S) in one of the transposed forms; also the scalar factor."""
    kt, factor, _ = peel_scalars(kt)
    owner = kt.owner
    if isinstance(owner, ox.TransposeOp) and len(static_shape(kt)) == 4:
        perm = owner.permutation()
        inner, inner_factor, _ = peel_scalars(owner.data)
        if perm == (0, 1, 3, 2):
            unrepeated, repeat = _unrepeat(inner)
            heads = heads_of(unrepeated)
            heads.repeat = repeat
            heads.form.append("K^T=Transpose[0,1,3,2]")
            return heads, factor * inner_factor
        if perm == (0, 2, 3, 1):
            return Heads(inner, "bshd", 1, ["K^T=Transpose[0,2,3,1]"]), factor * inner_factor
        return None
    if isinstance(owner, ox.ReshapeOp) and len(static_shape(kt)) == 4:
        transpose = owner.data.owner
        if not isinstance(transpose, ox.TransposeOp) or transpose.permutation() != (0, 2, 1):
            return None
        flat = transpose.data.owner
        if not isinstance(flat, ox.ReshapeOp):
            return None
        inner, inner_factor, _ = peel_scalars(flat.data)
        b, h, d, s = static_shape(kt)
        if static_shape(inner) != (b, h, s, d) or static_shape(flat.reshaped) != (b * h, s, d):
            return None
        unrepeated, repeat = _unrepeat(inner)
        heads = heads_of(unrepeated)
        heads.repeat = repeat
        heads.form.append("K^T=Reshape/Transpose[0,2,1]/Reshape")
        return heads, factor * inner_factor
    return None


@dataclass
class Projection:
    input: SSAValue
    weight: SSAValue
    bias: SSAValue | None
    columns: tuple[int, int]
    form: str


def _linear(value: SSAValue) -> tuple[SSAValue, SSAValue, SSAValue | None, str] | None:
    """(x, W, b) for value = x @ W (+ b), x of rank 3, W and b constants."""
    owner = value.owner
    bias = None
    if isinstance(owner, ox.AddOp):
        for product, other in ((owner.A, owner.B), (owner.B, owner.A)):
            if (
                isinstance(product.owner, ox.MatMulOp)
                and is_constant(other)
                and len(static_shape(other)) == 1
            ):
                bias, owner = other, product.owner
                break
        else:
            return None
    if isinstance(owner, ox.MatMulOp):
        x, weight = owner.A, owner.B
        if len(static_shape(x)) == 3 and len(static_shape(weight)) == 2 and is_constant(weight):
            return x, weight, bias, "MatMul+Add" if bias is not None else "MatMul"
        return None
    if isinstance(owner, ox.ReshapeOp) and bias is None:
        gemm = owner.data.owner
        if (
            isinstance(gemm, ox.GemmOp)
            and not gemm.int_attr("transA", 0)
            and not gemm.int_attr("transB", 0)
            and gemm.float_attr("alpha", 1.0) == 1.0
            and gemm.float_attr("beta", 1.0) == 1.0
            and is_constant(gemm.B)
            and (gemm.C is None or (is_constant(gemm.C) and len(static_shape(gemm.C)) == 1))
        ):
            flat = gemm.A.owner
            if isinstance(flat, ox.ReshapeOp) and len(static_shape(flat.data)) == 3:
                x = flat.data
                b, s, _ = static_shape(x)
                if static_shape(owner.reshaped)[:2] == (b, s):
                    return x, gemm.B, gemm.C, "Gemm"
    return None


def capture_projection(heads_value: SSAValue) -> Projection | None:
    """For a (B, S, H, D) head tensor: the input and weights of the projection it reshapes."""
    reshape = heads_value.owner
    if not isinstance(reshape, ox.ReshapeOp):
        return None
    projected = reshape.data
    if len(static_shape(projected)) != 3:
        return None
    start, width = 0, static_shape(projected)[2]
    owner = projected.owner
    if isinstance(owner, ox.SplitOp):
        axis = owner.int_attr("axis", 0) % 3
        if axis != 2:
            return None
        sizes = [static_shape(r)[2] for r in owner.outputs]
        index = list(owner.outputs).index(projected)
        start = sum(sizes[:index])
        projected = owner.input
    linear = _linear(projected)
    if linear is None:
        return None
    x, weight, bias, form = linear
    if static_shape(weight)[1] != static_shape(projected)[2]:
        return None
    if isinstance(owner, ox.SplitOp):
        form += "+Split"
    return Projection(x, weight, bias, (start, start + width), form)
