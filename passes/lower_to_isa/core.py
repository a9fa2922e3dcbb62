"""The lowering driver: walks the function, plans DRAM, dispatches each op to its lowering
(registered with `@lowering` by the op-family modules) and builds the ctaisa module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, IntAttr, ModuleOp, StringAttr
from xdsl.ir import BlockArgument, Operation, SSAValue

from ctac.dialects import cta
from ctac.dialects import onnx as ox
from ctac.dialects.ctaisa import INSTRUCTION_OPS, DataOp, SymbolOp
from ctac.errors import CtacError
from ctac.hw import Hardware
from ctac.passes.lower_to_isa.memory import (
    PERSISTENT,
    VEC,
    Arena,
    Stream,
    Tensor,
    Unsupported,
    buffer_name,
    elements,
)
from ctac.passes.lower_to_isa.pipeline import Pipeline
from ctac.passes.lower_to_isa.precision import holds_bytes, integer_range
from ctac.runtime import isa
from ctac.runtime.evaluator import (
    evaluate_values,
    indexed_extent,
    input_names,
    main_function,
    output_names,
)
from ctac.runtime.reference import SEMANTICS
from ctac.weights import store_for_module

HW_ATTRIBUTE = "ctaisa.hw"
DRAM_ATTRIBUTE = "ctaisa.dram"
# The storage element type of the machine lowered for (ctac/hw.py: fp16 or fp32): the program
# writes its data segment in it and the interpreter rounds DRAM stores to it.
ELEMENT_TYPE_ATTRIBUTE = "ctaisa.element_type"
POLICY_ATTRIBUTE = "ctac.policy"  # JSON of the CTA policy's decisions (ctac/policy.py)
ALIAS_OPS = (ox.ReshapeOp, ox.FlattenOp, ox.SqueezeOp, ox.UnsqueezeOp)


def _dtype_name(value: SSAValue) -> str:
    return str(ox.numpy_dtype(ox.element_of(value)))


# fp16 represents every integer of magnitude up to 2**11 exactly (an 11-bit significand).
FP16_EXACT_INTEGERS = 2048


def _is_integer(value: SSAValue) -> bool:
    """An integer tensor (not bool: 0 and 1 are exact in any storage type)."""
    dtype = ox.numpy_dtype(ox.element_of(value))
    return np.issubdtype(dtype, np.integer)


def _holds_integers(op: Operation, result: SSAValue) -> bool:
    """A result whose values are integers: an integer tensor; a float one provably holding
    integers (precision.integer_range: a quantized model's int32 accumulations carried as
    floats, which fp16 would round above 2048 and saturate above 65504); or cta.cluster's counts
    (the tokens each cluster stands for, which compressed attention weighs its clusters by)."""
    if _is_integer(result) or (isinstance(op, cta.ClusterOp) and result is op.counts):
        return True
    return isinstance(op, ox.OnnxOp) and integer_range(result) is not None


@dataclass(eq=False)
class Emitted:
    """One instruction as lowered: its fields, the op it came from, and its data-dependent
    fields (field name, the CLUSTER or ELSA_SELECT whose result sizes it). Records, not indices,
    because the pipelined emitter reorders instructions after they are made."""

    name: str
    fields: dict
    source: str
    dynamic: list[tuple[str, Emitted, int]] = field(default_factory=list)


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
        self.halves = {index: Stream(index, 0, half) for index, half in self.half.items()}
        self.instructions: list[Emitted] = []
        # Where emit() puts an instruction: the program, or the open software pipeline.
        self.sink: Callable[[Emitted], None] = self.instructions.append
        self.last: Emitted | None = None
        self.source = ""
        # DRAM ranges of the op being lowered whose results are integers (token ids cast to
        # int32, indices): its STOREs there are exact (STORE.exact), not rounded to the storage
        # type, since fp16 holds integers exactly only up to 2048 and vocabularies are larger.
        self.integer_ranges: list[tuple[int, int]] = []
        # DRAM ranges of the op's results and operands that hold 8-bit integers (a quantized
        # model's int8/uint8 tensors): their DMAs move one byte per element (LOAD/STORE narrow).
        self.narrow_results: list[tuple[int, int]] = []
        self.narrow_sources: list[tuple[int, int]] = []
        self.region_top: dict[int, int] = {}
        self.unpipelined_loops = 0  # loops the pipeline had to emit as written
        # (address, elements, weight name, inline array or the SSA value of a precomputed op)
        self.data: list[tuple[int, int, str | None, np.ndarray | SSAValue | None]] = []
        self.precomputed: set[Operation] = set()
        # precomputed values already evaluated (fp16's integer check): the emitter reuses them
        self.evaluated: dict[SSAValue, np.ndarray] = {}
        self.data_top = 0
        self.symbols: list[SymbolOp] = []
        self.tensors: dict[SSAValue, Tensor] = {}
        self.stage = 0
        self.persistent_top = 0
        self.hash_planes: dict[Operation, int] = {}
        # What an op's PREPARE hook put in the data segment for it (addresses), by op.
        self.op_data: dict[Operation, object] = {}
        self.cluster_instructions: dict[Operation, list[Emitted]] = {}
        # A causal (blocked) clustering's first CLUSTER_READ per (sequence, block start): what
        # sizes the block-causal attention's key tiles over that block's clusters.
        self.block_readouts: dict[Operation, dict[tuple[int, int], Emitted]] = {}

    def add_data(self, array: np.ndarray) -> int:
        """A constant of an op's own (hash planes, index tables, interpolation matrices) at the
        top of the data segment, as float32; its address. PREPARE hooks only: the DRAM plan
        starts after the data segment."""
        address = self.data_top
        flat = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
        self.data.append((address, flat.size, None, flat))
        self.data_top += flat.size
        return address

    # ------------------------------------------------------------------ emission helpers
    def emit(self, name: str, **fields) -> Emitted:
        """Emit one instruction; its fields are checked against the ISA table here, so a
        misspelt, missing or out-of-range field is an isa.FieldError at the emitting line."""
        emitted = Emitted(name, isa.checked_fields(name, fields), self.source)
        self.sink(emitted)
        self.last = emitted
        return emitted

    def slot(self, buffer: int, offset: int = 0, parity: int | None = None) -> int:
        """Address inside the current (or given) half of a buffer: the buffer as one double-
        buffered Stream of half-buffer slots, turned per tile by next_stage(), for loops whose
        tiles take a whole half (elementwise, row-wise, movement, patch copies)."""
        return self.halves[buffer].slot(self.stage if parity is None else parity) + offset

    def dynamic_last(self, field_name: str, cluster: Emitted, offset: int = 0) -> None:
        """The last emitted instruction's `field_name` is the number of clusters `cluster` formed
        (less `offset`, the first cluster row of the tile)."""
        self.last.dynamic.append((field_name, cluster, offset))

    def dynamic_entries(self) -> list[list[tuple[str, int, int]]]:
        """Per instruction in program order, its data-dependent fields as (field, index of the
        CLUSTER or ELSA_SELECT that sizes it, offset): the records resolved to positions."""
        position = {id(emitted): index for index, emitted in enumerate(self.instructions)}
        return [
            [(name, position[id(cluster)], offset) for name, cluster, offset in emitted.dynamic]
            for emitted in self.instructions
        ]

    def stream(self, buffer: int, size: int, depth: int = 2) -> Stream:
        """`depth` slots of `size` elements in `buffer` for the current op (alternated per tile);
        regions of one op never overlap, and every op starts from an empty buffer."""
        top = self.region_top.get(buffer, 0)
        limit = 2 * self.half[buffer]
        # Slots aligned to the 64-element blocks the pipeline's dependence check tracks.
        aligned = -(-size // 64) * 64
        if top + depth * aligned <= limit:
            size = aligned
        if top + depth * size > limit:
            raise Unsupported(
                f"tiles of {size} elements x {depth} do not fit {buffer_name(buffer)} "
                f"({limit - top} of {limit} elements left)"
            )
        self.region_top[buffer] = top + depth * size
        return Stream(buffer, top, max(size, 1), depth)

    def next_stage(self) -> None:
        """Start the next tile of the op's loop (the pipeline skews tiles; see pipeline.py)."""
        self.stage += 1
        self.pipeline.tile()

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
        narrow = any(low <= source < high for low, high in self.narrow_sources)
        self.emit(
            "LOAD", dst=buffer, dst_addr=address, src=source, rows=rows, cols=cols, stride=stride,
            narrow=int(narrow),
        )  # fmt: skip

    def store(
        self,
        buffer: int,
        address: int,
        target: int,
        rows: int,
        cols: int,
        stride: int,
        source_stride: int = 0,
    ) -> None:
        """A (rows x cols) tile to DRAM rows `stride` apart; `source_stride` reads a column block
        of a wider tile (its row length), 0 a dense tile."""
        exact = any(low <= target < high for low, high in self.integer_ranges)
        narrow = any(low <= target < high for low, high in self.narrow_results)
        self.emit(
            "STORE", src=buffer, src_addr=address, dst=target, rows=rows, cols=cols, stride=stride,
            src_stride=source_stride if source_stride != cols else 0, exact=int(exact),
            narrow=int(narrow),
        )  # fmt: skip

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
            if _is_integer(value) and self.hw.precision == "fp16":
                store = store_for_module(self.module)
                if store is not None:  # integer initializers are small: ids, indices, shapes
                    self._check_storable(value, store.get(owner.ref.data))
            self.data.append((address, elements(shape), owner.ref.data, None))
        elif isinstance(owner, ox.ConstantOp):
            array = owner.to_numpy()
            if _is_integer(value) and self.hw.precision == "fp16":
                self._check_storable(value, array)
            self.data.append((address, elements(shape), None, array.astype(np.float32)))
        elif owner in self.precomputed:
            if _is_integer(value) and self.hw.precision == "fp16":
                (array,) = evaluate_values([value], {}, self.module)
                self._check_storable(value, array)
                self.evaluated[value] = array
            # Computed when the program is made (emit.program_from_lowering, or
            # program_from_module from the recipe _module() copies into the lowered module).
            self.data.append((address, elements(shape), None, value))
        else:
            raise Unsupported(f"{value.name_hint}: not a constant")
        self.data_top += elements(shape)
        tensor = Tensor(address, shape)
        self.tensors[value] = tensor
        return tensor

    def _check_storable(self, value: SSAValue, array: np.ndarray) -> None:
        """An integer constant or weight whose values fp16 cannot hold exactly is a compile
        error (the data segment would silently change it)."""
        values = np.asarray(array).reshape(-1)
        with np.errstate(over="ignore"):
            kept = values.astype(np.float16).astype(np.float64) == values
        if not kept.all():
            lost = int(values[np.argmin(kept)])
            raise CtacError(
                f"{value.name_hint or 'a constant'}: integer constant {lost} is not exact in the "
                f"fp16 data segment (fp16 holds every integer only up to {FP16_EXACT_INTEGERS}); "
                "compile with --precision fp32"
            )

    def tensor(self, value: SSAValue) -> Tensor:
        tensor = self.tensors.get(value)
        if tensor is None:
            if isinstance(value.owner, ox.WeightOp | ox.ConstantOp):
                return self.data_tensor(value)
            raise Unsupported(f"value {value.name_hint or value} has no DRAM location")
        return tensor

    # ------------------------------------------------------------------ driver
    def run(self) -> ModuleOp:
        """Lower the module; the ctaisa module of the result."""
        self.lower()
        return self._module()

    def lower(self) -> None:
        """Lower every op: fills `instructions`, `data` and `symbols` (ctac/emit.py's
        program_from_lowering makes a program of them without building the ctaisa module)."""
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
        self.precomputed = precomputed_ops(ops, root)

        def in_data_segment(value: SSAValue) -> bool:
            owner = root(value).owner
            return isinstance(owner, ox.WeightOp | ox.ConstantOp) or owner in self.precomputed

        # The data segment comes first (DRAM address 0): every constant a lowered op reads, and
        # every value computed from constants and weights alone, precomputed.
        for op in ops:
            if isinstance(op, (ox.WeightOp, ox.ConstantOp, *ALIAS_OPS)) or op in self.precomputed:
                continue
            for operand in op.operands:
                if in_data_segment(operand):
                    self.data_tensor(root(operand))
            prepare = PREPARE.get(type(op))
            if prepare is not None:
                prepare(self, op)
        for value in ret.arguments:
            if in_data_segment(value):
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
        from ctac.passes.assign_layers import layers_of

        layers = layers_of(self.function)  # ctac.layer, or computed on the fly when absent
        for index, op in enumerate(ops):
            self.source = _source_of(op, layers.get(op))
            if isinstance(op, ox.WeightOp | ox.ConstantOp) or op in self.precomputed:
                continue
            if isinstance(op, ALIAS_OPS):
                base = self.tensors.get(root(op.results[0]))
                if base is not None:
                    self.tensors[op.results[0]] = Tensor(base.address, ox.shape_of(op.results[0]))
                continue
            self.integer_ranges, self.narrow_results, self.narrow_sources = [], [], []
            for result in op.results:
                shape = ox.shape_of(result)
                self.tensors[result] = Tensor(self.arena.allocate(elements(shape)), shape)
                span = (
                    self.tensors[result].address,
                    self.tensors[result].address + elements(shape),
                )
                if _holds_integers(op, result):
                    self.integer_ranges.append(span)
                if isinstance(op, ox.OnnxOp) and holds_bytes(result):
                    self.narrow_results.append(span)
            for operand in op.operands:
                base = self.tensors.get(root(operand))
                if base is not None and holds_bytes(operand):
                    self.narrow_sources.append((base.address, base.address + elements(base.shape)))
            lower = LOWERINGS.get(type(op))
            try:
                if lower is None:
                    raise Unsupported("no lowering for this op")
                self.persistent_top = 0
                self.region_top = {}
                self.sink = self.instructions.append  # a refused op may leave a pipeline open
                self.pipeline = Pipeline(self).open()
                lower(self, op)
                self.pipeline.close()
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
                    and not in_data_segment(base)
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

    @property
    def dram_elements(self) -> int:
        return self.arena.base + self.arena.top

    def _module(self) -> ModuleOp:
        derived = [value for _, _, _, value in self.data if isinstance(value, SSAValue)]
        ops, copies = copy_recipes(derived)
        for address, size, ref, value in self.data:
            properties = {"address": IntAttr(address), "size": IntAttr(size)}
            source = None
            if ref is not None:
                properties["ref"] = StringAttr(ref)
            elif isinstance(value, SSAValue):
                source = copies[value]
            else:
                properties["value"] = ox.dense_from_numpy(value.astype(np.float32).reshape(-1))
            ops.append(DataOp.build(operands=[source], properties=properties))
        ops.extend(self.symbols)
        attributes: dict = {}  # immutable attributes, shared by the ops that use the same value
        for emitted, entries in zip(self.instructions, self.dynamic_entries(), strict=True):
            op = INSTRUCTION_OPS[emitted.name].create_from(
                emitted.fields, emitted.source, attributes, checked=True
            )
            op.set_dynamic_fields(entries)
            ops.append(op)
        module = ModuleOp(ops)
        for carried in ("ctac.weights", POLICY_ATTRIBUTE):  # the weight store; policy decisions
            value = self.module.attributes.get(carried)
            if value is not None:
                module.attributes[carried] = value
        module.attributes[HW_ATTRIBUTE] = StringAttr(self.hw.digest.hex())
        module.attributes[DRAM_ATTRIBUTE] = IntAttr(self.dram_elements)
        module.attributes[ELEMENT_TYPE_ATTRIBUTE] = StringAttr(self.hw.precision)
        return module


