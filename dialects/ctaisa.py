"""The `ctaisa` dialect: one op per instruction of runtime/isa.py, generated from that table.

A lowered module holds, in order: `ctaisa.data` ops (the data segment: weights by name, small
constants inline), `ctaisa.symbol` ops (inputs and outputs in DRAM), then the instruction ops,
each with one property per instruction field and the layer it came from:

    ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=0 m=16 k=64 n=64 ... src "layer.0/q"

A field whose size the data decides carries `dynamic {"n": 5}` (or `{"n": [5, 128]}`): the same
JSON object, byte for byte, as the `;@ "source" {...}` sizes of the assembly runtime/assembly.py
writes and reads (docs/architecture.md, "Two text forms").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseIntOrFPElementsAttr,
    FloatAttr,
    IntAttr,
    IntegerAttr,
    StringAttr,
    f32,
    i64,
)
from xdsl.ir import Attribute, Dialect
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    opt_operand_def,
    opt_prop_def,
    prop_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from ctac.runtime import isa
from ctac.runtime.isa import BUFFER_NAMES, DTYPES


def _field_attribute(kind: str, value: object) -> Attribute:
    if kind == "buf":
        return StringAttr(BUFFER_NAMES[int(value)])
    if kind == "enum":
        return StringAttr(str(value))
    if kind == "f32":
        return FloatAttr(float(value), f32)
    return IntegerAttr(int(value), i64)


def canonical_fields(name: str, fields: dict) -> dict[str, int | float | str]:
    """An emission's checked fields as an instruction op holds them (field_values): buffers as
    indices, f32 fields rounded to float32, integers as int; in the table's order."""
    values: dict[str, int | float | str] = {}
    for field_spec in isa.BY_NAME[name].fields:
        value = fields[field_spec.name]
        if field_spec.kind == "enum":
            values[field_spec.name] = str(value)
        elif field_spec.kind == "f32":
            values[field_spec.name] = float(np.float32(value))
        else:
            values[field_spec.name] = int(value)
    return values


def dynamic_json(entries: Sequence[tuple[str, int, int]]) -> str:
    """The encoding of an instruction's dynamic sizes, shared with the assembly's `;@` comment:
    a JSON object from field name to the index of the CLUSTER instruction whose cluster count
    sets it, or to [that index, the first cluster row] when the tile starts past row 0."""
    return json.dumps(
        {name: [cluster, offset] if offset else cluster for name, cluster, offset in entries}
    )


def _dynamic_entries(text: str) -> list[tuple]:
    """(field, CLUSTER instruction index[, offset]) from `dynamic_json`'s text; ValueError if
    it is not that form."""
    entries = json.loads(text)
    if not isinstance(entries, dict):
        raise ValueError(f"dynamic sizes {text} are not a JSON object")
    pairs = []
    for name, value in entries.items():
        numbers = value if isinstance(value, list) else [value]
        if len(numbers) not in (1, 2) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers
        ):
            raise ValueError(f"dynamic size {name}: {value} is not CLUSTER or [CLUSTER, OFFSET]")
        pairs.append((name, *numbers))
    return pairs


