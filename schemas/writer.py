"""Avro binary writers generated from a schema: straight-line Python per record type.

fastavro's `schemaless_writer` walks the schema for every record it writes — per field a
dict lookup, a type dispatch, and for `["null", Record]` unions a field-by-field check of
the record to pick the branch. That walk was most of the bridge's cost per webhook (an
OrderEvent has ~80 fields: ~50 µs of a ~220 µs request). Writing the same bytes with code
generated once per schema — one line per field, the branch, enum index and logical-type
conversion decided when the code is generated — takes less than half that.

fastavro stays the reference. Decimals and timestamp-millis are converted by exact
equivalents of its functions (integer arithmetic instead of digit tuples and float
division), other logical types by its own functions. A record the generated code cannot
write as-is (a wrong type, a missing field, a value out of range) raises `Unwritable`; the
codec then hands it to fastavro, which writes it or explains what is wrong. One leniency:
a decimal with more fractional digits than the schema's scale that are all zeros (1.00000
at scale 4) is written at the scale, where fastavro refuses it; nothing is lost.
tests/test_bridge_codec.py checks the bytes are identical for every bundled schema.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from fastavro.write import LOGICAL_WRITERS  # the functions fastavro itself converts logical types with

Writer = Callable[[Mapping[str, object]], bytes]


class Unsupported(Exception):
    """A schema shape the generator does not handle (that schema stays on fastavro)."""


class Unwritable(Exception):
    """This record is not written by the generated code: let fastavro write or reject it."""


def _unsigned(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_LOW = tuple(_unsigned(n) for n in range(1 << 14))  # a complete varint of a small value
_MID = tuple(bytes([(n & 0x7F) | 0x80, (n >> 7) | 0x80]) for n in range(1 << 14))  # 14 bits, more follow


def _varint(n: int) -> bytes:
    """Zig-zag varint of a long, range-checked like fastavro's 64-bit writer; 14 bits per
    table lookup (timestamps are 6 bytes: half the time of a 7-bit loop)."""
    if not -0x8000000000000000 <= n <= 0x7FFFFFFFFFFFFFFF:
        raise OverflowError(f"{n} does not fit a long")
    n = (n << 1) ^ (n >> 63)
    if n < 16384:
        return _LOW[n]
    out = _MID[n & 0x3FFF]
    n >>= 14
    while n >= 16384:
        out += _MID[n & 0x3FFF]
        n >>= 14
    return out + _LOW[n]


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MILLI = timedelta(milliseconds=1)
_timestamp_millis = LOGICAL_WRITERS["long-timestamp-millis"]


def _millis(value: Any) -> Any:
    """fastavro's timestamp-millis conversion; aware datetimes without its float division."""
    if type(value) is datetime and value.tzinfo is not None:
        return (value - _EPOCH) // _MILLI
    return _timestamp_millis(value, {})


def _decimal(value: Any, scale: int, limit: int, seen: dict[Decimal, bytes]) -> bytes:
    """The unscaled two's-complement bytes of a decimal (fastavro's bytes-decimal), exact:
    a value with more digits than `scale`, or beyond `precision` digits, is not ours to
    write. Amounts repeat, so each field type remembers the ones it wrote."""
    if type(value) is not Decimal:
        raise Unwritable(f"{value!r} is not a Decimal")
    hit = seen.get(value)
    if hit is not None:
        return hit
    num, den = value.as_integer_ratio()
    unscaled, rest = divmod(num * 10**scale, den)
    if rest or not -limit < unscaled < limit:
        raise Unwritable(f"{value} does not fit decimal({len(str(limit)) - 1}, {scale})")
    if len(seen) >= 4096:
        seen.clear()
    out = seen[value] = unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)
    return out


def _reject() -> Any:
    raise Unwritable("a value of another type")


