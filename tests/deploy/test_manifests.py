"""deploy/k8s: every manifest is valid for Kubernetes (strict, against the schemas that
kubernetes-validate ships), and the objects fit together: selectors, ports, probes, the
references between them, grace periods, and every IOTDECK_* setting they name."""

import base64
import copy
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate

from app.core.config import ConfigError
from tests.deploy.environment import read_settings, unknown_settings
from tests.deploy.monitoring import PROMETHEUS_CONFIG

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
# the oldest Kubernetes the manifests are written for, and the newest with schemas here
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
NAMESPACE = "iotdeck"
IMAGE = "iotdeck"
HPA_METRIC = "telemetry_points_ingested_per_second"
OVERLAY_MARK = "# ~/iotdeck-k8s/kustomization.yaml\n"
KUBECTL = shutil.which("kubectl")
COMPONENT = "app.kubernetes.io/component"

Manifest = dict[str, Any]


def _load() -> list[tuple[str, Manifest]]:
    """(file name, object) for every object of every manifest but the kustomization."""
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path != KUSTOMIZATION:
            found += [(path.name, obj) for obj in yaml.safe_load_all(path.read_text()) if obj]
    return found


OBJECTS = _load()


def of_kind(*kinds: str) -> list[Manifest]:
    """The objects of these kinds."""
    return [obj for _, obj in OBJECTS if obj["kind"] in kinds]


def named(kind: str, name: str) -> Manifest:
    """The one object of `kind` called `name`."""
    [found] = [obj for obj in of_kind(kind) if obj["metadata"]["name"] == name]
    return found


def workloads() -> list[Manifest]:
    """Deployments, StatefulSets and Jobs: everything that owns a pod template."""
    return of_kind("Deployment", "StatefulSet", "Job")


def pod_spec(workload: Manifest) -> dict[str, Any]:
    """The pod spec of a workload's template."""
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: Manifest) -> dict[str, str]:
    """The labels of a workload's pods."""
    return workload["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """True when a matchLabels-style selector picks an object with `labels`."""
    return bool(selector) and selector.items() <= labels.items()


def selected_pods(selector: dict[str, str]) -> list[Manifest]:
    """The workloads whose pods `selector` picks."""
    return [w for w in workloads() if selects(selector, pod_labels(w))]


def iotdeck_containers() -> Iterator[tuple[Manifest, dict[str, Any]]]:
    """(workload, container) for every container running the iotdeck image."""
    for workload in workloads():
        for container in pod_spec(workload)["containers"]:
            if container["image"].split(":")[0] == IMAGE:
                yield workload, container


def environment_of(container: dict[str, Any]) -> dict[str, str]:
    """What a container finds in its environment: envFrom's objects, then its own env."""
    found: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            found |= named("ConfigMap", source["configMapRef"]["name"])["data"]
        else:
            found |= named("Secret", source["secretRef"]["name"])["stringData"]
    found |= {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}
    return found


def container_ports(workload: Manifest) -> set[str | int]:
    """Every port of a workload's containers, by name and by number."""
    ports: set[str | int] = set()
    for container in pod_spec(workload)["containers"]:
        for port in container.get("ports", []):
            ports |= {port["containerPort"], port.get("name", port["containerPort"])}
    return ports


def test_the_upgrade_steps_cover_every_object_once() -> None:
    """docs/deployment.md applies a release in steps chosen by component label: first what
    has none (namespace, settings, databases), then migrate, ingest, worker, app, mqtt-broker."""
    steps = {"migrate", "ingest", "worker", "app", "mqtt-broker"}
    guide = DEPLOYMENT_DOC.read_text()
    for step in steps:
        assert f"-l {COMPONENT}={step}" in guide, step
    assert f"-l '!{COMPONENT}'" in guide
    for _, obj in OBJECTS:
        component = obj["metadata"].get("labels", {}).get(COMPONENT)
        assert component is None or component in steps, obj["metadata"]["name"]


# Kubernetes' own schemas ---------------------------------------------------------------


def test_kustomization_lists_every_manifest_and_only_those() -> None:
    listed = yaml.safe_load(KUSTOMIZATION.read_text())["resources"]
    on_disk = {path.name for path in K8S.glob("*.yaml")} - {KUSTOMIZATION.name}
    assert sorted(listed) == sorted(on_disk)
    assert len(listed) == len(set(listed))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "manifest",
    [obj for _, obj in OBJECTS if obj["apiVersion"] != "monitoring.coreos.com/v1"],
    ids=lambda obj: f"{obj['kind']}/{obj['metadata']['name']}",
)
def test_every_manifest_is_valid_for_kubernetes(manifest: Manifest, version: str) -> None:
    kubernetes_validate.validate(manifest, version, strict=True)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    """The check above would pass anything if the schemas let unknown fields through."""
    broken = copy.deepcopy(named("Deployment", "app"))
    pod_spec(broken)["containers"][0]["readinesProbe"] = {"tcpSocket": {"port": "http"}}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_every_namespaced_object_is_in_the_iotdeck_namespace() -> None:
    [namespace] = of_kind("Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    assert yaml.safe_load(KUSTOMIZATION.read_text())["namespace"] == NAMESPACE
    for _, obj in OBJECTS:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]


