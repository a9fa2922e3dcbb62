"""Instruction source strings: the IR op an instruction was lowered from, and its block.

Every instruction of a program carries a source string (the program's source table, `src "..."`
in ctaisa IR, `;@ "..."` in assembly). lower-to-isa writes it, and the profile, `ctac run` and
`ctac compare` read it; this module is the one place that knows the format, so writers and
readers cannot drift apart.

    <kind>[:<name>][@L<layer>]

- kind: the op's name (`onnx.MatMul`, `cta.compressed_attention`), with `.<role>` appended for
  ops that have a role (`cta.cluster.q`, `cta.cluster.kv`). Attention is told apart by it: a
  kind starting with `cta.` is attention work (projections, clustering, attention, recovery).
- name: the attention layer's `ctac.source` (the Softmax it replaced) or the op's result name.
- layer: the op's `ctac.layer` (passes/assign_layers.py): -1 before the first transformer block,
  0..L-1 for block k, L after the last one. Absent when no layer is known (a module without
  attention, programs written before layers were recorded).

Parsing is unambiguous: the kind ends at the first ':' (op names have none), and the layer tag is
the text after the last '@L' when that is an optional '-' and digits. A source with no layer whose
name happens to end like a tag gets an empty-layer marker `@L?` appended, which reads back as no
layer and is stripped from the name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TAG = "@L"
NO_LAYER = "?"
_LAYER = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Source:
    """One parsed source string."""

    kind: str
    name: str
    layer: int | None

    @property
    def is_attention(self) -> bool:
        """Work of an attention layer: `cta.*` ops (projection, clustering, attention, recover)."""
        return self.kind.startswith("cta.")

    @property
    def role(self) -> str:
        """'q', 'kv' or 'qkv' for clustering ops, '' otherwise."""
        for role in ("kv", "qkv", "q"):
            if self.kind.endswith(f".{role}"):
                return role
        return ""


def format_source(kind: str, name: str | None = None, layer: int | None = None) -> str:
    """'<kind>[:<name>][@L<layer>]' (see the module docstring)."""
    text = f"{kind}:{name}" if name else kind
    if layer is not None:
        return f"{text}{TAG}{layer}"
    head, tag, tail = text.rpartition(TAG)
    if tag and (_LAYER.fullmatch(tail) or tail == NO_LAYER):
        return f"{text}{TAG}{NO_LAYER}"
    return text


def parse_source(source: str) -> Source:
    """The kind, name and layer of a source string; tolerant of any text (old programs, asm)."""
    text, layer = source, None
    head, tag, tail = source.rpartition(TAG)
    if tag and _LAYER.fullmatch(tail):
        text, layer = head, int(tail)
    elif tag and tail == NO_LAYER:
        text = head
    kind, _, name = text.partition(":")
    return Source(kind, name, layer)
