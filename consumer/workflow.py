"""A workflow's steps as a program: numbered nodes, each pointing at what comes next.

A rule's `actions` are its steps; a step is an action or a yes/no `branch` whose two sides
are lists of steps of their own, each ending by going on after the branch (`continue`),
ending the run (`end`) or jumping to a later top-level step (its id). `compile_program`
numbers every step in preorder — the top-level list in order, a branch's yes side then its
no side right after the branch — and links each node to the one that follows it. A step's
number is its `step` everywhere (commands, logs, `scheduled_steps`), and its idempotency
key is `sha256(rule | event | step)`: a linear workflow's steps keep the numbers (and keys)
they always had, the two sides of a branch never share a key, and since every link points
to a higher number, a run always ends.

A workflow is *staged* when some step needs the scheduler to decide it as the run goes:
a branch, A/B variants or a weekday-and-time send. Its runs start as one control row
(`WORKFLOW_START`, consumer/commands.py) and the scheduler stores each segment — the
steps up to the next branch — when the run reaches it (scheduler/flow.py). A linear
workflow is stored whole when it starts, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from wooflow.consumer.conditions import ConditionError, compile_tree
from wooflow.consumer.model import Action, Branch, BranchPath, Step

MAX_NODES = 200
EMAIL = "send_email"  # the step kind whose opens and clicks the tracker records
ENGAGEMENT_METRICS = ("open_rate", "click_rate")


class WorkflowError(ValueError):
    """Something wrong with one step; `path` names it from the rule's root (`actions[1].yes.then`)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class Node:
    """One step of the program. An action goes on to `next`; a branch to `yes` or `no`
    (None: the run ends there). `ref`: an email branch's email step."""

    index: int
    path: str
    action: Action | None = None
    branch: Branch | None = None
    next: int | None = None
    yes: int | None = None
    no: int | None = None
    ref: int | None = None
    top: bool = False

    @property
    def kind(self) -> str:
        return "branch" if self.branch is not None else "action"


@dataclass(frozen=True)
class Program:
    nodes: tuple[Node, ...]
    ids: dict[str, int] = field(default_factory=dict)

    @property
    def staged(self) -> bool:
        return any(n.branch is not None or (n.action is not None and (n.action.variants or n.action.at))
                   for n in self.nodes)

    @property
    def linear(self) -> list[Action]:
        """The actions of a workflow without branches, in order (empty if it has any)."""
        if any(n.branch is not None for n in self.nodes):
            return []
        return [n.action for n in self.nodes if n.action is not None]

    def actions(self) -> list[Node]:
        return [n for n in self.nodes if n.action is not None]

    def segment(self, start: int | None) -> list[Node]:
        """The nodes a run stores when it reaches `start`: actions up to and including
        the next branch, or to the end of the run."""
        out: list[Node] = []
        at = start
        while at is not None:
            node = self.nodes[at]
            out.append(node)
            if node.branch is not None:
                break
            at = node.next
        return out


