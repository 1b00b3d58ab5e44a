"""The codec's generated writers (schemas/writer.py) must put exactly the bytes on the wire
that plain fastavro does, and hand anything they do not write as-is to fastavro."""

from __future__ import annotations

import copy
import io
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest

from wooflow.producers.normalise import StoreInfo, normalise
from wooflow.schemas import codec
from wooflow.schemas.registry import SchemaVersion, catalog

pytestmark = pytest.mark.unit

VERSIONS = [v for vs in catalog().by_name.values() for v in vs]


def reference(version: SchemaVersion, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, version.parsed, record)
    return buf.getvalue()


def datum(schema: Any, names: dict[str, Any], rnd: random.Random) -> Any:
    """A random valid datum: null and non-null union branches, negative/zero/large decimals,
    timestamps either side of the epoch."""
    if isinstance(schema, str):
        prim = {"string": lambda: rnd.choice(["", "x", "żółć", "a" * 300]),
                "int": lambda: rnd.randint(-2**31, 2**31 - 1),
                "long": lambda: rnd.randint(-2**63, 2**63 - 1), "boolean": lambda: rnd.random() < 0.5,
                "double": lambda: rnd.uniform(-1e9, 1e9), "float": lambda: 1.5, "bytes": lambda: rnd.randbytes(5),
                "null": lambda: None}
        return prim[schema]() if schema in prim else datum(names[schema], names, rnd)
    if isinstance(schema, list):
        return datum(rnd.choice(schema), names, rnd)
    t = schema["type"]
    if schema.get("logicalType") == "timestamp-millis":
        return datetime(1969, 7, 20, 20, 17, tzinfo=timezone.utc) + timedelta(
            milliseconds=rnd.randint(0, 3 * 10**12))
    if schema.get("logicalType") == "decimal":
        return Decimal(rnd.choice(["0", "-0.01", "120", "-99999999.9999", "1234567890123456.7891", "0.5"])).quantize(
            Decimal(1).scaleb(-schema.get("scale", 0)))
    if t == "record":
        names[schema["name"]] = schema
        if "namespace" in schema:
            names[f"{schema['namespace']}.{schema['name']}"] = schema
        return {f["name"]: datum(f["type"], names, rnd) for f in schema["fields"]}
    if t == "enum":
        names[schema["name"]] = schema
        return rnd.choice(schema["symbols"])
    if t == "array":
        return [datum(schema["items"], names, rnd) for _ in range(rnd.randint(0, 3))]
    if t == "map":
        return {f"k{i}": datum(schema["values"], names, rnd) for i in range(rnd.randint(0, 3))}
    return datum(t, names, rnd)


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: f"{v.name}-v{v.version}")
def test_generated_writer_bytes_equal_plain_fastavro(version: SchemaVersion) -> None:
    write = codec._writer(version)
    assert write is not None, "every bundled schema should get a generated writer"
    rnd = random.Random(version.name)
    for _ in range(200):
        record = datum(copy.deepcopy(version.raw), {}, rnd)
        before = copy.deepcopy(record)
        assert write(record) == reference(version, record)
        assert record == before, "encoding must not change the caller's record"
        # Fields left out: fastavro writes their defaults (null for optional ones).
        for field in version.raw["fields"]:
            if "default" in field and rnd.random() < 0.5:
                del record[field["name"]]
        assert write(record) == reference(version, record)


@pytest.mark.parametrize("value", [5.0, 2**40 + 0.0, True, 7])
def test_values_the_generated_writer_declines_are_written_by_fastavro(value: Any) -> None:
    """A float where a long belongs: whatever fastavro makes of it, the codec makes the same."""
    version = catalog().latest("OrderEvent")
    record = datum(copy.deepcopy(version.raw), {}, random.Random(3))
    record["order_id"] = value
    try:
        expected: bytes | type[Exception] = reference(version, record)
    except Exception:  # noqa: BLE001 - fastavro refusing it is an outcome too
        expected = ValueError
    if isinstance(expected, bytes):
        assert codec._write(version, record) == expected
    else:
        with pytest.raises(ValueError, match="does not fit OrderEvent"):
            codec._write(version, record)


def test_real_order_event_bytes_and_round_trip() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "bridge"))
    from loadgen import build_requests  # type: ignore[import-not-found]

    for raw in build_requests("http://h:1/webhooks/woocommerce/s", "k", 5, "t"):
        body = raw.split(b"\r\n\r\n", 1)[1]
        ev = normalise(StoreInfo("s", "Europe/Warsaw", "PLN"), "order.updated", orjson.loads(body),
                       source="webhook", received_at=datetime.now(timezone.utc), raw=body.decode())[0]
        version = catalog().latest("OrderEvent")
        data = codec.SingleObjectCodec().encode("OrderEvent", ev.record)
        assert data[10:] == reference(version, ev.record)
        name, back = codec.SingleObjectCodec().decode(data)
        assert name == "OrderEvent" and back["order"]["total"] == ev.record["order"]["total"]
        assert back["received_at"] == ev.record["received_at"].replace(
            microsecond=ev.record["received_at"].microsecond // 1000 * 1000)


def test_records_that_do_not_fit_still_fail_clearly() -> None:
    version = catalog().latest("OrderEvent")
    good = datum(copy.deepcopy(version.raw), {}, random.Random(1))
    good["order"] = datum(copy.deepcopy(version.raw["fields"][11]["type"][1]), {}, random.Random(2))
    too_precise = copy.deepcopy(good)
    too_precise["order"]["total"] = Decimal("1.23456")  # scale 5 > the schema's 4
    missing = copy.deepcopy(good)
    del missing["order"]["status"]
    wrong_type = copy.deepcopy(good)
    wrong_type["order"]["status"] = 3
    not_a_number = copy.deepcopy(good)
    not_a_number["order"]["total"] = Decimal("NaN")
    for bad in (too_precise, missing, wrong_type, not_a_number):
        with pytest.raises(ValueError, match="does not fit OrderEvent"):
            codec.SingleObjectCodec().encode("OrderEvent", bad)
