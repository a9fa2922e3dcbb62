"""The lowering driver: walks the function, plans DRAM, dispatches each op to its lowering
(registered with `@lowering` by the op-family modules) and builds the ctaisa module."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, IntAttr, ModuleOp, StringAttr
from xdsl.ir import BlockArgument, Operation, SSAValue

from ctac.dialects import onnx as ox
from ctac.dialects.ctaisa import INSTRUCTION_OPS, DataOp, SymbolOp
from ctac.errors import CtacError
from ctac.hw import Hardware
from ctac.passes.lower_to_isa.memory import (
    PERSISTENT,
    VEC,
    Arena,
    Tensor,
    Unsupported,
    elements,
)
from ctac.runtime.evaluator import indexed_extent, input_names, main_function, output_names

HW_ATTRIBUTE = "ctaisa.hw"
DRAM_ATTRIBUTE = "ctaisa.dram"
ALIAS_OPS = (ox.ReshapeOp, ox.FlattenOp, ox.SqueezeOp, ox.UnsqueezeOp)


def _dtype_name(value: SSAValue) -> str:
    return str(ox.numpy_dtype(ox.element_of(value)))


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
            self.data.append((address, elements(shape), owner.ref.data, None))
        elif isinstance(owner, ox.ConstantOp):
            array = owner.to_numpy().astype(np.float32)
            self.data.append((address, elements(shape), None, array))
        else:
            raise Unsupported(f"{value.name_hint}: not a constant")
        self.data_top += elements(shape)
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
            address = self.arena.allocate(elements(ox.shape_of(argument)))
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
                self.tensors[result] = Tensor(self.arena.allocate(elements(shape)), shape)
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
                    self.arena.release(tensor.address, elements(tensor.shape))
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


def dynamic_field(lowering: Lowering, field_name: str, cluster: int | None) -> None:
    if cluster is not None:
        lowering.dynamic_last(field_name, cluster)