class InstructionOp(IRDLOperation):
    """Base of the generated instruction ops; `INSTRUCTION` names the table row."""

    INSTRUCTION: ClassVar[str] = ""

    def field_values(self) -> dict[str, int | float | str]:
        spec = isa.BY_NAME[self.INSTRUCTION]
        values: dict[str, int | float | str] = {}
        for field_spec in spec.fields:
            attr = self.properties[field_spec.name]
            if field_spec.kind == "buf":
                values[field_spec.name] = BUFFER_NAMES.index(attr.data)
            elif field_spec.kind == "enum":
                values[field_spec.name] = attr.data
            elif field_spec.kind == "f32":
                values[field_spec.name] = attr.value.data
            else:
                values[field_spec.name] = attr.value.data
        return values

    def dynamic_fields(self) -> list[tuple]:
        """(field, CLUSTER instruction index[, offset]): sizes the data decides (`{"n": 5}` or,
        for a tile starting at cluster row 128, `{"n": [5, 128]}`)."""
        attr = self.attributes.get("dynamic")
        if not isinstance(attr, StringAttr) or not attr.data:
            return []
        return _dynamic_entries(attr.data)

    def set_dynamic_fields(self, entries: Sequence[tuple[str, int, int]]) -> None:
        """Record (field, CLUSTER instruction index, first cluster row) sizes."""
        if entries:
            self.attributes["dynamic"] = StringAttr(dynamic_json(entries))

    @property
    def source(self) -> str:
        attr = self.attributes.get("src")
        return attr.data if isinstance(attr, StringAttr) else ""

    @classmethod
    def create_from(
        cls, fields: dict, source: str = "", cache: dict | None = None, checked: bool = False
    ) -> InstructionOp:
        """The instruction with these field values, checked against its row of the ISA table
        (isa.checked_fields: an unknown field, a missing one the table gives no default, or a
        value out of range raises isa.FieldError naming the instruction and field); `checked`:
        `fields` already are isa.checked_fields' result (lower-to-isa checks at emission).

        `cache` (one dict per module) shares each attribute value between instructions:
        building and verifying ~10 attributes per instruction was most of the lowering time.
        """
        spec = isa.BY_NAME[cls.INSTRUCTION]
        values = fields if checked else isa.checked_fields(cls.INSTRUCTION, fields)
        if cache is None:
            cache = {}
        properties: dict[str, Attribute] = {}
        for field_spec in spec.fields:
            value = values[field_spec.name]
            key = (field_spec.kind, type(value), value)
            attr = cache.get(key)
            if attr is None:
                attr = cache[key] = _field_attribute(field_spec.kind, value)
            properties[field_spec.name] = attr
        attributes: dict[str, Attribute] = {}
        if source:
            attr = cache.get(("src", str, source))
            if attr is None:
                attr = cache[("src", str, source)] = StringAttr(source)
            attributes["src"] = attr
        return cls.create(properties=properties, attributes=attributes)

    def print(self, printer: Printer) -> None:
        spec = isa.BY_NAME[self.INSTRUCTION]
        values = self.field_values()
        for field_spec in spec.fields:
            value = values[field_spec.name]
            text = (
                BUFFER_NAMES[value]
                if field_spec.kind == "buf"
                else isa.format_value(field_spec, value)
            )
            printer.print_string(f" {field_spec.name}={text}")
        if self.source:
            printer.print_string(" src ")
            printer.print_string_literal(self.source)
        dynamic = self.attributes.get("dynamic")
        if isinstance(dynamic, StringAttr):
            # Printed as the JSON itself (the assembly's form), which the parser reads back.
            printer.print_string(f" dynamic {dynamic.data}")

    @classmethod
    def parse(cls, parser: Parser) -> InstructionOp:
        spec = isa.BY_NAME[cls.INSTRUCTION]
        fields: dict = {}
        for field_spec in spec.fields:
            parser.parse_keyword(field_spec.name)
            parser.parse_punctuation("=")
            if field_spec.kind == "buf":
                name = parser.parse_identifier()
                if name not in BUFFER_NAMES:
                    parser.raise_error(f"unknown buffer '{name}'")
                fields[field_spec.name] = BUFFER_NAMES.index(name)
            elif field_spec.kind == "enum":
                fields[field_spec.name] = parser.parse_identifier()
            elif field_spec.kind == "f32":
                fields[field_spec.name] = parser.parse_float()
            else:
                fields[field_spec.name] = parser.parse_integer()
        source = ""
        if parser.parse_optional_keyword("src") is not None:
            source = parser.parse_str_literal()
        dynamic: list[tuple[str, int, int]] = []
        if parser.parse_optional_keyword("dynamic") is not None:
            dynamic = parser.parse_comma_separated_list(
                parser.Delimiter.BRACES, lambda: _parse_dynamic_entry(parser)
            )
        try:
            op = cls.create_from(fields, source)
        except ValueError as exc:
            parser.raise_error(str(exc))
        op.set_dynamic_fields(dynamic)
        return op

    def verify_(self) -> None:
        try:
            spec = isa.BY_NAME[self.INSTRUCTION]
            values = self.field_values()
            for field_spec in spec.fields:
                field_spec.check(values[field_spec.name], self.INSTRUCTION)
            self.dynamic_fields()  # printed as it is stored: it must be the JSON form
        except (ValueError, KeyError) as exc:
            raise VerifyException(f"{self.name}: {exc}") from None


def _parse_dynamic_entry(parser: Parser) -> tuple[str, int, int]:
    """One `"field": CLUSTER` or `"field": [CLUSTER, OFFSET]` of a `dynamic {...}` object."""
    name = parser.parse_str_literal()
    parser.parse_punctuation(":")
    if parser.parse_optional_punctuation("[") is None:
        return name, parser.parse_integer(allow_boolean=False, allow_negative=False), 0
    cluster = parser.parse_integer(allow_boolean=False, allow_negative=False)
    parser.parse_punctuation(",")
    offset = parser.parse_integer(allow_boolean=False, allow_negative=False)
    parser.parse_punctuation("]")
    return name, cluster, offset


def instruction_op(spec: isa.Instruction) -> type[InstructionOp]:
    """The op of one ISA table row: `ctaisa.<name>`, one property per field."""
    properties = {}
    for field_spec in spec.fields:
        kind = {"buf": StringAttr, "enum": StringAttr, "f32": FloatAttr}.get(
            field_spec.kind, IntegerAttr
        )
        properties[field_spec.name] = prop_def(kind)
    namespace = {
        "name": f"ctaisa.{spec.name.lower()}",
        "INSTRUCTION": spec.name,
        "__annotations__": {"INSTRUCTION": ClassVar[str]},
        "__module__": __name__,
        "__doc__": spec.doc,
        **properties,
    }
    return irdl_op_definition(
        type(f"{spec.name.title().replace('_', '')}Op", (InstructionOp,), namespace)
    )


