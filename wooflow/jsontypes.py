"""JSON as a type: what WooCommerce's REST API, webhook bodies, JSONB columns and command
contexts really hold — arbitrary JSON, each value one of JSON's kinds — rather than `Any`,
so code reading it narrows with `isinstance` (or `as_object`/`as_array`) before it relies
on a shape. Nested values are `Sequence`/`Mapping`, so a `list[str]` or a `dict[str, int]`
is JSON as it is; what `json.loads` returns is `list`s and `dict`s."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

JSONScalar: TypeAlias = bool | int | float | str | None
JSONValue: TypeAlias = JSONScalar | Sequence["JSONValue"] | Mapping[str, "JSONValue"]
JSONObject: TypeAlias = dict[str, JSONValue]
JSONArray: TypeAlias = list[JSONValue]


def as_object(value: object) -> JSONObject:
    """`value` if it is a JSON object, else an empty one (for reading optional nested objects)."""
    return value if isinstance(value, dict) else {}


def as_array(value: object) -> JSONArray:
    """`value` if it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []
