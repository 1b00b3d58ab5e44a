"""Matching: event → fired triggers → rules of (store, trigger) → conditions → commands."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from wooflow import metrics
from wooflow.consumer.commands import build_command
from wooflow.consumer.facts import event_facts
from wooflow.consumer.rules import CompiledRule, RuleCache
from wooflow.consumer.triggers import TriggerContext, fired, options_match


@dataclass
class Match:
    rule: CompiledRule
    trigger: str
    commands: list[dict[str, Any]] = field(default_factory=list)


class RuleEngine:
    def __init__(self, rules: RuleCache) -> None:
        self.rules = rules

    def matches(self, schema: str, event: dict[str, Any], *, state: dict[str, Any] | None = None,
                ctx: TriggerContext | None = None, now: datetime | None = None,
                only_rules: set[int] | None = None) -> list[Match]:
        started = time.perf_counter()
        ctx = ctx or TriggerContext(previous_status=event.get("previous_status"))
        state = state or {}
        out: list[Match] = []
        facts: dict[str, Any] | None = None
        for trigger in fired(schema, event, ctx):
            for rule in self.rules.for_trigger(event["store_id"], trigger):
                if only_rules is not None and rule.id not in only_rules:
                    continue
                if not options_match(rule.spec.trigger_options, event, ctx):
                    continue
                if facts is None:
                    facts = event_facts(schema, event, state)
                if not rule.predicate(facts):
                    continue
                m = Match(rule, trigger)
                for step, action in enumerate(rule.actions):
                    m.commands.append(build_command(
                        rule_id=rule.id, rule_version=rule.version, step=step, action_type=action.type,
                        params=action.params, delay_s=action.delay_s, schema=schema, event=event,
                        trigger=trigger, state=state, now=now))
                out.append(m)
        metrics.rule_eval_seconds.observe(time.perf_counter() - started)
        return out
