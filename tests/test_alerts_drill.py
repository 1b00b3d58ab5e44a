"""Every shipped alert fires in a real Prometheus when its fault is provoked for real, and
resolves once the fault is gone; every Grafana panel query returns data meanwhile.

The drill (bench/alerts/drill.py, ~5 minutes) runs the roles as processes on a Kafka
broker of its own (it stops it) and the session's PostgreSQL. Prometheus comes from
Debian's `prometheus` package (`./run setup` as root); without it the test is skipped
loudly, and fails under CI=true.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bench.alerts.drill import Expect, Fault, evaluate, run_drill
from bench.alerts.rules import (
    SHIPPED,
    Scale,
    parse_duration,
    same_but_durations,
    scale_expr,
    scaled_rules,
    write_scaled_rules,
)
from tests.support import tool_missing
from wooflow.devinfra.kafka import LauncherError
from wooflow.devinfra.prometheus import Episode, ScrapeTarget, config_text, find_prometheus, targets_json


def prometheus_or_skip() -> None:
    try:
        find_prometheus()
    except LauncherError:
        tool_missing("prometheus is not installed: run `./run setup` as root (Debian package `prometheus`)")


# --- the scaled copy of the rules --------------------------------------------------------------
@pytest.mark.unit
def test_scaling_rewrites_windows_offsets_and_for_only() -> None:
    scale = Scale(for_factor=1 / 30, window_factor=1 / 15)
    assert scale_expr("increase(x[1d] offset 30m) > 0 unless increase(x[30m]) > 0", scale) == \
        "increase(x[96m] offset 2m) > 0 unless increase(x[2m]) > 0"
    assert scale_expr("max_over_time(rate(x[5m])[10m:1m]) > 300", scale) == "max_over_time(rate(x[20s])[40s:4s]) > 300"
    assert scale_expr('wooflow:action_error_ratio:rate10m > 0.05 and x{a="[10m]"}', scale).startswith(
        "wooflow:action_error_ratio:rate10m > 0.05")
    assert parse_duration("1h30m") == 5400
    shipped = SHIPPED.read_text()
    scaled = scaled_rules(shipped, scale)
    assert same_but_durations(shipped, scaled) == []
    fors = {r["alert"]: r.get("for") for g in yaml.safe_load(scaled)["groups"] for r in g["rules"] if "alert" in r}
    assert fors["WooflowConsumerLagGrowing"] == "20s" and fors["WooflowRoleDown"] == "10s"


@pytest.mark.unit
def test_a_changed_threshold_is_not_a_scaling() -> None:
    shipped = SHIPPED.read_text()
    tampered = scaled_rules(shipped, Scale()).replace("max(wooflow_outbox_depth) > 1000",
                                                      "max(wooflow_outbox_depth) > 10")
    assert same_but_durations(shipped, tampered) == ["WooflowOutboxBacklog: expression changed beyond its durations"]


# --- the launcher's configuration --------------------------------------------------------------
@pytest.mark.unit
def test_the_generated_configuration_passes_promtool(tmp_path: Path) -> None:
    from tests.test_deploy_prometheus import promtool

    rules = write_scaled_rules(tmp_path / "rules", Scale())
    targets = [ScrapeTarget("rules", "127.0.0.1:9100"), ScrapeTarget("rules", "127.0.0.1:9101"),
               ScrapeTarget("bridge", "127.0.0.1:8080")]
    (tmp_path / "targets.json").write_text(targets_json(targets))
    (tmp_path / "prometheus.yml").write_text(config_text(tmp_path / "targets.json", [rules], scrape_interval_s=1,
                                                         evaluation_interval_s=0.5))
    check = subprocess.run([promtool(), "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 12 rules found" in check.stdout
    groups = json.loads((tmp_path / "targets.json").read_text())
    assert {"targets": ["127.0.0.1:9100", "127.0.0.1:9101"], "labels": {"component": "rules"}} in groups


# --- attributing alerts to faults ---------------------------------------------------------------
@pytest.mark.unit
def test_an_alert_counts_only_inside_its_faults_window() -> None:
    faults = {"outage": Fault("outage", "", 100.0, 200.0), "kill": Fault("kill", "", 300.0, 310.0)}
    expects = [Expect("A", {"x": "1"}, "outage"), Expect("B", {}, "kill"), Expect("C", {}, "outage", required=False)]
    episodes = [Episode("A", {"x": "1", "job": "j"}, 120.0, 130.0, 215.0),
                Episode("B", {}, 50.0, 60.0, 70.0),  # before its fault: unexplained, and B never fired in time
                Episode("C", {}, 150.0, None, 160.0),
                Episode("D", {}, 150.0, 151.0, 152.0)]
    results, unexplained = evaluate(expects, faults, episodes)
    a, b = results
    assert (a.fired, a.resolved, a.firing_after_s, a.resolved_after_s) == (True, True, 30.0, 15.0)
    assert not b.fired
    assert [e.name for e in unexplained] == ["B", "D"]


# --- the drill ----------------------------------------------------------------------------------
@pytest.mark.e2e
def test_every_alert_fires_and_resolves_and_every_panel_has_data(migrated: str, tmp_path: Path) -> None:
    prometheus_or_skip()
    if shutil.which("java") is None:
        tool_missing("java is not installed: the drill runs a Kafka broker of its own")
    report = run_drill(migrated, tmp_path / "drill")
    print(report.markdown())
    print(report.to_json())
    assert report.shipped_alerts and {a.alert for a in report.alerts} == set(report.shipped_alerts)
    assert report.problems() == []
    assert report.ok
    assert len(report.panels) >= 60
