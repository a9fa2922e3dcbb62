"""Reference evaluator: runs a module's `main` function op by op with numpy (runtime/reference.py).

It is the golden model of the IR: slow paths are fine, wrong answers are not. Every result is
checked against its static type, so a verifier gap or a semantics bug shows up as an error here
instead of a silently different number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType
from xdsl.ir import Operation, SSAValue
from xdsl.irdl import OptOperandDef, VarOperandDef

from ctac.dialects import onnx as ox
from ctac.errors import CtacError
from ctac.runtime.input_names import neutral_input
from ctac.runtime.reference import SEMANTICS
from ctac.weights import store_for_module

NAME_ATTRIBUTE = "onnx.name"
# The default cap on any one value's size, the same as the ONNX loader's cap on a stored tensor.
DEFAULT_MAX_VALUE_BYTES = 4 * 1024**3


def value_bytes(value: SSAValue) -> int:
    """Bytes a value of this static type holds (Python integers: no wrap-around); 0 when it is
    not a tensor. A dynamic or negative dimension is an error."""
    value_type = value.type
    if not isinstance(value_type, TensorType):
        return 0
    shape = value_type.get_shape()
    if any(d < 0 for d in shape):
        raise CtacError(
            f"value '{value.name_hint or value}' has a dynamic or negative dimension "
            f"{list(shape)}; ctac works on static shapes only"
        )
    try:
        itemsize = ox.numpy_dtype(value_type.get_element_type()).itemsize
    except Exception:  # an element type numpy cannot hold is refused where it is used
        itemsize = 1
    return math.prod(shape) * itemsize


def check_value_sizes(
    values: Iterable[SSAValue], max_bytes: int = DEFAULT_MAX_VALUE_BYTES, where: str = ""
) -> None:
    """Refuse any value whose static type holds more than `max_bytes`, before anything of that
    size is allocated (an Expand or ConstantOfShape can compute a tensor far larger than any
    tensor stored in the model)."""
    for value in values:
        size = value_bytes(value)
        if size > max_bytes:
            owner = value.owner
            producer = f" ({owner.name})" if isinstance(owner, Operation) else ""
            shape = "x".join(str(d) for d in ox.shape_of(value)) or "scalar"
            raise CtacError(
                f"{where}value '{value.name_hint or value}'{producer} of shape {shape} would hold "
                f"{size} bytes, over the cap of {max_bytes}; raise it with --max-tensor-bytes if "
                "the model is genuine"
            )


def module_values(module: ModuleOp) -> Iterable[SSAValue]:
    """Every block argument and op result of the module, nested regions included."""
    for op in module.walk():
        for region in op.regions:
            for block in region.blocks:
                yield from block.args
        yield from op.results


def main_function(module: ModuleOp) -> func.FuncOp:
    for op in module.ops:
        if isinstance(op, func.FuncOp) and op.sym_name.data == "main":
            return op
    raise CtacError("the module has no func.func @main")


def _names(attrs, count: int, prefix: str) -> list[str]:
    names = []
    for index in range(count):
        name = None
        if attrs is not None and index < len(attrs.data):
            entry = attrs.data[index].data.get(NAME_ATTRIBUTE)
            if isinstance(entry, StringAttr):
                name = entry.data
        names.append(name or f"{prefix}{index}")
    return names


def input_names(module: ModuleOp) -> list[str]:
    function = main_function(module)
    return _names(function.arg_attrs, len(function.body.block.args), "arg")


def output_names(module: ModuleOp) -> list[str]:
    function = main_function(module)
    return _names(function.res_attrs, len(function.function_type.outputs.data), "result")


def input_signature(module: ModuleOp) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each input's name -> (shape, numpy dtype)."""
    function = main_function(module)
    return {
        name: (ox.shape_of(argument), ox.numpy_dtype(ox.element_of(argument)))
        for name, argument in zip(input_names(module), function.body.block.args, strict=True)
    }


