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
from collections.abc import Mapping
from decimal import Decimal
from functools import lru_cache
from typing import Any, Protocol, TypeVar, cast

from fastavro import schemaless_reader, schemaless_writer

from wooflow.schemas.registry import Catalog, SchemaVersion, catalog
from wooflow.schemas.types import Kind
from wooflow.schemas.writer import Unsupported, Unwritable, Writer, compile_writer

SINGLE_OBJECT_MARKER = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"


class DecodeError(ValueError):
    """The bytes are not a message this build can read (reason in the text)."""


# A record of some schema, as handed to `encode` or returned by `decode` (before anything
# says which schema: `decode_as` checks it and gives the schema's own type, schemas/types.py).
Record = Mapping[str, object]
R = TypeVar("R")


class Codec(Protocol):
    def encode(self, schema_name: str, record: Record, topic: str | None = "") -> bytes: ...

    def decode(self, data: bytes | None, topic: str | None = "") -> tuple[str, Record]: ...

    def decode_as(self, data: bytes | None, kind: Kind[R], topic: str | None = "") -> R: ...


def narrow(name: str, record: Record, kind: Kind[R]) -> R | None:
    """`record` as `kind`'s type when `name` (the schema it was decoded with) is that kind."""
    # decoded with the newest version of that schema, which schemas/types.py describes
    return cast(R, record) if name == kind.name else None


class _Decoding:
    """`decode_as` for every codec: `decode`, then the schema checked."""

    def decode(self, data: bytes | None, topic: str | None = "") -> tuple[str, Record]:
        raise NotImplementedError

    def decode_as(self, data: bytes | None, kind: Kind[R], topic: str | None = "") -> R:
        name, record = self.decode(data, topic)
        if name != kind.name:
            raise DecodeError(f"expected {kind.name}, got {name}")
        # read with the newest version of that schema, which schemas/types.py describes
        # (tests/test_schema_types.py validates decoded records against it)
        return cast(R, record)


# --- writing ------------------------------------------------------------------------
# Records are written by code generated once per schema version (schemas/writer.py: the
# same bytes as fastavro, in half the time); a record that code does not write as-is goes
# to fastavro, which writes it or says why it does not fit.

_WRITERS: dict[int, tuple[SchemaVersion, Writer | None]] = {}


def _writer(version: SchemaVersion) -> Writer | None:
    hit = _WRITERS.get(id(version))
    if hit is not None and hit[0] is version:
        return hit[1]
    try:
        compiled: Writer | None = compile_writer(version.raw)
    except Unsupported:
        compiled = None
    _WRITERS[id(version)] = (version, compiled)
    return compiled


def _write(version: SchemaVersion, record: Record) -> bytes:
    write = _writer(version)
    if write is not None:
        try:
            return write(record)
        except Unwritable:
            pass
    buf = io.BytesIO()
    try:
        schemaless_writer(buf, version.parsed, record)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise ValueError(f"record does not fit {version.name} v{version.version}: {exc}") from exc
    return buf.getvalue()


def _read(body: bytes, writer: SchemaVersion, reader: SchemaVersion) -> Record:
    buf = io.BytesIO(body)
    try:
        datum = schemaless_reader(buf, writer.parsed, reader.parsed if writer is not reader else None)
    except Exception as exc:  # fastavro raises a zoo of types on corrupt bytes
        raise DecodeError(f"corrupt {writer.name} v{writer.version} body: {exc}") from exc
    if not isinstance(datum, dict):
        raise DecodeError(f"{writer.name} v{writer.version} body is not a record")
    return datum


class SingleObjectCodec(_Decoding):
    def __init__(self, cat: Catalog | None = None) -> None:
        self.catalog = cat or catalog()

    def encode(self, schema_name: str, record: Record, topic: str | None = "") -> bytes:
        version = self.catalog.latest(schema_name)
        return SINGLE_OBJECT_MARKER + version.fingerprint + _write(version, record)

    def encode_with(self, version: SchemaVersion, record: Record) -> bytes:
        """Encode with a specific (possibly old) version: used by compatibility tests."""
        return SINGLE_OBJECT_MARKER + version.fingerprint + _write(version, record)

    def decode(self, data: bytes | None, topic: str | None = "") -> tuple[str, Record]:
        if not data or data[:2] != SINGLE_OBJECT_MARKER or len(data) < 10:
            raise DecodeError("not Avro single-object encoded (missing 0xC3 0x01 marker)")
        writer = self.catalog.by_fingerprint.get(data[2:10])
        if writer is None:
            raise DecodeError(f"unknown schema fingerprint {data[2:10].hex()}")
        reader = self.catalog.latest(writer.name)
        return writer.name, _read(data[10:], writer, reader)


class ConfluentCodec(_Decoding):
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

    def encode(self, schema_name: str, record: Record, topic: str | None = "") -> bytes:
        version = self.catalog.latest(schema_name)
        schema_id = self._schema_id(f"{topic or schema_name}-value", version)
        return CONFLUENT_MAGIC + struct.pack(">I", schema_id) + _write(version, record)

    def _writer(self, schema_id: int) -> SchemaVersion:
        if schema_id not in self._writers:
            try:
                schema = self.client.get_schema(schema_id)
            except Exception as exc:
                raise DecodeError(f"schema id {schema_id} not found in the registry: {exc}") from exc
            if not schema.schema_str:
                raise DecodeError(f"schema id {schema_id} has no schema text in the registry")
            raw = json.loads(schema.schema_str)
            version = self._by_canonical.get(json.dumps(raw, sort_keys=True))
            if version is None:
                raise DecodeError(f"schema id {schema_id} ({raw.get('name')}) is not a bundled schema version")
            self._writers[schema_id] = version
        return self._writers[schema_id]

    def decode(self, data: bytes | None, topic: str | None = "") -> tuple[str, Record]:
        if data is None or len(data) < 5 or data[:1] != CONFLUENT_MAGIC:
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
    if type(value) is str:
        # A store's prices repeat ("0.00", "49.99"): parsed once (Decimals are immutable).
        hit = _MONEY.get(value)
        if hit is None:
            if len(_MONEY) >= 8192:
                _MONEY.clear()
            hit = _MONEY[value] = Decimal(value).quantize(_SCALE)
        return hit
    return Decimal(str(value)).quantize(_SCALE)


_MONEY: dict[str, Decimal] = {}


_SCALE = Decimal("0.0001")
_ZERO = Decimal("0.0000")
