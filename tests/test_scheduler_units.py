"""Small pieces of the scheduler: the shared simulated clock, exit-condition validation,
trigger options, recovery-link items."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from tests.support import wooflow_cli
from wooflow.clock import FileClock, FrozenClock, SystemClock, clock_from_setting
from wooflow.consumer.exits import parse_exits
from wooflow.consumer.model import RuleSpec
from wooflow.scheduler.recovery import items_param, parse_items_param

pytestmark = pytest.mark.unit


def _cli(clock_path: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WOOFLOW_")}
    env["WOOFLOW_CLOCK"] = f"file:{clock_path}"
    out = wooflow_cli("scheduler", "clock", *args, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_file_clock_is_shared_between_processes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    clock = FileClock(tmp_path / "clock")
    t = clock.set(datetime(2026, 1, 31, 23, 30, tzinfo=timezone.utc))
    assert clock.now() == t and clock.now() == t  # frozen until someone moves it
    assert _cli(str(clock.path), "advance", "day 3") == (t + timedelta(days=3)).isoformat()
    assert clock.now() == t + timedelta(days=3)  # this process sees the other process's move
    clock.advance(timedelta(hours=1))
    assert _cli(str(clock.path), "show") == (t + timedelta(days=3, hours=1)).isoformat()


def test_clock_settings() -> None:
    assert isinstance(clock_from_setting("system"), SystemClock)
    assert isinstance(clock_from_setting("file:/tmp/x"), FileClock)
    fixed = clock_from_setting("fixed:2026-05-01T10:00:00Z")
    assert isinstance(fixed, FrozenClock) and fixed.now() == datetime(2026, 5, 1, 10, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="WOOFLOW_CLOCK"):
        clock_from_setting("sundial")
    with pytest.raises(RuntimeError, match="does not exist"):
        FileClock("/nonexistent/clock").now()


def rule(**kw: object) -> dict[str, object]:
    return {"name": "r", "trigger": "abandoned_cart", "actions": [{"type": "send_email", "delay": "hour 1"}], **kw}


def test_exit_conditions_named_or_trees_and_errors_name_the_field() -> None:
    spec = RuleSpec.model_validate(rule(exit_conditions=[
        {"type": "cart_recovered"}, {"type": "ordered"}, {"type": "unsubscribed"},
        {"field": "tier", "operator": "equals", "value": "gold"},
        {"type": "condition", "match": "any", "conditions": [{"field": "points", "operator": "gt", "value": 100}]}]))
    exits = parse_exits(spec.exit_conditions)
    assert [e.type for e in exits] == ["cart_recovered", "ordered", "unsubscribed", "condition", "condition"]
    assert exits[3].label == "exit condition met: tier equals gold"
    assert exits[3].predicate({"tier": "gold"}) and not exits[3].predicate({"tier": "silver"})  # type: ignore[misc]
    for bad, path in (([{"type": "bought"}], "exit_conditions[0].type"),
                      ([{"type": "ordered", "when": 1}], "exit_conditions[0].when"),
                      ([{}, {"field": "tier", "operator": "near", "value": 1}], "exit_conditions[1].operator")):
        with pytest.raises(ValidationError, match=path.replace("[", r"\[").replace("]", r"\]")):
            RuleSpec.model_validate(rule(exit_conditions=bad))


def test_scheduler_trigger_options_are_validated_by_the_rule_model() -> None:
    RuleSpec.model_validate(rule(trigger="product_viewed", trigger_options={"times": 2, "within": "hour 12"}))
    with pytest.raises(ValidationError, match=r"trigger_options\.times"):
        RuleSpec.model_validate(rule(trigger="product_viewed", trigger_options={"times": 0}))
    with pytest.raises(ValidationError, match=r"trigger_options\.within"):
        RuleSpec.model_validate(rule(trigger="category_browsing", trigger_options={"within": "soon"}))
    with pytest.raises(ValidationError, match=r"trigger_options\.colour"):
        RuleSpec.model_validate(rule(trigger="birthday", trigger_options={"colour": "red"}))


def test_recovery_items_round_trip() -> None:
    items = [{"product_id": 5, "quantity": 2}, {"product_id": 6, "variation_id": 61, "quantity": 1},
             {"product_id": 0, "quantity": 1}, {"product_id": 7, "quantity": 0}]
    assert items_param(items) == "5:2,6-61:1"
    assert parse_items_param(items_param(items)) == [{"product_id": 5, "variation_id": 0, "quantity": 2},
                                                     {"product_id": 6, "variation_id": 61, "quantity": 1}]
