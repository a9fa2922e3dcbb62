"""ctac: a compiler and accelerator simulator for Compressed Token Attention (CTA).

The package re-exports the Python API (ctac/api.py) but loads it on first use: every module of
ctac, the passes and the runtime included, imports this package first, so loading the API here
would make each of them depend on the driver layer (tests/test_layers.py)."""

import sys
import types

from ctac.errors import CtacError

__version__ = "0.1.0"

_API = (
    "Comparison",
    "CompiledProgram",
    "ProfileResult",
    "Provenance",
    "RunResult",
    "compare",
    "compare_modes",
    "compile",
    "hardware",
    "profile",
    "run",
)


def __getattr__(name: str) -> object:
    if name in _API:
        from ctac import api

        value = getattr(api, name)
        globals()[name] = value  # once: later lookups do not come here
        return value
    raise AttributeError(f"module 'ctac' has no attribute '{name}'")


class _Package(types.ModuleType):
    """`ctac.run` and `ctac.compare` are API functions and also the names of submodules
    (ctac/run.py, ctac/compare.py); importing a submodule must not bind the module in place of
    the function (`from ctac.run import execute` still works: it reads sys.modules)."""

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, types.ModuleType) and name in _API:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = ["CtacError", "__version__", *_API]