def _check_result(op: Operation, value: SSAValue, array: np.ndarray) -> np.ndarray:
    expected_shape = ox.shape_of(value)
    expected_dtype = ox.numpy_dtype(ox.element_of(value))
    array = np.asarray(array)
    if array.shape != expected_shape:
        raise CtacError(
            f"{op.name} produced shape {array.shape} where its type says {expected_shape}"
        )
    if array.dtype != expected_dtype:
        array = array.astype(expected_dtype)
    return array


def evaluate(
    module: ModuleOp,
    inputs: Mapping[str, np.ndarray],
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
) -> dict[str, np.ndarray]:
    """Run `main` on named inputs; returns named outputs. Every value's static type is checked
    against `max_value_bytes` before anything runs."""
    function = main_function(module)
    check_value_sizes(module_values(module), max_value_bytes)
    signature = input_signature(module)
    missing = [name for name in signature if name not in inputs]
    if missing:
        raise CtacError(f"missing input(s) {missing}; the module takes {list(signature)}")
    values: dict[SSAValue, np.ndarray] = {}
    for (name, (shape, dtype)), argument in zip(
        signature.items(), function.body.block.args, strict=True
    ):
        array = np.asarray(inputs[name])
        if array.shape != shape:
            raise CtacError(f"input '{name}' has shape {array.shape}, the module expects {shape}")
        if array.dtype.kind not in "biuf" or array.dtype.fields is not None:
            raise CtacError(f"input '{name}' holds {array.dtype} values, the module takes {dtype}")
        values[argument] = array.astype(dtype, copy=False)
    store = None
    outputs: list[np.ndarray] = []
    ops = list(function.body.block.ops)
    last_use = _last_uses(ops)
    for index, op in enumerate(ops):
        if isinstance(op, func.ReturnOp):
            outputs = [values[v] for v in op.arguments]
            break
        if isinstance(op, ox.WeightOp):
            store = store or store_for_module(module)
            if store is None:
                raise CtacError("the module uses onnx.Weight but has no ctac.weights attribute")
            values[op.output] = _check_result(op, op.output, store.get(op.ref.data))
            continue
        implementation = SEMANTICS.get(type(op))
        if implementation is None:
            raise CtacError(f"the reference evaluator has no semantics for {op.name}")
        arguments = operand_arrays(op, values)
        results = implementation(op, *arguments)
        del arguments
        for result, array in zip(op.results, results, strict=True):
            values[result] = _check_result(op, result, array)
        _forget_used_up(values, op, index, last_use)
    return dict(zip(output_names(module), outputs, strict=True))


def _last_uses(ops: list[Operation]) -> dict[SSAValue, int]:
    """Each value's last user among `ops` (run in that order), by position: after it runs, the
    value can go (a long sequence's attention subgraph holds several L x L tensors, of which
    only a couple are live at once)."""
    return {value: index for index, op in enumerate(ops) for value in op.operands}


def _forget_used_up(
    values: dict, op: Operation, index: int, last_use: dict, kept: set | frozenset = frozenset()
) -> None:
    """Drop the operands `op` (at `index`) was the last user of, except those `kept`."""
    for operand in op.operands:
        if last_use.get(operand) == index and operand not in kept:
            values.pop(operand, None)


def operand_arrays(op: Operation, values: Mapping[SSAValue, np.ndarray]) -> list:
    """Operands in definition order: variadic groups spread out, absent optionals as None."""
    if not isinstance(op, ox.OnnxOp):
        return [values[v] for v in op.operands]
    arrays: list = []
    definitions = type(op).get_irdl_definition().operands
    for (_, definition), group in zip(definitions, op.operand_groups(), strict=True):
        if isinstance(definition, VarOperandDef) and not isinstance(definition, OptOperandDef):
            arrays.extend(values[v] for v in group)
        else:
            arrays.append(values[group[0]] if group else None)
    return arrays


