"""Imports run one way: each module imports only modules of its own layer or below.

Layers, bottom-up (docs/architecture.md draws them):

  0 foundation     errors, output files, the ONNX loader and weight store (no IR, no machine)
  1 description    the dialects (onnx, cta, ctaisa), the ISA table, the hardware config, the
                   instruction source format
  2 IR semantics   numpy meaning of onnx/cta modules: reference, evaluator, compression, ELSA
  3 passes         onnx -> cta -> ctaisa (passes/, passes/lower_to_isa/)
  4 machine model  the program file, interpreter, cost model, profile, cluster unit, GPU roofline
  5 driver         importer, emit, pipeline, the front end, policy, calibration, run, compare,
                   hardware overrides, the flags' definitions
  6 API            the Python API (ctac/api.py) and sweeps built on it
  7 CLI            the parser and `main`, and the commands: parse arguments, call the layers
                   below (the API among them) and print

Every `import` in ctac/, dialects/, passes/ and runtime/ counts, at module level and inside
functions alike (a lazy import still ties the layers). Python imports a module's parent packages
first, so a package's __init__.py sits at the lowest layer of its modules: ctac/__init__.py at
0, which is why it loads the API it re-exports only on first use. The installed package maps
ctac.dialects -> dialects/, ctac.passes -> passes/ and ctac.runtime -> runtime/ (pyproject.toml).
"""

from __future__ import annotations

import ast
from fnmatch import fnmatch
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("ctac", "dialects", "passes", "runtime")

# Path glob -> layer; the first pattern that matches a file decides, so single files come first.
LAYERS: list[tuple[str, int]] = [
    # 0 foundation
    ("ctac/__init__.py", 0),
    ("ctac/errors.py", 0),
    ("ctac/blas.py", 0),
    ("ctac/files.py", 0),
    ("ctac/mapped.py", 0),
    ("ctac/limits.py", 0),
    ("ctac/onnx_loader.py", 0),
    ("ctac/model_interface.py", 0),
    ("ctac/weights.py", 0),
    # 1 description: dialects, the ISA table and what reads only it
    ("dialects/*.py", 1),
    ("runtime/__init__.py", 1),
    ("runtime/isa.py", 1),
    ("runtime/input_names.py", 1),
    ("runtime/special_functions.py", 1),
    ("runtime/sources.py", 1),
    ("ctac/hw.py", 1),
    # 2 IR semantics
    ("runtime/reference.py", 2),
    ("runtime/reference_conv.py", 2),
    ("runtime/reference_cta.py", 2),
    ("runtime/norms.py", 2),
    ("runtime/reference_indexing.py", 2),
    ("runtime/evaluator.py", 2),
    ("runtime/compression.py", 2),
    ("runtime/elsa.py", 2),
    # 3 passes
    ("passes/*.py", 3),
    ("passes/lower_to_isa/*.py", 3),
    # 4 machine model
    ("runtime/program.py", 4),
    ("runtime/data_segment.py", 4),
    ("runtime/assembly.py", 4),
    ("runtime/interpreter.py", 4),
    ("runtime/fp16.py", 4),
    ("runtime/forwarding.py", 4),
    ("runtime/lanes.py", 4),
    ("runtime/lane_worker.py", 4),
    ("runtime/kernels.py", 4),
    ("runtime/costmodel.py", 4),
    ("runtime/profile.py", 4),
    ("runtime/cluster_unit.py", 4),
    ("runtime/gpu.py", 4),
    # 7 CLI (before ctac/*.py: the first match decides)
    ("ctac/cli.py", 7),
    ("ctac/__main__.py", 7),
    ("ctac/commands/*.py", 7),
    # 6 API
    ("ctac/api.py", 6),
    ("ctac/sweep.py", 6),
    ("ctac/sweep_plots.py", 6),
    # 5 driver
    ("ctac/*.py", 5),
]

# (importer, imported) -> why the upward import stays for now. Keep this short; an entry that no
# longer matches an import fails the test, so fixed ones leave the list.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("ctac/__init__.py", "ctac/api.py"): (
        "the package re-exports the API (ctac.compile, ctac.run, ...) through a module "
        "__getattr__: the API loads on first use, never because a lower module was imported"
    ),
}


def layer_of(path: str) -> int:
    for pattern, layer in LAYERS:
        if fnmatch(path, pattern):
            return layer
    raise AssertionError(f"{path} has no layer: add it to LAYERS in tests/test_layers.py")


def _module_files() -> dict[str, str]:
    """Dotted module name (as installed: ctac.runtime.isa) -> repository path."""
    files = {}
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            relative = path.relative_to(REPO)
            parts = list(relative.with_suffix("").parts)
            if parts[0] != "ctac":
                parts.insert(0, "ctac")
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = relative.as_posix()
    return files


def _imports(path: Path, module: str, files: dict[str, str]) -> set[tuple[str, int]]:
    """The first-party modules `path` imports (module level or not), with a line number each."""
    is_package = path.name == "__init__.py"
    found = set()

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return files.get(name)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([node.module] if node.module else []))
            # `from ctac.runtime import isa` names the submodule; `from ctac.hw import load_hardware`
            # resolves to ctac/hw.py (the longest dotted prefix that is a module)
            names = [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] == "ctac" and (target := resolve(name)) is not None:
                found.add((target, node.lineno))
    return found


def _violations() -> dict[tuple[str, str], list[int]]:
    files = _module_files()
    upward: dict[tuple[str, str], list[int]] = {}
    for module, path in files.items():
        source = layer_of(path)
        for target, line in _imports(REPO / path, module, files):
            if target != path and layer_of(target) > source:
                upward.setdefault((path, target), []).append(line)
    return upward


def test_every_module_has_a_layer() -> None:
    for path in _module_files().values():
        layer_of(path)


def test_imports_run_one_way() -> None:
    upward = _violations()
    new = {
        f"{source}:{min(lines)} (layer {layer_of(source)}) imports {target} "
        f"(layer {layer_of(target)})"
        for (source, target), lines in upward.items()
        if (source, target) not in KNOWN_EXCEPTIONS
    }
    assert not new, "imports against the layer direction:\n" + "\n".join(sorted(new))
    stale = sorted(f"{s} -> {t}" for s, t in KNOWN_EXCEPTIONS if (s, t) not in upward)
    assert not stale, "fixed, remove from KNOWN_EXCEPTIONS: " + ", ".join(stale)


def test_the_check_sees_function_level_imports(tmp_path: Path) -> None:
    """The checker itself: an import inside a function counts like one at module level."""
    files = {"ctac.runtime.isa": "runtime/isa.py", "ctac.cli": "ctac/cli.py"}
    source = tmp_path / "isa.py"
    source.write_text("def f():\n    from ctac.cli import main\n    from ctac import cli\n")
    assert _imports(source, "ctac.runtime.isa", files) == {("ctac/cli.py", 2), ("ctac/cli.py", 3)}
