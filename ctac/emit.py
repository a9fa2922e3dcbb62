"""emit: a `ctaisa` module -> a Program (runtime/program.py), data segment filled from the
weight store. The last step of `ctac compile`; `ctac-opt` stops before it."""

from __future__ import annotations

import json

import numpy as np
from xdsl.dialects.builtin import IntAttr, ModuleOp, StringAttr

from ctac.dialects.ctaisa import DataOp, InstructionOp, SymbolOp
from ctac.errors import CtacError
from ctac.passes.lower_to_isa import DRAM_ATTRIBUTE, HW_ATTRIBUTE, POLICY_ATTRIBUTE
from ctac.runtime.program import Program, Symbol
from ctac.weights import store_for_module


def program_from_module(module: ModuleOp) -> Program:
    digest = module.attributes.get(HW_ATTRIBUTE)
    dram = module.attributes.get(DRAM_ATTRIBUTE)
    if not isinstance(digest, StringAttr) or not isinstance(dram, IntAttr):
        raise CtacError("the module is not lowered to ctaisa (run lower-to-isa first)")
    entries = [op for op in module.ops if isinstance(op, DataOp)]
    size = max((op.address.data + op.size.data for op in entries), default=0)
    data = np.zeros(size, dtype=np.float32)
    store = None
    for entry in entries:
        start, count = entry.address.data, entry.size.data
        if entry.ref is not None:
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
        data[start : start + count] = values.reshape(-1).astype(np.float32)
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
        decisions,
    )  # fmt: skip