# objects that name each other ------------------------------------------------------------


def test_workload_selectors_match_their_pod_templates() -> None:
    for workload in of_kind("Deployment", "StatefulSet"):
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selects(selector, pod_labels(workload)), workload["metadata"]["name"]
        # no two workloads claim the same pods
        assert selected_pods(selector) == [workload]


def test_every_service_selects_pods_with_the_ports_it_targets() -> None:
    for service in of_kind("Service"):
        name = service["metadata"]["name"]
        pods = selected_pods(service["spec"]["selector"])
        assert pods, f"Service {name} selects no pod"
        for port in service["spec"]["ports"]:
            for workload in pods:
                assert port["targetPort"] in container_ports(workload), (name, port)


def test_statefulsets_name_an_existing_governing_service() -> None:
    for workload in of_kind("StatefulSet"):
        service = named("Service", workload["spec"]["serviceName"])
        assert selected_pods(service["spec"]["selector"]) == [workload]


def test_disruption_budgets_and_the_autoscaler_point_at_workloads() -> None:
    budgets = of_kind("PodDisruptionBudget")
    assert {b["metadata"]["name"] for b in budgets} >= {"app", "ingest"}
    for budget in budgets:
        assert selected_pods(budget["spec"]["selector"]["matchLabels"]), budget["metadata"]
    [autoscaler] = of_kind("HorizontalPodAutoscaler")
    target = autoscaler["spec"]["scaleTargetRef"]
    scaled = named(target["kind"], target["name"])
    # the autoscaler owns the number: an apply must not reset it
    assert "replicas" not in scaled["spec"]
    assert autoscaler["spec"]["minReplicas"] >= 2
    [metric] = autoscaler["spec"]["metrics"]
    assert (metric["type"], metric["pods"]["metric"]["name"]) == ("Pods", HPA_METRIC)
    # the prometheus-adapter rule that makes the metric is documented
    assert HPA_METRIC in DEPLOYMENT_DOC.read_text()


def test_ingest_workers_keep_their_broker_session_across_restarts() -> None:
    """Each worker's client id (its hostname) names a persistent session that the broker
    keeps dealing shared messages to: a replacement pod must come back under that name."""
    ingest = named("StatefulSet", "ingest")
    assert ingest["spec"]["podManagementPolicy"] == "Parallel"
    for workload, container in iotdeck_containers():
        if workload is ingest:
            environment = environment_of(container)
            assert container["command"] == ["iotdeck", "ingest"]
            assert environment["IOTDECK_INGEST_SHARED_GROUP"]
            # the default, iotdeck-ingest-<hostname>: unique and stable per pod
            assert "IOTDECK_INGEST_CLIENT_ID" not in environment


def test_environment_references_resolve() -> None:
    for workload in workloads():
        for container in pod_spec(workload)["containers"]:
            for source in container.get("envFrom", []):
                kind, ref = (
                    ("ConfigMap", source["configMapRef"])
                    if "configMapRef" in source
                    else ("Secret", source["secretRef"])
                )
                named(kind, ref["name"])
            for item in container.get("env", []):
                key_ref = item.get("valueFrom", {}).get("secretKeyRef")
                if key_ref is not None:
                    assert key_ref["key"] in named("Secret", key_ref["name"])["stringData"]


