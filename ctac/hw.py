"""Hardware configuration: a TOML machine description whose every number carries its source.

`load_hardware(None)` reads the default shipped with ctac (ctac/data/default_hw.toml);
`--hw FILE` reads another. Each number is `{ value = ..., source = "[paper] ..." }` with a source
tag of [paper], [published: ...] or [assumed]; a missing or untagged number is an error naming it.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ctac.errors import CtacError
from ctac.runtime.isa import HardwareView

SOURCE_TAG = re.compile(r"^\[(paper|assumed|published: [^\]]+)\]")


@dataclass(frozen=True)
class Buffer:
    index: int
    name: str
    role: str
    size_bytes: int
    element_bytes: int

    @property
    def capacity(self) -> int:
        """Elements that fit."""
        return self.size_bytes // self.element_bytes


@dataclass(frozen=True)
class Hardware:
    path: str
    text: str
    raw: dict
    buffers: tuple[Buffer, ...]

    @property
    def digest(self) -> bytes:
        """SHA-256 of the config file's bytes: programs record the machine they were built for."""
        return hashlib.sha256(self.text.encode()).digest()

    def number(self, *keys: str) -> float:
        node = self.raw
        for key in keys:
            node = node[key]
        return node["value"]

    def buffer(self, name: str) -> Buffer:
        for buffer in self.buffers:
            if buffer.name == name:
                return buffer
        raise CtacError(f"the hardware config has no buffer named '{name}'")

    @property
    def clock_hz(self) -> float:
        return self.number("accelerator", "clock_ghz") * 1e9

    def view(self) -> HardwareView:
        """The numbers the ISA's cost formulas use."""
        return HardwareView(
            pe_rows=int(self.number("pe_array", "rows")),
            pe_cols=int(self.number("pe_array", "cols")),
            vector_lanes=int(self.number("vector", "lanes")),
            vector_pipeline=int(self.number("vector", "pipeline_depth")),
            special_function_passes=int(self.number("vector", "special_function_passes")),
            dram_bytes_per_cycle=self.number("dram", "bandwidth_gb_s") * 1e9 / self.clock_hz,
            dram_latency=int(self.number("dram", "latency_cycles")),
            element_bytes=int(self.number("dram", "element_bytes")),
            hash_macs_per_cycle=int(self.number("hash", "macs_per_cycle")),
            cluster_lanes=int(self.number("cluster", "lanes")),
            pe_weight_buffers=int(self.optional_number(1, "pe_array", "weight_buffers")),
            cluster_table_bytes=int(self.optional_number(256, "cluster", "table_kib") * 1024),
            cluster_candidates=int(self.optional_number(64, "cluster", "candidates")),
        )

    def optional_number(self, default: float, *keys: str) -> float:
        """A number that older configs may lack (then `default`)."""
        try:
            return self.number(*keys)
        except KeyError:
            return default

    def dma_engines(self, unit: str) -> int:
        """DMA engines serving the `dma_in` (loads) or `dma_out` (stores) queue."""
        key = "load_engines" if unit == "dma_in" else "store_engines"
        return int(self.optional_number(1, "dma", key))

    @property
    def dram_sharing(self) -> str:
        """'shared': every DMA engine's transfers take turns on one channel at the full bandwidth;
        'split': each engine has a fixed share, bandwidth / engines."""
        return str(self.raw.get("dma", {}).get("bandwidth_sharing", "shared"))


REQUIRED = [
    ("accelerator", "clock_ghz"),
    ("pe_array", "rows"),
    ("pe_array", "cols"),
    ("vector", "lanes"),
    ("vector", "pipeline_depth"),
    ("vector", "special_function_passes"),
    ("hash", "macs_per_cycle"),
    ("cluster", "lanes"),
    ("dram", "bandwidth_gb_s"),
    ("dram", "latency_cycles"),
    ("dram", "element_bytes"),
    ("energy_pj", "mac"),
    ("energy_pj", "vector_op"),
    ("energy_pj", "hash_mac"),
    ("energy_pj", "buffer_element"),
    ("energy_pj", "dram_byte"),
    ("energy_pj", "static_mw"),
    ("gpu", "peak_tflops_fp16"),
    ("gpu", "bandwidth_gb_s"),
    ("gpu", "power_w"),
    ("gpu", "kernel_overhead_us"),
    ("gpu", "peak_tflops_fp32"),
]
BUFFER_NAMES = ("act", "wgt", "acc", "vec")


def _check_numbers(node: object, path: str, where: str) -> None:
    if isinstance(node, dict):
        if "value" in node:
            value, source = node.get("value"), node.get("source", "")
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise CtacError(f"{where}: {path} must be a positive number, got {value!r}")
            if not isinstance(source, str) or not SOURCE_TAG.match(source):
                raise CtacError(
                    f"{where}: {path} needs a source starting with [paper], [published: ...] "
                    "or [assumed]"
                )
            return
        for key, child in node.items():
            _check_numbers(child, f"{path}.{key}" if path else key, where)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            _check_numbers(child, f"{path}[{index}]", where)
    elif isinstance(node, int | float) and not isinstance(node, bool):
        raise CtacError(
            f'{where}: {path} = {node} has no source; write {{ value = {node}, source = "[assumed] ..." }}'
        )


def load_hardware(path: str | Path | None = None) -> Hardware:
    if path is None:
        text = resources.files("ctac").joinpath("data/default_hw.toml").read_text()
        where = "default hardware config"
    else:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise CtacError(f"cannot read hardware config '{path}': {exc.strerror}") from None
        where = str(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CtacError(f"{where}: not valid TOML: {exc}") from None
    _check_numbers(raw, "", where)
    for keys in REQUIRED:
        node = raw
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                raise CtacError(f"{where}: missing {'.'.join(keys)}")
            node = node[key]
    buffers = []
    element_bytes = int(raw["dram"]["element_bytes"]["value"])
    for index, entry in enumerate(raw.get("buffers", [])):
        buffers.append(
            Buffer(
                index,
                entry["name"],
                entry.get("role", ""),
                int(entry["size_kib"]["value"] * 1024),
                element_bytes,
            )
        )
    sharing = raw.get("dma", {}).get("bandwidth_sharing", "shared")
    if sharing not in ("shared", "split"):
        raise CtacError(
            f"{where}: dma.bandwidth_sharing must be 'shared' or 'split', got {sharing!r}"
        )
    weight_buffers = raw.get("pe_array", {}).get("weight_buffers", {"value": 1})["value"]
    if weight_buffers not in (1, 2):
        raise CtacError(f"{where}: pe_array.weight_buffers must be 1 or 2, got {weight_buffers!r}")
    names = tuple(b.name for b in buffers)
    if names != BUFFER_NAMES:
        raise CtacError(
            f"{where}: buffers must be {list(BUFFER_NAMES)} in that order, got {list(names)}"
        )
    return Hardware(str(path) if path else "default", text, raw, tuple(buffers))
