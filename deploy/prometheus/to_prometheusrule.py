"""Write deploy/k8s/base/prometheusrule.yaml from deploy/prometheus/rules/wooflow.rules.yml.

The rules file is the source (promtool tests it); the Prometheus Operator needs the same
groups inside a PrometheusRule. Run after editing the rules:
    python deploy/prometheus/to_prometheusrule.py
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE / "rules" / "wooflow.rules.yml"
TARGET = HERE.parent / "k8s" / "base" / "prometheusrule.yaml"
HEADER = ("# GENERATED from deploy/prometheus/rules/wooflow.rules.yml for the Prometheus Operator.\n"
          "# Edit the rules file, then regenerate: python deploy/prometheus/to_prometheusrule.py\n"
          "# (tests/test_deploy_prometheus.py fails while the two differ).\n")


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_Dumper.add_representer(str, _str)


def render(rules_text: str) -> str:
    doc = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
           "metadata": {"name": "wooflow", "labels": {"app.kubernetes.io/name": "wooflow"}},
           "spec": yaml.safe_load(rules_text)}
    return HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=120)


if __name__ == "__main__":
    TARGET.write_text(render(RULES.read_text()))
    print(f"wrote {TARGET}")
