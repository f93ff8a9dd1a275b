"""The Kubernetes manifests (deploy/k8s) render, are schema-valid and keep our invariants.

scripts/k8s_validate.py does the work (`make k8s-validate`); these tests run it as CI does, on
the real manifests and on copies broken one way each, which it must refuse with the reason.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "k8s"
SCRIPT = ROOT / "scripts" / "k8s_validate.py"


def validate(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    assert beside.exists(), "kubectl is installed by the deploy extra (make setup)"
    return str(beside)


def test_every_kustomization_renders_and_validates() -> None:
    done = validate(MANIFESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    for label in ("base", "overlays/local", "overlays/production"):
        assert f"ok   {label}:" in done.stdout


# (file under deploy/k8s, text, replacement, what the validator must say)
BREAKAGES = {
    "misspelt field": (
        "base/deployment.yaml",
        "          readinessProbe:",
        "          readinesProbe:",
        "'readinesProbe' was unexpected",
    ),
    "wrong type": (
        "base/deployment.yaml",
        "containerPort: 8000",
        'containerPort: "8000"',
        "is not of type 'integer'",
    ),
    "gRPC probe on another port": (
        "base/deployment.yaml",
        "            grpc:\n              port: 8001",
        "            grpc:\n              port: 9001",
        "startupProbe asks gRPC port 9001, not VAE_GRPC_PORT 8001",
    ),
    "readiness on the liveness route": (
        "base/deployment.yaml",
        "path: /readyz",
        "path: /healthz",
        "readinessProbe asks /healthz, not /readyz",
    ),
    "liveness on another port": (
        "base/deployment.yaml",
        "              path: /healthz\n              port: http\n            periodSeconds: 10",
        "              path: /healthz\n              port: 9000\n            periodSeconds: 10",
        "livenessProbe asks port 9000",
    ),
    "optional API key Secret": (
        "base/deployment.yaml",
        "                  optional: false",
        "                  optional: true",
        "the API key Secret is optional",
    ),
    "server allowed to run open": (
        "base/kustomization.yaml",
        "VAE_ALLOW_UNAUTHENTICATED=false",
        "VAE_ALLOW_UNAUTHENTICATED=true",
        "VAE_ALLOW_UNAUTHENTICATED is on",
    ),
    "writable model mount": (
        "base/deployment.yaml",
        "              mountPath: /models\n              readOnly: true",
        "              mountPath: /models\n              readOnly: false",
        "the model repository /models is mounted writable",
    ),
    "writable claim": (
        "base/deployment.yaml",
        "            claimName: vae-models\n            readOnly: true",
        "            claimName: vae-models\n            readOnly: false",
        "claim vae-models is not readOnly",
    ),
    "writable root filesystem": (
        "base/deployment.yaml",
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystem: false",
        "the root filesystem is writable",
    ),
    "grace period shorter than the drain": (
        "base/deployment.yaml",
        "terminationGracePeriodSeconds: 40",
        "terminationGracePeriodSeconds: 30",
        "terminationGracePeriodSeconds 30 <= preStop 5 s + VAE_SHUTDOWN_DRAIN_S 25 s",
    ),
    "drain longer than the grace period": (
        "base/kustomization.yaml",
        "VAE_SHUTDOWN_DRAIN_S=25",
        "VAE_SHUTDOWN_DRAIN_S=45",
        "VAE_SHUTDOWN_DRAIN_S 45 s: the kubelet would kill mid-drain",
    ),
    "PDB selecting other pods": (
        "base/pdb.yaml",
        "      app.kubernetes.io/component: server",
        "      app.kubernetes.io/component: web",
        "PodDisruptionBudget's selector does not match",
    ),
    "HPA targeting another Deployment": (
        "base/hpa.yaml",
        "    kind: Deployment\n    name: vae-service",
        "    kind: Deployment\n    name: vae-api",
        "the HPA targets",
    ),
    "replicas fixed beside the HPA": (
        "base/deployment.yaml",
        "  revisionHistoryLimit: 5",
        "  replicas: 3\n  revisionHistoryLimit: 5",
        "the Deployment sets replicas",
    ),
    "workers counted from the node": (
        "base/kustomization.yaml",
        "VAE_WORKERS=2",
        "VAE_WORKERS=auto",
        "auto counts the node's cores",
    ),
    "overlay naming a missing patch": (
        "overlays/production/kustomization.yaml",
        "  - path: scaling.yaml",
        "  - path: scaling-gone.yaml",
        "overlays/production: does not render",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_copy_is_refused_with_its_reason(breakage: str, tmp_path: Path) -> None:
    relative, text, replacement, reason = BREAKAGES[breakage]
    root = tmp_path / "k8s"
    shutil.copytree(MANIFESTS, root)
    target = root / relative
    original = target.read_text()
    assert original.count(text) == 1, f"{relative} no longer holds {text!r} exactly once"
    target.write_text(original.replace(text, replacement))

    done = validate(root)
    assert done.returncode == 1, done.stdout + done.stderr
    assert reason in done.stdout, done.stdout


def rendered(directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_the_configmap_names_every_setting_the_service_reads() -> None:
    # Like docker-compose.yml: every VAE_* setting is spelled out, so a reader sees them all.
    # The exceptions live in the Deployment: host and ports (the probes' ports) and the keys,
    # which come from a Secret.
    (config,) = [r for r in rendered(MANIFESTS / "base") if r["kind"] == "ConfigMap"]
    data = config["data"]
    in_deployment = {"VAE_HOST", "VAE_PORT", "VAE_GRPC_PORT", "VAE_API_KEYS"}
    expected = {f"VAE_{name.upper()}" for name in ServiceSettings.model_fields} - in_deployment
    assert expected - set(data) == set()
    assert set(data) - expected == set(), "a setting the service does not read"
    # and the values are ones the service accepts: it fails fast at start on a bad one
    ServiceSettings.model_validate({k.removeprefix("VAE_").lower(): v for k, v in data.items()})


def test_overlays_change_what_they_say() -> None:
    production = rendered(MANIFESTS / "overlays" / "production")
    assert {r["metadata"]["namespace"] for r in production if r["kind"] != "Namespace"} == {"vae"}
    (deployment,) = [r for r in production if r["kind"] == "Deployment"]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/ml/vae-service:0.1.0"

    local = rendered(MANIFESTS / "overlays" / "local")
    assert not [r for r in local if r["kind"] == "PersistentVolumeClaim"]
    (deployment,) = [r for r in local if r["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]] == ["/tmp"]


def test_the_alert_rules_name_gauges_the_service_exports() -> None:
    """deploy/k8s/alerts/prometheus-rule.yaml: a PrometheusRule whose every alert waits for its
    verdict to hold and reads only vae_monitor_* gauges the collector exports (a renamed gauge
    would leave an alert that can never fire)."""
    from service.observability.monitoring_metrics import GAUGES

    rule = yaml.safe_load((MANIFESTS / "alerts" / "prometheus-rule.yaml").read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    exported = {name for name, _, _ in GAUGES}
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert len(alerts) >= 3
    for alert in alerts:
        assert set(alert) >= {"alert", "expr", "for", "labels", "annotations"}, alert
        named = set(re.findall(r"\bvae_[a-z_]+", alert["expr"]))
        assert named, alert["alert"]
        assert named <= exported, f"{alert['alert']}: {named - exported} is not exported"
