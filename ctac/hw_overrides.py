"""Hardware configs with overrides: any number of a config's TOML by its dotted key, for the
Python API (`ctac.hardware`) and sweeps (ctac/sweep.py)."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ctac.errors import CtacError
from ctac.hw import Hardware, hardware_from_text, load_hardware


def hardware(
    config: str | Path | Hardware | None = None, overrides: Mapping[str, Any] | None = None
) -> Hardware:
    """A hardware config: ctac's default (None), a TOML file, or a Hardware object, with
    `overrides` of any of its numbers by dotted key: `{"pe_array.rows": 64, "dram.bandwidth_gb_s":
    1024, "buffers.act.size_kib": 512}`. An unknown key or a value the key cannot take is a
    CtacError naming it. The result's `path` records the overrides; its digest is what programs
    compiled for it carry."""
    base = load_hardware(config)
    if not overrides:
        return base
    raw = copy.deepcopy(base.raw)
    applied = []
    for key, value in overrides.items():
        node = hardware_node(raw, key)
        old = node["value"] if isinstance(node, dict) else node
        if isinstance(old, str):
            if not isinstance(value, str):
                raise CtacError(f"hardware override {key}: expected a string, got {value!r}")
            _set_string(raw, key, value)
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise CtacError(f"hardware override {key}: expected a number, got {value!r}")
            if isinstance(old, int) and not float(value).is_integer():
                raise CtacError(f"hardware override {key}: must be an integer, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise CtacError(
                    f"hardware override {key}: must be a positive number, got {value!r}"
                )
            node["value"] = int(value) if isinstance(old, int) else float(value)
            node["source"] = "[assumed] override (ctac.hardware)"
        applied.append(f"{key}={value}")
    label = f"{base.path}+{','.join(applied)}"
    return hardware_from_text(_toml_text(raw), f"hardware {label}", label)


def hardware_name(hw: Hardware) -> str:
    """The config's `accelerator.name`."""
    return str(hw.raw.get("accelerator", {}).get("name", "accelerator"))


def hardware_node(raw: dict, key: str) -> Any:
    parts = key.split(".")
    node: Any = raw
    for index, part in enumerate(parts):
        if isinstance(node, list):  # [[buffers]]: by name
            node = next((entry for entry in node if entry.get("name") == part), None)
        elif isinstance(node, dict):
            node = node.get(part)
        if node is None or (isinstance(node, dict) and "value" in node and index < len(parts) - 1):
            raise CtacError(
                f"unknown hardware key '{key}' (e.g. pe_array.rows, dram.bandwidth_gb_s, buffers.act.size_kib)"
            )
    if isinstance(node, dict) and "value" in node or isinstance(node, str):
        return node
    raise CtacError(f"hardware key '{key}' is a table, not a number; name one of its numbers")


def _set_string(raw: dict, key: str, value: str) -> None:
    *parents, last = key.split(".")
    node: Any = raw
    for part in parents:
        node = (
            next(e for e in node if e.get("name") == part) if isinstance(node, list) else node[part]
        )
    node[last] = value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise CtacError(f"cannot write {value!r} to a hardware config")


def _toml_text(raw: dict, prefix: str = "") -> str:
    """A hardware config's TOML (numbers as inline `{ value, source }` tables), deterministic."""
    lines = []

    def is_table(value: Any) -> bool:
        return isinstance(value, dict) and "value" not in value

    def is_table_array(value: Any) -> bool:
        return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)

    for key, value in raw.items():
        if not is_table(value) and not is_table_array(value):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if is_table(value):
            lines.append(f"\n[{name}]")
            lines.append(_toml_text(value, f"{name}."))
        elif is_table_array(value):
            for entry in value:
                lines.append(f"\n[[{name}]]")
                lines.append(_toml_text(entry, f"{name}."))
    return "\n".join(line for line in lines if line != "")