# A precomputed op may write at most this many elements more than it reads: a broadcast of a
# weight (Expand) stays a run-time op instead of inflating the data segment.
PRECOMPUTE_SLACK = 4096


def precomputed_ops(ops: list[Operation], root: Callable[[SSAValue], SSAValue]) -> set[Operation]:
    """The ops computed when the program is made instead of on the accelerator: onnx-dialect
    ops with reference semantics whose operands are all constants, weights or results of such
    ops (a weight's dequantization, a transposed weight, position-embedding rows), unless they
    write more than they read. A deployment prepares these offline; running them per inference
    would charge the accelerator for work no deployment does."""
    static: set[SSAValue] = set()
    chosen: set[Operation] = set()
    for op in ops:
        if isinstance(op, ox.WeightOp | ox.ConstantOp):
            static.update(op.results)
            continue
        if (
            isinstance(op, ALIAS_OPS)
            or not op.name.startswith("onnx.")
            or type(op) not in SEMANTICS
            or not op.operands
            or not all(root(operand) in static for operand in op.operands)
        ):
            continue
        read = sum(elements(ox.shape_of(operand)) for operand in op.operands)
        written = sum(elements(ox.shape_of(result)) for result in op.results)
        if written > read + PRECOMPUTE_SLACK:
            continue
        chosen.add(op)
        static.update(op.results)
    return chosen


