"""Dashboards, alert rules, the compose file and the Dockerfile, checked offline:
- every Grafana dashboard is an importable JSON model (datasource as a variable, unique
  panel ids, sane grid) whose expressions use only metric names registered in
  wooflow/metrics.py;
- the alert rules use only registered names (or their own recording rules);
- deploy/compose.yaml parses and points at files that exist, runs every role, and its
  Prometheus scrapes every role; the Dockerfile is multi-stage and non-root.
No Docker engine or Grafana is needed (or started).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
ROLES = {"bridge", "rules", "workers", "sink", "scheduler", "api"}

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool",
            "inf", "nan", "atan2"}


def registered_metric_names() -> set[str]:
    """Every sample name the collectors defined in wooflow/metrics.py expose (…_total, …_bucket, …)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics import MetricWrapperBase

    from wooflow import metrics

    # a registry of their own: some (the bridge's gauges) join the default one only in their process
    registry = CollectorRegistry()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            registry.register(value)
    return set(registry._names_to_collectors)  # type: ignore[attr-defined]


def metric_names_in(expr: str) -> set[str]:
    """The metric (and recording-rule) names a PromQL expression reads."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)             # string literals
    e = re.sub(r"\{[^}]*\}", "", e)                          # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                         # ranges, $__rate_interval
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)  # label lists
    e = re.sub(r"\$\{?\w+\}?", " ", e)                        # dashboard variables
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", e):
        ident, call = m.group(1), m.group(2)
        if call or ident.lower() in KEYWORDS or re.fullmatch(r"\d+\w*", ident):
            continue
        names.add(ident)
    return names


def test_the_expression_parser_finds_metric_names() -> None:
    expression = 'histogram_quantile(0.99, sum by (le) (rate(wooflow_x_bucket{a="b(c)"}[$__rate_interval])))'
    assert metric_names_in(expression) == {"wooflow_x_bucket"}
    assert metric_names_in("sum by (store) (increase(a_total[1d] offset 30m)) > 0 unless b:c:sum > 1e3") \
        == {"a_total", "b:c:sum"}
    assert metric_names_in("a > bool 1 and on (x) group_left (y) sort_desc(b)") == {"a", "b"}


# --- Grafana ---------------------------------------------------------------------------------
def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows carry their panels
    return out


def _variable_queries(dashboard: dict[str, Any]) -> list[str]:
    out = []
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((\w+)\s*,\s*(\w+)\)", q.strip())
            assert m, f"variable {v['name']}: unexpected query {q!r}"
            out.append(m.group(1))
    return out


def test_there_are_the_three_dashboards() -> None:
    uids = {json.loads(p.read_text())["uid"] for p in DASHBOARDS}
    assert uids == {"wooflow-overview", "wooflow-store", "wooflow-workers"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_dashboard_is_an_importable_model_using_registered_metrics(path: Path) -> None:
    d = json.loads(path.read_text())
    for key in ("title", "uid", "panels", "schemaVersion", "templating", "time"):
        assert key in d, f"{path.name}: missing {key}"
    assert d.get("id") is None, "an exported id would clash on import"
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    assert len(d["uid"]) <= 40 and re.fullmatch(r"[\w-]+", d["uid"])
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"

    known = registered_metric_names()
    panels = _panels(d)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
    assert all(isinstance(i, int) and i > 0 for i in ids)
    for p in panels:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], f"{p['title']}: no query"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"]
            names = metric_names_in(t["expr"])
            assert names, f"{p['title']}: {t['expr']!r} reads no metric"
            assert names <= known, f"{path.name} / {p['title']}: unknown metrics {sorted(names - known)}"
    for metric in _variable_queries(d):
        assert metric in known, f"{path.name}: variable query on unknown metric {metric}"
    used = {v for t in (t for p in panels for t in p.get("targets", [])) for v in re.findall(r"\$(\w+)", t["expr"])}
    assert used - {"__rate_interval", "__range", "__interval"} <= set(variables), "undefined variable in a query"


def test_store_dashboard_filters_every_panel_by_store() -> None:
    d = json.loads((DEPLOY / "grafana" / "dashboards" / "wooflow-store.json").read_text())
    assert any(v["name"] == "store" for v in d["templating"]["list"])
    for p in _panels(d):
        for t in p.get("targets", []):
            assert 'store=~"$store"' in t["expr"], p["title"]


def test_a_dashboard_with_an_unknown_metric_is_caught() -> None:
    assert not metric_names_in("sum(rate(wooflow_events_inn_total[5m]))") <= registered_metric_names()


# --- alert rules -------------------------------------------------------------------------------
# series Prometheus writes itself for every target it scrapes
SCRAPE_SERIES = {"up"}


def test_alert_rules_use_registered_metrics() -> None:
    known = registered_metric_names() | SCRAPE_SERIES
    groups = [g for f in (DEPLOY / "prometheus" / "rules").glob("*.yml")
              for g in yaml.safe_load(f.read_text())["groups"]]
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    for g in groups:
        for r in g["rules"]:
            names = metric_names_in(r["expr"])
            assert names and names <= known | recorded, \
                f"{r.get('alert') or r.get('record')}: {sorted(names - known - recorded)}"


# --- compose, Dockerfile -------------------------------------------------------------------------
def test_compose_file_runs_every_role_and_references_existing_files() -> None:
    from wooflow.cli import app

    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert ROLES | {"kafka", "postgres", "migrate", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    cli_commands = {c.name or c.callback.__name__ for c in app.registered_commands}  # type: ignore[union-attr]
    # roles with subcommands (`wooflow scheduler clock`, `wooflow rules import`) are groups that run the role
    cli_commands |= {g.name for g in app.registered_groups
                     if g.name and g.typer_instance.info.invoke_without_command is True}
    for role in ROLES:
        svc = services[role]
        assert svc["command"][0] == role
        assert role in cli_commands, f"compose runs unknown command {role}"
        assert svc["user"] == "10001:10001" and svc["read_only"] is True
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
    assert services["migrate"]["entrypoint"][-1] == "wooflow migrate && wooflow topics create"
    for svc in services.values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"compose mounts missing {source}"
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    scraped = {t.split(":")[0] for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert scraped == ROLES
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "wooflow.yaml").read_text())
    mounts = {v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert provider["providers"][0]["options"]["path"] in mounts
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert datasource["datasources"][0]["uid"] == "prometheus"


def test_dockerfile_is_multi_stage_and_non_root() -> None:
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    froms = [i for i, ln in enumerate(lines) if ln.upper().startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage: a builder and a runtime stage"
    final = lines[froms[-1]:]
    assert final[0].split()[1] == "python:3.11-slim"
    users = [ln.split()[1] for ln in final if ln.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] == "10001"
    assert any(ln.startswith("ENTRYPOINT") and "wooflow" in ln for ln in final)
    assert not any("--from=builder" in ln and "/src" in ln for ln in final), "no source tree in the runtime image"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env"} <= set(ignored)


def test_every_runbook_link_of_an_alert_has_its_section() -> None:
    headings = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", (ROOT / "docs" / "runbook.md").read_text(), re.M)}
    groups = [g for f in (DEPLOY / "prometheus" / "rules").glob("*.yml")
              for g in yaml.safe_load(f.read_text())["groups"]]
    for rule in (r for g in groups for r in g["rules"] if "alert" in r):
        link = rule["annotations"]["runbook"]
        path, _, anchor = link.partition("#")
        assert path == "docs/runbook.md" and anchor in headings, f"{rule['alert']}: no section for {link}"
