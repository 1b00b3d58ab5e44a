"""A rule's exit conditions and goals, parsed and compiled: what stops a workflow before its next step.

A rule's `exit_conditions` is a list; the first that holds stops the run. Its `goals` are
checked the same way, first, and reaching one ends the run as the workflow's conversion:

    {"type": "ordered"}          the customer placed an order after the trigger
                                 (the triggering order itself does not count)
    {"type": "cart_recovered"}   the abandoned cart of the trigger was ordered, emptied or
                                 changed (its new abandonment starts a new sequence)
    {"type": "unsubscribed"}     the customer's newest email consent answer is a withdrawal
    {"type": "clicked"}          a link in a message of this run was clicked (the
                                 open/click tracker's `engagements`)
    {"type": "tag_added", "tag": "vip"}   the customer has the tag
    {"type": "condition", "conditions": TREE}   (or just TREE)
                                 a condition tree (consumer/conditions.py) over the
                                 customer's current state holds, e.g. tier equals gold

Rule validation (`model.py`) parses them here; the scheduler checks them before each
delayed step (scheduler/exits.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from wooflow.consumer.conditions import ConditionError, Predicate, compile_tree

TYPES = {
    "ordered": "the customer placed an order after the trigger",
    "cart_recovered": "the abandoned cart was ordered, emptied or changed",
    "unsubscribed": "the customer withdrew email consent",
    "clicked": "a link in a message of this run was clicked",
    "tag_added": "the customer has the tag",
    "condition": "a condition tree over the customer's state holds",
}
ALIASES = {"customer_ordered": "ordered", "ordered_again": "ordered", "order_placed": "ordered",
           "cart_ordered": "cart_recovered", "unsubscribe": "unsubscribed", "conditions": "condition"}


@dataclass(frozen=True)
class ExitCondition:
    type: str
    predicate: Predicate | None = None
    label: str = ""
    goal: bool = False


def parse_exits(items: Iterable[dict[str, Any]] | None, path: str = "exit_conditions",
                goals: bool = False) -> list[ExitCondition]:
    """Validate and compile (`goals`: the rule's goals, same shapes). Raises ConditionError
    (a ValueError) whose `path` names the offending element, e.g. `exit_conditions[1].type`
    or `exit_conditions[0].conditions[2].operator`."""
    out: list[ExitCondition] = []
    noun = "goal" if goals else "exit condition"
    for i, item in enumerate(items or []):
        where = f"{path}[{i}]"
        if isinstance(item, str):
            item = {"type": item}
        if not isinstance(item, dict):
            raise ConditionError(where, f'a {noun} is an object like {{"type": "ordered"}} or a condition tree')
        if "type" not in item:  # a bare condition tree over the customer's state
            pred = compile_tree(item, where)
            out.append(ExitCondition("condition", pred, _label(describe(item), goals), goals))
            continue
        kind = ALIASES.get(str(item.get("type", "")), str(item.get("type", "")))
        if kind not in TYPES:
            raise ConditionError(f"{where}.type", f"unknown {noun} {item.get('type')!r}; one of {sorted(TYPES)}")
        unknown = set(item) - {"type", "label", "conditions", "match", "tag"}
        if unknown:
            raise ConditionError(f"{where}.{sorted(unknown)[0]}", f"unknown key (a {noun} has type, label and, for "
                                                                  "type condition, conditions; tag_added: tag)")
        label = str(item.get("label") or "")
        if kind == "condition":
            tree = item.get("conditions")
            if not tree:
                raise ConditionError(f"{where}.conditions", f"a condition {noun} needs a condition tree")
            if isinstance(tree, list):  # {"type": "condition", "match": ..., "conditions": [...]}
                tree = {"match": item.get("match", "all"), "conditions": tree}
                pred = compile_tree(tree, where)
            else:
                pred = compile_tree(tree, f"{where}.conditions")
            out.append(ExitCondition(kind, pred, label or _label(describe(tree), goals), goals))
        elif kind == "tag_added":
            tag = item.get("tag")
            if not isinstance(tag, str) or not tag.strip():
                raise ConditionError(f"{where}.tag", "tag_added needs the tag, e.g. \"vip\"")
            pred = compile_tree({"field": "tags", "operator": "contains", "value": tag.strip()}, f"{where}.tag")
            out.append(ExitCondition(kind, pred, label or f"tag {tag.strip()!r} added", goals))
        else:
            out.append(ExitCondition(kind, None, label, goals))
    return out


def _label(described: str, goal: bool) -> str:
    return described if goal else f"exit condition met: {described}"


def describe(tree: dict[str, Any]) -> str:
    """'tier equals gold and points gt 100' — for the exit reason in the log."""
    if "field" in tree:
        return f"{tree.get('field')} {tree.get('operator')} {tree.get('value')}"
    joiner = " or " if tree.get("match") == "any" else " and "
    parts = [describe(c) for c in tree.get("conditions") or [] if isinstance(c, dict)]
    return joiner.join(f"({p})" if (" and " in p or " or " in p) else p for p in parts)
