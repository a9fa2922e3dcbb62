"""emit: a `ctaisa` module -> a Program (runtime/program.py), data segment filled from the
weight store. The last step of `ctac compile`; `ctac-opt` stops before it."""

from __future__ import annotations

import json

import numpy as np
from xdsl.dialects.builtin import IntAttr, ModuleOp, StringAttr

from ctac.dialects.ctaisa import DataOp, InstructionOp, SymbolOp
from ctac.errors import CtacError
from ctac.passes.lower_to_isa import DRAM_ATTRIBUTE, HW_ATTRIBUTE, POLICY_ATTRIBUTE
from ctac.passes.lower_to_isa.core import ELEMENT_TYPE_ATTRIBUTE
from ctac.runtime.evaluator import evaluate_values
from ctac.runtime.program import DTYPES, DataSegment, Program, Symbol
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
    size = max((op.address.data + op.size.data for op in entries), default=0)
    # The weights are not copied here: the segment keeps views of the weight store's arrays
    # (of the ONNX file itself) and write_program streams them into the program file.
    pieces: list[tuple[int, np.ndarray]] = []
    store = None
    computed = [entry.source for entry in entries if entry.source is not None]
    # Values precomputed from weights and constants, by the recipe the module carries.
    arrays = dict(zip(computed, evaluate_values(computed, {}, module), strict=True))
    for entry in entries:
        start, count = entry.address.data, entry.size.data
        if entry.source is not None:
            values = arrays[entry.source]
        elif entry.ref is not None:
            store = store or store_for_module(module)
            if store is None:
                raise CtacError("the module refers to weights but has no ctac.weights attribute")
            values = np.asarray(store.get(entry.ref.data))
        else:
            from ctac.dialects.onnx import numpy_from_dense

            values = numpy_from_dense(entry.value)
        if values.size != count:
            raise CtacError(
                f"data entry at {start}: {values.size} elements where {count} are declared"
            )
        pieces.append((start, np.asarray(values, dtype=np.float32).reshape(-1)))
    data = DataSegment(size, pieces)
    symbols = [
        Symbol(
            op.sym.data,
            op.kind.data,
            tuple(d.data for d in op.shape.data),
            op.dtype.data,
            op.address.data,
            op.vocab.data if op.vocab is not None else 0,
        )
        for op in module.ops
        if isinstance(op, SymbolOp)
    ]
    _check_symbols(symbols)
    instructions, sources, dynamic = [], [], []
    for op in module.ops:
        if isinstance(op, InstructionOp):
            dynamic.extend((len(instructions), *entry) for entry in op.dynamic_fields())
            instructions.append((op.INSTRUCTION, op.field_values()))
            sources.append(op.source)
    policy = module.attributes.get(POLICY_ATTRIBUTE)
    decisions = json.loads(policy.data) if isinstance(policy, StringAttr) else []
    return Program(
        bytes.fromhex(digest.data), instructions, data, dram.data, symbols, sources, dynamic,
        decisions, element_type=element_type.data,
    )  # fmt: skip


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
