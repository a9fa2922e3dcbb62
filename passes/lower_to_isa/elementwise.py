"""Elementwise ops (binary, unary, casts, Where) with broadcast operands, and row-wise ops
(LayerNorm, Softmax, reductions, CumSum)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.ir import Operation, SSAValue

from ctac.dialects import onnx as ox
from ctac.passes.lower_to_isa.core import LOWERINGS, Lowering, lowering
from ctac.passes.lower_to_isa.memory import (
    ACC,
    ACT,
    VEC,
    WGT,
    Tensor,
    Unsupported,
    elements,
    rows_cols,
    runs_of,
    split_ranges,
)


@dataclass
class Operand:
    """How one elementwise operand covers an output tile."""

    mode: str  # full | row | col | scalar | imm
    imm: float = 0.0
    tensor: Tensor | None = None
    row_map: np.ndarray | None = None  # output row -> operand row
    persistent: int | None = None  # vec address of a row/scalar loaded once


BINARY_OPS: dict[type, tuple[str, bool]] = {
    ox.AddOp: ("add", True),
    ox.SubOp: ("sub", False),
    ox.MulOp: ("mul", True),
    ox.DivOp: ("div", False),
    ox.PowOp: ("pow", False),
    ox.MaxOp: ("max", True),
    ox.MinOp: ("min", True),
    ox.EqualOp: ("eq", True),
    ox.LessOp: ("lt", False),
    ox.LessOrEqualOp: ("le", False),
    ox.GreaterOp: ("gt", False),
    ox.GreaterOrEqualOp: ("ge", False),
    ox.AndOp: ("and", True),
    ox.OrOp: ("or", True),
}
SWAPPED = {"lt": "gt", "gt": "lt", "le": "ge", "ge": "le"}
UNARY_OPS: dict[type, str] = {
    ox.NegOp: "neg",
    ox.AbsOp: "abs",
    ox.ExpOp: "exp",
    ox.LogOp: "log",
    ox.SqrtOp: "sqrt",
    ox.ReciprocalOp: "recip",
    ox.ErfOp: "erf",
    ox.TanhOp: "tanh",
    ox.SigmoidOp: "sigmoid",
    ox.ReluOp: "relu",
    ox.RoundOp: "round",
    ox.NotOp: "not",
}


def operand_plan(lowering: Lowering, value: SSAValue, out_shape: tuple[int, ...]) -> Operand:
    shape = ox.shape_of(value)
    owner = value.owner
    if isinstance(owner, ox.ConstantOp):
        array = owner.to_numpy()
        if array.size and (array == array.flat[0]).all():
            return Operand("imm", float(array.flat[0]))
    tensor = lowering.tensor(value)
    rank = len(out_shape)
    padded = (1,) * (rank - len(shape)) + tuple(shape)
    if elements(shape) == 1:
        return Operand("scalar", tensor=tensor)
    out_lead = out_shape[:-1] if out_shape else ()
    lead = padded[:-1] if padded else ()
    row_map = (
        np.broadcast_to(np.arange(elements(lead)).reshape(lead), out_lead).reshape(-1)
        if out_lead
        else np.zeros(1, np.int64)
    )
    columns = padded[-1] if padded else 1
    out_columns = out_shape[-1] if out_shape else 1
    if columns == out_columns and (row_map == row_map[0]).all():
        return Operand("row", tensor=tensor, row_map=row_map)
    return Operand("full" if columns == out_columns else "col", tensor=tensor, row_map=row_map)


def _prepare_operand(lowering: Lowering, operand: Operand, columns: int) -> None:
    """Load rows and scalars used by every tile once, into the persistent area."""
    if operand.mode == "row" and columns > lowering.persistent_size - lowering.persistent_top:
        # Too wide to keep: load it with every tile instead (a stride-0 run repeats the row).
        operand.mode = "full"
        return
    if operand.mode == "row":
        operand.persistent = lowering.persistent(columns)
        lowering.load(
            VEC,
            operand.persistent,
            operand.tensor.address + int(operand.row_map[0]) * columns,
            1,
            columns,
            columns,
        )
    elif operand.mode == "scalar":
        operand.persistent = lowering.persistent(1)
        lowering.load(VEC, operand.persistent, operand.tensor.address, 1, 1, 1)


def _load_operand(
    lowering: Lowering,
    operand: Operand,
    buffer: int,
    address: int,
    r0: int,
    rows: int,
    c0: int,
    cols: int,
    out_columns: int,
) -> tuple[int, int, str]:
    """Bring the operand's part of a tile on chip: (buffer, address, broadcast mode)."""
    if operand.mode in ("row", "scalar"):
        return VEC, operand.persistent + (c0 if operand.mode == "row" else 0), operand.mode
    if operand.mode == "imm":
        return 0, 0, "imm"
    width = out_columns if operand.mode == "full" else 1
    position = 0
    for start, count, stride in runs_of(operand.row_map[r0 : r0 + rows]):
        source = operand.tensor.address + start * width + (c0 if operand.mode == "full" else 0)
        row_stride = width if stride == 1 else 0
        lowering.load(
            buffer,
            address + position * (cols if operand.mode == "full" else 1),
            source,
            count,
            cols if operand.mode == "full" else 1,
            row_stride,
        )
        position += count
    return buffer, address, operand.mode


