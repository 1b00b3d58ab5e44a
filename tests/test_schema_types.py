"""schemas/types.py: generated from the .avsc files, never stale, and true to what the
codec (logical types), the rule consumer's hot-path decoder (wire) and its JSON contexts
really hand out — checked by strict validation of decoded records against the types."""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from pathlib import Path
from typing import get_args

import pytest
from pydantic import TypeAdapter, ValidationError

from tests.test_schemas import sample
from wooflow.consumer.decode import EventDecoder
from wooflow.schemas import typegen
from wooflow.schemas import types as avro_types
from wooflow.schemas.codec import SingleObjectCodec
from wooflow.schemas.registry import catalog

pytestmark = pytest.mark.unit

NAMES = sorted(catalog().by_name)


def adapter(tp: object) -> TypeAdapter[object]:
    with warnings.catch_warnings():  # pydantic notes that it does not enforce ReadOnly: nor do we ask it to
        warnings.simplefilter("ignore", UserWarning)
        return TypeAdapter(tp)


def test_types_py_is_up_to_date() -> None:
    assert typegen.OUTPUT.read_text() == typegen.generate(), \
        "schemas/types.py is out of date: run .venv/bin/python -m wooflow.schemas.typegen"


def test_a_schema_change_makes_it_stale(tmp_path: Path) -> None:
    shutil.copytree(typegen.AVRO, tmp_path / "avro")
    path = tmp_path / "avro" / "ExecutionLog" / "v1.avsc"
    raw = json.loads(path.read_text())
    raw["fields"].append({"name": "worker", "type": ["null", "string"], "default": None})
    path.write_text(json.dumps(raw))
    text = typegen.generate(tmp_path / "avro")
    assert text != typegen.OUTPUT.read_text()
    assert "    worker: ReadOnly[str | None]\n" in text


def test_every_schema_has_its_types() -> None:
    assert sorted(get_args(avro_types.SchemaName)) == NAMES
    for name in NAMES:
        fields = [f["name"] for f in catalog().latest(name).raw["fields"]]
        generic = getattr(avro_types, f"{name}Of", None)
        cls = generic if generic is not None else getattr(avro_types, name)
        assert list(cls.__annotations__) == fields


def test_unknown_logical_types_are_refused(tmp_path: Path) -> None:
    (tmp_path / "avro" / "Thing").mkdir(parents=True)
    (tmp_path / "avro" / "Thing" / "v1.avsc").write_text(json.dumps({
        "type": "record", "name": "Thing", "fields": [{"name": "d", "type": {"type": "int", "logicalType": "date"}}]}))
    with pytest.raises(typegen.SchemaShapeError, match="int/date"):
        typegen.generate(tmp_path / "avro")


@pytest.mark.parametrize("name", NAMES)
def test_decoded_records_are_what_the_types_say(name: str) -> None:
    codec = SingleObjectCodec()
    data = codec.encode(name, sample(copy.deepcopy(catalog().latest(name).raw)))
    logical, wire = getattr(avro_types, name), getattr(avro_types, f"{name}Wire", None)
    _, record = codec.decode(data)
    adapter(logical).validate_python(record, strict=True)
    if wire is None:
        return
    decoder = EventDecoder(codec)
    _, fast = decoder.decode(data)
    adapter(wire).validate_python(fast, strict=True)
    adapter(logical).validate_python(decoder.full_event(name, fast, data), strict=True)
    params = getattr(avro_types, f"{name}Of").__parameters__
    as_json = getattr(avro_types, f"{name}Of")[tuple(str for _ in params)]
    adapter(as_json).validate_python(decoder.json_event(name, fast, data), strict=True)
    with pytest.raises(ValidationError):  # the flavours are told apart: the check can fail
        adapter(wire).validate_python(record, strict=True)
