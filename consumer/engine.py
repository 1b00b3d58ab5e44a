"""Matching: a TriggerContext → fired triggers → rules of (store, trigger) → conditions.

Only triggers some rule of the store listens to are evaluated; facts are computed
lazily, once per event, for the rules that get as far as their conditions.
"""

from __future__ import annotations

from dataclasses import dataclass

from wooflow.consumer.catalog import ProductCatalog
from wooflow.consumer.facts import LazyFacts
from wooflow.consumer.rules import CompiledRule, RuleCache
from wooflow.consumer.triggers import TriggerContext, for_schema


@dataclass(slots=True)
class Match:
    rule: CompiledRule
    trigger: str
    ctx: TriggerContext


class RuleEngine:
    def __init__(self, rules: RuleCache, catalog: ProductCatalog | None = None) -> None:
        self.rules = rules
        self.catalog = catalog  # the ordered products' categories and tags (catalog.py)

    def matches(self, ctx: TriggerContext, only_rules: set[int] | None = None) -> list[Match]:
        store = str(ctx.event["store_id"])
        wanted = self.rules.triggers(store, ctx.schema)
        if not wanted:
            return []
        out: list[Match] = []
        facts: LazyFacts | None = None
        fired_count = 0
        for spec in for_schema(ctx.schema):
            if spec.name not in wanted or not spec.fires(ctx):
                continue
            fired_count += 1
            for rule in self.rules.for_trigger(store, spec.name):
                if only_rules is not None and rule.id not in only_rules:
                    continue
                if rule.options is not None and not rule.options(ctx):
                    continue
                if facts is None:
                    facts = LazyFacts(ctx, self.catalog)
                if rule.predicate(facts):
                    out.append(Match(rule, spec.name, ctx))
        if fired_count > 1 and len(out) > 1:
            out.sort(key=lambda m: (m.rule.priority, m.rule.id))
        return out