# Lengths, counts, small ids and branch indexes: looked up, not computed.
_SMALL = _LOW[0::2]  # zig-zag maps n ≥ 0 to 2n: the varints of 0..8191
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class _Generator:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.env: dict[str, Any] = {
            "S": _SMALL, "L": _varint, "DEC": _decimal, "MS": _millis,
            "F": struct.Struct("<f").pack, "D": struct.Struct("<d").pack,
        }
        self.named: dict[str, dict[str, Any]] = {}
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def const(self, value: Any) -> str:
        ref = self.name("k")
        self.env[ref] = value
        return ref

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def long(self, depth: int, expr: str) -> None:
        if not expr.isidentifier():  # evaluated once (a timestamp conversion, a len())
            local = self.name("n")
            self.emit(depth, f"{local} = {expr}")
            expr = local
        # `0 <= v < 8192` raises TypeError for a non-number, S[v] for a float: both Unwritable.
        self.emit(depth, f"out += S[{expr}] if 0 <= {expr} < 8192 else L({expr})")

    def register(self, schema: dict[str, Any], namespace: str) -> str:
        name = schema["name"]
        ns = schema.get("namespace", namespace) if "." not in name else name.rsplit(".", 1)[0]
        full = name if "." in name else f"{ns}.{name}" if ns else name
        self.named[full] = self.named[full.rsplit(".", 1)[-1]] = schema
        return ns

    def value(self, schema: Any, expr: str, depth: int, namespace: str, seen: frozenset[str]) -> None:
        """Lines writing the value of `expr` (a local name) as `schema`."""
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            target = self.named.get(schema) or self.named.get(f"{namespace}.{schema}")
            if target is None:
                raise Unsupported(f"unknown named type {schema}")
            if schema in seen:
                raise Unsupported(f"recursive type {schema}")
            return self.value(target, expr, depth, namespace, seen | {schema})
        if isinstance(schema, list):
            return self.union(schema, expr, depth, namespace, seen)
        if isinstance(schema, dict):
            return self.complex(schema, expr, depth, namespace, seen)
        if schema == "null":
            self.emit(depth, f"if {expr} is not None: X()")
        elif schema == "boolean":
            self.emit(depth, f"out += b'\\x01' if {expr} is True else b'\\x00' if {expr} is False else X()")
        elif schema in ("int", "long"):
            self.long(depth, expr)
        elif schema in ("float", "double"):
            self.emit(depth, f"out += {schema[0].upper()}(float({expr}))")
        elif schema in ("string", "bytes"):
            b = self.name("b")
            encoded = f"{expr}.encode()" if schema == "string" else f"{expr} if type({expr}) is bytes else X()"
            self.emit(depth, f"{b} = {encoded}")
            self.long(depth, f"len({b})")
            self.emit(depth, f"out += {b}")

    def union(self, branches: list[Any], expr: str, depth: int, namespace: str, seen: frozenset[str]) -> None:
        others = [b for b in branches if b != "null"]
        if len(others) != 1:
            raise Unsupported("unions other than [null, T]")
        self.emit(depth, f"if {expr} is None:")
        self.emit(depth + 1, f"out += {_SMALL[branches.index('null')]!r}")
        self.emit(depth, "else:")
        self.emit(depth + 1, f"out += {_SMALL[branches.index(others[0])]!r}")
        self.value(others[0], expr, depth + 1, namespace, seen)

    def complex(self, schema: dict[str, Any], expr: str, depth: int, namespace: str, seen: frozenset[str]) -> None:
        kind = schema["type"]
        logical = schema.get("logicalType")
        if kind == "bytes" and logical == "decimal":
            b = self.name("b")
            limit = 10 ** int(schema["precision"])
            self.emit(depth, f"{b} = DEC({expr}, {int(schema.get('scale', 0))}, {limit}, {self.const({})})")
            self.long(depth, f"len({b})")
            return self.emit(depth, f"out += {b}")
        if kind == "long" and logical == "timestamp-millis":
            return self.long(depth, f"MS({expr})")
        if logical is not None and kind in ("long", "int"):
            convert = LOGICAL_WRITERS.get(f"{kind}-{logical}")
            if convert is not None:
                converted = self.name("c")
                self.emit(depth, f"{converted} = {self.const(convert)}({expr}, {self.const(schema)})")
                return self.value(kind, converted, depth, namespace, seen)
        if kind == "record":
            ns = self.register(schema, namespace)
            record = self.name("r")
            self.emit(depth, f"{record} = {expr}")
            for field in schema["fields"]:
                local = self.name("v")
                if "default" in field or "null" in field["type"]:
                    self.emit(depth, f"{local} = {record}.get({field['name']!r}, {self.const(field.get('default'))})")
                else:
                    # fastavro refuses a missing field without a default: so do we (KeyError).
                    self.emit(depth, f"{local} = {record}[{field['name']!r}]")
                self.value(field["type"], local, depth, ns, seen)
        elif kind == "enum":
            self.register(schema, namespace)
            index = {s: _SMALL[i] for i, s in enumerate(schema["symbols"])}
            self.emit(depth, f"out += {self.const(index)}[{expr}]")
        elif kind in ("array", "map"):
            items = self.name("a")
            self.emit(depth, f"{items} = {expr}")
            self.emit(depth, f"if {items}:")
            self.long(depth + 1, f"len({items})")
            item = self.name("i")
            if kind == "array":
                self.emit(depth + 1, f"for {item} in {items}:")
            else:
                key = self.name("m")
                self.emit(depth + 1, f"for {key}, {item} in {items}.items():")
                self.value("string", key, depth + 2, namespace, seen)
            self.value(schema["items" if kind == "array" else "values"], item, depth + 2, namespace, seen)
            self.emit(depth, "out += b'\\x00'")
        elif isinstance(kind, (str, list, dict)) and kind not in ("fixed", "error", "request"):
            self.value(kind, expr, depth, namespace, seen)
        else:
            raise Unsupported(f"type {kind!r}")


def compile_writer(schema: dict[str, Any]) -> Writer:
    """A function writing a record of `schema` (the raw .avsc dict) to Avro binary; it raises
    Unwritable for a record it cannot write as-is. Unsupported for schemas it cannot compile."""
    gen = _Generator()
    gen.value(schema, "record", 1, "", frozenset())
    source = "def write(record):\n    out = bytearray()\n    try:\n" + "\n".join(
        "    " + line for line in gen.lines) + (
        "\n    except Exception as exc:\n        raise Unwritable(repr(exc)) from exc"
        "\n    return bytes(out)\n")
    gen.env |= {"X": _reject, "Unwritable": Unwritable}
    # noqa: S102 - the code is ours, generated from a bundled schema
    exec(compile(source, f"<avro writer {schema.get('name', '?')}>", "exec"), gen.env)  # noqa: S102
    write: Writer = gen.env["write"]
    return write
