"""emit: a `ctaisa` module -> a Program (runtime/program.py), data segment filled from the
weight store. The last step of `ctac compile`; `ctac-opt` stops before it."""

from __future__ import annotations

import json

import numpy as np
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, IntAttr, ModuleOp, StringAttr
from xdsl.ir import SSAValue

from ctac.dialects.ctaisa import DataOp, InstructionOp, SymbolOp, canonical_fields
from ctac.errors import CtacError
from ctac.hw import Hardware
from ctac.passes.lower_to_isa import DRAM_ATTRIBUTE, HW_ATTRIBUTE, POLICY_ATTRIBUTE
from ctac.passes.lower_to_isa.core import ELEMENT_TYPE_ATTRIBUTE, Lowering
from ctac.runtime.data_segment import DataSegment
from ctac.runtime.evaluator import evaluate_values
from ctac.runtime.program import DTYPES, Program, Symbol
from ctac.weights import store_for_module


def program_from_module(module: ModuleOp) -> Program:
    digest = module.attributes.get(HW_ATTRIBUTE)
    dram = module.attributes.get(DRAM_ATTRIBUTE)
    element_type = module.attributes.get(ELEMENT_TYPE_ATTRIBUTE)
    if (
        not isinstance(digest, StringAttr)
        or not isinstance(dram, IntAttr)
        or not isinstance(element_type, StringAttr)
    ):
        raise CtacError("the module is not lowered to ctaisa (run lower-to-isa first)")
    entries = [op for op in module.ops if isinstance(op, DataOp)]
    computed = [entry.source for entry in entries if entry.source is not None]
    # Values precomputed from weights and constants, by the recipe the module carries.
    arrays = dict(zip(computed, evaluate_values(computed, {}, module), strict=True))
    data = _data_segment(
        [
            (
                entry.address.data,
                entry.size.data,
                entry.ref.data if entry.ref is not None else None,
                arrays[entry.source] if entry.source is not None else entry.value,
            )
            for entry in entries
        ],
        module,
    )
    instructions, sources, dynamic = [], [], []
    for op in module.ops:
        if isinstance(op, InstructionOp):
            dynamic.extend((len(instructions), *entry) for entry in op.dynamic_fields())
            instructions.append((op.INSTRUCTION, op.field_values()))
            sources.append(op.source)
    return _program(
        bytes.fromhex(digest.data), instructions, data, dram.data,
        [op for op in module.ops if isinstance(op, SymbolOp)], sources, dynamic, module,
        element_type.data,
    )  # fmt: skip


def compile_module(module: ModuleOp, hw: Hardware) -> Program:
    """The program of an onnx/cta module on `hw` (lower-to-isa, then emit), as `ctac compile`
    makes it."""
    from ctac.passes.lower_to_isa import lowered

    return program_from_lowering(lowered(module, hw))


def program_from_lowering(lowering: Lowering) -> Program:
    """The program of a finished lowering (passes/lower_to_isa `lowered`), made from its records
    without building the ctaisa module: the same program program_from_module makes of
    `lowering.run()`'s module (tests/test_precompute.py checks), at a fraction of the time (8,000
    instruction ops built and read back cost BERT-base's compile ~0.25 s)."""
    arrays = dict(lowering.evaluated)
    derived = [v for *_, v in lowering.data if isinstance(v, SSAValue) and v not in arrays]
    arrays.update(zip(derived, evaluate_values(derived, {}, lowering.module), strict=True))
    data = _data_segment(
        [
            (start, count, ref, arrays[value] if isinstance(value, SSAValue) else value)
            for start, count, ref, value in lowering.data
        ],
        lowering.module,
    )
    instructions, sources, dynamic = [], [], []
    records = zip(lowering.instructions, lowering.dynamic_entries(), strict=True)
    for index, (emitted, entries) in enumerate(records):
        instructions.append((emitted.name, canonical_fields(emitted.name, emitted.fields)))
        sources.append(emitted.source)
        if entries:
            dynamic.extend(
                (index, name, cluster, *([offset] if offset else []))
                for name, cluster, offset in entries
            )
    return _program(
        lowering.hw.digest, instructions, data, lowering.dram_elements, lowering.symbols,
        sources, dynamic, lowering.module, lowering.hw.precision,
    )  # fmt: skip


