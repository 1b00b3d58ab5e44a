"""The import graph keeps its layers, so the code can grow without knotting.

Components: each role (`wooflow.producers`, `.consumer`, `.workers`, `.sink`,
`.scheduler`, `.simulator`), the contracts (`wooflow.schemas`), the subpackages
`wooflow.kafka`, `wooflow.db`, `wooflow.api`, `wooflow.ops`, `wooflow.devinfra`, and each
module directly in `wooflow/` (`wooflow.settings`, `wooflow.checkpointing`, `wooflow.dlq`,
`wooflow.cli`...). Every import counts — module level, inside functions (lazy), under
`TYPE_CHECKING`, and `importlib` imports of "module:attribute" strings.

The layers, top to bottom; a component imports only from its own layer or below:

    entry points    wooflow.cli, wooflow.demo
    operator tools  wooflow.api, wooflow.ops
    roles           scheduler, workers, consumer, producers, sink, simulator
    shared          wooflow.kafka, wooflow.db, wooflow.checkpointing, wooflow.devinfra,
                    wooflow.schemas and the other modules of wooflow/ (clock, dlq, stores,
                    people, consent_policy, metrics, probes, process, timespec, ...)
    settings        wooflow.settings

Within a layer there are no cycles. Among the roles that means one direction: the
scheduler builds on the rule engine (consumer/) and checks actions against the workers'
registry; workers and the consumer share the command contract (consumer/commands.py);
the consumer uses the bridge's key derivation (producers/keys.py). The rule consumer
never imports the scheduler: the scheduler's triggers register into the rule engine's
registry from the outside, and `store_delayed` is handed to the rule consumer by the
wiring (wooflow/cli.py). Role processes share `wooflow/process.py`, never the CLI.

`wooflow.kafka`, `wooflow.db`, `wooflow.checkpointing` and `wooflow.settings` are the
edges every role stands on: they import no role, API, ops tool, CLI or demo.
"""

from __future__ import annotations

import ast
import functools
import tomllib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]

ROLES = {"wooflow.producers", "wooflow.consumer", "wooflow.workers", "wooflow.sink", "wooflow.scheduler",
         "wooflow.simulator"}
SUBPACKAGES = {"wooflow.kafka", "wooflow.db", "wooflow.api", "wooflow.ops", "wooflow.devinfra", "wooflow.schemas"}
LAYERS = [  # top first; every component not named here is "shared"
    ("entry points", {"wooflow.cli", "wooflow.demo"}),
    ("operator tools", {"wooflow.api", "wooflow.ops"}),
    ("roles", ROLES),
    ("shared", set()),
    ("settings", {"wooflow.settings"}),
]
EDGES = {"wooflow.kafka", "wooflow.db", "wooflow.checkpointing", "wooflow.settings"}
ABOVE_EDGES = ROLES | {"wooflow.api", "wooflow.ops", "wooflow.cli", "wooflow.demo"}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module
    where: str  # path:line

    @property
    def edge(self) -> tuple[str, str]:
        return component(self.source), component(self.target)


def component(module: str) -> str:
    """`wooflow.consumer.runner` → `wooflow.consumer`; `wooflow.settings` stays itself."""
    return ".".join(module.split(".")[:2])


def layer(comp: str) -> int:
    for i, (_, members) in enumerate(LAYERS):
        if comp in members:
            return i
    return 3


def modules() -> dict[str, Path]:
    """Module name → file, through pyproject's package-dir mapping."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    found: dict[str, Path] = {}
    for package, folder in config.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("").parts
            found[".".join((package, *(rel[:-1] if rel[-1] == "__init__" else rel)))] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module `name` is, or the one it is an attribute of."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.AST, module: str, is_package: bool, known: dict[str, Path]) -> list[str]:
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from the importing module's package
            parts = module.split(".")[: None if is_package else -1]
            base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
        # `from pkg import name`: the submodule when `name` is one, else the package
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        target, _, attr = node.value.partition(":")  # "module:attribute" (API routers)
        names = [target] if attr.isidentifier() else []
    elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
            names = [node.args[0].value]
    resolved = (_resolve(n, known) for n in names if n.startswith("wooflow"))
    return [t for t in resolved if t is not None and t != module]


@functools.cache  # ~1.2 s a parse of the whole tree; the five tests share one
def imports() -> tuple[Import, ...]:
    known = modules()
    out = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            for target in _targets(node, module, path.name == "__init__.py", known):
                out.append(Import(module, target, f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"))
    return tuple(out)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                found.append(sorted(scc))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def graph(found: Iterable[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for imp in found:
        a, b = imp.edge
        if a != b:
            edges[a].add(b)
    return edges


def describe_cycles(found: Sequence[Import]) -> list[str]:
    problems = []
    for scc in cycles(graph(found)):
        members = set(scc)
        by_edge: dict[tuple[str, str], set[str]] = defaultdict(set)
        for imp in found:
            if imp.edge[0] != imp.edge[1] and set(imp.edge) <= members:
                by_edge[imp.edge].add(f"{imp.where} ({imp.target})")
        lines = [f"  {a} -> {b}: {', '.join(sorted(w)[:3])}" + (f" and {len(w) - 3} more" if len(w) > 3 else "")
                 for (a, b), w in sorted(by_edge.items())]
        problems.append(f"import cycle between {', '.join(scc)}:\n" + "\n".join(lines))
    return problems


def test_the_graph_sees_every_kind_of_import() -> None:
    found = imports()
    seen = {(imp.source, imp.target) for imp in found}
    assert ("wooflow.cli", "wooflow.consumer.runner") in seen  # inside `def rules()`
    assert ("wooflow.api.app", "wooflow.scheduler.recovery") in seen  # a "module:router" string
    assert ("wooflow.consumer.runner", "wooflow.checkpointing") in seen  # `from wooflow.checkpointing import ...`
    assert ("wooflow.ops.replay", "wooflow.scheduler.triggers") in seen  # `from wooflow.scheduler import triggers`
    assert len({imp.edge for imp in found}) > 100


def test_no_import_cycle_between_components() -> None:
    problems = describe_cycles(imports())
    assert not problems, "\n".join(problems)


def test_the_check_fails_on_a_cycle() -> None:
    found = [*imports(), Import("wooflow.consumer.triggers", "wooflow.scheduler.triggers", "consumer/triggers.py:1")]
    problems = describe_cycles(found)
    assert problems and "wooflow.consumer" in problems[0] and "wooflow.scheduler" in problems[0]


def test_components_import_only_their_layer_or_below() -> None:
    wrong = sorted({f"{imp.edge[0]} ({LAYERS[layer(imp.edge[0])][0]}) imports {imp.target} "
                    f"({LAYERS[layer(imp.edge[1])][0]}) at {imp.where}"
                    for imp in imports() if layer(imp.edge[1]) < layer(imp.edge[0])})
    assert not wrong, "\n".join(wrong)


def test_kafka_db_checkpointing_and_settings_import_no_role_or_tool() -> None:
    wrong = sorted(f"{imp.where}: {imp.source} imports {imp.target}" for imp in imports()
                   if imp.edge[0] in EDGES and imp.edge[1] in ABOVE_EDGES)
    assert not wrong, "\n".join(wrong)
