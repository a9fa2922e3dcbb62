"""ctac: a compiler and accelerator simulator for Compressed Token Attention (CTA)."""

import sys
import types

__version__ = "0.1.0"

from ctac.api import (  # noqa: E402  (the API reads __version__)
    Comparison,
    CompiledProgram,
    ProfileResult,
    Provenance,
    RunResult,
    compare,
    compare_modes,
    compile,
    hardware,
    profile,
    run,
)
from ctac.errors import CtacError  # noqa: E402


class _Package(types.ModuleType):
    """`ctac.run` and `ctac.compare` are API functions and also the names of submodules
    (ctac/run.py, ctac/compare.py); importing a submodule must not replace the function with the
    module (`from ctac.run import execute` still works: it reads sys.modules)."""

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, types.ModuleType) and callable(self.__dict__.get(name)):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "CompiledProgram",
    "Comparison",
    "CtacError",
    "ProfileResult",
    "Provenance",
    "RunResult",
    "__version__",
    "compare",
    "compare_modes",
    "compile",
    "hardware",
    "profile",
    "run",
]
