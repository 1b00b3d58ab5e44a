"""Schemas: every version readable by the newest, the codec's wire formats, bad bytes."""

from __future__ import annotations

import copy
import io
import json
from datetime import datetime, timezone
from decimal import Decimal

import fastavro
import pytest

from wooflow.kafka.topics import SCHEMA_OF_TOPIC
from wooflow.schemas.codec import DecodeError, SingleObjectCodec
from wooflow.schemas.compat import check_backward, problems
from wooflow.schemas.registry import catalog

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def sample(schema: object, names: dict | None = None) -> object:
    """A valid datum for any schema (first union branch that is not null where possible)."""
    names = names if names is not None else {}
    if isinstance(schema, str):
        prim = {"string": "x", "int": 1, "long": 2, "boolean": True, "double": 1.5, "float": 1.5, "bytes": b"b",
                "null": None}
        return prim[schema] if schema in prim else sample(names[schema], names)
    if isinstance(schema, list):
        branch = next((b for b in schema if b != "null"), "null")
        return sample(branch, names)
    t = schema["type"]
    if schema.get("logicalType") == "timestamp-millis":
        return NOW
    if schema.get("logicalType") == "decimal":
        return Decimal("12.3400")
    if t == "record":
        names[schema["name"]] = schema
        if "namespace" in schema:
            names[f"{schema['namespace']}.{schema['name']}"] = schema
        return {f["name"]: sample(f["type"], names) for f in schema["fields"]}
    if t == "enum":
        names[schema["name"]] = schema
        return schema["symbols"][0]
    if t == "array":
        return [sample(schema["items"], names)]
    if t == "map":
        return {"k": sample(schema["values"], names)}
    return sample(t, names)


@pytest.mark.parametrize("name", sorted(catalog().by_name))
def test_newest_version_reads_every_older_version(name: str) -> None:
    assert check_backward(name) == []
    codec = SingleObjectCodec()
    for version in catalog().versions(name):
        data = codec.encode_with(version, sample(copy.deepcopy(version.raw)))
        decoded_name, _ = codec.decode(data)
        assert decoded_name == name


@pytest.mark.parametrize("name", sorted(catalog().by_name))
def test_roundtrip_single_object_encoding(name: str) -> None:
    v = catalog().latest(name)
    datum = sample(copy.deepcopy(v.raw))
    data = SingleObjectCodec().encode(name, datum)
    assert data[:2] == b"\xc3\x01" and data[2:10] == v.fingerprint
    # the body is plain Avro binary: fastavro reads it with the schema alone
    assert fastavro.schemaless_reader(io.BytesIO(data[10:]), v.parsed, None) == datum
    assert SingleObjectCodec().decode(data) == (name, datum)


def test_every_topic_has_a_schema() -> None:
    assert set(SCHEMA_OF_TOPIC.values()) <= set(catalog().by_name)


def test_compat_checker_catches_breaking_changes() -> None:
    old = catalog().latest("ExecutionLog").raw
    added_without_default = copy.deepcopy(old)
    added_without_default["fields"].append({"name": "new_field", "type": "string"})
    assert any("new_field" in p for p in problems(added_without_default, old))
    added_with_default = copy.deepcopy(old)
    added_with_default["fields"].append({"name": "new_field", "type": "string", "default": ""})
    assert problems(added_with_default, old) == []
    retyped = copy.deepcopy(old)
    next(f for f in retyped["fields"] if f["name"] == "status")["type"] = "int"
    assert problems(retyped, old)
    widened = copy.deepcopy(old)
    next(f for f in widened["fields"] if f["name"] == "attempt")["type"] = "long"
    assert problems(widened, old) == []  # int → long is a legal promotion


def test_new_version_with_added_field_resolves_old_data() -> None:
    """Simulate v2 of a schema: data written with v1 is read with v2's default."""
    v1 = catalog().latest("ExecutionLog")
    v2_raw = json.loads(json.dumps(v1.raw))
    v2_raw["fields"].append({"name": "worker", "type": "string", "default": "unknown"})
    v2 = fastavro.parse_schema(v2_raw, named_schemas={})
    datum = sample(copy.deepcopy(v1.raw))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, v1.parsed, datum)
    buf.seek(0)
    assert fastavro.schemaless_reader(buf, v1.parsed, v2)["worker"] == "unknown"


@pytest.mark.parametrize("data,reason", [
    (b"", "marker"),
    (b"{\"json\": true}", "marker"),
    (b"\xc3\x01" + b"\x00" * 8 + b"abc", "unknown schema fingerprint"),
])
def test_bad_bytes_give_a_clear_decode_error(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        SingleObjectCodec().decode(data)


def test_truncated_body_is_a_decode_error() -> None:
    v = catalog().latest("OrderEvent")
    data = SingleObjectCodec().encode("OrderEvent", sample(copy.deepcopy(v.raw)))
    with pytest.raises(DecodeError):
        SingleObjectCodec().decode(data[:15])


def test_confluent_wire_format_through_a_schema_registry() -> None:
    from tests.registry_sim import RegistryServer
    from wooflow.schemas.codec import ConfluentCodec

    v = catalog().latest("OrderEvent")
    datum = sample(copy.deepcopy(v.raw))
    with RegistryServer() as registry:
        writer = ConfluentCodec(registry.url)
        data = writer.encode("OrderEvent", datum, "woo.orders")
        assert data[0] == 0 and int.from_bytes(data[1:5], "big") >= 1
        # a fresh codec (another process) resolves the writer schema by id from the registry
        assert ConfluentCodec(registry.url).decode(data) == ("OrderEvent", datum)
        with pytest.raises(DecodeError, match="not found"):
            ConfluentCodec(registry.url).decode(b"\x00\x00\x00\x03\xe7" + data[5:])