@dataclass
class _Builder:
    nodes: list[Node] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)
    refs: dict[int, str | int | None] = field(default_factory=dict)  # branch → its email step (id or node)
    sides: dict[tuple[int, str], list[int]] = field(default_factory=dict)  # (branch, yes|no) → its nodes

    def number(self, steps: Sequence[Action | Branch], path: str, top: bool, last_email: int | None) -> list[int]:
        """Preorder numbers of `steps` (a branch's sides right after it)."""
        out: list[int] = []
        for i, step in enumerate(steps):
            idx, where = len(self.nodes), f"{path}[{i}]"
            if len(self.nodes) >= MAX_NODES:
                raise WorkflowError(where, f"a workflow has at most {MAX_NODES} steps")
            self.nodes.append(Node(idx, where, top=top))
            if step.id is not None:
                if step.id in self.ids:
                    raise WorkflowError(f"{where}.id", f"step id {step.id!r} is used twice")
                self.ids[step.id] = idx
            out.append(idx)
            if isinstance(step, Branch):
                self.nodes[idx] = replace(self.nodes[idx], branch=step)
                _check_branch(step, where)
                self.refs[idx] = step.condition.step if step.condition.step is not None else last_email
                for side in ("yes", "no"):
                    self.sides[(idx, side)] = self.number(getattr(step, side).steps, f"{where}.{side}.steps", False,
                                                          last_email)
            else:
                self.nodes[idx] = replace(self.nodes[idx], action=step)
                _check_action(step, where)
                if step.type == EMAIL:
                    last_email = idx
        return out

    def link(self, steps: Sequence[Action | Branch], indices: list[int], cont: int | None) -> None:
        """Point each node at what follows it; `cont` follows the last one."""
        for i, (step, idx) in enumerate(zip(steps, indices, strict=True)):
            after = indices[i + 1] if i + 1 < len(indices) else cont
            if not isinstance(step, Branch):
                self.nodes[idx] = replace(self.nodes[idx], next=after)
                continue
            first: dict[str, int | None] = {}
            for side in ("yes", "no"):
                path: BranchPath = getattr(step, side)
                target = self._then(path.then, after, idx, f"{self.nodes[idx].path}.{side}.then")
                side_nodes = self.sides[(idx, side)]
                self.link(path.steps, side_nodes, target)
                first[side] = side_nodes[0] if side_nodes else target
            self.nodes[idx] = replace(self.nodes[idx], yes=first["yes"], no=first["no"])

    def _then(self, then: str, after: int | None, branch: int, where: str) -> int | None:
        if then == "continue":
            return after
        if then == "end":
            return None
        target = self.ids.get(then)
        if target is None:
            raise WorkflowError(where, f"'continue', 'end' or the id of a later top-level step; no step {then!r}")
        if not self.nodes[target].top or target <= branch:
            raise WorkflowError(where, f"a branch side may jump only to a later top-level step; {then!r} is not one")
        return target

    def resolve_refs(self) -> None:
        for idx, ref in self.refs.items():
            node = self.nodes[idx]
            assert node.branch is not None
            if node.branch.condition.type == "condition":
                continue
            where = f"{node.path}.condition.step"
            if ref is None:
                raise WorkflowError(where, f"no {EMAIL} step before this branch: name one with `step`")
            target = self.ids.get(ref) if isinstance(ref, str) else ref
            if target is None:
                raise WorkflowError(where, f"no step with id {ref!r}")
            action = self.nodes[target].action
            if action is None or action.type != EMAIL or target >= idx:
                raise WorkflowError(where, f"{ref!r} is not a {EMAIL} step before this branch")
            self.nodes[idx] = replace(node, ref=target)


def _check_action(a: Action, where: str) -> None:
    if a.auto_winner is not None and not a.variants:
        raise WorkflowError(f"{where}.auto_winner", "an auto winner needs variants")
    names = [v.name for v in a.variants or ()]
    if len(set(names)) != len(names):
        raise WorkflowError(f"{where}.variants", "variant names must be unique")
    if a.auto_winner is not None and a.auto_winner.metric in ENGAGEMENT_METRICS and a.type != EMAIL:
        raise WorkflowError(f"{where}.auto_winner.metric",
                            f"opens and clicks are tracked for {EMAIL} steps only; use conversion_rate")


def _check_branch(b: Branch, where: str) -> None:
    c, at = b.condition, f"{where}.condition"
    if c.type == "condition":
        if not c.conditions:
            raise WorkflowError(f"{at}.conditions", "a condition branch needs a condition tree")
        for name in ("step", "within"):
            if getattr(c, name) is not None:
                raise WorkflowError(f"{at}.{name}", "only email_opened / email_clicked branches take step and within")
        try:
            compile_tree(c.conditions, f"{at}.conditions")
        except ConditionError as exc:
            raise WorkflowError(exc.path, exc.message) from exc
        return
    if c.conditions is not None:
        raise WorkflowError(f"{at}.conditions", f"a {c.type} branch takes no condition tree")
    if not c.within:
        raise WorkflowError(f"{at}.within", f"a {c.type} branch needs `within`, e.g. '24h'")
    if b.delay_s:
        raise WorkflowError(f"{where}.delay", "an email branch waits `within` after its email: it takes no delay")


def compile_program(steps: Sequence[Step]) -> Program:
    """Number, link and check a workflow's steps (raises WorkflowError naming the step)."""
    b = _Builder()
    top = b.number(steps, "actions", True, None)
    b.link(steps, top, None)
    b.resolve_refs()
    return Program(tuple(b.nodes), dict(b.ids))


Loc = tuple[str | int, ...]


def action_steps(steps: Sequence[Step], loc: Loc = ("actions",)) -> list[tuple[Loc, Action]]:
    """Every action of a workflow, both sides of every branch included, with where it is
    (`("actions", 1, "yes", "steps", 0)`)."""
    out: list[tuple[Loc, Action]] = []
    for i, step in enumerate(steps):
        if isinstance(step, Branch):
            for side in ("yes", "no"):
                out.extend(action_steps(getattr(step, side).steps, (*loc, i, side, "steps")))
        else:
            out.append(((*loc, i), step))
    return out


def dotted(loc: Loc) -> str:
    """("actions", 1, "yes", "steps", 0, "params") → "actions[1].yes.steps[0].params"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out