def test_every_volume_mount_names_a_volume() -> None:
    for workload in workloads():
        volumes = {v["name"] for v in pod_spec(workload).get("volumes", [])}
        volumes |= {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        for container in pod_spec(workload)["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, (workload["metadata"]["name"], mount)


def test_ingress_routes_browsers_to_the_app_with_sticky_sessions() -> None:
    for ingress in of_kind("Ingress"):
        hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
        assert hosts <= {h for tls in ingress["spec"]["tls"] for h in tls["hosts"]}
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = named("Service", backend["name"])
                assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    annotations = named("Ingress", "app")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert annotations["nginx.ingress.kubernetes.io/session-cookie-name"]
    # whatever reaches the Service itself is pinned by client address
    assert named("Service", "app")["spec"]["sessionAffinity"] == "ClientIP"


# probes, stopping, privileges -------------------------------------------------------------


def test_every_probe_uses_a_port_of_its_container() -> None:
    probed = 0
    for workload in workloads():
        for container in pod_spec(workload)["containers"]:
            ports = {p["containerPort"] for p in container.get("ports", [])}
            ports |= {p["name"] for p in container.get("ports", []) if "name" in p}
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(kind, {})
                for action in ("httpGet", "tcpSocket"):
                    if action in probe:
                        probed += 1
                        assert probe[action]["port"] in ports, (container["name"], kind)
    assert probed > 0


def test_the_app_is_probed_on_its_health_endpoints_and_ingest_on_its_metrics() -> None:
    [app] = pod_spec(named("Deployment", "app"))["containers"]
    assert app["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert app["livenessProbe"]["httpGet"]["path"] == "/health/live"
    [ingest] = pod_spec(named("StatefulSet", "ingest"))["containers"]
    assert ingest["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    [worker] = pod_spec(named("Deployment", "worker"))["containers"]
    assert worker["command"] == ["iotdeck", "worker"]
    assert worker["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}


def test_grace_period_outlasts_the_pre_stop_sleep_and_the_shutdown_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    long_running = 0
    for workload, container in iotdeck_containers():
        if workload["kind"] == "Job":
            continue
        long_running += 1
        settings = read_settings(environment_of(container), monkeypatch)
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        grace = pod_spec(workload)["terminationGracePeriodSeconds"]
        assert grace > int(command[1]) + settings.shutdown_timeout, workload["metadata"]["name"]
    assert long_running == 4  # app, ingest, worker, mqtt-broker


def test_every_pod_runs_unprivileged_on_a_read_only_root() -> None:
    for workload in workloads():
        spec = pod_spec(workload)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            own = container["securityContext"]
            assert own["allowPrivilegeEscalation"] is False
            assert own["capabilities"]["drop"] == ["ALL"]
            assert own["readOnlyRootFilesystem"] is True
            assert container["resources"]["requests"] and container["resources"]["limits"]


def test_iotdeck_containers_can_write_their_data_folder_and_tmp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for _, container in iotdeck_containers():
        settings = read_settings(environment_of(container), monkeypatch)
        mounted = {mount["mountPath"] for mount in container["volumeMounts"]}
        assert {str(settings.data_dir), "/tmp"} <= mounted, container["name"]


# settings ------------------------------------------------------------------------------------


def test_every_iotdeck_variable_is_a_real_setting() -> None:
    names = set(named("ConfigMap", "iotdeck-config")["data"])
    names |= set(named("Secret", "iotdeck-secrets")["stringData"])
    for _, container in iotdeck_containers():
        names |= {item["name"] for item in container.get("env", [])}
    assert unknown_settings(names) == []


def test_every_iotdeck_process_reads_its_environment_as_meant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for workload, container in iotdeck_containers():
        settings = read_settings(environment_of(container), monkeypatch)
        assert settings.log_format == "json"
        assert settings.timescaledb == "on"
        assert settings.redis_url and settings.mqtt_url and not settings.demo
        if workload["metadata"]["name"] == "mqtt-broker":
            assert settings.broker_host == "0.0.0.0"
            assert "mqtt-broker" in settings.broker_hostnames


def test_the_secret_template_cannot_run_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its placeholder JWT secret is refused, so a forgotten template stops `serve` at once."""
    [app] = pod_spec(named("Deployment", "app"))["containers"]
    settings = read_settings(environment_of(app), monkeypatch)
    with pytest.raises(ConfigError, match="IOTDECK_JWT_SECRET"):
        settings.ensure_secret()


# the Prometheus Operator's ServiceMonitor (no schema here): the shape we rely on ---------------


def test_service_monitors_scrape_every_process_as_the_alerts_name_them() -> None:
    jobs = {
        job["job_name"] for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    }
    scraped = {}
    for monitor in of_kind("ServiceMonitor"):
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(monitor["spec"]) == {"selector", "endpoints"}
        services = [
            s
            for s in of_kind("Service")
            if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert services, monitor["metadata"]["name"]
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["path"] == "/metrics"
            [relabel] = endpoint["relabelings"]
            assert relabel["targetLabel"] == "job" and relabel["replacement"] in jobs
            for service in services:
                assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
                scraped[service["metadata"]["name"]] = relabel["replacement"]
    assert scraped == {"app": "serve", "ingest": "ingest", "worker": "worker"}


# what kubectl makes of the folder ----------------------------------------------------------------


def _kustomize(folder: Path) -> list[Manifest]:
    assert KUBECTL is not None
    rendered = subprocess.run(
        [KUBECTL, "kustomize", str(folder)], capture_output=True, text=True, check=True
    ).stdout
    return [obj for obj in yaml.safe_load_all(rendered) if obj]


@pytest.mark.skipif(KUBECTL is None, reason="no kubectl: `kubectl kustomize` cannot be run")
def test_kubectl_renders_the_folder_into_valid_objects() -> None:
    rendered = _kustomize(K8S)
    assert len(rendered) == len(OBJECTS)
    for obj in rendered:
        if obj["apiVersion"] != "monitoring.coreos.com/v1":
            kubernetes_validate.validate(obj, VERSIONS[-1], strict=True)


def documented_overlay() -> dict[str, Any]:
    """The overlay kustomization.yaml that docs/deployment.md tells operators to write."""
    blocks = re.findall(r"```yaml\n(.*?)```", DEPLOYMENT_DOC.read_text(), flags=re.DOTALL)
    [overlay] = [block for block in blocks if block.startswith(OVERLAY_MARK)]
    return yaml.safe_load(overlay)


@pytest.mark.skipif(KUBECTL is None, reason="no kubectl: `kubectl kustomize` cannot be run")
def test_the_documented_overlay_replaces_secrets_image_and_names(tmp_path: Path) -> None:
    overlay = documented_overlay()
    overlay["resources"] = [os.path.relpath(K8S, tmp_path)]  # kustomize wants it relative
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    secret = "ab" * 32
    (tmp_path / "iotdeck-secrets.env").write_text(f"IOTDECK_JWT_SECRET={secret}\n")
    (tmp_path / "timescaledb.env").write_text("POSTGRES_PASSWORD=cd\n")
    rendered = {(obj["kind"], obj["metadata"]["name"]): obj for obj in _kustomize(tmp_path)}
    replaced = rendered["Secret", "iotdeck-secrets"]
    assert base64.b64decode(replaced["data"]["IOTDECK_JWT_SECRET"]).decode() == secret
    assert "stringData" not in replaced  # the template's placeholders are gone
    app = pod_spec(rendered["Deployment", "app"])["containers"][0]
    assert app["image"] == "registry.example.com/iotdeck:0.1.0"
    assert {"secretRef": {"name": "iotdeck-secrets"}} in app["envFrom"]
    for name in ("app", "app-metrics"):
        spec = rendered["Ingress", name]["spec"]
        assert spec["rules"][0]["host"] == spec["tls"][0]["hosts"][0] == "iot.company.com"
    config = rendered["ConfigMap", "iotdeck-config"]["data"]
    assert config["IOTDECK_BROKER_HOSTNAMES"].startswith("mqtt.company.com,mqtt-broker,")