INSTRUCTION_OPS: dict[str, type[InstructionOp]] = {
    spec.name: instruction_op(spec) for spec in isa.INSTRUCTIONS
}


@irdl_op_definition
class DataOp(IRDLOperation):
    """A data-segment entry: `ctaisa.data at=ADDR size=N "weight name"`, `... dense<...>`, or
    `... %value`: a value computed at compile time from weights and constants by onnx-dialect
    ops earlier in the module (lower-to-isa precomputes what depends on no input: a dequantized
    or transposed weight), so printed modules carry the recipe, never the derived arrays."""

    name = "ctaisa.data"
    address = prop_def(IntAttr)
    ref = opt_prop_def(StringAttr)
    value = opt_prop_def(DenseIntOrFPElementsAttr)
    size = prop_def(IntAttr)
    source = opt_operand_def()

    def print(self, printer: Printer) -> None:
        printer.print_string(f" at={self.address.data} size={self.size.data} ")
        if self.source is not None:
            printer.print_operand(self.source)
            printer.print_string(" : ")
            printer.print_attribute(self.source.type)
        elif self.ref is not None:
            printer.print_string_literal(self.ref.data)
        else:
            from ctac.dialects.onnx import print_dense

            print_dense(printer, self.value)

    @classmethod
    def parse(cls, parser: Parser) -> DataOp:
        parser.parse_keyword("at")
        parser.parse_punctuation("=")
        address = parser.parse_integer()
        parser.parse_keyword("size")
        parser.parse_punctuation("=")
        size = parser.parse_integer()
        properties: dict[str, Attribute] = {"address": IntAttr(address), "size": IntAttr(size)}
        unresolved = parser.parse_optional_unresolved_operand()
        if unresolved is not None:
            parser.parse_punctuation(":")
            source = parser.resolve_operand(unresolved, parser.parse_type())
            return cls.build(operands=[source], properties=properties)
        ref = parser.parse_optional_str_literal()
        if ref is not None:
            properties["ref"] = StringAttr(ref)
        else:
            value = parser.parse_attribute()
            if not isinstance(value, DenseIntOrFPElementsAttr):
                parser.raise_error("ctaisa.data expects a weight name or a dense<...> value")
            properties["value"] = value
        return cls.build(operands=[None], properties=properties)

    def verify_(self) -> None:
        given = (self.ref is not None) + (self.value is not None) + (self.source is not None)
        if given != 1:
            raise VerifyException(
                "ctaisa.data needs exactly one of a weight name, a value and a computed operand"
            )


@irdl_op_definition
class SymbolOp(IRDLOperation):
    """An input or output in DRAM: `ctaisa.symbol input "input_ids" int64 [2, 16] at=4096`."""

    name = "ctaisa.symbol"
    kind = prop_def(StringAttr)
    sym = prop_def(StringAttr)
    dtype = prop_def(StringAttr)
    shape = prop_def(ArrayAttr)
    address = prop_def(IntAttr)
    vocab = opt_prop_def(IntAttr)

    def print(self, printer: Printer) -> None:
        printer.print_string(f" {self.kind.data} ")
        printer.print_string_literal(self.sym.data)
        dims = ", ".join(str(d.data) for d in self.shape.data)
        printer.print_string(f" {self.dtype.data} [{dims}] at={self.address.data}")
        if self.vocab is not None:
            printer.print_string(f" vocab={self.vocab.data}")

    @classmethod
    def parse(cls, parser: Parser) -> SymbolOp:
        kind = parser.parse_identifier()
        name = parser.parse_str_literal()
        dtype = parser.parse_identifier()
        dims = parser.parse_comma_separated_list(parser.Delimiter.SQUARE, parser.parse_integer)
        parser.parse_keyword("at")
        parser.parse_punctuation("=")
        address = parser.parse_integer()
        properties: dict[str, Attribute] = {
            "kind": StringAttr(kind),
            "sym": StringAttr(name),
            "dtype": StringAttr(dtype),
            "shape": ArrayAttr([IntAttr(d) for d in dims]),
            "address": IntAttr(address),
        }
        if parser.parse_optional_keyword("vocab") is not None:
            parser.parse_punctuation("=")
            properties["vocab"] = IntAttr(parser.parse_integer())
        return cls.build(properties=properties)

    def verify_(self) -> None:
        if self.kind.data not in ("input", "output") or self.dtype.data not in DTYPES:
            raise VerifyException(
                f"ctaisa.symbol: kind {self.kind.data} / dtype {self.dtype.data} unknown"
            )


CtaIsa = Dialect("ctaisa", [DataOp, SymbolOp, *INSTRUCTION_OPS.values()], [])
