"""Prometheus sees no increase() in a counter series whose first sample already holds the
events: the series an alert or a panel counts failures with are exported at 0 before.

- The first dead letter after a role starts reaches the DLQ alert: each role exports its
  stage's `wooflow_dlq_total` series at 0 from its start (`wooflow.dlq.expose`).
  `wooflow.dlq.REASONS` lists what each stage dead-letters with; these tests read the
  reasons off the code, so a new reason cannot be forgotten there.
- A burst of failed actions reaches the error-ratio alert: a worker exports a (store,
  action)'s failure outcomes from the pair's first count, whatever its outcome."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.support import unique
from wooflow import dlq

ROOT = Path(__file__).resolve().parent.parent
STAGE_OF_FOLDER = {"consumer": "rules", "workers": "workers", "sink": "sink", "scheduler": "scheduler"}


def _constant(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _call_name(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def reasons_in(tree: ast.AST) -> set[str]:
    """Reason literals at the places dead letters are made:
    `dead_letter(..., reason="x")`, the workers' `Outcome(cmd, log, "x")` and
    `_dead_letter(..., "x")`, the rule consumer's `failed.append((item, "x", error))`."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node)
        if name == "dead_letter":
            found |= {v for k in node.keywords if k.arg == "reason" and (v := _constant(k.value))}
        elif name == "Outcome" and len(node.args) == 3:
            found |= {v for v in [_constant(node.args[2])] if v}
        elif name == "_dead_letter" and node.args:
            found |= {v for a in node.args if (v := _constant(a))}
        elif (name == "append" and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Attribute)
              and node.func.value.attr == "failed" and node.args and isinstance(node.args[0], ast.Tuple)):
            found |= {v for v in [_constant(node.args[0].elts[1])] if v}
    return found


def code_reasons() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for folder, stage in STAGE_OF_FOLDER.items():
        for path in (ROOT / folder).rglob("*.py"):
            out.setdefault(stage, set()).update(reasons_in(ast.parse(path.read_text())))
    return out


@pytest.mark.unit
def test_every_reason_in_the_code_is_listed_and_every_listed_one_is_used() -> None:
    found = code_reasons()
    assert found["workers"] >= {"undecodable", "action_error", "max_attempts"}  # the reader finds them at all
    for stage, reasons in found.items():
        assert reasons == set(dlq.REASONS[stage]), f"{stage}: code {sorted(reasons)}, listed {dlq.REASONS[stage]}"


@pytest.mark.unit
def test_the_reader_sees_a_new_reason() -> None:
    tree = ast.parse('dead_letter(p, c, s, m, stage="rules", reason="brand_new", error="")\n'
                     'out.failed.append((it, "also_new", "boom"))\n')
    assert reasons_in(tree) == {"brand_new", "also_new"}


@pytest.mark.unit
def test_an_exposed_stage_exports_every_reason() -> None:
    dlq.expose("scheduler")
    for reason in dlq.REASONS["scheduler"]:
        assert REGISTRY.get_sample_value("wooflow_dlq_total", {"stage": "scheduler", "reason": reason}) is not None


@pytest.mark.unit
def test_a_first_success_exports_the_pairs_failure_outcomes_at_zero() -> None:
    from wooflow.workers.executor import count_action

    store = unique("store")
    labels = {"store": store, "action": "add_order_note"}
    count_action(store, "add_order_note", "succeeded")
    assert REGISTRY.get_sample_value("wooflow_actions_total", labels | {"outcome": "succeeded"}) == 1
    assert REGISTRY.get_sample_value("wooflow_actions_total", labels | {"outcome": "failed"}) == 0
    assert REGISTRY.get_sample_value("wooflow_actions_total", labels | {"outcome": "dead_lettered"}) == 0
    count_action(store, "add_order_note", "failed")
    assert REGISTRY.get_sample_value("wooflow_actions_total", labels | {"outcome": "failed"}) == 1
