"""GET /v1/schema: what a rule can be made of — triggers (with their options' JSON
schemas), condition fields (types and operators), operators, actions (with their
parameters' JSON schemas, from the workers' registry, plugins included), and the
workflow's building blocks: step kinds (an action with its timing and A/B variants, a
yes/no branch), goals and exit conditions, what disabling does to runs in flight. A field
whose values come from elsewhere says so (`picker`: the catalog's categories or tags, a
country)."""

from __future__ import annotations

from functools import cache
from typing import Any

from fastapi import APIRouter

from wooflow.api.auth import CurrentStore
from wooflow.consumer.catalog import CATALOG_FIELDS
from wooflow.consumer.conditions import FIELDS, GEO_SCOPES, OPERATOR_DOC, OPERATORS
from wooflow.consumer.exits import TYPES as RUN_CONDITIONS
from wooflow.consumer.model import DAYS, Action, AutoWinner, Branch, Frequency, SendAt, Variant
from wooflow.consumer.triggers import TRIGGERS
from wooflow.scheduler import triggers as _scheduled  # noqa: F401 - listed with the rule engine's own

router = APIRouter(prefix="/v1", tags=["schema"])

# Where a field's values come from, for an editor's value input: `category` and `tag` are
# term ids of the store's product catalog (GET /v1/catalog/terms names them), `country` an
# ISO 3166-1 alpha-2 code.
PICKERS = {**{f: "tag" if "tag" in f else "category" for f in CATALOG_FIELDS},
           "billing_country": "country", "shipping_country": "country"}


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
               **({"values": list(f.values)} if f.values else {}),
               **({"picker": PICKERS[f.name]} if f.name in PICKERS else {})} for f in FIELDS.values()]
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
        "workflow": workflow_document(),
    }


def workflow_document() -> dict[str, Any]:
    """Steps, timing, variants, branches, goals: the parts of a multi-step workflow."""
    return {
        "steps": {
            "action": {"schema": Action.model_json_schema(),
                       "description": "An action (any of `actions` by its type), with an optional delay from the "
                                      "trigger, a weekday-and-time send (`at`) and A/B `variants`"},
            "branch": {"schema": Branch.model_json_schema(),
                       "description": "A yes/no split (`type: branch`) asked when the run reaches it; each side has "
                                      "its own steps and ends by going on (`continue`), ending the run (`end`) or "
                                      "jumping to a later top-level step by its id"},
        },
        "branch_conditions": {
            "condition": "a condition tree (fields, operators above) over the customer's state then",
            "email_opened": "an email step of this run was opened within `within` of its send time",
            "email_clicked": "a link in an email step of this run was clicked within `within` of its send time",
        },
        "at": SendAt.model_json_schema(),
        "weekdays": list(DAYS),
        "variant": Variant.model_json_schema(),
        "auto_winner": AutoWinner.model_json_schema(),
        "goals": {"types": dict(RUN_CONDITIONS), "description": "reaching one ends the run before its next step, "
                                                                "logged as goal_reached: the workflow's conversion"},
        "exit_conditions": {"types": dict(RUN_CONDITIONS)},
        "when_disabled": {"exit": "runs in flight exit at their next step",
                          "finish": "runs in flight finish on their version; no new run starts"},
        "versions": "every edit of a workflow's trigger, conditions, steps, frequency, exits or goals is a new "
                    "version; runs in flight finish on the version they started with",
        "quiet_hours": "store settings quiet_hours {start, end} (HH:MM, store's time): an email or SMS step of a "
                       "staged workflow due inside them waits for their end",
    }


@router.get("/schema", summary="Triggers, condition fields, operators and actions")
def get_schema(_: CurrentStore) -> dict[str, Any]:
    return schema_document()
