"""lower-to-isa: `onnx` + `cta` dialects in, `ctaisa` dialect out.

Every op left after detection (and compression) becomes tiles of CTA-ISA instructions:
- DRAM: weights and constants form the data segment (by weight-store name, small constants
  inline), inputs and outputs get their own regions, intermediate activations share an arena
  whose regions are reused after their last reader; Reshape/Flatten/Squeeze/Unsqueeze alias.
- Buffers: each of act/wgt/acc is split in two halves used alternately, so the DMA of the next
  tile can overlap the compute of the current one (the cost model's scoreboard sees no
  conflict); `vec` keeps a persistent area for rows reused by a whole op (LayerNorm gamma/beta,
  masks, broadcast operands). No tile is larger than its half.
- An op that cannot be lowered is collected; one error lists every such node.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    IntAttr,
    ModuleOp,
    StringAttr,
)
from xdsl.ir import Block, BlockArgument, Operation, Region, SSAValue
from xdsl.passes import ModulePass

from ctac.dialects import cta
from ctac.dialects import onnx as ox
from ctac.dialects.ctaisa import INSTRUCTION_OPS, DataOp, SymbolOp
from ctac.errors import CtacError
from ctac.hw import Hardware, load_hardware
from ctac.runtime.evaluator import indexed_extent, input_names, main_function, output_names

ACT, WGT, ACC, VEC = 0, 1, 2, 3
# Elements of `vec` kept for rows that live through a whole op.
PERSISTENT = 16384
HW_ATTRIBUTE = "ctaisa.hw"
DRAM_ATTRIBUTE = "ctaisa.dram"
ALIAS_OPS = (ox.ReshapeOp, ox.FlattenOp, ox.SqueezeOp, ox.UnsqueezeOp)


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape)) if shape else 1


def _rows_cols(shape: tuple[int, ...]) -> tuple[int, int]:
    if not shape:
        return 1, 1
    return _size(shape[:-1]), shape[-1]


def _dtype_name(value: SSAValue) -> str:
    return str(ox.numpy_dtype(ox.element_of(value)))


@dataclass
class Tensor:
    """A tensor in DRAM, row-major at `address` (element address)."""

    address: int
    shape: tuple[int, ...]


@dataclass
class Arena:
    """First-fit allocator over DRAM addresses above the data segment and the symbols."""

    base: int
    free: list[tuple[int, int]] = field(default_factory=list)
    top: int = 0

    def allocate(self, size: int) -> int:
        size = max(size, 1)
        for index, (start, length) in enumerate(self.free):
            if length >= size:
                if length == size:
                    self.free.pop(index)
                else:
                    self.free[index] = (start + size, length - size)
                return start
        address = self.base + self.top
        self.top += size
        return address

    def release(self, address: int, size: int) -> None:
        self.free.append((address, max(size, 1)))
        self.free.sort()
        merged: list[tuple[int, int]] = []
        for start, length in self.free:
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + length)
            else:
                merged.append((start, length))
        self.free = merged


class Unsupported(Exception):
    """An op this lowering cannot handle (collected, then reported together)."""


@dataclass
class Operand:
    """How one elementwise operand covers an output tile."""

    mode: str  # full | row | col | scalar | imm
    imm: float = 0.0
    tensor: Tensor | None = None
    row_map: np.ndarray | None = None  # output row -> operand row
    persistent: int | None = None  # vec address of a row/scalar loaded once


def _split_ranges(total: int, step: int):
    for start in range(0, total, step):
        yield start, min(step, total - start)


def _runs(indices: np.ndarray) -> list[tuple[int, int, int]]:
    """(first index, count, stride in rows) runs covering `indices` in order: stride 1 or 0."""
    runs: list[tuple[int, int, int]] = []
    position = 0
    while position < len(indices):
        start = int(indices[position])
        length = 1
        stride = 1
        if position + 1 < len(indices):
            stride = int(indices[position + 1]) - start
            if stride not in (0, 1):
                stride = 1
            else:
                while (
                    position + length < len(indices)
                    and int(indices[position + length]) == start + stride * length
                ):
                    length += 1
        runs.append((start, length, stride))
        position += length
    return runs


class Lowering:
    def __init__(self, module: ModuleOp, hw: Hardware) -> None:
        self.module = module
        self.hw = hw
        self.function = main_function(module)
        self.capacity = {b.index: b.capacity for b in hw.buffers}
        self.half = {index: size // 2 for index, size in self.capacity.items()}
        # vec keeps a persistent area (a quarter of it at most) above its two halves.
        self.persistent_size = min(PERSISTENT, self.capacity[VEC] // 4)
        self.half[VEC] = (self.capacity[VEC] - self.persistent_size) // 2
        self.instructions: list[tuple[str, dict]] = []
        self.sources: list[str] = []
        self.source = ""
        self.data: list[tuple[int, int, str | None, np.ndarray | None]] = []
        self.data_top = 0
        self.symbols: list[SymbolOp] = []
        self.tensors: dict[SSAValue, Tensor] = {}
        self.stage = 0
        self.persistent_top = 0
        self.hash_planes: dict[Operation, int] = {}
        self.cluster_instructions: dict[Operation, list[int]] = {}
        self.dynamic: list[tuple[int, str, int]] = []

    # ------------------------------------------------------------------ emission helpers
    def emit(self, name: str, **fields) -> None:
        self.instructions.append((name, fields))
        self.sources.append(self.source)

    def slot(self, buffer: int, offset: int = 0, parity: int | None = None) -> int:
        """Address inside the current (or given) half of a buffer."""
        half = self.stage % 2 if parity is None else parity
        return half * self.half[buffer] + offset

    def dynamic_last(self, field_name: str, cluster: int) -> None:
        """The last emitted instruction's `field_name` is the number of clusters `cluster` formed."""
        self.dynamic.append((len(self.instructions) - 1, field_name, cluster))

    def next_stage(self) -> None:
        self.stage += 1

    def persistent(self, size: int) -> int:
        if self.persistent_top + size > self.persistent_size:
            raise Unsupported(
                f"needs {size} persistent vector elements; {self.persistent_size - self.persistent_top} left"
            )
        address = 2 * self.half[VEC] + self.persistent_top
        self.persistent_top += size
        return address

    def load(
        self, buffer: int, address: int, source: int, rows: int, cols: int, stride: int
    ) -> None:
        self.emit(
            "LOAD", dst=buffer, dst_addr=address, src=source, rows=rows, cols=cols, stride=stride
        )

    def store(
        self, buffer: int, address: int, target: int, rows: int, cols: int, stride: int
    ) -> None:
        self.emit(
            "STORE", src=buffer, src_addr=address, dst=target, rows=rows, cols=cols, stride=stride
        )

    def vec(
        self,
        op: str,
        dst: int,
        dst_addr: int,
        a: tuple[int, int],
        rows: int,
        cols: int,
        b: tuple[int, int] = (0, 0),
        bcast: str = "imm",
        imm: float = 0.0,
    ) -> None:
        self.emit(
            "VEC",
            op=op,
            dst=dst,
            dst_addr=dst_addr,
            a=a[0],
            a_addr=a[1],
            b=b[0],
            b_addr=b[1],
            rows=rows,
            cols=cols,
            bcast=bcast,
            imm=imm,
        )

    # ------------------------------------------------------------------ DRAM
    def data_tensor(self, value: SSAValue) -> Tensor:
        tensor = self.tensors.get(value)
        if tensor is not None:
            return tensor
        owner = value.owner
        shape = ox.shape_of(value)
        address = self.data_top
        if isinstance(owner, ox.WeightOp):
            self.data.append((address, _size(shape), owner.ref.data, None))
        elif isinstance(owner, ox.ConstantOp):
            array = owner.to_numpy().astype(np.float32)
            self.data.append((address, _size(shape), None, array))
        else:
            raise Unsupported(f"{value.name_hint}: not a constant")
        self.data_top += _size(shape)
        tensor = Tensor(address, shape)
        self.tensors[value] = tensor
        return tensor

    def tensor(self, value: SSAValue) -> Tensor:
        tensor = self.tensors.get(value)
        if tensor is None:
            if isinstance(value.owner, ox.WeightOp | ox.ConstantOp):
                return self.data_tensor(value)
            raise Unsupported(f"value {value.name_hint or value} has no DRAM location")
        return tensor

    # ------------------------------------------------------------------ driver
    def run(self) -> ModuleOp:
        block = self.function.body.block
        ret = block.last_op
        assert isinstance(ret, func.ReturnOp)
        ops = [op for op in block.ops if op is not ret]
        aliases: dict[SSAValue, SSAValue] = {}

        def root(value: SSAValue) -> SSAValue:
            while value in aliases:
                value = aliases[value]
            return value

        for op in ops:
            if isinstance(op, ALIAS_OPS):
                aliases[op.results[0]] = op.operands[0]
        # The data segment comes first (DRAM address 0): every constant a lowered op reads.
        for op in ops:
            if isinstance(op, (ox.WeightOp, ox.ConstantOp, *ALIAS_OPS)):
                continue
            for operand in op.operands:
                if isinstance(root(operand).owner, ox.WeightOp | ox.ConstantOp):
                    self.data_tensor(root(operand))
            prepare = PREPARE.get(type(op))
            if prepare is not None:
                prepare(self, op)
        for value in ret.arguments:
            if isinstance(root(value).owner, ox.WeightOp | ox.ConstantOp):
                self.data_tensor(root(value))
        self.arena = Arena(base=self.data_top)
        names = input_names(self.module)
        for name, argument in zip(names, block.args, strict=True):
            address = self.arena.allocate(_size(ox.shape_of(argument)))
            self.tensors[argument] = Tensor(address, ox.shape_of(argument))
            vocab = indexed_extent(argument) or 0
            self.symbols.append(
                _symbol("input", name, _dtype_name(argument), ox.shape_of(argument), address, vocab)
            )
        last_use: dict[SSAValue, int] = {}
        for index, op in enumerate(ops):
            for operand in op.operands:
                last_use[root(operand)] = index
        outputs = {root(v) for v in ret.arguments}
        problems: list[str] = []
        for index, op in enumerate(ops):
            self.source = _source_of(op)
            if isinstance(op, ox.WeightOp | ox.ConstantOp):
                continue
            if isinstance(op, ALIAS_OPS):
                base = self.tensors.get(root(op.results[0]))
                if base is not None:
                    self.tensors[op.results[0]] = Tensor(base.address, ox.shape_of(op.results[0]))
                continue
            for result in op.results:
                shape = ox.shape_of(result)
                self.tensors[result] = Tensor(self.arena.allocate(_size(shape)), shape)
            lower = LOWERINGS.get(type(op))
            try:
                if lower is None:
                    raise Unsupported("no lowering for this op")
                self.persistent_top = 0
                lower(self, op)
            except Unsupported as exc:
                label = (
                    op.results[0].name_hint if op.results and op.results[0].name_hint else op.name
                )
                problems.append(f"'{label}' ({op.name}): {exc}")
            for operand in set(op.operands):
                base = root(operand)
                if (
                    last_use.get(base) == index
                    and base not in outputs
                    and not isinstance(base, BlockArgument)
                    and not isinstance(base.owner, ox.WeightOp | ox.ConstantOp)
                    and base in self.tensors
                ):
                    tensor = self.tensors[base]
                    self.arena.release(tensor.address, _size(tensor.shape))
        if problems:
            raise CtacError(
                f"{len(problems)} op(s) cannot be lowered to the CTA-ISA:\n  "
                + "\n  ".join(problems)
            )
        for name, value in zip(output_names(self.module), ret.arguments, strict=True):
            tensor = self.tensors.get(value) or self.tensors.get(root(value))
            if tensor is None:
                raise CtacError(f"output '{name}' has no DRAM location")
            self.symbols.append(
                _symbol("output", name, _dtype_name(value), ox.shape_of(value), tensor.address)
            )
        self.source = "end"
        self.emit("HALT")
        return self._module()

    def _module(self) -> ModuleOp:
        ops: list[Operation] = []
        for address, size, ref, value in self.data:
            properties = {"address": IntAttr(address), "size": IntAttr(size)}
            if ref is not None:
                properties["ref"] = StringAttr(ref)
            else:
                properties["value"] = ox.dense_from_numpy(value.astype(np.float32).reshape(-1))
            ops.append(DataOp.build(properties=properties))
        ops.extend(self.symbols)
        dynamic: dict[int, list[str]] = {}
        for index, field_name, cluster in self.dynamic:
            dynamic.setdefault(index, []).append(f"{field_name}={cluster}")
        attributes: dict = {}  # immutable attributes, shared by the ops that use the same value
        for index, ((name, fields), source) in enumerate(
            zip(self.instructions, self.sources, strict=True)
        ):
            op = INSTRUCTION_OPS[name].create_from(fields, source, attributes)
            if index in dynamic:
                op.attributes["dynamic"] = StringAttr(",".join(dynamic[index]))
            ops.append(op)
        module = ModuleOp(ops)
        weights = self.module.attributes.get("ctac.weights")
        if weights is not None:
            module.attributes["ctac.weights"] = weights
        module.attributes[HW_ATTRIBUTE] = StringAttr(self.hw.digest.hex())
        module.attributes[DRAM_ATTRIBUTE] = IntAttr(self.arena.base + self.arena.top)
        return module


