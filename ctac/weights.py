"""The weight store: large tensors live here, not in the IR.

An `onnx.Weight "name"` op refers to an entry; the module attribute `ctac.weights` holds the path
of the file the entries come from (the source ONNX model), so a printed module parsed back can
still be evaluated and compiled. Entries are an ONNX model's initializers and the values of its
Constant nodes, keyed by value name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from xdsl.dialects.builtin import ModuleOp, StringAttr

from ctac.errors import CtacError
from ctac.onnx_loader import load_onnx_lazy

WEIGHTS_ATTRIBUTE = "ctac.weights"


def constant_node_value(node: onnx.NodeProto) -> np.ndarray:
    """The value an ONNX Constant node produces, whichever attribute form it uses."""
    attribute = node.attribute[0] if node.attribute else None
    if attribute is None:
        raise CtacError(f"Constant node '{node.name}' has no value attribute")
    kind = attribute.name
    if kind == "value":
        return numpy_helper.to_array(attribute.t)
    if kind == "value_float":
        return np.array(attribute.f, dtype=np.float32)
    if kind == "value_floats":
        return np.array(list(attribute.floats), dtype=np.float32)
    if kind == "value_int":
        return np.array(attribute.i, dtype=np.int64)
    if kind == "value_ints":
        return np.array(list(attribute.ints), dtype=np.int64)
    raise CtacError(f"Constant node '{node.name}': the '{kind}' form is not supported")


class WeightStore:
    """Named tensors of one model, read lazily from the protobuf."""

    def __init__(
        self,
        source: Path,
        model: onnx.ModelProto | None = None,
        arrays: dict[str, np.ndarray] | None = None,
    ) -> None:
        """`arrays`: initializers already read (load_onnx_lazy's views of the file), which the
        model then holds without their data."""
        self.source = Path(source).resolve()
        self._model = model
        self._protos: dict[str, onnx.TensorProto | onnx.NodeProto] | None = None
        self._arrays: dict[str, np.ndarray] = dict(arrays or {})

    def _index(self) -> dict[str, onnx.TensorProto | onnx.NodeProto]:
        if self._protos is None:
            if self._model is None:
                self._model, arrays = load_onnx_lazy(self.source)
                self._arrays.update(arrays)
            protos: dict[str, onnx.TensorProto | onnx.NodeProto] = {}
            for tensor in self._model.graph.initializer:
                protos[tensor.name] = tensor
            for node in self._model.graph.node:
                if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                    protos[node.output[0]] = node
            self._protos = protos
        return self._protos

    def __contains__(self, name: str) -> bool:
        return name in self._index()

    def preloaded(self, name: str) -> np.ndarray | None:
        """The array of an initializer given to the store already read, else None."""
        return self._arrays.get(name)

    def get(self, name: str) -> np.ndarray:
        # Index first: opening the file (a store made from a path) fills _arrays with the views
        # of its large initializers, whose protos then hold no data.
        proto = self._index().get(name)
        array = self._arrays.get(name)
        if array is None:
            if proto is None:
                raise CtacError(f"weight '{name}' is not in the weight store {self.source}")
            if isinstance(proto, onnx.NodeProto):
                array = constant_node_value(proto)
            else:
                array = numpy_helper.to_array(proto)
            array.setflags(write=False)
            self._arrays[name] = array
        return array

    def attach(self, module: ModuleOp) -> None:
        """Record in the module where its weights live."""
        module.attributes[WEIGHTS_ATTRIBUTE] = StringAttr(str(self.source))


_OPEN_STORES: dict[Path, WeightStore] = {}


def register_store(store: WeightStore) -> None:
    """Make an in-memory store (with its model already loaded) the one used for its path."""
    _OPEN_STORES[store.source] = store


def forget_stores() -> None:
    """Drop every open store (their models are re-read on next use)."""
    _OPEN_STORES.clear()


def store_for_module(module: ModuleOp) -> WeightStore | None:
    """The weight store a module refers to, opened once per path; None if it has no weights."""
    attribute = module.attributes.get(WEIGHTS_ATTRIBUTE)
    if attribute is None:
        return None
    if not isinstance(attribute, StringAttr):
        raise CtacError(f"module attribute {WEIGHTS_ATTRIBUTE} must be a string path")
    path = Path(attribute.data).resolve()
    store = _OPEN_STORES.get(path)
    if store is None:
        if not path.is_file():
            raise CtacError(
                f"the module's weights file '{path}' ({WEIGHTS_ATTRIBUTE}) does not exist; "
                "recompile the model or fix the path"
            )
        store = WeightStore(path)
        _OPEN_STORES[path] = store
    return store
