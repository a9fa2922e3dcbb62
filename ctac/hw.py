"""Hardware configuration: a TOML machine description whose every number carries its source.

`load_hardware(None)` reads the default shipped with ctac (ctac/data/default_hw.toml);
`--hw FILE` reads another. Each number is `{ value = ..., source = "[paper] ..." }` with a source
tag of [paper], [published: ...] or [assumed]; a missing or untagged number is an error naming it.
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ctac.errors import CtacError, shorten
from ctac.runtime.isa import BUFFER_NAMES, HardwareView

SOURCE_TAG = re.compile(r"^\[(paper|assumed|published: [^\]]+)\]")
# The element types the machine stores tensors in (DRAM, on-chip buffers, the program's data
# segment), by dram.element_bytes: fp16 with fp32 accumulation (ctac's default config) or fp32
# throughout (bit-faithful comparisons with onnxruntime). GEMM's int8 mode
# (passes/lower_to_isa/precision.py) is a per-instruction compute mode on top of either.
PRECISIONS = {2: "fp16", 4: "fp32"}
PRECISION_BYTES = {name: size for size, name in PRECISIONS.items()}
# The line `--precision` writes into a config's [dram] section (the source says who set it).
_ELEMENT_BYTES_LINE = re.compile(r"^(\s*)element_bytes\s*=.*$", re.MULTILINE)


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
    def precision(self) -> str:
        """The storage element type, "fp16" or "fp32" (dram.element_bytes 2 or 4)."""
        return PRECISIONS[int(self.number("dram", "element_bytes"))]

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

    def energy(self, key: str) -> float:
        """energy_pj.`key`; a config without an int8 MAC energy charges an integer-mode MAC as a
        float one (energy_pj.mac), so older configs keep their numbers."""
        if key == "int8_mac":
            return self.optional_number(self.number("energy_pj", "mac"), "energy_pj", key)
        return self.number("energy_pj", key)

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
# Every number: finite and in this range (NaN, inf, 1e300 and 1e-300 are typos, not machines).
MIN_NUMBER, MAX_NUMBER = 1e-9, 1e12
# Numbers that count things: whole, at least 1, at most this (dims are 16-bit ISA fields).
WHOLE_NUMBERS = {
    ("pe_array", "rows"): 1 << 16,
    ("pe_array", "cols"): 1 << 16,
    ("pe_array", "weight_buffers"): 2,
    ("vector", "lanes"): 1 << 20,
    ("vector", "pipeline_depth"): 1 << 20,
    ("vector", "special_function_passes"): 1 << 10,
    ("hash", "macs_per_cycle"): 1 << 30,
    ("cluster", "lanes"): 1 << 20,
    ("cluster", "candidates"): 1 << 20,
    ("dram", "latency_cycles"): 1 << 30,
    ("dram", "element_bytes"): 8,
    ("dma", "load_engines"): 64,
    ("dma", "store_engines"): 64,
}
# A buffer holds at most this many elements: buffer addresses are 24-bit ISA fields.
MAX_BUFFER_ELEMENTS = 1 << 24
MAX_TABLE_KIB = 1 << 20


def _check_numbers(node: object, path: str, where: str) -> None:
    if isinstance(node, dict):
        if "value" in node:
            value, source = node.get("value"), node.get("source", "")
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
                or not MIN_NUMBER <= value <= MAX_NUMBER
            ):
                raise CtacError(
                    f"{where}: {path} must be a positive number in [{MIN_NUMBER:g}, "
                    f"{MAX_NUMBER:g}], got {shorten(repr(value))}"
                )
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


def _check_ranges(raw: dict, where: str) -> None:
    """Whole numbers where the machine counts things, each within its range; sections that
    must be tables are tables."""
    for section in {keys[0] for keys in WHOLE_NUMBERS} | {"accelerator", "gpu", "energy_pj"}:
        if section in raw and not isinstance(raw[section], dict):
            raise CtacError(f"{where}: [{section}] must be a table")
    for (section, key), high in WHOLE_NUMBERS.items():
        node = raw.get(section, {}).get(key)
        if node is None:
            continue
        value = node.get("value") if isinstance(node, dict) else None
        if value is None:
            raise CtacError(f'{where}: {section}.{key} must be {{ value = ..., source = "..." }}')
        if value != int(value) or not 1 <= value <= high:
            raise CtacError(
                f"{where}: {section}.{key} must be a whole number from 1 to {high}, got {value!r}"
            )
    table = raw.get("cluster", {}).get("table_kib")
    if table is not None:
        value = table.get("value") if isinstance(table, dict) else None
        # Fractions of a KiB are fine (tests shrink the table to force tiling): at least a byte.
        if value is None or not 1 / 1024 <= value <= MAX_TABLE_KIB:
            raise CtacError(
                f"{where}: cluster.table_kib must be {{ value = 1/1024 (one byte) to "
                f"{MAX_TABLE_KIB}, source = ... }}, got {shorten(repr(value))}"
            )
    element = raw.get("dram", {}).get("element_bytes")
    value = element.get("value") if isinstance(element, dict) else None
    if value is not None and value not in PRECISIONS:
        raise CtacError(
            f"{where}: dram.element_bytes must be 2 (fp16 storage) or 4 (fp32), got {value!r}"
        )
    sharing = raw.get("dma", {}).get("bandwidth_sharing", "shared")
    if not isinstance(sharing, str):
        raise CtacError(f"{where}: dma.bandwidth_sharing must be 'shared' or 'split'")


def load_hardware(path: str | Path | Hardware | None = None) -> Hardware:
    """The config at `path` (None: ctac's default; a Hardware object is returned as it is)."""
    if isinstance(path, Hardware):
        return path
    if path is None:
        text = resources.files("ctac").joinpath("data/default_hw.toml").read_text()
        where = "default hardware config"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise CtacError(f"cannot read hardware config '{path}': {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise CtacError(
                f"hardware config '{path}' is not UTF-8 text (byte {exc.start}); it should be a "
                "TOML file like ctac/data/default_hw.toml"
            ) from None
        where = str(path)
    return hardware_from_text(text, where, str(path) if path else "default")


def hardware_from_text(text: str, where: str, path: str = "default") -> Hardware:
    """A config from its TOML text (`where` names it in errors; `path` is recorded)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CtacError(f"{where}: not valid TOML: {shorten(exc, 200)}") from None
    _check_numbers(raw, "", where)
    for keys in REQUIRED:
        node = raw
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                raise CtacError(f"{where}: missing {'.'.join(keys)}")
            node = node[key]
    _check_ranges(raw, where)
    buffers = []
    element_bytes = int(raw["dram"]["element_bytes"]["value"])
    entries = raw.get("buffers", [])
    if not isinstance(entries, list):
        raise CtacError(f"{where}: buffers must be [[buffers]] tables, got {shorten(entries)}")
    for index, entry in enumerate(entries):
        key = f"buffers[{index}]"
        if not isinstance(entry, dict):
            raise CtacError(f"{where}: {key} must be a [[buffers]] table")
        name, role = entry.get("name"), entry.get("role", "")
        if not isinstance(name, str):
            raise CtacError(
                f'{where}: {key} needs a name, one of {list(BUFFER_NAMES)} (name = "act")'
            )
        if not isinstance(role, str):
            raise CtacError(f"{where}: {key}.role must be a string")
        size = entry.get("size_kib")
        if not isinstance(size, dict) or "value" not in size:
            raise CtacError(f'{where}: {key} needs size_kib = {{ value = ..., source = "..." }}')
        size_bytes = int(size["value"] * 1024)
        if not element_bytes <= size_bytes <= MAX_BUFFER_ELEMENTS * element_bytes:
            raise CtacError(
                f"{where}: {key}.size_kib {size['value']!r} must hold 1 to {MAX_BUFFER_ELEMENTS} "
                f"elements of {element_bytes} bytes (at most "
                f"{MAX_BUFFER_ELEMENTS * element_bytes // 1024} KiB: buffer addresses are 24-bit)"
            )
        buffers.append(Buffer(index, name, role, size_bytes, element_bytes))
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
    return Hardware(path, text, raw, tuple(buffers))


def with_precision(hw: Hardware, precision: str | None) -> Hardware:
    """`hw` storing tensors as `precision` ("fp16" or "fp32"; None: as it is): the config's
    dram.element_bytes set to 2 or 4, so the cost model charges those bytes and the program
    stores its data in that type. The TOML text changes (one line, with a source saying so), so
    the program's hardware hash and embedded config record the machine it was compiled for."""
    if precision is None or precision == hw.precision:
        return hw
    if precision not in PRECISION_BYTES:
        raise CtacError(
            f"precision must be one of {', '.join(PRECISION_BYTES)}, got {shorten(repr(precision))}"
        )
    size = PRECISION_BYTES[precision]
    section = re.search(r"^\[dram\]\s*$", hw.text, re.MULTILINE)
    following = re.compile(r"^\s*\[", re.MULTILINE)
    end = following.search(hw.text, section.end()) if section else None
    body = hw.text[section.end() : end.start() if end else len(hw.text)] if section else ""
    match = _ELEMENT_BYTES_LINE.search(body)
    if section is None or match is None:
        raise CtacError(
            f"{hw.path}: cannot set the precision to {precision}: the config has no "
            "`element_bytes = { ... }` line in its [dram] section; set dram.element_bytes to "
            f"{size} in the file instead"
        )
    line = (
        f'{match.group(1)}element_bytes = {{ value = {size}, source = "[assumed] {precision} '
        f'tensors in DRAM and on chip (set by --precision {precision})" }}'
    )
    start = section.end() + match.start()
    text = hw.text[:start] + line + hw.text[section.end() + match.end() :]
    label = f"{hw.path}+precision={precision}"
    changed = hardware_from_text(text, f"hardware {label}", label)
    if changed.precision != precision:  # the line was not the key TOML read (e.g. commented)
        raise CtacError(f"{hw.path}: cannot set the precision to {precision} in this config")
    return changed