def _symbol(
    kind: str, name: str, dtype: str, shape: tuple[int, ...], address: int, vocab: int = 0
) -> SymbolOp:
    properties = {
        "kind": StringAttr(kind),
        "sym": StringAttr(name),
        "dtype": StringAttr(dtype),
        "shape": ArrayAttr([IntAttr(d) for d in shape]),
        "address": IntAttr(address),
    }
    if vocab:
        properties["vocab"] = IntAttr(vocab)
    return SymbolOp.build(properties=properties)


def _source_of(op: Operation) -> str:
    """'<op>:<name>': the op kind (attention is told apart by it) and the layer's name."""
    source = op.attributes.get("ctac.source")
    role = op.attributes.get("ctac.role")
    kind = f"{op.name}.{role.data}" if isinstance(role, StringAttr) else op.name
    if isinstance(source, StringAttr):
        return f"{kind}:{source.data}"
    if op.results and op.results[0].name_hint:
        return f"{op.name}:{op.results[0].name_hint}"
    return op.name


LOWERINGS: dict[type, Callable[[Lowering, Operation], None]] = {}
# Optional hooks run before DRAM planning, for ops that add data of their own.
PREPARE: dict[type, Callable[[Lowering, Operation], None]] = {}


def lowering(*op_classes: type):
    def register(function):
        for op_class in op_classes:
            LOWERINGS[op_class] = function
        return function

    return register


# ---------------------------------------------------------------------------------------------
# GEMM tiling
# ---------------------------------------------------------------------------------------------


def _round_down(value: int, multiple: int) -> int:
    return value if value <= multiple else value - value % multiple


