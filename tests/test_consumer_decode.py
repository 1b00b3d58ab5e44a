"""The rule consumer's hot-path decoding must agree with a full decode: `full_event`
gives back exactly the logical values, and `json_event` exactly the JSON text
`commands.to_json` writes for them (it is what command contexts are made of)."""

from __future__ import annotations

import copy
import random
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.test_bridge_codec import datum
from wooflow.consumer.commands import _jsonable, to_json
from wooflow.consumer.decode import EventDecoder, decimal_text
from wooflow.schemas.codec import SingleObjectCodec
from wooflow.schemas.registry import SchemaVersion, catalog

pytestmark = pytest.mark.unit

EVENTS = [v for vs in catalog().by_name.values() for v in vs if v.name.endswith("Event")]


@given(st.integers(min_value=-10**20, max_value=10**20), st.integers(min_value=0, max_value=8))
def test_decimal_text_is_what_to_json_writes(unscaled: int, scale: int) -> None:
    assert decimal_text(unscaled, scale) == _jsonable(Decimal(unscaled).scaleb(-scale))


@pytest.mark.parametrize("version", EVENTS, ids=lambda v: f"{v.name}-v{v.version}")
def test_hot_path_conversions_equal_a_full_decode(version: SchemaVersion) -> None:
    codec = SingleObjectCodec()
    decoder = EventDecoder(codec)
    rnd = random.Random(version.name + str(version.version))
    for _ in range(150):
        record = datum(copy.deepcopy(version.raw), {}, rnd)
        data = codec.encode_with(version, record)  # older versions too: resolved on reading
        name, hot = decoder.decode(data)
        _, full = codec.decode(data)
        assert name == version.name
        assert decoder.full_event(name, hot, data) == full
        assert to_json(decoder.json_event(name, hot, data)) == to_json(full)
