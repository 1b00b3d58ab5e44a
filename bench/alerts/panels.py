"""Every query of the Grafana dashboards (deploy/grafana/dashboards), run against a real
Prometheus: a panel "has data" when its expression gives at least one finite value over
the checked time range (histogram_quantile over no traffic gives NaN: that is no data).

Dashboard variables are substituted the way Grafana does: `$__rate_interval` =
max(4 × scrape interval, step + scrape interval), `$__interval` = the step, `$__range` =
the checked range; a dashboard's own variables (`$store`, `$group`) take the values the
caller names, and each must be among the values of the variable's own `label_values()`
query.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from wooflow.devinfra.prometheus import PrometheusClient, PrometheusError

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str  # uid
    panel: str  # title
    ref: str  # refId
    expr: str


@dataclass(frozen=True)
class VariableQuery:
    dashboard: str
    name: str
    metric: str
    label: str


@dataclass(frozen=True)
class PanelResult:
    query: PanelQuery
    expr: str  # as run
    series: int
    finite_points: int
    error: str = ""

    @property
    def has_data(self) -> bool:
        return self.finite_points > 0


def _panels(panels: list[dict[str, object]]) -> list[dict[str, object]]:
    out = []
    for p in panels:
        out.append(p)
        nested = p.get("panels")
        if isinstance(nested, list):
            out.extend(nested)
    return out


def dashboard_queries(directory: Path = DASHBOARDS) -> tuple[list[PanelQuery], list[VariableQuery]]:
    queries: list[PanelQuery] = []
    variables: list[VariableQuery] = []
    for path in sorted(directory.glob("*.json")):
        d = json.loads(path.read_text())
        for p in _panels(d["panels"]):
            for t in p.get("targets", []):  # type: ignore[attr-defined]
                queries.append(PanelQuery(d["uid"], str(p["title"]), t["refId"], t["expr"]))
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                m = re.fullmatch(r"label_values\((\w+)\s*,\s*(\w+)\)", q.strip())
                if m is None:
                    raise ValueError(f"{d['uid']}: variable {v['name']}: unexpected query {q!r}")
                variables.append(VariableQuery(d["uid"], v["name"], m.group(1), m.group(2)))
    return queries, variables


def regex_literal(value: str) -> str:
    """`value` matched literally by a PromQL regex matcher (metacharacters escaped, and the
    backslash doubled for the PromQL string), as Grafana does for a single-value variable."""
    return re.sub(r"([\\.*+?^${}()|\[\]])", r"\\\\\1", value)


def substitute(expr: str, *, step_s: float, scrape_s: float, range_s: float, values: Mapping[str, str]) -> str:
    rate_interval = max(4 * scrape_s, step_s + scrape_s)
    builtin = {"__rate_interval": f"{round(rate_interval)}s", "__interval": f"{round(step_s)}s",
               "__range": f"{round(range_s)}s"}

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name in builtin:
            return builtin[name]
        if name not in values:
            raise KeyError(f"no value for dashboard variable ${name} in {expr!r}")
        return regex_literal(values[name]) if f'~"{m.group(0)}"' in expr else values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def check_panels(client: PrometheusClient, start: float, end: float, *, values: Mapping[str, str],
                 step_s: float = 2.0, scrape_s: float = 1.0) -> list[PanelResult]:
    """Every panel query over [start, end]; the results, empty ones included."""
    queries, variables = dashboard_queries()
    for v in variables:
        offered = client.label_values(v.label, v.metric)
        if values.get(v.name) not in offered:
            raise AssertionError(f"{v.dashboard}: ${v.name} = {values.get(v.name)!r} is not among {offered}")
    results = []
    for q in queries:
        expr = substitute(q.expr, step_s=step_s, scrape_s=scrape_s, range_s=end - start, values=values)
        try:
            series = client.query_range(expr, start, end, step_s)
        except PrometheusError as exc:
            results.append(PanelResult(q, expr, 0, 0, str(exc)))
            continue
        finite = sum(1 for s in series for _, v in s.points if not math.isnan(v) and not math.isinf(v))
        results.append(PanelResult(q, expr, len(series), finite))
    return results