def gemm_tiles(
    lowering: Lowering, m: int, k: int, n: int, n_step: int | None = None
) -> tuple[int, int, int]:
    """Tile sizes (tm, tk, tn) whose A, B and C tiles each fit half a buffer."""
    half_a, half_b, half_c = lowering.half[ACT], lowering.half[WGT], lowering.half[ACC]
    rows = lowering.hw.view().pe_rows
    # Weight stationary: each (R x C) weight fold costs 2R + C - 2 fill cycles plus one per row of
    # A, so tall A tiles amortise the fill (512 rows: 84% of peak; 256: 73%).
    tm = min(m, 512)
    tk = min(k, max(1, half_a // tm))
    tk = _round_down(tk, rows) if tk < k else tk
    if n_step is not None:
        tn = n_step
        if tk * tn > half_b:
            tk = max(1, half_b // tn)
    else:
        tn = min(n, max(1, half_b // tk), max(1, half_c // tm))
        tn = _round_down(tn, lowering.hw.view().pe_cols) if tn < n else tn
    if tm * tn > half_c:
        tm = max(1, half_c // tn)
    if tm * tk > half_a or tk * tn > half_b or tm * tn > half_c:
        raise Unsupported(f"no GEMM tiling fits the buffers for {m}x{k}x{n}")
    return tm, tk, tn


@dataclass
class GemmPlan:
    """A 2-D GEMM C (m x n) = A (m x k) @ B (k x n), with DRAM addressing given by callbacks."""

    m: int
    k: int
    n: int
    load_a: Callable[[int, int, int, int, int], None]  # (buffer address, m0, tm, k0, tk)
    load_b: Callable[[int, int, int, int, int], None]  # (buffer address, k0, tk, n0, tn)
    store_c: Callable[[int, int, int, int, int], None]  # (buffer address, m0, tm, n0, tn)
    transpose_b: bool = False
    bias: Tensor | None = None  # a (n,) row in DRAM
    bias_offset: int = 0
    n_step: int | None = None


def emit_gemm(lowering: Lowering, plan: GemmPlan) -> None:
    tm, tk, tn = gemm_tiles(lowering, plan.m, plan.k, plan.n, plan.n_step)
    single_k = tk >= plan.k
    for m0, rows in _split_ranges(plan.m, tm):
        lowering.next_stage()
        a_parity = lowering.stage % 2
        if single_k:
            plan.load_a(lowering.slot(ACT, parity=a_parity), m0, rows, 0, plan.k)
        for n0, cols in _split_ranges(plan.n, tn):
            lowering.next_stage()
            c_address = lowering.slot(ACC)
            bias_address = 0
            if plan.bias is not None:
                bias_address = lowering.persistent(cols)
                lowering.load(
                    VEC, bias_address, plan.bias.address + plan.bias_offset + n0, 1, cols, cols
                )
            for k0, depth in _split_ranges(plan.k, tk):
                if not single_k:
                    lowering.next_stage()
                    plan.load_a(lowering.slot(ACT), m0, rows, k0, depth)
                    a_address = lowering.slot(ACT)
                else:
                    a_address = lowering.slot(ACT, parity=a_parity)
                b_address = lowering.slot(WGT)
                plan.load_b(b_address, k0, depth, n0, cols)
                lowering.emit(
                    "GEMM",
                    dst=ACC, dst_addr=c_address, a=ACT, a_addr=a_address, b=WGT, b_addr=b_address,
                    m=rows, k=depth, n=cols, accumulate=int(k0 > 0), transpose_b=int(plan.transpose_b),
                    has_bias=int(plan.bias is not None and k0 == 0), bias=VEC, bias_addr=bias_address,
                )  # fmt: skip
            plan.store_c(c_address, m0, rows, n0, cols)
            lowering.persistent_top = 0


def _dense_loader(lowering: Lowering, buffer: int, base: int, row_length: int):
    """Loads (rows x cols) blocks of a row-major (.. x row_length) matrix at `base`."""

    def load(address: int, r0: int, rows: int, c0: int, cols: int) -> None:
        lowering.load(buffer, address, base + r0 * row_length + c0, rows, cols, row_length)

    return load


def _dense_storer(lowering: Lowering, base: int, row_length: int):
    def store(address: int, r0: int, rows: int, c0: int, cols: int) -> None:
        lowering.store(ACC, address, base + r0 * row_length + c0, rows, cols, row_length)

    return store


@lowering(ox.MatMulOp)
def lower_matmul(lowering: Lowering, op: ox.MatMulOp) -> None:
    a_shape, b_shape, out_shape = ox.shape_of(op.A), ox.shape_of(op.B), ox.shape_of(op.Y)
    a, b, out = lowering.tensor(op.A), lowering.tensor(op.B), lowering.tensors[op.Y]
    if len(a_shape) < 2 or len(b_shape) < 2:
        raise Unsupported("1-D MatMul operands")
    m, k = a_shape[-2], a_shape[-1]
    n = b_shape[-1]
    if len(b_shape) == 2:
        rows = _size(a_shape[:-1])
        emit_gemm(
            lowering,
            GemmPlan(
                rows,
                k,
                n,
                _dense_loader(lowering, ACT, a.address, k),
                _dense_loader(lowering, WGT, b.address, n),
                _dense_storer(lowering, out.address, n),
            ),
        )
        return
    batch = out_shape[:-2]
    a_index = _batch_map(a_shape[:-2], batch)
    b_index = _batch_map(b_shape[:-2], batch)
    for index in range(_size(batch)):
        a_base = a.address + int(a_index[index]) * m * k
        b_base = b.address + int(b_index[index]) * k * n
        c_base = out.address + index * m * n
        emit_gemm(
            lowering,
            GemmPlan(
                m,
                k,
                n,
                _dense_loader(lowering, ACT, a_base, k),
                _dense_loader(lowering, WGT, b_base, n),
                _dense_storer(lowering, c_base, n),
            ),
        )


def _batch_map(shape: tuple[int, ...], batch: tuple[int, ...]) -> np.ndarray:
    """For each flat index of `batch`, the flat index into the broadcast `shape`."""
    padded = (1,) * (len(batch) - len(shape)) + tuple(shape)
    return np.broadcast_to(np.arange(_size(padded)).reshape(padded), batch).reshape(-1)


@lowering(ox.GemmOp)
def lower_gemm(lowering: Lowering, op: ox.GemmOp) -> None:
    if (
        op.int_attr("transA", 0)
        or op.float_attr("alpha", 1.0) != 1.0
        or op.float_attr("beta", 1.0) != 1.0
    ):
        raise Unsupported("Gemm with transA, alpha or beta")
    a, b, out = lowering.tensor(op.A), lowering.tensor(op.B), lowering.tensors[op.Y]
    m, k = ox.shape_of(op.A)
    transpose = bool(op.int_attr("transB", 0))
    n = ox.shape_of(op.B)[0 if transpose else 1]
    bias = None
    if op.C is not None:
        if ox.shape_of(op.C) not in ((n,), (1, n)):
            raise Unsupported(f"Gemm bias of shape {ox.shape_of(op.C)}")
        bias = lowering.tensor(op.C)

    def load_b(address: int, k0: int, depth: int, n0: int, cols: int) -> None:
        if transpose:
            lowering.load(WGT, address, b.address + n0 * k + k0, cols, depth, k)
        else:
            lowering.load(WGT, address, b.address + k0 * n + n0, depth, cols, n)

    emit_gemm(
        lowering,
        GemmPlan(
            m,
            k,
            n,
            _dense_loader(lowering, ACT, a.address, k),
            load_b,
            _dense_storer(lowering, out.address, n),
            transpose,
            bias,
        ),
    )


@lowering(cta.ProjectOp)
def lower_project(lowering: Lowering, op: cta.ProjectOp) -> None:
    x, w, out = lowering.tensor(op.input), lowering.tensor(op.weight), lowering.tensors[op.output]
    batch, seq, hidden = ox.shape_of(op.input)
    heads, head_dim = op.int_attr("heads"), op.int_attr("head_dim")
    start, end = op.column_range()
    width = ox.shape_of(op.weight)[1]
    bias = lowering.tensor(op.bias) if op.bias is not None else None
    for b in range(batch):

        def store(address: int, s0: int, rows: int, n0: int, cols: int, b: int = b) -> None:
            head = n0 // head_dim
            target = out.address + ((b * heads + head) * seq + s0) * head_dim
            lowering.store(ACC, address, target, rows, cols, head_dim)

        emit_gemm(
            lowering,
            GemmPlan(
                seq, hidden, end - start,
                _dense_loader(lowering, ACT, x.address + b * seq * hidden, hidden),
                lambda address, k0, depth, n0, cols: lowering.load(WGT, address, w.address + k0 * width + start + n0, depth, cols, width),
                store, bias=bias, bias_offset=start, n_step=head_dim,
            ),
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------


def _emit_scores(
    lowering: Lowering,
    s_address: int,
    q_address: int,
    k_address: int,
    rows: int,
    head_dim: int,
    keys: int,
) -> None:
    """S = Q K^T for one head: query rows in ACT, keys in WGT (read transposed), scores into ACC."""
    lowering.emit(
        "GEMM", dst=ACC, dst_addr=s_address, a=ACT, a_addr=q_address, b=WGT, b_addr=k_address,
        m=rows, k=head_dim, n=keys, transpose_b=1,
    )  # fmt: skip


def _emit_weighted_values(
    lowering: Lowering,
    o_address: int,
    p_address: int,
    v_address: int,
    rows: int,
    keys: int,
    value_dim: int,
) -> None:
    """O = P V for one head: probabilities in ACT, values in WGT, the output into ACC."""
    lowering.emit(
        "GEMM", dst=ACC, dst_addr=o_address, a=ACT, a_addr=p_address, b=WGT, b_addr=v_address,
        m=rows, k=keys, n=value_dim,
    )  # fmt: skip


@lowering(cta.AttentionOp)
def lower_attention(lowering: Lowering, op: cta.AttentionOp) -> None:
    """Per (batch, head), per block of queries: S = Q K^T (GEMM, K transposed), P = SOFTMAX(S)
    with scale, softcap, mask and causal frontier, O = P V (GEMM)."""
    q, k, v = (lowering.tensor(x) for x in (op.query, op.key, op.value))
    out = lowering.tensors[op.output]
    batch, heads, q_len, head_dim = ox.shape_of(op.query)
    kv_heads, kv_len = ox.shape_of(op.key)[1], ox.shape_of(op.key)[2]
    value_dim = ox.shape_of(op.value)[3]
    group = heads // kv_heads
    if kv_len * (head_dim + value_dim) > lowering.half[WGT]:
        raise Unsupported(
            f"keys and values of {kv_len} tokens do not fit half of wgt; key tiling is not implemented"
        )
    # Q and P share an act half, S and O an acc half, an additive mask block a vec half.
    rows = min(
        q_len,
        lowering.half[ACC] // (kv_len + value_dim),
        lowering.half[ACT] // (kv_len + head_dim),
        lowering.half[VEC] // (kv_len + 1),
    )
    if rows < 1:
        raise Unsupported(f"one query row over {kv_len} keys does not fit the buffer halves")
    kind = op.str_attr("mask_kind", "none")
    elsa_bits = op.int_attr("elsa_bits", 0)
    if elsa_bits and kind == "additive":
        raise Unsupported("ELSA filtering of an attention with an additive mask")
    mask = lowering.tensor(op.mask) if op.mask is not None else None
    mask_shape = ox.shape_of(op.mask) if op.mask is not None else ()
    causal = bool(op.int_attr("causal", 0))
    offset = op.int_attr("causal_offset", kv_len - q_len)
    planes = key_codes = 0
    if elsa_bits:
        planes = lowering.persistent(head_dim * elsa_bits)
        lowering.load(VEC, planes, lowering.hash_planes[op], head_dim, elsa_bits, elsa_bits)
        key_codes = lowering.persistent(kv_len)
    kept = lowering.persistent_top  # the hash planes and key codes live through every batch
    for b in range(batch):
        key_row = None
        if kind == "key_padding":
            key_row = lowering.persistent(kv_len)
            lowering.load(VEC, key_row, mask.address + b * kv_len, 1, kv_len, kv_len)
        for h in range(heads):
            lowering.next_stage()
            kv = h // group
            k_address = lowering.slot(WGT)
            v_address = k_address + kv_len * head_dim
            lowering.load(
                WGT,
                k_address,
                k.address + (b * kv_heads + kv) * kv_len * head_dim,
                kv_len,
                head_dim,
                head_dim,
            )
            lowering.load(
                WGT,
                v_address,
                v.address + (b * kv_heads + kv) * kv_len * value_dim,
                kv_len,
                value_dim,
                value_dim,
            )
            if elsa_bits:
                lowering.emit(
                    "HASH",
                    dst=VEC,
                    dst_addr=key_codes,
                    src=WGT,
                    src_addr=k_address,
                    proj=VEC,
                    proj_addr=planes,
                    rows=kv_len,
                    cols=head_dim,
                    bits=elsa_bits,
                )
            for q0, count in _split_ranges(q_len, rows):
                lowering.next_stage()
                q_address = lowering.slot(ACT)
                s_address = lowering.slot(ACC)
                lowering.load(
                    ACT,
                    q_address,
                    q.address + ((b * heads + h) * q_len + q0) * head_dim,
                    count,
                    head_dim,
                    head_dim,
                )
                selection = None
                if elsa_bits:
                    q_codes, elsa_mask = lowering.slot(VEC), lowering.slot(VEC) + count
                    lowering.emit(
                        "HASH",
                        dst=VEC,
                        dst_addr=q_codes,
                        src=ACT,
                        src_addr=q_address,
                        proj=VEC,
                        proj_addr=planes,
                        rows=count,
                        cols=head_dim,
                        bits=elsa_bits,
                    )
                    selection = len(lowering.instructions)
                    lowering.emit(
                        "ELSA_SELECT", dst=VEC, dst_addr=elsa_mask, q=VEC, q_addr=q_codes, k=VEC, k_addr=key_codes,
                        keys=VEC, keys_addr=key_row or 0, has_keys=int(key_row is not None), rows=count, cols=kv_len,
                        bits=elsa_bits, threshold=op.float_attr("elsa_threshold"), causal=int(causal), row0=q0,
                        causal_offset=offset,
                    )  # fmt: skip
                _emit_scores(lowering, s_address, q_address, k_address, count, head_dim, kv_len)
                _dynamic(lowering, "n", selection)
                mask_mode, mask_address = "none", 0
                if selection is not None:
                    mask_mode, mask_address = "additive", elsa_mask
                elif kind == "key_padding":
                    mask_mode, mask_address = "keys", key_row
                elif kind == "additive":
                    mask_mode, mask_address = "additive", lowering.slot(VEC)
                    _load_broadcast_block(
                        lowering,
                        mask,
                        mask_shape,
                        (batch, heads, q_len, kv_len),
                        (b, h, q0),
                        count,
                        mask_address,
                    )
                p_address = lowering.slot(ACT) + count * head_dim
                lowering.emit(
                    "SOFTMAX", dst=ACT, dst_addr=p_address, src=ACC, src_addr=s_address, rows=count, cols=kv_len,
                    scale=op.float_attr("scale"), softcap=op.float_attr("softcap", 0.0), mask=mask_mode,
                    mask_buf=VEC, mask_addr=mask_address, causal=int(causal), row0=q0, causal_offset=offset,
                )  # fmt: skip
                _dynamic(lowering, "cols", selection)
                o_address = s_address + count * kv_len
                if o_address + count * value_dim > lowering.slot(ACC) + lowering.half[ACC]:
                    o_address = lowering.slot(ACC)
                _emit_weighted_values(
                    lowering, o_address, p_address, v_address, count, kv_len, value_dim
                )
                _dynamic(lowering, "k", selection)
                lowering.store(
                    ACC,
                    o_address,
                    out.address + ((b * heads + h) * q_len + q0) * value_dim,
                    count,
                    value_dim,
                    value_dim,
                )
        lowering.persistent_top = kept


def _load_broadcast_block(
    lowering: Lowering,
    tensor: Tensor,
    shape: tuple[int, ...],
    full: tuple[int, int, int, int],
    position: tuple[int, int, int],
    rows: int,
    address: int,
) -> None:
    """Load rows [q0, q0+rows) of the (b, h) score block of a mask broadcast to `full`."""
    padded = (1,) * (4 - len(shape)) + tuple(shape)
    b, h, q0 = position
    cols = full[3]
    if padded[3] not in (1, cols):
        raise Unsupported(f"mask shape {shape}")
    strides = [int(np.prod(padded[i + 1 :])) for i in range(4)]
    base = (
        tensor.address
        + (b if padded[0] > 1 else 0) * strides[0]
        + (h if padded[1] > 1 else 0) * strides[1]
    )
    if padded[3] == 1 and cols > 1:
        raise Unsupported("a mask broadcast along the key axis")
    row_stride = strides[2] if padded[2] > 1 else 0
    lowering.load(
        VEC, address, base + (q0 if padded[2] > 1 else 0) * strides[2], rows, cols, row_stride
    )


# ---------------------------------------------------------------------------------------------
# Elementwise
# ---------------------------------------------------------------------------------------------

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
    if _size(shape) == 1:
        return Operand("scalar", tensor=tensor)
    out_lead = out_shape[:-1] if out_shape else ()
    lead = padded[:-1] if padded else ()
    row_map = (
        np.broadcast_to(np.arange(_size(lead)).reshape(lead), out_lead).reshape(-1)
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
    for start, count, stride in _runs(operand.row_map[r0 : r0 + rows]):
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
    rows_total, columns = _rows_cols(out_shape)
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
    for r0, rows in _split_ranges(rows_total, rows_per_tile):
        for c0, width in _split_ranges(columns, cols):
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
    yield from _split_ranges(rows_total, max(1, budget // columns))


def _vector_row(lowering: Lowering, value: SSAValue, columns: int) -> int:
    """A (1 x columns) row in the persistent area: loaded, or written from a splat constant."""
    plan = operand_plan(lowering, value, (columns,))
    address = lowering.persistent(columns)
    if plan.mode == "imm":
        lowering.vec("copy", VEC, address, (0, 0), 1, columns, bcast="imm", imm=plan.imm)
    elif plan.mode in ("row", "full") and _size(ox.shape_of(value)) == columns:
        lowering.load(VEC, address, plan.tensor.address, 1, columns, columns)
    else:
        raise Unsupported(f"a per-row parameter of shape {ox.shape_of(value)}")
    return address


@lowering(ox.LayerNormalizationOp)
def lower_layer_norm(lowering: Lowering, op: ox.LayerNormalizationOp) -> None:
    shape = ox.shape_of(op.X)
    axis = op.int_attr("axis", -1) % len(shape)
    rows_total, columns = _size(shape[:axis]), _size(shape[axis:])
    x, out = lowering.tensor(op.X), lowering.tensors[op.Y]
    gamma = _vector_row(lowering, op.Scale, columns)
    beta = _vector_row(lowering, op.B, columns) if op.B is not None else 0
    for r0, rows in _row_tiles(lowering, rows_total, columns):
        lowering.next_stage()
        source, target = lowering.slot(ACT), lowering.slot(VEC)
        lowering.load(ACT, source, x.address + r0 * columns, rows, columns, columns)
        lowering.emit(
            "LAYERNORM", dst=VEC, dst_addr=target, src=ACT, src_addr=source, gamma=VEC, gamma_addr=gamma,
            beta=VEC, beta_addr=beta, has_beta=int(op.B is not None), rows=rows, cols=columns,
            eps=op.float_attr("epsilon", 1e-5),
        )  # fmt: skip
        lowering.store(VEC, target, out.address + r0 * columns, rows, columns, columns)


def _per_row(
    lowering: Lowering, source: SSAValue, target: SSAValue, name: str, out_columns: int, **fields
) -> None:
    """A row-wise instruction over row tiles of `source`: LOAD, `name`, STORE (out_columns
    elements per row: the row itself, or 1 for a reduction)."""
    rows_total, columns = _rows_cols(ox.shape_of(source))
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
    _per_row(lowering, op.input, op.output, "SOFTMAX", _rows_cols(shape)[1], scale=1.0)


REDUCTIONS = {
    ox.ReduceMeanOp: "mean",
    ox.ReduceSumOp: "sum",
    ox.ReduceMaxOp: "max",
    ox.ReduceMinOp: "min",
}


@lowering(*REDUCTIONS)
def lower_reduce(lowering: Lowering, op: ox.ReduceOp) -> None:
    shape = ox.shape_of(op.data)
    axes = [] if op.axes is None else [int(a) % len(shape) for a in operand_values(op.axes)]
    if axes != [len(shape) - 1]:
        raise Unsupported(f"reduction over axes {axes}; only the last axis is lowered")
    _per_row(lowering, op.data, op.reduced, "REDUCE", 1, op=REDUCTIONS[type(op)])


@lowering(ox.CumSumOp)
def lower_cumsum(lowering: Lowering, op: ox.CumSumOp) -> None:
    shape = ox.shape_of(op.x)
    axis = int(operand_values(op.axis)[0]) % len(shape)
    if axis != len(shape) - 1 or op.int_attr("exclusive", 0) or op.int_attr("reverse", 0):
        raise Unsupported("only an inclusive, forward cumsum over the last axis is lowered")
    if shape[-1] > min(lowering.half[ACT], lowering.half[WGT], lowering.half[VEC]):
        raise Unsupported(f"a scan over rows of {shape[-1]} elements does not fit a buffer half")
    lower_elementwise(lowering, op, "cumsum", [op.x])


def operand_values(value: SSAValue) -> list:
    owner = value.owner
    if not isinstance(owner, ox.ConstantOp):
        raise Unsupported(f"'{value.name_hint}' must be a constant")
    return owner.to_numpy().reshape(-1).tolist()


# ---------------------------------------------------------------------------------------------
# Data movement: Gather, Transpose, Concat, Conv (patch embedding)
# ---------------------------------------------------------------------------------------------


@lowering(ox.GatherOp)
def lower_gather(lowering: Lowering, op: ox.GatherOp) -> None:
    data_shape = ox.shape_of(op.data)
    if op.int_attr("axis", 0) % len(data_shape) != 0:
        raise Unsupported("Gather along an axis other than 0")
    table, out = lowering.tensor(op.data), lowering.tensors[op.output]
    table_rows, columns = data_shape[0], _size(data_shape[1:])
    count = _size(ox.shape_of(op.indices))
    index_plan = operand_plan(lowering, op.indices, ox.shape_of(op.indices))
    if columns > lowering.half[ACT]:
        raise Unsupported(f"gathered rows of {columns} elements do not fit a buffer half")
    budget = min(lowering.half[ACT] // max(columns, 1), lowering.half[VEC])
    for r0, rows in _split_ranges(count, max(1, budget)):
        lowering.next_stage()
        index_address, target = lowering.slot(VEC), lowering.slot(ACT)
        if index_plan.mode == "imm":
            lowering.vec(
                "copy", VEC, index_address, (0, 0), rows, 1, bcast="imm", imm=index_plan.imm
            )
        else:
            lowering.load(VEC, index_address, lowering.tensor(op.indices).address + r0, rows, 1, 1)
        lowering.emit(
            "GATHER", dst=ACT, dst_addr=target, table=table.address, idx=VEC, idx_addr=index_address,
            rows=rows, cols=columns, table_rows=table_rows,
        )  # fmt: skip
        lowering.store(ACT, target, out.address + r0 * columns, rows, columns, columns)


@lowering(ox.TransposeOp)
def lower_transpose(lowering: Lowering, op: ox.TransposeOp) -> None:
    """Moves 2-D blocks with strided DMA. Either each output block (last two output axes) is a
    strided slice of the input (loaded with a row stride, or loaded transposed and turned with a
    VEC transpose), or each input block (last two input axes) lands in the output with a row
    stride; whichever needs fewer blocks."""
    in_shape, perm = ox.shape_of(op.data), op.permutation()
    out_shape = ox.shape_of(op.transposed)
    x, out = lowering.tensor(op.data), lowering.tensors[op.transposed]
    rank = len(in_shape)
    if rank < 2:
        lower_elementwise(lowering, op, "copy", [op.data])
        return
    in_strides = [_size(in_shape[i + 1 :]) for i in range(rank)]
    out_strides = [_size(out_shape[i + 1 :]) for i in range(rank)]
    # Output position of each input axis.
    where = {axis: position for position, axis in enumerate(perm)}
    input_major = perm[-1] == rank - 1 and _size(in_shape[:-2]) < _size(out_shape[:-2])
    if input_major:
        rows, cols = in_shape[-2], in_shape[-1]
        outer_axes = list(range(rank - 2))
        outer_shape = in_shape[:-2]
        row_stride_out = out_strides[where[rank - 2]]
    else:
        rows, cols = out_shape[-2], out_shape[-1]
        outer_axes = list(perm[:-2])
        outer_shape = out_shape[:-2]
    # Blocks larger than a buffer half move in chunks of whole rows (of the block being stored).
    limit = min(lowering.half[ACT], lowering.half[VEC])
    step = rows if rows * cols <= limit else limit // cols
    if step < 1:
        raise Unsupported(f"a {rows}x{cols} transposed block does not fit a buffer half")
    for index in range(_size(outer_shape)):
        position = [int(p) for p in np.unravel_index(index, outer_shape)] if outer_shape else []
        for r0, count in _split_ranges(rows, step):
            lowering.next_stage()
            tile, target = lowering.slot(ACT), lowering.slot(VEC)
            if input_major:
                source = x.address + index * rows * cols + r0 * cols
                destination = out.address + sum(
                    p * out_strides[where[a]] for p, a in zip(position, outer_axes, strict=True)
                )
                lowering.load(ACT, tile, source, count, cols, cols)
                lowering.store(
                    ACT, tile, destination + r0 * row_stride_out, count, cols, row_stride_out
                )
                continue
            base = x.address + sum(
                p * in_strides[a] for p, a in zip(position, outer_axes, strict=True)
            )
            row_axis, col_axis = perm[-2], perm[-1]
            if in_strides[col_axis] == 1:
                lowering.load(
                    ACT, tile, base + r0 * in_strides[row_axis], count, cols, in_strides[row_axis]
                )
                source_buffer, source = ACT, tile
            elif in_strides[row_axis] == 1:
                lowering.load(ACT, tile, base + r0, cols, count, in_strides[col_axis])
                lowering.vec("transpose", VEC, target, (ACT, tile), cols, count)
                source_buffer, source = VEC, target
            else:
                raise Unsupported(
                    f"transpose {list(perm)}: neither output axis is contiguous in the input"
                )
            lowering.store(
                source_buffer,
                source,
                out.address + index * rows * cols + r0 * cols,
                count,
                cols,
                cols,
            )


@lowering(ox.ConcatOp)
def lower_concat(lowering: Lowering, op: ox.ConcatOp) -> None:
    out_shape = ox.shape_of(op.concat_result)
    axis = op.int_attr("axis") % len(out_shape)
    out = lowering.tensors[op.concat_result]
    outer = _size(out_shape[:axis])
    out_inner = _size(out_shape[axis:])
    offset = 0
    for value in op.inputs:
        shape = ox.shape_of(value)
        inner = _size(shape[axis:])
        plan = operand_plan(lowering, value, shape)
        source = lowering.tensor(value) if plan.mode != "imm" else None
        # rows and cols are 16-bit fields: a long run moves in 32768-element pieces
        for c0, width in _split_ranges(inner, min(lowering.half[ACT], 32768)):
            for r0, rows in _split_ranges(outer, max(1, lowering.half[ACT] // width)):
                lowering.next_stage()
                tile = lowering.slot(ACT)
                if source is None:
                    lowering.vec("copy", ACT, tile, (0, 0), rows, width, bcast="imm", imm=plan.imm)
                else:
                    lowering.load(ACT, tile, source.address + r0 * inner + c0, rows, width, inner)
                lowering.store(
                    ACT, tile, out.address + r0 * out_inner + offset + c0, rows, width, out_inner
                )
        offset += inner


@lowering(ox.ConvOp)
def lower_conv(lowering: Lowering, op: ox.ConvOp) -> None:
    """Patch embedding: kernel == stride, no padding, no dilation, one group. Patches are
    gathered by strided DMA into a (patches x C*kh*kw) matrix, then out[n] = W @ patches^T."""
    x_shape, w_shape = ox.shape_of(op.X), ox.shape_of(op.W)
    if len(x_shape) != 4:
        raise Unsupported("only 2-D convolutions are lowered")
    kernel = tuple(w_shape[2:])
    strides = op.ints_attr("strides", [1, 1])
    pads = op.ints_attr("pads", [0, 0, 0, 0])
    dilations = op.ints_attr("dilations", [1, 1])
    if (
        tuple(strides) != kernel
        or any(pads)
        or any(d != 1 for d in dilations)
        or op.int_attr("group", 1) != 1
    ):
        raise Unsupported(
            f"Conv with kernel {list(kernel)}, strides {list(strides)}, pads {list(pads)}: only patchify "
            "convolutions (kernel == stride, no padding) are supported"
        )
    batch, channels, height, width = x_shape
    out_channels = w_shape[0]
    kh, kw = kernel
    ph, pw = height // kh, width // kw
    patches, depth = ph * pw, channels * kh * kw
    x, w, out = lowering.tensor(op.X), lowering.tensor(op.W), lowering.tensors[op.Y]
    scratch = lowering.arena.allocate(patches * depth)
    bias = lowering.tensor(op.B) if op.B is not None else None
    for n in range(batch):
        for c in range(channels):
            for i in range(kh):
                for p_row in range(ph):
                    lowering.next_stage()
                    tile = lowering.slot(ACT)
                    source = x.address + ((n * channels + c) * height + p_row * kh + i) * width
                    lowering.load(ACT, tile, source, pw, kw, kw)
                    target = scratch + (p_row * pw) * depth + (c * kh + i) * kw
                    lowering.store(ACT, tile, target, pw, kw, depth)
        base = out.address + n * out_channels * patches
        emit_gemm(
            lowering,
            GemmPlan(
                out_channels, depth, patches,
                _dense_loader(lowering, ACT, w.address, depth),
                lambda address, k0, d, p0, count: lowering.load(WGT, address, scratch + p0 * depth + k0, count, d, depth),
                _dense_storer(lowering, base, patches), transpose_b=True,
            ),
        )  # fmt: skip
        if bias is not None:
            if patches > lowering.half[ACT]:
                raise Unsupported(f"{patches} patches per channel do not fit a buffer half")
            for r0, rows in _split_ranges(out_channels, lowering.half[ACT] // patches):
                lowering.next_stage()
                tile, column = lowering.slot(ACT), lowering.slot(WGT)
                lowering.load(ACT, tile, base + r0 * patches, rows, patches, patches)
                lowering.load(WGT, column, bias.address + r0, rows, 1, 1)
                lowering.vec(
                    "add", ACT, tile, (ACT, tile), rows, patches, b=(WGT, column), bcast="col"
                )
                lowering.store(ACT, tile, base + r0 * patches, rows, patches, patches)
    lowering.arena.release(scratch, patches * depth)


# ---------------------------------------------------------------------------------------------
# Compressed attention (cta-compress output): CLUSTER per sequence, then work sized by clusters
# ---------------------------------------------------------------------------------------------


def _sequences(shape: tuple[int, ...]) -> int:
    return _size(shape[:-2])


def _cluster_of(value: SSAValue) -> cta.ClusterOp | None:
    """The cta.cluster whose clusters index `value`'s rows (through projections and pooling)."""
    for _ in range(4):
        owner = value.owner
        if isinstance(owner, cta.ClusterOp):
            return owner
        if isinstance(owner, cta.ProjectOp):
            value = owner.input
        elif isinstance(owner, cta.PoolOp):
            value = owner.ids
        else:
            return None
    return None


def _prepare_cluster(lowering: Lowering, op: cta.ClusterOp) -> None:
    from ctac.runtime.compression import hash_planes

    method = op.str_attr("method")
    if method not in ("hash-leader", "leader") or op.int_attr("max_clusters", 0):
        return
    bits = op.int_attr("hash_bits") if method == "hash-leader" else 0
    if bits:
        dim = ox.shape_of(op.tokens)[-1]
        planes = hash_planes(dim, bits, op.int_attr("seed")).astype(np.float32)
        address = lowering.data_top
        lowering.data.append((address, planes.size, None, planes))
        lowering.data_top += planes.size
        lowering.hash_planes[op] = address


PREPARE[cta.ClusterOp] = _prepare_cluster


def _prepare_elsa(lowering: Lowering, op: cta.AttentionOp) -> None:
    from ctac.runtime.compression import hash_planes

    bits = op.int_attr("elsa_bits", 0)
    if bits:
        planes = hash_planes(ox.shape_of(op.query)[3], bits, op.int_attr("elsa_seed", 0)).astype(
            np.float32
        )
        lowering.data.append((lowering.data_top, planes.size, None, planes))
        lowering.hash_planes[op] = lowering.data_top
        lowering.data_top += planes.size


PREPARE[cta.AttentionOp] = _prepare_elsa


@lowering(cta.ClusterOp)
def lower_cluster(lowering: Lowering, op: cta.ClusterOp) -> None:
    """Per sequence (and per block of positions, for causal attention): LOAD tokens, HASH into
    buckets, CLUSTER, then STORE centroids, counts and ids. A block's clusters live in the rows
    of that block, so its ids are offset by the block's first row."""
    method = op.str_attr("method")
    if method not in ("hash-leader", "leader") or op.int_attr("max_clusters", 0):
        raise Unsupported(
            f"clustering method '{method}' (or max_clusters) has no CLUSTER form; use hash-leader"
        )
    shape = ox.shape_of(op.tokens)
    n, dim = shape[-2], shape[-1]
    block = op.int_attr("block", 0) or n
    bits = op.int_attr("hash_bits") if method == "hash-leader" else 0
    if (
        n * dim > lowering.half[ACT]
        or 3 * n + n * dim > lowering.half[VEC]
        or n * dim > lowering.half[WGT]
    ):
        raise Unsupported(f"{n} tokens of {dim} features do not fit the buffers")
    tokens = lowering.tensor(op.tokens)
    centroids, counts, ids = (lowering.tensors[r] for r in op.results)
    mask = lowering.tensor(op.mask) if op.mask is not None else None
    lead = shape[:-2]
    planes = None
    if bits:
        planes = lowering.persistent(dim * bits)
        lowering.load(VEC, planes, lowering.hash_planes[op], dim, bits, bits)
    indices = lowering.cluster_instructions.setdefault(op, [])
    for sequence in range(_sequences(shape)):
        lowering.next_stage()
        source, base = lowering.slot(ACT), lowering.slot(VEC)
        codes, valid, count_row, id_column = base, base + n, base + 2 * n, base + 3 * n
        table = lowering.slot(WGT)
        lowering.load(ACT, source, tokens.address + sequence * n * dim, n, dim, dim)
        if planes is not None:
            lowering.emit(
                "HASH",
                dst=VEC,
                dst_addr=codes,
                src=ACT,
                src_addr=source,
                proj=VEC,
                proj_addr=planes,
                rows=n,
                cols=dim,
                bits=bits,
            )
        else:
            lowering.vec("copy", VEC, codes, (0, 0), n, 1, bcast="imm", imm=0.0)
        if mask is not None:
            batch = int(np.unravel_index(sequence, lead)[0]) if lead else 0
            lowering.load(VEC, valid, mask.address + batch * n, n, 1, 1)
        for start, rows in _split_ranges(n, block):
            if block == n:
                indices.append(len(lowering.instructions))
            lowering.emit(
                "CLUSTER", src=ACT, src_addr=source + start * dim, codes=VEC, codes_addr=codes + start,
                valid=VEC, valid_addr=valid + start, has_valid=int(mask is not None), centroids=WGT,
                centroids_addr=table + start * dim, counts=VEC, counts_addr=count_row + start, ids=VEC,
                ids_addr=id_column + start, rows=rows, cols=dim, threshold=op.float_attr("tau"),
            )  # fmt: skip
            if start:
                lowering.vec(
                    "add",
                    VEC,
                    id_column + start,
                    (VEC, id_column + start),
                    rows,
                    1,
                    bcast="imm",
                    imm=float(start),
                )
        lowering.store(WGT, table, centroids.address + sequence * n * dim, n, dim, dim)
        if block == n:
            lowering.dynamic_last("rows", indices[-1])
        lowering.store(VEC, count_row, counts.address + sequence * n, 1, n, n)
        lowering.store(VEC, id_column, ids.address + sequence * n, n, 1, 1)


@lowering(cta.PoolOp)
def lower_pool(lowering: Lowering, op: cta.PoolOp) -> None:
    """Per sequence: value rows summed into their cluster's row (SCATTER_ADD), divided by members."""
    shape = ox.shape_of(op.tokens)
    n, dim = shape[-2], shape[-1]
    tokens, ids, out = (
        lowering.tensor(op.tokens),
        lowering.tensor(op.ids),
        lowering.tensors[op.output],
    )
    clusters = lowering.cluster_instructions.get(_cluster_of(op.ids), [])
    for sequence in range(_sequences(shape)):
        lowering.next_stage()
        source, sums, base = lowering.slot(ACT), lowering.slot(ACC), lowering.slot(VEC)
        id_column, ones, members = base, base + n, base + 2 * n
        lowering.load(ACT, source, tokens.address + sequence * n * dim, n, dim, dim)
        lowering.load(VEC, id_column, ids.address + sequence * n, n, 1, 1)
        lowering.vec("copy", ACC, sums, (0, 0), n, dim, bcast="imm", imm=0.0)
        lowering.vec("copy", VEC, ones, (0, 0), n, 1, bcast="imm", imm=1.0)
        lowering.vec("copy", VEC, members, (0, 0), n, 1, bcast="imm", imm=0.0)
        lowering.emit(
            "SCATTER_ADD",
            dst=ACC,
            dst_addr=sums,
            src=ACT,
            src_addr=source,
            idx=VEC,
            idx_addr=id_column,
            rows=n,
            cols=dim,
            dst_rows=n,
        )
        lowering.emit(
            "SCATTER_ADD",
            dst=VEC,
            dst_addr=members,
            src=VEC,
            src_addr=ones,
            idx=VEC,
            idx_addr=id_column,
            rows=n,
            cols=1,
            dst_rows=n,
        )
        lowering.vec("max", VEC, members, (VEC, members), n, 1, bcast="imm", imm=1.0)
        lowering.vec("div", ACC, sums, (ACC, sums), n, dim, b=(VEC, members), bcast="col")
        if sequence < len(clusters):
            lowering.dynamic_last("rows", clusters[sequence])
        lowering.store(ACC, sums, out.address + sequence * n * dim, n, dim, dim)
        if sequence < len(clusters):
            lowering.dynamic_last("rows", clusters[sequence])


@lowering(cta.CompressedAttentionOp)
def lower_compressed_attention(lowering: Lowering, op: cta.CompressedAttentionOp) -> None:
    """Attention of query centroids over count-weighted key centroids; every size that depends
    on the clusters is recorded as dynamic, so the cost model charges m_q x m_k, not n x n."""
    if op.int_attr("causal", 0) or op.key_tokens is not None:
        lower_block_causal_attention(lowering, op)
        return
    if op.mask is not None:
        raise Unsupported(
            "a key mask on non-causal compressed attention (padding is in the counts)"
        )
    q, k, v = (lowering.tensor(x) for x in (op.query, op.key, op.value))
    counts, out = lowering.tensor(op.counts), lowering.tensors[op.output]
    batch, heads, q_len, head_dim = ox.shape_of(op.query)
    kv_heads, kv_len = ox.shape_of(op.key)[1], ox.shape_of(op.key)[2]
    value_dim = ox.shape_of(op.value)[3]
    group = heads // kv_heads
    counts_shape = ox.shape_of(op.counts)
    if (
        kv_len * (head_dim + value_dim) > lowering.half[WGT]
        or q_len * (kv_len + value_dim) > lowering.half[ACC]
        or q_len * (head_dim + kv_len) > lowering.half[ACT]
        or kv_len > lowering.half[VEC]
    ):
        raise Unsupported(f"{kv_len} compressed keys do not fit the buffers")
    q_clusters = lowering.cluster_instructions.get(_cluster_of(op.query), [])
    k_clusters = lowering.cluster_instructions.get(_cluster_of(op.key), [])
    for b in range(batch):
        for h in range(heads):
            lowering.next_stage()
            kv = h // group
            q_seq = _sequence_index(ox.shape_of(op.query), b, h, len(q_clusters))
            k_seq = _sequence_index(ox.shape_of(op.key), b, kv, len(k_clusters))
            q_cluster = q_clusters[q_seq] if q_seq is not None else None
            k_cluster = k_clusters[k_seq] if k_seq is not None else None
            k_address = lowering.slot(WGT)
            v_address = k_address + kv_len * head_dim
            q_address, s_address = lowering.slot(ACT), lowering.slot(ACC)
            count_row = lowering.slot(VEC)
            count_base = (
                counts.address
                + (b * counts_shape[1] + (kv if len(counts_shape) == 3 else 0)) * kv_len
                if len(counts_shape) == 3
                else counts.address + b * kv_len
            )
            lowering.load(
                WGT,
                k_address,
                k.address + (b * kv_heads + kv) * kv_len * head_dim,
                kv_len,
                head_dim,
                head_dim,
            )
            _dynamic(lowering, "rows", k_cluster)
            lowering.load(
                WGT,
                v_address,
                v.address + (b * kv_heads + kv) * kv_len * value_dim,
                kv_len,
                value_dim,
                value_dim,
            )
            _dynamic(lowering, "rows", k_cluster)
            lowering.load(VEC, count_row, count_base, 1, kv_len, kv_len)
            lowering.load(
                ACT,
                q_address,
                q.address + (b * heads + h) * q_len * head_dim,
                q_len,
                head_dim,
                head_dim,
            )
            _dynamic(lowering, "rows", q_cluster)
            _emit_scores(lowering, s_address, q_address, k_address, q_len, head_dim, kv_len)
            _dynamic(lowering, "m", q_cluster)
            _dynamic(lowering, "n", k_cluster)
            p_address = q_address + q_len * head_dim
            lowering.emit(
                "SOFTMAX", dst=ACT, dst_addr=p_address, src=ACC, src_addr=s_address, rows=q_len, cols=kv_len,
                scale=op.float_attr("scale"), softcap=op.float_attr("softcap", 0.0), has_counts=1, counts=VEC, counts_addr=count_row,
            )  # fmt: skip
            _dynamic(lowering, "rows", q_cluster)
            _dynamic(lowering, "cols", k_cluster)
            o_address = s_address + q_len * kv_len
            if o_address + q_len * value_dim > lowering.slot(ACC) + lowering.half[ACC]:
                o_address = lowering.slot(ACC)
            _emit_weighted_values(
                lowering, o_address, p_address, v_address, q_len, kv_len, value_dim
            )
            _dynamic(lowering, "m", q_cluster)
            _dynamic(lowering, "k", k_cluster)
            lowering.store(
                ACC,
                o_address,
                out.address + (b * heads + h) * q_len * value_dim,
                q_len,
                value_dim,
                value_dim,
            )
            _dynamic(lowering, "rows", q_cluster)


def _prepare_block_causal(lowering: Lowering, op: cta.CompressedAttentionOp) -> None:
    """The block-causal visibility is static: an additive (q x (clusters + raw keys)) mask."""
    if not (op.int_attr("causal", 0) or op.key_tokens is not None):
        return
    from ctac.runtime.compression import causal_visibility

    q_len, kv_len = ox.shape_of(op.query)[2], ox.shape_of(op.key)[2]
    clusters, raw = causal_visibility(
        q_len, kv_len, op.int_attr("block", 0), op.int_attr("causal_offset")
    )
    mask = np.where(np.concatenate([clusters, raw], axis=1), 0.0, -np.inf).astype(np.float32)
    lowering.data.append((lowering.data_top, mask.size, None, mask))
    lowering.hash_planes[op] = lowering.data_top
    lowering.data_top += mask.size


PREPARE[cta.CompressedAttentionOp] = _prepare_block_causal


def lower_block_causal_attention(lowering: Lowering, op: cta.CompressedAttentionOp) -> None:
    """Per (batch, head): keys = [key centroids of earlier blocks ; raw keys of the own block],
    one GEMM over both, a SOFTMAX whose additive mask is the static block-causal visibility and
    whose column weights are [cluster counts ; key validity], then P @ [pooled values ; values].
    Sizes are charged nominally (the visible clusters vary per query block)."""
    if op.key_tokens is None or op.value_tokens is None:
        raise Unsupported("block-causal compressed attention needs the raw keys and values")
    q, k, v = (lowering.tensor(x) for x in (op.query, op.key, op.value))
    raw_k, raw_v = lowering.tensor(op.key_tokens), lowering.tensor(op.value_tokens)
    counts, out = lowering.tensor(op.counts), lowering.tensors[op.output]
    mask = lowering.tensor(op.mask) if op.mask is not None else None
    batch, heads, q_len, head_dim = ox.shape_of(op.query)
    kv_heads, kv_len = ox.shape_of(op.key)[1], ox.shape_of(op.key)[2]
    value_dim = ox.shape_of(op.value)[3]
    group = heads // kv_heads
    width = 2 * kv_len
    if width * (head_dim + value_dim) > lowering.half[WGT]:
        raise Unsupported(f"{kv_len} key centroids plus {kv_len} raw keys do not fit half of wgt")
    rows = min(
        q_len,
        lowering.half[ACC] // (width + value_dim),
        lowering.half[ACT] // (width + head_dim),
        (lowering.half[VEC] - width) // width,
    )
    if rows < 1:
        raise Unsupported(f"one query row over {width} keys does not fit the buffer halves")
    visibility = lowering.hash_planes[op]
    counts_shape = ox.shape_of(op.counts)
    for b in range(batch):
        for h in range(heads):
            lowering.next_stage()
            kv = h // group
            keys, values = lowering.slot(WGT), lowering.slot(WGT) + width * head_dim
            key_base = (b * kv_heads + kv) * kv_len
            lowering.load(WGT, keys, k.address + key_base * head_dim, kv_len, head_dim, head_dim)
            lowering.load(
                WGT,
                keys + kv_len * head_dim,
                raw_k.address + key_base * head_dim,
                kv_len,
                head_dim,
                head_dim,
            )
            lowering.load(
                WGT, values, v.address + key_base * value_dim, kv_len, value_dim, value_dim
            )
            lowering.load(
                WGT,
                values + kv_len * value_dim,
                raw_v.address + key_base * value_dim,
                kv_len,
                value_dim,
                value_dim,
            )
            weights = lowering.slot(VEC)
            count_base = counts.address + (
                (b * counts_shape[1] + kv) * kv_len if len(counts_shape) == 3 else b * kv_len
            )
            lowering.load(VEC, weights, count_base, 1, kv_len, kv_len)
            if mask is not None:
                lowering.load(VEC, weights + kv_len, mask.address + b * kv_len, 1, kv_len, kv_len)
            else:
                lowering.vec("copy", VEC, weights + kv_len, (0, 0), 1, kv_len, bcast="imm", imm=1.0)
            for q0, count in _split_ranges(q_len, rows):
                q_address, s_address = lowering.slot(ACT), lowering.slot(ACC)
                block_mask = weights + width
                lowering.load(
                    ACT,
                    q_address,
                    q.address + ((b * heads + h) * q_len + q0) * head_dim,
                    count,
                    head_dim,
                    head_dim,
                )
                lowering.load(VEC, block_mask, visibility + q0 * width, count, width, width)
                _emit_scores(lowering, s_address, q_address, keys, count, head_dim, width)
                p_address = q_address + count * head_dim
                lowering.emit(
                    "SOFTMAX", dst=ACT, dst_addr=p_address, src=ACC, src_addr=s_address, rows=count, cols=width,
                    scale=op.float_attr("scale"), softcap=op.float_attr("softcap", 0.0), mask="additive", mask_buf=VEC,
                    mask_addr=block_mask, has_counts=1, counts=VEC, counts_addr=weights,
                )  # fmt: skip
                o_address = s_address + count * width
                _emit_weighted_values(
                    lowering, o_address, p_address, values, count, width, value_dim
                )
                lowering.store(
                    ACC,
                    o_address,
                    out.address + ((b * heads + h) * q_len + q0) * value_dim,
                    count,
                    value_dim,
                    value_dim,
                )


def _sequence_index(shape: tuple[int, ...], b: int, h: int, known: int) -> int | None:
    """Which clustered sequence row (b, h) of a (B, H, n, d) tensor came from (per head or per input)."""
    if known == shape[0] * shape[1]:
        return b * shape[1] + h
    if known == shape[0]:
        return b
    return None


def _dynamic(lowering: Lowering, field_name: str, cluster: int | None) -> None:
    if cluster is not None:
        lowering.dynamic_last(field_name, cluster)


@lowering(cta.RecoverOp)
def lower_recover(lowering: Lowering, op: cta.RecoverOp) -> None:
    """Per sequence: every token takes its cluster's row (GATHER_BUF of the cluster table)."""
    shape = ox.shape_of(op.output)
    n, dim = shape[-2], shape[-1]
    rows_tensor, ids, out = (
        lowering.tensor(op.rows),
        lowering.tensor(op.ids),
        lowering.tensors[op.output],
    )
    row_count = ox.shape_of(op.rows)[-2]
    clusters = lowering.cluster_instructions.get(_cluster_of(op.ids), [])
    for sequence in range(_sequences(shape)):
        lowering.next_stage()
        table, id_column, target = lowering.slot(ACT), lowering.slot(VEC), lowering.slot(WGT)
        lowering.load(
            ACT, table, rows_tensor.address + sequence * row_count * dim, row_count, dim, dim
        )
        if sequence < len(clusters):
            lowering.dynamic_last("rows", clusters[sequence])
        lowering.load(VEC, id_column, ids.address + sequence * n, n, 1, 1)
        lowering.emit(
            "GATHER_BUF",
            dst=WGT,
            dst_addr=target,
            src=ACT,
            src_addr=table,
            idx=VEC,
            idx_addr=id_column,
            rows=n,
            cols=dim,
            src_rows=row_count,
        )
        lowering.store(WGT, target, out.address + sequence * n * dim, n, dim, dim)


@dataclass(frozen=True)
class LowerToIsaPass(ModulePass):
    """Lower a detected (and possibly compressed) module to CTA-ISA instructions."""

    name = "lower-to-isa"

    hw: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        lowered = lower_module(op, load_hardware(self.hw or None))
        op.body.detach_block(0)
        op.body.add_block(lowered.body.detach_block(0))
        op.attributes.clear()
        op.attributes.update(lowered.attributes)


def lower_module(module: ModuleOp, hw: Hardware) -> ModuleOp:
    """A new ctaisa module for `module` (which is left unchanged)."""
    return Lowering(module, hw).run()


__all__ = ["Block", "LowerToIsaPass", "Region", "lower_module", "math"]
