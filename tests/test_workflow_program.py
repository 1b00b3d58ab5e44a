"""Workflow steps as a program (consumer/workflow.py), their validation with field paths,
send times across daylight-saving changes (scheduler/timing.py), and A/B assignment and
winners (scheduler/flow.py) — pure functions, no services."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from wooflow.consumer.model import Action, RuleFieldError, RuleSpec, SendAt, Variant
from wooflow.consumer.needs import rule_keep
from wooflow.consumer.triggers import Keep
from wooflow.consumer.workflow import compile_program
from wooflow.scheduler import timing
from wooflow.scheduler.flow import assign, pick_winner

pytestmark = pytest.mark.unit

WARSAW = timing.zone("Europe/Warsaw")


def email(subject: str, **extra: Any) -> dict[str, Any]:
    return {"type": "send_email", "params": {"subject": subject, "html": "<p>hi</p>"}, **extra}


def spec(*actions: dict[str, Any], **extra: Any) -> RuleSpec:
    return RuleSpec.model_validate({"name": "w", "trigger": "new_order", "actions": list(actions), **extra})


def opened_branch(**extra: Any) -> dict[str, Any]:
    return {"type": "branch", "condition": {"type": "email_opened", "within": "24h"},
            "yes": {"steps": [email("A")]}, "no": {"steps": [email("B")]}, **extra}


def test_a_linear_workflow_keeps_its_step_numbers_and_is_not_staged() -> None:
    program = compile_program(spec(email("0"), email("1", delay="day 3"), email("2", delay="day 7")).actions)
    assert [(n.index, n.next) for n in program.nodes] == [(0, 1), (1, 2), (2, None)]
    assert not program.staged
    assert [a.params["subject"] for a in program.linear] == ["0", "1", "2"]


def test_branch_sides_are_numbered_after_the_branch_and_link_back() -> None:
    program = compile_program(spec(email("welcome", id="welcome"), opened_branch(), email("after")).actions)
    assert [(n.index, n.path) for n in program.nodes] == [
        (0, "actions[0]"), (1, "actions[1]"), (2, "actions[1].yes.steps[0]"), (3, "actions[1].no.steps[0]"),
        (4, "actions[2]")]
    branch = program.nodes[1]
    assert (branch.yes, branch.no, branch.ref) == (2, 3, 0)  # the email before it, by default
    assert program.nodes[2].next == 4 and program.nodes[3].next == 4  # both sides continue
    assert program.staged and program.linear == []
    assert [n.index for n in program.segment(0)] == [0, 1]  # up to and including the branch
    assert [n.index for n in program.segment(2)] == [2, 4]


def test_sides_end_or_jump_forward() -> None:
    steps = spec(email("0"), {"type": "branch", "condition": {"type": "condition", "conditions": {
        "match": "all", "conditions": [{"field": "tags", "operator": "contains", "value": "vip"}]}},
        "yes": {"steps": [email("vip")], "then": "last"}, "no": {"steps": [], "then": "end"}},
        email("middle"), email("last", id="last")).actions
    program = compile_program(steps)
    branch = program.nodes[1]
    assert branch.no is None  # an empty side that ends: the run ends at the branch
    assert program.nodes[branch.yes or 0].next == 4  # jumps over "middle"
    assert all(n.next is None or n.next > n.index for n in program.nodes)


@pytest.mark.parametrize("actions, path", [
    ([email("a", id="x"), email("b", id="x")], "actions[1].id"),
    ([email("a"), {**opened_branch(), "yes": {"steps": [], "then": "nowhere"}}], "actions[1].yes.then"),
    ([email("a", id="first"), {**opened_branch(), "no": {"then": "first"}}], "actions[1].no.then"),
    ([{"type": "add_order_note", "params": {"note": "x"}}, opened_branch()], "actions[1].condition.step"),
    ([email("a"), {**opened_branch(), "condition": {"type": "email_opened"}}], "actions[1].condition.within"),
    ([email("a"), {**opened_branch(), "delay": "day 1"}], "actions[1].delay"),
    ([email("a"), {**opened_branch(), "condition": {"type": "condition"}}], "actions[1].condition.conditions"),
    ([email("a"), {**opened_branch(), "condition": {"type": "condition", "conditions": {
        "match": "all", "conditions": [{"field": "tags", "operator": "bigger", "value": 1}]}}}],
     "actions[1].condition.conditions.conditions[0].operator"),
    ([email("a", auto_winner={"metric": "click_rate", "min_sends": 10})], "actions[0].auto_winner"),
    ([email("a", variants=[{"name": "A"}, {"name": "A"}])], "actions[0].variants"),
    ([{"type": "add_order_note", "params": {"note": "x"}, "variants": [{"name": "A"}, {"name": "B"}],
      "auto_winner": {"metric": "open_rate", "min_sends": 5}}], "actions[0].auto_winner.metric"),
])
def test_a_wrong_step_is_named_by_its_path(actions: list[dict[str, Any]], path: str) -> None:
    with pytest.raises(ValidationError) as err:
        spec(*actions)
    found = err.value.errors()[0]
    problem = (found.get("ctx") or {}).get("error")
    assert isinstance(problem, RuleFieldError) and problem.path == path, found


@pytest.mark.parametrize("at, problem", [
    ({"time": "25:00"}, "not a time"), ({"time": "10:00", "days": ["someday"]}, "not a weekday"),
    ({"time": "10:00", "timezone": "Mars/Olympus"}, "unknown timezone"), ({"time": "10:00", "days": []}, "weekday"),
])
def test_send_times_are_checked(at: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        SendAt.model_validate(at)
    assert SendAt.model_validate({"time": "9:05", "days": ["Monday", "tue"]}).days == ["mon", "tue"]


def test_a_linear_rule_serialises_as_before() -> None:
    # rules written before the workflow fields existed read back, and are versioned, unchanged
    assert spec(email("0")).model_dump(mode="json")["actions"] == [
        {"type": "send_email", "params": {"subject": "0", "html": "<p>hi</p>"}, "delay": None}]


def test_branch_conditions_and_goals_keep_customer_state() -> None:
    plain = spec({"type": "add_order_note", "params": {"note": "x"}})
    assert rule_keep(plain) < Keep.CUSTOMERS
    vip = {"match": "all", "conditions": [{"field": "tags", "operator": "contains", "value": "vip"}]}
    assert rule_keep(spec({"type": "add_order_note", "params": {"note": "x"}}, {
        "type": "branch", "condition": {"type": "condition", "conditions": vip}})) == Keep.CUSTOMERS
    assert rule_keep(spec({"type": "add_order_note", "params": {"note": "x"}},
                          goals=[{"type": "tag_added", "tag": "vip"}])) == Keep.CUSTOMERS


# --- timing -------------------------------------------------------------------------------
def test_next_monday_at_ten_is_ten_on_the_wall_clock_on_both_sides_of_each_dst_change() -> None:
    monday_10 = SendAt(days=["mon"], time="10:00")
    # Warsaw: CET (+1) until 2026-03-29, CEST (+2) until 2026-10-25
    assert timing.next_send(datetime(2026, 3, 21, 12, tzinfo=timezone.utc), monday_10, WARSAW) == \
        datetime(2026, 3, 23, 9, tzinfo=timezone.utc)
    assert timing.next_send(datetime(2026, 3, 28, 12, tzinfo=timezone.utc), monday_10, WARSAW) == \
        datetime(2026, 3, 30, 8, tzinfo=timezone.utc)
    assert timing.next_send(datetime(2026, 10, 24, 12, tzinfo=timezone.utc), monday_10, WARSAW) == \
        datetime(2026, 10, 26, 9, tzinfo=timezone.utc)
    # at the instant itself it is due then, a moment later the next week
    at = datetime(2026, 3, 30, 8, tzinfo=timezone.utc)
    assert timing.next_send(at, monday_10, WARSAW) == at
    assert timing.next_send(at + timedelta(seconds=1), monday_10, WARSAW) == at + timedelta(days=7)


def test_weekdays_only_and_local_times_a_dst_change_skips_or_repeats() -> None:
    workdays = SendAt(days=["mon", "tue", "wed", "thu", "fri"], time="18:00")
    saturday = datetime(2026, 3, 28, 20, tzinfo=timezone.utc)
    assert timing.next_send(saturday, workdays, WARSAW) == datetime(2026, 3, 30, 16, tzinfo=timezone.utc)
    # 02:30 does not exist on 2026-03-29 in Warsaw: the instant it would have been (03:30 CEST)
    assert timing.local_instant(date(2026, 3, 29), time(2, 30), WARSAW) == \
        datetime(2026, 3, 29, 1, 30, tzinfo=timezone.utc)
    # 02:30 happens twice on 2026-10-25: the first one (CEST)
    assert timing.local_instant(date(2026, 10, 25), time(2, 30), WARSAW) == \
        datetime(2026, 10, 25, 0, 30, tzinfo=timezone.utc)


def test_quiet_hours_move_a_message_to_their_end_across_midnight() -> None:
    quiet = timing.quiet_hours({"quiet_hours": {"start": "21:00", "end": "08:00"}})
    assert quiet == (time(21), time(8))
    late = datetime(2026, 3, 27, 21, 30, tzinfo=timezone.utc)  # 22:30 in Warsaw
    early = datetime(2026, 3, 28, 5, tzinfo=timezone.utc)  # 06:00 in Warsaw
    noon = datetime(2026, 3, 28, 11, tzinfo=timezone.utc)
    end = datetime(2026, 3, 28, 7, tzinfo=timezone.utc)  # 08:00 in Warsaw
    assert timing.out_of_quiet_hours(late, quiet, WARSAW) == end
    assert timing.out_of_quiet_hours(early, quiet, WARSAW) == end
    assert timing.out_of_quiet_hours(noon, quiet, WARSAW) == noon
    assert timing.due_at(late, 0, None, WARSAW, quiet=quiet, message=False) == late  # a note is not a message
    assert timing.quiet_hours({"quiet_hours": {"start": "x"}}) is None


# --- A/B ----------------------------------------------------------------------------------
def test_variants_split_by_weight_and_a_customer_always_gets_the_same() -> None:
    variants = [Variant(name="A", weight=70), Variant(name="B", weight=20), Variant(name="C", weight=10)]
    customers = [f"g{i:05d}" for i in range(2000)]
    got = Counter(assign(variants, 7, 3, c) for c in customers)
    for v in variants:  # within 4 standard deviations of the binomial
        share = v.weight / 100
        assert abs(got[v.name] - 2000 * share) < 4 * (2000 * share * (1 - share)) ** 0.5, got
    assert [assign(variants, 7, 3, c) for c in customers] == [assign(variants, 7, 3, c) for c in customers]
    # another step's test is drawn independently
    assert sum(assign(variants, 7, 3, c) != assign(variants, 7, 5, c) for c in customers) > 500


def test_the_winner_has_the_best_rate_and_a_tie_goes_to_the_first() -> None:
    step = Action.model_validate({**email("x"), "variants": [{"name": "A"}, {"name": "B"}],
                                  "auto_winner": {"metric": "click_rate", "min_sends": 10}})
    best, stats = pick_winner(step, {"A": {"sends": 100, "clicks": 5}, "B": {"sends": 50, "clicks": 4}})
    assert best == "B" and stats["variants"]["B"]["rate"] == 0.08
    assert pick_winner(step, {"A": {"sends": 10, "clicks": 1}, "B": {"sends": 10, "clicks": 1}})[0] == "A"
