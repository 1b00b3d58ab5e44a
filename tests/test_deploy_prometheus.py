"""deploy/prometheus: `promtool check rules` + `promtool test rules` pass, and fail on a
broken copy (a syntax error; a threshold change that the unit tests catch).

promtool comes from Debian's `prometheus` package, installed by `./run setup` when run as
root; without it the tests are skipped loudly — and fail in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import tool_missing

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "deploy" / "prometheus"


def promtool() -> str:
    cache = Path(os.environ.get("WOOFLOW_CACHE_DIR", Path.home() / ".cache" / "wooflow"))
    for candidate in (shutil.which("promtool"), str(cache / "bin" / "promtool")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    tool_missing("promtool is not installed: run `./run setup` as root (Debian package `prometheus`)")
    raise AssertionError("unreachable")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def rule_files(base: Path) -> list[str]:
    return sorted(str(p.relative_to(base)) for p in (base / "rules").glob("*.yml"))


def unit_test_files(base: Path) -> list[str]:
    return sorted(str(p.relative_to(base)) for p in (base / "tests").glob("*.yml"))


def test_rules_are_valid_and_their_unit_tests_pass() -> None:
    assert rule_files(PROM) and unit_test_files(PROM)
    check = run("check", "rules", *rule_files(PROM), cwd=PROM)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = run("test", "rules", *unit_test_files(PROM), cwd=PROM)
    assert unit.returncode == 0, unit.stdout + unit.stderr
    assert "SUCCESS" in unit.stdout


def test_compose_prometheus_config_is_valid() -> None:
    out = run("check", "config", "prometheus.yml", cwd=PROM)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_firing_unit_test() -> None:
    import yaml

    alerts = {r["alert"] for f in (PROM / "rules").glob("*.yml")
              for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"] if "alert" in r}
    fired = {t["alertname"] for f in (PROM / "tests").glob("*.yml") for case in yaml.safe_load(f.read_text())["tests"]
             for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert alerts and alerts == fired, f"alerts without a firing test: {sorted(alerts - fired)}"


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "prometheus"
    shutil.copytree(PROM, dst)
    return dst


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_a_syntax_error_fails_the_check(tmp_path: Path) -> None:
    promtool()
    broken = _copy(tmp_path)
    _edit(broken / "rules" / "wooflow.rules.yml", "deriv(wooflow:consumer_lag:sum[10m]) > 0",
          "deriv(wooflow:consumer_lag:sum[10m] > 0")
    check = run("check", "rules", *rule_files(broken), cwd=broken)
    assert check.returncode != 0
    assert "WooflowConsumerLagGrowing" in check.stdout + check.stderr or "parse error" in check.stdout + check.stderr


def test_a_wrong_threshold_fails_the_unit_tests(tmp_path: Path) -> None:
    promtool()
    broken = _copy(tmp_path)
    _edit(broken / "rules" / "wooflow.rules.yml", "wooflow:action_error_ratio:rate10m > 0.05",
          "wooflow:action_error_ratio:rate10m > 0.5")
    assert run("check", "rules", *rule_files(broken), cwd=broken).returncode == 0  # still valid PromQL
    unit = run("test", "rules", *unit_test_files(broken), cwd=broken)
    assert unit.returncode != 0
    assert "WooflowActionErrorRatioHigh" in unit.stdout + unit.stderr