def copy_recipes(values: list[SSAValue]) -> tuple[list[Operation], dict[SSAValue, SSAValue]]:
    """Copies of the ops computing `values` (back to their weights and constants, in their
    order), for the lowered module, and each value's copy."""
    needed: set[Operation] = set()
    stack = [value.owner for value in values]
    while stack:
        op = stack.pop()
        if isinstance(op, Operation) and op not in needed:
            needed.add(op)
            stack.extend(operand.owner for operand in op.operands)
    if not needed:
        return [], {}
    block = next(iter(needed)).parent_block()
    ordered = [op for op in block.ops if op in needed] if block is not None else list(needed)
    mapping: dict[SSAValue, SSAValue] = {}
    copies = [op.clone(value_mapper=mapping) for op in ordered]
    return copies, {value: mapping[value] for value in values}


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


def _source_of(op: Operation, layer: int | None = None) -> str:
    """'<op>:<name>@L<layer>': the op kind (attention is told apart by it), the layer's name and
    the transformer block (`ctac.layer`); the format is ctac.runtime.sources'."""
    from ctac.runtime.sources import format_source

    source = op.attributes.get("ctac.source")
    role = op.attributes.get("ctac.role")
    kind = f"{op.name}.{role.data}" if isinstance(role, StringAttr) else op.name
    if isinstance(source, StringAttr):
        return format_source(kind, source.data, layer)
    if op.results and op.results[0].name_hint:
        return format_source(op.name, op.results[0].name_hint, layer)
    return format_source(op.name, None, layer)


LOWERINGS: dict[type, Callable[[Lowering, Operation], None]] = {}
# Optional hooks run before DRAM planning, for ops that add data of their own.
PREPARE: dict[type, Callable[[Lowering, Operation], None]] = {}


def lowering(*op_classes: type):
    def register(function):
        for op_class in op_classes:
            LOWERINGS[op_class] = function
        return function

    return register


def dynamic_field(
    lowering: Lowering, field_name: str, cluster: Emitted | None, offset: int = 0
) -> None:
    if cluster is not None:
        lowering.dynamic_last(field_name, cluster, offset)
