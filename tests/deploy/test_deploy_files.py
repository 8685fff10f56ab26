"""The deployment files under `deploy/`: the Kubernetes manifests validate against the
Kubernetes schemas and fit together, compose.yaml has the topology the README describes,
and the declared configuration files both carry are valid."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config.document import load, parse

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
MANIFESTS = sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def by_kind() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for path in MANIFESTS for doc in documents(path)}


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_each_manifest_validates_against_the_kubernetes_schemas(path: Path) -> None:
    import kubernetes_validate

    for doc in documents(path):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_manifests_hold_every_kind_a_deployment_needs() -> None:
    assert set(by_kind()) == {
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }


def test_kustomization_lists_every_manifest() -> None:
    [kustomization] = documents(KUBERNETES / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS)


def test_deployment_probes_health_and_ready_and_is_scraped_by_prometheus() -> None:
    pod = by_kind()["Deployment"]["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])


def test_service_hpa_and_pdb_select_the_deployments_pods() -> None:
    kinds = by_kind()
    deployment = kinds["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert kinds["Service"]["spec"]["selector"].items() <= labels.items()
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    sources = {
        next(iter(ref.values()))["name"]
        for ref in deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    }
    assert sources == {kinds["ConfigMap"]["metadata"]["name"], kinds["Secret"]["metadata"]["name"]}


def test_the_configmaps_configuration_file_is_valid() -> None:
    data = by_kind()["ConfigMap"]["data"]
    desired = parse(data["gateway.yaml"], "configmap.yaml:gateway.yaml", os.environ)
    assert [s.key for s in desired.servers] == ["time"]
    assert data["GATEWAY_CONFIG"].endswith("/gateway.yaml")


def test_compose_runs_two_gateways_postgres_redis_and_nginx_each_with_a_health_check() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "gateway-1", "gateway-2", "nginx"}
    for name, service in services.items():
        assert "test" in service["healthcheck"], name
    for name in ("gateway-1", "gateway-2"):
        gateway = services[name]
        assert gateway["environment"]["CACHE_TYPE"] == "redis"
        assert gateway["environment"]["DATABASE_URL"].startswith("postgresql://")
        assert gateway["depends_on"]["postgres"]["condition"] == "service_healthy"
    nginx = services["nginx"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert set(nginx["depends_on"]) == {"gateway-1", "gateway-2"}


def test_nginx_balances_over_both_compose_gateways() -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    assert "server gateway-1:4444" in conf and "server gateway-2:4444" in conf
    assert "proxy_buffering off;" in conf


def test_the_compose_configuration_file_is_valid() -> None:
    desired = load(DEPLOY / "gateway.yaml", os.environ)
    assert [s.key for s in desired.servers] == ["time"]