def lower_elementwise(
    lowering: Lowering,
    op: Operation,
    vec_op: str,
    operands: list[SSAValue],
    commutative: bool = False,
) -> None:
    result = op.results[0]
    out_shape = ox.shape_of(result)
    out = lowering.tensors[result]
    rows_total, columns = rows_cols(out_shape)
    plans = [operand_plan(lowering, v, out_shape) for v in operands]
    for plan in plans:
        _prepare_operand(lowering, plan, columns)
    if (
        len(plans) == 2
        and plans[0].mode != "full"
        and plans[1].mode == "full"
        and (commutative or vec_op in SWAPPED)
    ):
        plans.reverse()
        vec_op = SWAPPED.get(vec_op, vec_op)
    buffers = [ACT, WGT, ACC]
    tile_budget = min(lowering.half[ACT], lowering.half[WGT], lowering.half[VEC])
    cols = min(columns, tile_budget)
    rows_per_tile = max(1, tile_budget // cols)
    for r0, rows in split_ranges(rows_total, rows_per_tile):
        for c0, width in split_ranges(columns, cols):
            lowering.next_stage()
            located = [
                _load_operand(
                    lowering,
                    plan,
                    buffers[i],
                    lowering.slot(buffers[i]),
                    r0,
                    rows,
                    c0,
                    width,
                    columns,
                )
                for i, plan in enumerate(plans)
            ]
            destination = lowering.slot(VEC)
            if vec_op == "select":
                located = [
                    _materialize_scalar(lowering, plan)
                    if mode == "imm"
                    else (buffer, address, mode)
                    for plan, (buffer, address, mode) in zip(plans, located, strict=True)
                ]
                (cb, ca, cm), (ab, aa, am), (bb, ba, bm) = located
                lowering.emit(
                    "SELECT", dst=VEC, dst_addr=destination, cond=cb, cond_addr=ca, a=ab, a_addr=aa, b=bb, b_addr=ba,
                    rows=rows, cols=width, cond_bcast=cm, a_bcast=am, b_bcast=bm,
                )  # fmt: skip
            elif vec_op == "copy":
                buffer, address, mode = located[0]
                lowering.vec(
                    "copy",
                    VEC,
                    destination,
                    (0, 0),
                    rows,
                    width,
                    b=(buffer, address),
                    bcast=mode,
                    imm=plans[0].imm,
                )
            else:
                first = located[0]
                if first[2] != "full":
                    first = _materialize(lowering, plans[0], first, rows, width, destination)
                if len(located) == 1:
                    lowering.vec(vec_op, VEC, destination, (first[0], first[1]), rows, width)
                else:
                    second = located[1]
                    imm = plans[1].imm if second[2] == "imm" else 0.0
                    lowering.vec(
                        vec_op,
                        VEC,
                        destination,
                        (first[0], first[1]),
                        rows,
                        width,
                        b=(second[0], second[1]),
                        bcast=second[2],
                        imm=imm,
                    )
            lowering.store(VEC, destination, out.address + r0 * columns + c0, rows, width, columns)


def _materialize(
    lowering: Lowering,
    plan: Operand,
    located: tuple[int, int, str],
    rows: int,
    cols: int,
    address: int,
) -> tuple[int, int, str]:
    """A full tile from a broadcast operand (VEC copy of b), written at `address` in vec."""
    buffer, source, mode = located
    lowering.vec(
        "copy", VEC, address, (0, 0), rows, cols, b=(buffer, source), bcast=mode, imm=plan.imm
    )
    return VEC, address, "full"


def _materialize_scalar(lowering: Lowering, plan: Operand) -> tuple[int, int, str]:
    address = lowering.persistent(1)
    lowering.vec("copy", VEC, address, (0, 0), 1, 1, bcast="imm", imm=plan.imm)
    return VEC, address, "scalar"


def _lower_binary(lowering: Lowering, op: Operation) -> None:
    vec_op, commutative = BINARY_OPS[type(op)]
    if len(op.operands) != 2:
        raise Unsupported(f"{len(op.operands)} operands")
    lower_elementwise(lowering, op, vec_op, list(op.operands), commutative)


def _lower_unary(lowering: Lowering, op: Operation) -> None:
    lower_elementwise(lowering, op, UNARY_OPS[type(op)], [op.operands[0]])


for _class in BINARY_OPS:
    LOWERINGS[_class] = _lower_binary
for _class in UNARY_OPS:
    LOWERINGS[_class] = _lower_unary


@lowering(ox.GeluOp)
def lower_gelu(lowering: Lowering, op: ox.GeluOp) -> None:
    lower_elementwise(
        lowering,
        op,
        "gelu_tanh" if op.str_attr("approximate", "none") == "tanh" else "gelu",
        [op.X],
    )


@lowering(ox.CastOp, ox.CastLikeOp)
def lower_cast(lowering: Lowering, op: Operation) -> None:
    target = ox.numpy_dtype(ox.element_of(op.results[0]))
    source = ox.numpy_dtype(ox.element_of(op.operands[0]))
    if target.kind == "b":
        vec_op = "nonzero"
    elif target.kind in "iu" and source.kind == "f":
        vec_op = "trunc"
    else:
        vec_op = "copy"
    lower_elementwise(lowering, op, vec_op, [op.operands[0]])


@lowering(ox.ExpandOp, ox.IdentityOp)
def lower_copy(lowering: Lowering, op: Operation) -> None:
    lower_elementwise(lowering, op, "copy", [op.operands[0]])


@lowering(ox.WhereOp)
def lower_where(lowering: Lowering, op: ox.WhereOp) -> None:
    lower_elementwise(lowering, op, "select", [op.condition, op.X, op.Y])


# ---------------------------------------------------------------------------------------------
# Row-wise ops: LayerNorm, Softmax, reductions, CumSum
# ---------------------------------------------------------------------------------------------


def _row_tiles(lowering: Lowering, rows_total: int, columns: int):
    budget = min(lowering.half[ACT], lowering.half[VEC])
    if columns > budget:
        raise Unsupported(f"rows of {columns} elements do not fit a buffer half")
    yield from split_ranges(rows_total, max(1, budget // columns))


def _vector_row(lowering: Lowering, value: SSAValue, columns: int) -> int:
    """A (1 x columns) row in the persistent area: loaded, or written from a splat constant."""
    plan = operand_plan(lowering, value, (columns,))
    address = lowering.persistent(columns)
    if plan.mode == "imm":
        lowering.vec("copy", VEC, address, (0, 0), 1, columns, bcast="imm", imm=plan.imm)
    elif plan.mode in ("row", "full") and elements(ox.shape_of(value)) == columns:
        lowering.load(VEC, address, plan.tensor.address, 1, columns, columns)
    else:
        raise Unsupported(f"a per-row parameter of shape {ox.shape_of(value)}")
    return address


@lowering(ox.LayerNormalizationOp)
def lower_layer_norm(lowering: Lowering, op: ox.LayerNormalizationOp) -> None:
    _lower_norm(lowering, op, op.X, op.Scale, op.B, op.Y, rms=False)


@lowering(ox.RMSNormalizationOp)
def lower_rms_norm(lowering: Lowering, op: ox.RMSNormalizationOp) -> None:
    # LAYERNORM with its rms flag, not VEC/REDUCE steps: the norm stays one instruction per row
    # tile, charged two passes over the row instead of LayerNorm's three (runtime/isa.py).
    _lower_norm(lowering, op, op.X, op.scale, None, op.Y, rms=True)


def _lower_norm(
    lowering: Lowering,
    op: Operation,
    x_value: SSAValue,
    scale: SSAValue,
    bias: SSAValue | None,
    y_value: SSAValue,
    rms: bool,
) -> None:
    """Per row tile: LOAD, LAYERNORM (rms: no mean subtracted), STORE; gamma (and beta) rows
    are written to vec's persistent area once."""
    shape = ox.shape_of(x_value)
    axis = op.int_attr("axis", -1) % len(shape)
    rows_total, columns = elements(shape[:axis]), elements(shape[axis:])
    x, out = lowering.tensor(x_value), lowering.tensors[y_value]
    gamma = _vector_row(lowering, scale, columns)
    beta = _vector_row(lowering, bias, columns) if bias is not None else 0
    for r0, rows in _row_tiles(lowering, rows_total, columns):
        lowering.next_stage()
        source, target = lowering.slot(ACT), lowering.slot(VEC)
        lowering.load(ACT, source, x.address + r0 * columns, rows, columns, columns)
        lowering.emit(
            "LAYERNORM", dst=VEC, dst_addr=target, src=ACT, src_addr=source, gamma=VEC, gamma_addr=gamma,
            beta=VEC, beta_addr=beta, has_beta=int(bias is not None), rows=rows, cols=columns,
            eps=op.float_attr("epsilon", 1e-5), rms=int(rms),
        )  # fmt: skip
        lowering.store(VEC, target, out.address + r0 * columns, rows, columns, columns)


def _per_row(
    lowering: Lowering, source: SSAValue, target: SSAValue, name: str, out_columns: int, **fields
) -> None:
    """A row-wise instruction over row tiles of `source`: LOAD, `name`, STORE (out_columns
    elements per row: the row itself, or 1 for a reduction)."""
    rows_total, columns = rows_cols(ox.shape_of(source))
    x, out = lowering.tensor(source), lowering.tensors[target]
    for r0, rows in _row_tiles(lowering, rows_total, columns):
        lowering.next_stage()
        tile, result = lowering.slot(ACT), lowering.slot(VEC)
        lowering.load(ACT, tile, x.address + r0 * columns, rows, columns, columns)
        lowering.emit(
            name,
            dst=VEC,
            dst_addr=result,
            src=ACT,
            src_addr=tile,
            rows=rows,
            cols=columns,
            **fields,
        )
        lowering.store(VEC, result, out.address + r0 * out_columns, rows, out_columns, out_columns)


@lowering(ox.SoftmaxOp)
def lower_softmax(lowering: Lowering, op: ox.SoftmaxOp) -> None:
    shape = ox.shape_of(op.input)
    if op.int_attr("axis", -1) % len(shape) != len(shape) - 1:
        raise Unsupported("softmax over an axis other than the last")
    _per_row(lowering, op.input, op.output, "SOFTMAX", rows_cols(shape)[1], scale=1.0)


REDUCTIONS = {
    ox.ReduceMeanOp: "mean",
    ox.ReduceSumOp: "sum",
    ox.ReduceMaxOp: "max",
    ox.ReduceMinOp: "min",
}


@lowering(*REDUCTIONS)
def lower_reduce(lowering: Lowering, op: ox.ReduceOp) -> None:
    shape = ox.shape_of(op.data)
    axes = [] if op.axes is None else [int(a) % len(shape) for a in constant_values(op.axes)]
    if axes != [len(shape) - 1]:
        raise Unsupported(f"reduction over axes {axes}; only the last axis is lowered")
    _per_row(lowering, op.data, op.reduced, "REDUCE", 1, op=REDUCTIONS[type(op)])


@lowering(ox.CumSumOp)
def lower_cumsum(lowering: Lowering, op: ox.CumSumOp) -> None:
    shape = ox.shape_of(op.x)
    axis = int(constant_values(op.axis)[0]) % len(shape)
    if axis != len(shape) - 1 or op.int_attr("exclusive", 0) or op.int_attr("reverse", 0):
        raise Unsupported("only an inclusive, forward cumsum over the last axis is lowered")
    if shape[-1] > min(lowering.half[ACT], lowering.half[WGT], lowering.half[VEC]):
        raise Unsupported(f"a scan over rows of {shape[-1]} elements does not fit a buffer half")
    lower_elementwise(lowering, op, "cumsum", [op.x])


def constant_values(value: SSAValue) -> list:
    owner = value.owner
    if not isinstance(owner, ox.ConstantOp):
        raise Unsupported(f"'{value.name_hint}' must be a constant")
    return owner.to_numpy().reshape(-1).tolist()
