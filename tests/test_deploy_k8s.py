"""deploy/k8s: every overlay renders with kustomize, every object validates against its
schema (kubernetes-validate for built-in kinds, deploy/schemas/ for the CRDs), and the
operational invariants hold. A deliberately broken copy must fail each of those checks.

kustomize comes from `./run setup` (built once into ~/.cache/wooflow/bin) or `kubectl
kustomize`; without either the test is skipped loudly — and fails in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import tool_missing

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = ROOT / "deploy" / "schemas"
OVERLAYS = ("dev", "production")
K8S_VERSION = "1.31.0"  # the oldest Kubernetes minor we support
ROLES = {"bridge", "rules", "workers", "sink", "scheduler", "api", "poller"}
SCALED_ROLES = {"rules", "workers"}
# Secrets that production expects to exist already (created by the platform's secret manager).
EXTERNAL_SECRETS = {"production": {"wooflow-secrets"}}

Obj = dict[str, Any]




def kustomize_command() -> list[str]:
    cache = Path(os.environ.get("WOOFLOW_CACHE_DIR", Path.home() / ".cache" / "wooflow"))
    for candidate in (os.environ.get("WOOFLOW_KUSTOMIZE"), str(cache / "bin" / "kustomize"), shutil.which("kustomize")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return [candidate, "build"]
    kubectl = shutil.which("kubectl")
    if kubectl and subprocess.run([kubectl, "kustomize", "--help"], capture_output=True).returncode == 0:
        return [kubectl, "kustomize"]
    tool_missing("kustomize (or kubectl) is not installed: run `./run setup` (as root with apt-get/go available)")
    raise AssertionError("unreachable")


def render(path: Path) -> list[Obj]:
    out = subprocess.run([*kustomize_command(), str(path)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RenderError(out.stderr.strip())
    return [d for d in yaml.safe_load_all(out.stdout) if d]


class RenderError(Exception):
    pass


def crd_schemas(schemas_dir: Path = SCHEMAS) -> dict[tuple[str, str], Any]:
    from jsonschema import Draft202012Validator

    out = {}
    for f in schemas_dir.glob("*.json"):
        schema = json.loads(f.read_text())
        Draft202012Validator.check_schema(schema)
        props = schema["properties"]
        out[(props["apiVersion"]["const"], props["kind"]["const"])] = Draft202012Validator(schema)
    return out


def schema_errors(objs: list[Obj], schemas_dir: Path = SCHEMAS) -> list[str]:
    import kubernetes_validate

    crds = crd_schemas(schemas_dir)
    errors = []
    for o in objs:
        name = f"{o.get('kind')}/{o.get('metadata', {}).get('name')}"
        validator = crds.get((str(o.get("apiVersion")), str(o.get("kind"))))
        if validator is not None:
            errors += [f"{name}: {'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(o)]
            continue
        try:
            kubernetes_validate.validate(o, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{name}: no schema for {o.get('apiVersion')} {o.get('kind')} (add one to deploy/schemas/)")
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{name}: {str(exc).splitlines()[0]}")
    return errors


def invariant_problems(objs: list[Obj], overlay: str) -> list[str]:
    """What a reviewer would check by hand in every rendered overlay."""
    problems: list[str] = []
    by_kind: dict[str, dict[str, Obj]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    deployments = by_kind.get("Deployment", {})
    config_maps = by_kind.get("ConfigMap", {})
    secrets = set(by_kind.get("Secret", {})) | EXTERNAL_SECRETS.get(overlay, set())

    def component(o: Obj) -> str:
        return str(o["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component"))

    roles = {component(d): d for d in deployments.values()}
    if set(roles) != ROLES:
        problems.append(f"one Deployment per role expected, got {sorted(roles)}")

    def check_pod(owner: str, pod: Obj) -> None:
        psc = pod.get("securityContext", {})
        if not (psc.get("runAsNonRoot") and psc.get("runAsUser") == 10001):
            problems.append(f"{owner}: pod must run as non-root user 10001")
        for c in pod.get("initContainers", []) + pod["containers"]:
            csc = c.get("securityContext", {})
            if not csc.get("readOnlyRootFilesystem") or csc.get("allowPrivilegeEscalation") is not False \
                    or "ALL" not in csc.get("capabilities", {}).get("drop", []):
                problems.append(f"{owner}/{c['name']}: read-only root FS, no privilege escalation, drop ALL")
            res = c.get("resources", {})
            if not (res.get("requests") and res.get("limits")):
                problems.append(f"{owner}/{c['name']}: resource requests and limits")
            if ":" not in c["image"].rsplit("/", 1)[-1]:
                problems.append(f"{owner}/{c['name']}: image {c['image']} has no tag")
            for src in c.get("envFrom", []):
                if "configMapRef" in src and src["configMapRef"]["name"] not in config_maps:
                    problems.append(f"{owner}: ConfigMap {src['configMapRef']['name']} is not rendered")
                if "secretRef" in src and src["secretRef"]["name"] not in secrets:
                    problems.append(f"{owner}: Secret {src['secretRef']['name']} neither rendered nor external")

    for role, d in roles.items():
        pod = d["spec"]["template"]["spec"]
        check_pod(f"Deployment/{d['metadata']['name']}", pod)
        c = pod["containers"][0]
        if c.get("args", [None])[0] != role:
            problems.append(f"{role}: container must run `wooflow {role}`")
        for probe in ("readinessProbe", "livenessProbe"):
            path = c.get(probe, {}).get("httpGet", {}).get("path")
            if path != {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}[probe]:
                problems.append(f"{role}: {probe} must be an HTTP probe on the role's endpoint")
        port_names = {p["name"] for p in c.get("ports", [])}
        if not port_names & {"http", "metrics"}:
            problems.append(f"{role}: no http/metrics port for Prometheus")
        pdbs = [p for p in by_kind.get("PodDisruptionBudget", {}).values()
                if p["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        if len(pdbs) != 1:
            problems.append(f"{role}: exactly one PodDisruptionBudget expected, got {len(pdbs)}")

    for job in by_kind.get("Job", {}).values():
        pod = job["spec"]["template"]["spec"]
        check_pod(f"Job/{job['metadata']['name']}", pod)
    commands = [c.get("args") for j in by_kind.get("Job", {}).values()
                for c in [*j["spec"]["template"]["spec"].get("initContainers", []),
                          *j["spec"]["template"]["spec"]["containers"]]]
    if ["migrate"] not in commands or ["topics", "create"] not in commands:
        problems.append(f"the migrations Job must run `wooflow migrate` and `wooflow topics create`, runs {commands}")

    config = next(iter(config_maps.values()), {}).get("data", {})
    partitions = int(config.get("WOOFLOW_TOPIC_PARTITIONS", "0"))
    scaled = by_kind.get("ScaledObject", {})
    targets = {s["spec"]["scaleTargetRef"]["name"]: s for s in scaled.values()}
    for role in SCALED_ROLES:
        so = targets.get(f"wooflow-{role}")
        if so is None:
            problems.append(f"{role}: no KEDA ScaledObject")
            continue
        if not 1 <= so["spec"].get("maxReplicaCount", 100) <= partitions:
            problems.append(f"{role}: maxReplicaCount {so['spec'].get('maxReplicaCount')} "
                            f"beyond {partitions} partitions")
        if "replicas" in roles.get(role, {}).get("spec", {}):
            problems.append(f"{role}: replicas set on a KEDA-scaled Deployment (apply would fight the autoscaler)")
        for trig in so["spec"]["triggers"]:
            for key, value in trig["metadata"].items():
                if key.endswith("FromEnv") and value not in config:
                    problems.append(f"{role}: trigger reads {value} from the environment, not in the ConfigMap")
    for name in targets:
        if name not in deployments:
            problems.append(f"ScaledObject targets missing Deployment {name}")

    services = by_kind.get("Service", {})
    for svc in ("wooflow-bridge", "wooflow-api"):
        if svc not in services:
            problems.append(f"Service {svc} missing")
    monitor_ports = {e["port"] for sm in by_kind.get("ServiceMonitor", {}).values() for e in sm["spec"]["endpoints"]}
    service_ports = {p["name"] for s in services.values() for p in s["spec"]["ports"]}
    if not monitor_ports or not monitor_ports <= service_ports:
        problems.append(f"ServiceMonitor ports {monitor_ports} must be named Service ports {service_ports}")
    if not any(not np["spec"].get("ingress") for np in by_kind.get("NetworkPolicy", {}).values()):
        problems.append("no default-deny NetworkPolicy")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_validates_and_keeps_the_invariants(overlay: str) -> None:
    objs = render(K8S / "overlays" / overlay)
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Job", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "ScaledObject",
            "ConfigMap", "Service", "PrometheusRule"} <= kinds
    assert schema_errors(objs) == []
    assert invariant_problems(objs, overlay) == []
    namespaces = {o["metadata"].get("namespace") for o in objs}
    assert namespaces == {"wooflow-dev" if overlay == "dev" else "wooflow"}


def _broken_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "deploy"
    shutil.copytree(K8S, dst / "k8s")
    shutil.copytree(SCHEMAS, dst / "schemas")
    return dst


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_broken_manifests_fail(tmp_path: Path) -> None:
    kustomize_command()  # skip (or fail in CI) before touching anything
    deploy = _broken_copy(tmp_path)
    dev = deploy / "k8s" / "overlays" / "dev"
    base = deploy / "k8s" / "base"
    assert schema_errors(render(dev), deploy / "schemas") == []  # the copy itself is fine

    # a built-in kind with a wrong type and an unknown (misspelt) field
    _edit(dev / "single-replica.yaml", "replicas: 1", "replicas: one")
    _edit(base / "deployment-sink.yaml", "terminationGracePeriodSeconds: 60", "terminationGracePeriod: 60")
    errors = schema_errors(render(dev), deploy / "schemas")
    assert any("wooflow-bridge" in e and "one" in e for e in errors), errors
    assert any("wooflow-sink" in e and "terminationGracePeriod" in e for e in errors), errors

    # a CRD field misspelt
    deploy = _broken_copy(tmp_path / "2")
    base = deploy / "k8s" / "base"
    _edit(base / "scaledobjects.yaml", "cooldownPeriod: 300", "cooldownPeriods: 300")
    errors = schema_errors(render(deploy / "k8s" / "overlays" / "production"), deploy / "schemas")
    assert any("ScaledObject/wooflow-rules" in e and "cooldownPeriods" in e for e in errors), errors

    # autoscaling beyond the partitions, and a role running as root
    _edit(deploy / "k8s" / "overlays" / "production" / "kustomization.yaml", "WOOFLOW_TOPIC_PARTITIONS=12",
          "WOOFLOW_TOPIC_PARTITIONS=6")
    _edit(base / "pod-defaults.yaml", "runAsUser: 10001", "runAsUser: 0")
    problems = invariant_problems(render(deploy / "k8s" / "overlays" / "production"), "production")
    assert any("maxReplicaCount 12 beyond 6" in p for p in problems), problems
    assert any("non-root" in p for p in problems), problems

    # a resource that does not exist: rendering itself fails
    (base / "pdb.yaml").unlink()
    with pytest.raises(RenderError, match=r"pdb\.yaml"):
        render(deploy / "k8s" / "overlays" / "dev")


def test_prometheus_rule_in_the_base_mirrors_the_rules_file() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("to_prometheusrule",
                                                  ROOT / "deploy" / "prometheus" / "to_prometheusrule.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (K8S / "base" / "prometheusrule.yaml").read_text() == module.render(module.RULES.read_text()), \
        "run: python deploy/prometheus/to_prometheusrule.py"