def _data_segment(
    entries: list[tuple[int, int, str | None, object]], module: ModuleOp
) -> DataSegment:
    """The data segment of (start, count, weight name or None, values) entries. The weights are
    not copied here: the segment keeps views of the weight store's arrays (of the ONNX file
    itself) and write_program streams them into the program file."""
    size = max((start + count for start, count, _, _ in entries), default=0)
    pieces: list[tuple[int, np.ndarray]] = []
    store = None
    for start, count, ref, value in entries:
        if ref is not None:
            store = store or store_for_module(module)
            if store is None:
                raise CtacError("the module refers to weights but has no ctac.weights attribute")
            values = np.asarray(store.get(ref))
        elif isinstance(value, DenseIntOrFPElementsAttr):
            from ctac.dialects.onnx import numpy_from_dense

            values = numpy_from_dense(value)
        else:
            values = np.asarray(value)
        if values.size != count:
            raise CtacError(
                f"data entry at {start}: {values.size} elements where {count} are declared"
            )
        pieces.append((start, np.asarray(values, dtype=np.float32).reshape(-1)))
    return DataSegment(size, pieces)


def _program(
    digest: bytes,
    instructions: list,
    data: DataSegment,
    dram: int,
    symbol_ops: list[SymbolOp],
    sources: list[str],
    dynamic: list,
    module: ModuleOp,
    element_type: str,
) -> Program:
    symbols = [
        Symbol(
            op.sym.data,
            op.kind.data,
            tuple(d.data for d in op.shape.data),
            op.dtype.data,
            op.address.data,
            op.vocab.data if op.vocab is not None else 0,
        )
        for op in symbol_ops
    ]
    _check_symbols(symbols)
    decisions = policy_record(module)
    return Program(
        digest, instructions, data, dram, symbols, sources, dynamic, decisions,
        element_type=element_type,
    )  # fmt: skip


def policy_record(module: ModuleOp) -> list[dict]:
    """The CTA policy's decisions a module carries (the program's `policy`), [] if none."""
    policy = module.attributes.get(POLICY_ATTRIBUTE)
    return json.loads(policy.data) if isinstance(policy, StringAttr) else []


def _check_symbols(symbols: list[Symbol]) -> None:
    """Refuse what the program loader (runtime/program.py) would refuse in the symbol table, with
    the reason, instead of writing a program that `run` and `disasm` then call corrupt."""
    for symbol in symbols:
        if symbol.dtype not in DTYPES:
            raise CtacError(
                f"{symbol.kind} '{symbol.name}' is {symbol.dtype}; the accelerator's inputs and "
                f"outputs are {', '.join(DTYPES)} (cast it in the model, or use `ctac eval` on "
                "the onnx module)"
            )
        if any(d <= 0 for d in symbol.shape):
            raise CtacError(
                f"{symbol.kind} '{symbol.name}' has shape {list(symbol.shape)} with no elements; "
                "the accelerator cannot load or store an empty tensor"
            )


def check_loadable(
    program: Program,
    blob: bytes | None,
    capacities: dict[int, int],
    words: bytes | None = None,
) -> None:
    """The encoded program passes the same checks `ctac run` and `ctac disasm` make: what the
    compiler writes, the loader accepts (a refusal here is a compiler gap, reported as an error
    instead of writing a file that is then called corrupt). With `blob` None the program is
    checked without its data segment (the data segment itself holds no field to check, and
    encoding hundreds of MB of weights only to check the rest cost a second on BERT-base).
    `words`: the program's instructions already encoded (instruction_words), reused."""
    import dataclasses

    from ctac.runtime.program import decode_program, encode_program

    try:
        if blob is None:
            if len(program.data) > program.dram_elements:
                raise CtacError(
                    f"corrupt program: DRAM size {program.dram_elements} is smaller than the "
                    f"data segment's {len(program.data)} elements"
                )
            empty = np.zeros(0, dtype=np.float32)
            blob = encode_program(dataclasses.replace(program, data=empty), words=words)
        decode_program(blob, program.hw_digest, capacities)
    except CtacError as exc:
        raise CtacError(
            f"this model compiles to a program ctac's loader refuses ({exc}); "
            "the model uses something the accelerator cannot run"
        ) from None
