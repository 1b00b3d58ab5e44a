"""Avro encoding of everything that crosses Kafka.

Default: Avro single-object encoding (0xC3 0x01, 8-byte CRC-64-AVRO fingerprint, body).
The fingerprint identifies the writer schema among the bundled versions, so no schema
server is needed. With `SCHEMA_REGISTRY_URL` set, the Confluent wire format (0x00,
4-byte schema id, body) and confluent-kafka's registry client are used instead.
Either way the reader is the newest bundled version, and Avro schema resolution maps
older data onto it.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache
from typing import Any, Protocol

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.write import LOGICAL_WRITERS  # the table fastavro itself writes logical types with

from wooflow.schemas.registry import Catalog, SchemaVersion, catalog

SINGLE_OBJECT_MARKER = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"


class DecodeError(ValueError):
    """The bytes are not a message this build can read (reason in the text)."""


class Codec(Protocol):
    def encode(self, schema_name: str, record: dict[str, Any], topic: str = "") -> bytes: ...

    def decode(self, data: bytes, topic: str = "") -> tuple[str, dict[str, Any]]: ...


# --- the fast write path ----------------------------------------------------------------
# fastavro spends most of an encode of a nested event resolving unions (a dict offered to
# `["null", Record]` is validated field by field against the record to pick the branch)
# and dispatching logical types per value. A "preparer" compiled once per schema applies
# fastavro's own logical-type writers (same functions, same schema dicts → same values)
# and names the branch of `["null", Record]` unions with fastavro's tuple notation; the
# prepared record is then written with the same schema minus its `logicalType`s. The
# bytes are identical (tests/test_bridge_codec.py checks every bundled schema); only the
# Python work per record changes.

Prep = Callable[[Any], Any]


class _Unsupported(Exception):
    """A schema shape the preparer does not handle: that schema keeps the plain path."""


def _compile(schema: Any, named: dict[str, Any], seen: frozenset[str] = frozenset()) -> Prep | None:
    """A function turning a value into what the logical-type-free schema expects, or None
    when the value can be written as it is."""
    if isinstance(schema, str):
        if schema in named:
            if schema in seen:
                raise _Unsupported(f"recursive type {schema}")
            return _compile(named[schema], named, seen | {schema})
        return None
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        if len(branches) != 1 or len(branches) == len(schema):
            if any(_compile(b, named, seen) is not None for b in schema):
                raise _Unsupported("a general union with logical types")
            return None
        inner = _compile(branches[0], named, seen)
        target = named.get(branches[0], branches[0]) if isinstance(branches[0], str) else branches[0]
        if isinstance(target, dict) and target.get("type") == "record":
            name = target["name"]

            def record_branch(v: Any) -> Any:
                if isinstance(v, dict):
                    return (name, inner(v) if inner is not None else v)
                return v
            return record_branch
        if inner is None:
            return None
        return lambda v: v if v is None else inner(v)
    kind = schema.get("type")
    logical = schema.get("logicalType")
    if logical is not None:
        writer = LOGICAL_WRITERS.get(f"{kind}-{logical}")
        if writer is None:
            return None
        return lambda v: writer(v, schema)
    if kind == "record":
        preps = [(f["name"], p) for f in schema["fields"] if (p := _compile(f["type"], named, seen)) is not None]
        if not preps:
            return None

        def record(v: Any) -> Any:
            if not isinstance(v, dict):
                return v
            out = dict(v)
            for fname, prep in preps:
                if fname in out:
                    out[fname] = prep(out[fname])
            return out
        return record
    if kind == "array":
        item = _compile(schema["items"], named, seen)
        return None if item is None else (lambda v: [item(x) for x in v] if isinstance(v, list) else v)
    if kind == "map":
        value = _compile(schema["values"], named, seen)
        return None if value is None else (
            lambda v: {k: value(x) for k, x in v.items()} if isinstance(v, dict) else v)
    if isinstance(kind, (dict, list)):
        return _compile(kind, named, seen)
    return None


def _strip_logical(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_logical(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip_logical(v) for v in schema]
    return schema


_FAST: dict[int, tuple[SchemaVersion, tuple[Any, Prep | None] | None]] = {}


def _fast(version: SchemaVersion) -> tuple[Any, Prep | None] | None:
    """(logical-type-free parsed schema, preparer) for `version`, or None: plain path."""
    hit = _FAST.get(id(version))
    if hit is not None and hit[0] is version:
        return hit[1]
    try:
        prep = _compile(version.parsed, dict(version.parsed.get("__named_schemas", {})))
        fast: tuple[Any, Prep | None] | None = (parse_schema(_strip_logical(version.raw), named_schemas={}), prep)
    except _Unsupported:
        fast = None
    _FAST[id(version)] = (version, fast)
    return fast


def _write(version: SchemaVersion, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fast = _fast(version)
    try:
        if fast is None:
            schemaless_writer(buf, version.parsed, record)
        else:
            schema, prep = fast
            schemaless_writer(buf, schema, prep(record) if prep is not None else record)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"record does not fit {version.name} v{version.version}: {exc}") from exc
    return buf.getvalue()


def _read(body: bytes, writer: SchemaVersion, reader: SchemaVersion) -> dict[str, Any]:
    buf = io.BytesIO(body)
    try:
        if writer is reader:
            return schemaless_reader(buf, writer.parsed, None)  # type: ignore[return-value]
        return schemaless_reader(buf, writer.parsed, reader.parsed)  # type: ignore[return-value]
    except Exception as exc:  # fastavro raises a zoo of types on corrupt bytes
        raise DecodeError(f"corrupt {writer.name} v{writer.version} body: {exc}") from exc


class SingleObjectCodec:
    def __init__(self, cat: Catalog | None = None) -> None:
        self.catalog = cat or catalog()

    def encode(self, schema_name: str, record: dict[str, Any], topic: str = "") -> bytes:
        version = self.catalog.latest(schema_name)
        return SINGLE_OBJECT_MARKER + version.fingerprint + _write(version, record)

    def encode_with(self, version: SchemaVersion, record: dict[str, Any]) -> bytes:
        """Encode with a specific (possibly old) version: used by compatibility tests."""
        return SINGLE_OBJECT_MARKER + version.fingerprint + _write(version, record)

    def decode(self, data: bytes, topic: str = "") -> tuple[str, dict[str, Any]]:
        if not data or data[:2] != SINGLE_OBJECT_MARKER or len(data) < 10:
            raise DecodeError("not Avro single-object encoded (missing 0xC3 0x01 marker)")
        writer = self.catalog.by_fingerprint.get(data[2:10])
        if writer is None:
            raise DecodeError(f"unknown schema fingerprint {data[2:10].hex()}")
        reader = self.catalog.latest(writer.name)
        return writer.name, _read(data[10:], writer, reader)


class ConfluentCodec:
    """Confluent wire format through confluent-kafka's schema registry client."""

    def __init__(self, url: str, cat: Catalog | None = None) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self.catalog = cat or catalog()
        self.client = SchemaRegistryClient({"url": url})
        self._ids: dict[tuple[str, str], int] = {}
        self._writers: dict[int, SchemaVersion] = {}
        self._by_canonical = {
            json.dumps(v.raw, sort_keys=True): v for vs in self.catalog.by_name.values() for v in vs
        }

    def _schema_id(self, subject: str, version: SchemaVersion) -> int:
        key = (subject, version.name)
        if key not in self._ids:
            from confluent_kafka.schema_registry import Schema

            self._ids[key] = self.client.register_schema(subject, Schema(json.dumps(version.raw), "AVRO"))
        return self._ids[key]

    def encode(self, schema_name: str, record: dict[str, Any], topic: str = "") -> bytes:
        version = self.catalog.latest(schema_name)
        schema_id = self._schema_id(f"{topic or schema_name}-value", version)
        return CONFLUENT_MAGIC + struct.pack(">I", schema_id) + _write(version, record)

    def _writer(self, schema_id: int) -> SchemaVersion:
        if schema_id not in self._writers:
            try:
                schema = self.client.get_schema(schema_id)
            except Exception as exc:
                raise DecodeError(f"schema id {schema_id} not found in the registry: {exc}") from exc
            raw = json.loads(schema.schema_str)
            version = self._by_canonical.get(json.dumps(raw, sort_keys=True))
            if version is None:
                raise DecodeError(f"schema id {schema_id} ({raw.get('name')}) is not a bundled schema version")
            self._writers[schema_id] = version
        return self._writers[schema_id]

    def decode(self, data: bytes, topic: str = "") -> tuple[str, dict[str, Any]]:
        if len(data) < 5 or data[:1] != CONFLUENT_MAGIC:
            raise DecodeError("not in Confluent wire format (missing magic byte 0)")
        writer = self._writer(struct.unpack(">I", data[1:5])[0])
        return writer.name, _read(data[5:], writer, self.catalog.latest(writer.name))


@lru_cache(maxsize=4)
def get_codec(schema_registry_url: str | None = None) -> Codec:
    if schema_registry_url:
        return ConfluentCodec(schema_registry_url)
    return SingleObjectCodec()


def money(value: Any) -> Decimal:
    """WooCommerce money ("120.00", 19, None) as an exact Decimal at the schema's scale."""
    if value is None or value == "":
        return _ZERO
    return Decimal(value if isinstance(value, str) else str(value)).quantize(_SCALE)


_SCALE = Decimal("0.0001")
_ZERO = Decimal("0.0000")
