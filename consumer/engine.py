"""Matching: a TriggerContext → fired triggers → rules of (store, trigger) → conditions.

Only triggers some rule of the store listens to are evaluated; facts are computed
lazily, once per event, for the rules that get as far as their conditions.

A per-line-item trigger (`TriggerSpec.each_line_item`) matches a rule once for each line
item of the order its conditions hold for, the `item.*` fields reading that item
(`ItemFacts`); each such match is its own unit of work — its id, `event id#item<line
item id>`, stands for the event in the idempotency keys and frequency limits — so two
matching items of one order fire twice, and a replay fires neither again.
"""

from __future__ import annotations

from dataclasses import dataclass

from wooflow.consumer.catalog import ProductCatalog
from wooflow.consumer.facts import Item, ItemFacts, LazyFacts
from wooflow.consumer.rules import CompiledRule, RuleCache
from wooflow.consumer.triggers import TriggerContext


def unit_id(event_id: str, item: Item | None) -> str:
    """What a match's idempotency keys and frequency limits count as its event."""
    return event_id if item is None else f"{event_id}#item{item['id']}"


@dataclass(slots=True)
class Match:
    rule: CompiledRule
    trigger: str
    ctx: TriggerContext
    item: Item | None = None  # the line item of a per-line-item trigger's match

    @property
    def event_id(self) -> str:
        return unit_id(str(self.ctx.event["event_id"]), self.item)


class RuleEngine:
    def __init__(self, rules: RuleCache, catalog: ProductCatalog | None = None) -> None:
        self.rules = rules
        self.catalog = catalog  # the ordered products' categories and tags (catalog.py)

    def matches(self, ctx: TriggerContext, only_rules: set[int] | None = None) -> list[Match]:
        store = str(ctx.event["store_id"])
        specs = self.rules.trigger_specs(store, ctx.schema)
        if not specs:
            return []
        out: list[Match] = []
        facts: LazyFacts | None = None
        fired_count = 0
        for spec in specs:
            if not spec.fires(ctx):
                continue
            fired_count += 1
            for rule in self.rules.for_trigger(store, spec.name):
                if only_rules is not None and rule.id not in only_rules:
                    continue
                if rule.options is not None and not rule.options(ctx):
                    continue
                if facts is None:
                    facts = LazyFacts(ctx, self.catalog)
                if spec.each_line_item:
                    out.extend(Match(rule, spec.name, ctx, li) for li in _items(ctx)
                               if rule.predicate(ItemFacts(facts, li)))
                elif rule.predicate(facts):
                    out.append(Match(rule, spec.name, ctx))
        if fired_count > 1 and len(out) > 1:
            out.sort(key=lambda m: (m.rule.priority, m.rule.id))
        return out


def _items(ctx: TriggerContext) -> list[Item]:
    return list(ctx.order.get("line_items") or ()) if ctx.order is not None else []
