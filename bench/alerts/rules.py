"""The shipped alert rules with their time scale shrunk for a drill of minutes.

A `for: 10m` or a `[10m]` window cannot be watched going pending → firing → resolved in a
CI run. `scaled_rules` rewrites only durations — each alert's `for`, and the range windows,
subquery ranges and `offset`s inside expressions — and leaves everything else as shipped:
thresholds, functions, label matchers, annotations. `same_but_durations` proves that for
every rule (the drill checks it before loading the copy).

Thresholds that are times themselves (`time() - … > 120`, a lateness `> 60` seconds) are
part of the expression and stay: the drill's faults last long enough to cross them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules" / "wooflow.rules.yml"

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION = r"(?:\d+(?:ms|s|m|h|d|w|y))+"
# a range `[10m]`, a subquery `[10m:1m]` (both parts), an `offset 30m`
_IN_EXPR = re.compile(rf"(\[)({_DURATION})(?=[:\]])|(:)({_DURATION})(?=\])|(\boffset\s+)({_DURATION})")


@dataclass(frozen=True)
class Scale:
    """Factors applied to shipped durations: `for` (how long a condition must hold) and
    windows (how far back an expression looks). Defaults: 10m → 20 s `for`, 10m → 40 s window."""

    for_factor: float = 1 / 30
    window_factor: float = 1 / 15
    minimum_s: float = 1.0  # never below the evaluation interval
    # A `for` holds at least 10 s (ten 1 s scrapes): on a machine at load 25 a role's /metrics
    # missed 1 s scrapes for more than 4 s (2m scaled), and `up == 0` alerted with no fault.
    for_minimum_s: float = 10.0

    def for_(self, text: str) -> str:
        return format_duration(max(self.for_minimum_s, parse_duration(text) * self.for_factor))

    def window(self, text: str) -> str:
        return format_duration(max(self.minimum_s, parse_duration(text) * self.window_factor))


def parse_duration(text: str) -> float:
    if not re.fullmatch(_DURATION, text):
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text))


def format_duration(seconds: float) -> str:
    millis = round(seconds * 1000)
    if millis % 1000:
        return f"{millis}ms"
    s = millis // 1000
    return f"{s // 60}m" if s >= 120 and s % 60 == 0 else f"{s}s"


def scale_expr(expr: str, scale: Scale) -> str:
    def one(m: re.Match[str]) -> str:
        lead = m.group(1) or m.group(3) or m.group(5)
        value = m.group(2) or m.group(4) or m.group(6)
        return lead + scale.window(value)

    return _IN_EXPR.sub(one, expr)


def _without_durations(expr: str) -> str:
    return re.sub(r"\s+", " ", _IN_EXPR.sub(lambda m: (m.group(1) or m.group(3) or m.group(5)) + "<d>", expr)).strip()


def scaled_rules(shipped: str, scale: Scale) -> str:
    """The rules file `shipped` (YAML text) with every duration scaled."""
    doc = yaml.safe_load(shipped)
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule["expr"] = scale_expr(rule["expr"], scale)
            if "for" in rule:
                rule["for"] = scale.for_(rule["for"])
    return yaml.safe_dump(doc, sort_keys=False, width=120)


def same_but_durations(shipped: str, scaled: str) -> list[str]:
    """What differs between two rule files other than durations (empty: only durations)."""
    problems = []
    a, b = yaml.safe_load(shipped), yaml.safe_load(scaled)
    rules_a = [r for g in a["groups"] for r in g["rules"]]
    rules_b = [r for g in b["groups"] for r in g["rules"]]
    if [g["name"] for g in a["groups"]] != [g["name"] for g in b["groups"]] or len(rules_a) != len(rules_b):
        return ["the groups or the number of rules differ"]
    for ra, rb in zip(rules_a, rules_b, strict=True):
        name = ra.get("alert") or ra.get("record")
        if _without_durations(ra["expr"]) != _without_durations(rb["expr"]):
            problems.append(f"{name}: expression changed beyond its durations")
        rest_a: dict[str, Any] = {k: v for k, v in ra.items() if k not in ("expr", "for")}
        rest_b: dict[str, Any] = {k: v for k, v in rb.items() if k not in ("expr", "for")}
        if rest_a != rest_b or ("for" in ra) != ("for" in rb):
            problems.append(f"{name}: labels, annotations or name changed")
    return problems


def durations_table(shipped: str, scale: Scale) -> list[tuple[str, str, str]]:
    """(rule, shipped durations, drill durations) for the documentation."""
    out = []
    for g in yaml.safe_load(shipped)["groups"]:
        for r in g["rules"]:
            found = [m.group(2) or m.group(4) or m.group(6) for m in _IN_EXPR.finditer(r["expr"])]
            shipped_parts = ([f"for {r['for']}"] if "for" in r else []) + found
            drill_parts = ([f"for {scale.for_(r['for'])}"] if "for" in r else []) + [scale.window(d) for d in found]
            out.append((r.get("alert") or r.get("record"), ", ".join(shipped_parts), ", ".join(drill_parts)))
    return out


def write_scaled_rules(directory: Path, scale: Scale, shipped: Path = SHIPPED) -> Path:
    """The scaled copy of `shipped` in `directory`; refuses a copy that differs in more than durations."""
    text = shipped.read_text()
    scaled = scaled_rules(text, scale)
    problems = same_but_durations(text, scaled)
    if problems:
        raise ValueError(f"the scaled rules differ from {shipped.name}: {problems}")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / shipped.name
    path.write_text(f"# {shipped.name} with its durations scaled for a drill: {scale}\n" + scaled)
    return path
