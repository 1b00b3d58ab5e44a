"""GET /v1/schema: what a rule can be made of — triggers (with their options' JSON
schemas), condition fields (types and operators), operators, and actions (with their
parameters' JSON schemas, from the workers' registry, plugins included)."""

from __future__ import annotations

from functools import cache
from typing import Any

from fastapi import APIRouter

from wooflow.api.auth import CurrentStore
from wooflow.consumer.conditions import FIELDS, GEO_SCOPES, OPERATOR_DOC, OPERATORS
from wooflow.consumer.model import Frequency
from wooflow.consumer.triggers import TRIGGERS
from wooflow.scheduler import triggers as _scheduled  # noqa: F401 - listed with the rule engine's own

router = APIRouter(prefix="/v1", tags=["schema"])


def schema_document() -> dict[str, Any]:
    """The document, built once per set of registered triggers and actions (plugins may add
    some at run time): the JSON schemas of every model took 18 ms to build (at load 12),
    and the console asks on load."""
    from wooflow.workers import registry

    return _document(tuple(TRIGGERS.items()), tuple(registry.all_actions().items()))


@cache
def _document(trigger_items: tuple[tuple[str, Any], ...], action_items: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    triggers = [{"name": t.name, "event": t.schema, "group": t.group, "description": t.description,
                 "options": t.options_model.model_json_schema(by_alias=True) if t.options_model else None}
                for t in sorted((t for _, t in trigger_items), key=lambda t: (t.group, t.name))]
    fields = [{"name": f.name, "type": f.type, "multi_valued": f.multi, "scope": f.scope,
               "description": f.description, "operators": list(f.operators),
               **({"values": list(f.values)} if f.values else {})} for f in FIELDS.values()]
    actions = []
    for name, handler in sorted(action_items):
        actions.append({"name": name, "description": getattr(handler, "description", ""),
                        "params": handler.Params.model_json_schema()})
    return {
        "triggers": triggers,
        "fields": fields,
        "operators": [{"name": op, "description": OPERATOR_DOC[op]} for op in OPERATORS],
        "match_modes": ["all", "any"],
        "geo_scopes": list(GEO_SCOPES),
        "actions": actions,
        "frequency": Frequency.model_json_schema(),
        "delays": "'immediately', 'minute N', 'hour N', 'day N', 'week N', or '30m', '24h', '3d', '1w'",
    }


@router.get("/schema", summary="Triggers, condition fields, operators and actions")
def get_schema(_: CurrentStore) -> dict[str, Any]:
    return schema_document()