def random_inputs(module: ModuleOp, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid random inputs: token ids inside the vocabulary of the embedding they index, integer
    masks of ones, zeros for float masks and biases and token types (neutral_input), normal
    floats."""
    rng = np.random.default_rng(seed)
    function = main_function(module)
    check_value_sizes(function.body.block.args)
    inputs = {}
    for (name, (shape, dtype)), argument in zip(
        input_signature(module).items(), function.body.block.args, strict=True
    ):
        if neutral_input(name, np.dtype(dtype)):
            inputs[name] = np.zeros(shape, dtype=dtype)
            continue
        if np.issubdtype(dtype, np.floating):
            inputs[name] = rng.standard_normal(shape).astype(dtype)
            continue
        vocabulary = indexed_extent(argument)
        if vocabulary is not None:
            inputs[name] = rng.integers(0, vocabulary, size=shape).astype(dtype)
        else:
            inputs[name] = np.ones(shape, dtype=dtype)
    return inputs


def indexed_extent(value: SSAValue, depth: int = 0) -> int | None:
    """If `value` (through casts/reshapes) indexes a Gather, the size of the gathered axis."""
    for use in value.uses:
        user = use.operation
        if isinstance(user, ox.GatherOp) and use.index == 1:
            axis = user.int_attr("axis", 0)
            return ox.shape_of(user.data)[axis]
        if depth < 4 and isinstance(
            user, ox.CastOp | ox.ReshapeOp | ox.UnsqueezeOp | ox.SqueezeOp | ox.FlattenOp
        ):
            found = indexed_extent(user.results[0], depth + 1)
            if found is not None:
                return found
    return None


def evaluate_values(
    targets: list[SSAValue],
    bindings: Mapping[SSAValue, np.ndarray],
    module: ModuleOp | None = None,
    max_ops: int = 100_000,
) -> list[np.ndarray]:
    """Evaluate some values from given values of others: walks each target's producers back to
    bound values, constants and weights, then runs those ops in order. Raises CtacError if an
    unbound block argument is needed."""
    values: dict[SSAValue, np.ndarray] = dict(bindings)
    # The producers, each after the producers of its operands (a depth-first post-order): no
    # walk over the whole block, which a proof's dozens of calls on a large model paid each time.
    needed: list[Operation] = []
    entered: set[Operation] = set()
    stack: list[tuple[SSAValue | Operation, bool]] = [
        (t, False) for t in reversed(targets) if t not in values
    ]
    while stack:
        item, operands_done = stack.pop()
        if operands_done:
            needed.append(item)
            continue
        owner = item.owner
        if not isinstance(owner, Operation):
            raise CtacError(f"evaluating needs an unbound argument {item.name_hint or item}")
        if owner in entered:
            continue
        entered.add(owner)
        if len(entered) > max_ops:
            raise CtacError("the value depends on too many ops to evaluate")
        stack.append((owner, True))
        stack.extend((v, False) for v in reversed(owner.operands) if v not in values)
    kept = set(targets) | set(bindings)
    last_use = _last_uses(needed)
    store = None
    for index, op in enumerate(needed):
        if isinstance(op, ox.WeightOp):
            if store is None:
                owner_module = module or _enclosing_module(op)
                store = store_for_module(owner_module) if owner_module is not None else None
            if store is None:
                raise CtacError("onnx.Weight needs a module with a ctac.weights attribute")
            values[op.output] = store.get(op.ref.data)
            continue
        implementation = SEMANTICS.get(type(op))
        if implementation is None:
            raise CtacError(f"the reference evaluator has no semantics for {op.name}")
        with np.errstate(all="ignore"):
            results = implementation(op, *operand_arrays(op, values))
        for result, array in zip(op.results, results, strict=True):
            values[result] = _check_result(op, result, array)
        _forget_used_up(values, op, index, last_use, kept)
    return [values[t] for t in targets]


def _enclosing_module(op: Operation) -> ModuleOp | None:
    parent = op.parent_op()
    while parent is not None and not isinstance(parent, ModuleOp):
        parent = parent.parent_op()
    return parent
