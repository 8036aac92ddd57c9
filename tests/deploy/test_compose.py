"""docker-compose.yml holds together, checked without Docker (the development machines have
no engine): every file it mounts exists, every service, volume and network it names is
declared, every IOTDECK_* variable is a real setting and reads as meant, the iotdeck
processes get the time to stop, Prometheus and Grafana find what they look for; and Caddy,
run for real with the repository's Caddyfile, sends /grafana/ to Grafana with its prefix
and keeps /metrics inside."""

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.caddy import CADDY, MISSING, caddy, internal_root
from tests.deploy.environment import read_settings, unknown_settings
from tests.deploy.monitoring import PROMETHEUS_CONFIG, PROVISIONING
from tests.receivers import Receivers

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")
GRAFANA_PREFIX = "/grafana"


def interpolate(value: str, given: Mapping[str, str]) -> str:
    """`value` as compose reads it when the operator set `given`: their value, else the
    default, else (a required variable) a sample."""

    def replace(match: re.Match[str]) -> str:
        name, operator, default = match.groups()
        if name in given:
            return given[name]
        return default if operator in {":-", "-"} else f"sample-{name.lower()}"

    return VARIABLE.sub(replace, value)


def environment(service: str, given: Mapping[str, str] | None = None) -> dict[str, str]:
    """A service's environment, interpolated."""
    raw = SERVICES[service].get("environment", {})
    return {name: interpolate(str(value), given or {}) for name, value in raw.items()}


def iotdeck_services(command: str | None = None) -> list[str]:
    """The services running `iotdeck` (that subcommand only, when given)."""
    return [
        name
        for name, service in SERVICES.items()
        if service.get("command", [""])[0] == "iotdeck"
        and (command is None or service["command"][1] == command)
    ]


def mounts(service: str) -> dict[str, str]:
    """A service's volumes: source -> target."""
    pairs = (entry.split(":")[:2] for entry in SERVICES[service].get("volumes", []))
    return {source: target for source, target in pairs}


def seconds(duration: str) -> float:
    """A compose duration such as `30s` or `1m30s`, in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts is not None and duration, duration
    return sum(int(n) * units[u] for n, u in zip(parts.groups(), "hms", strict=True) if n)


def addressed_as(name: str) -> list[str]:
    """The services another container reaches by DNS `name`: its own or a network alias."""
    found = []
    for service, spec in SERVICES.items():
        networks = spec.get("networks", {})
        aliases = [
            alias
            for network in (networks.values() if isinstance(networks, dict) else [])
            for alias in (network or {}).get("aliases", [])
        ]
        if name == service or name in aliases:
            found.append(service)
    return found


# references --------------------------------------------------------------------------------


def test_every_mounted_file_or_folder_exists() -> None:
    mounted = [
        source
        for service in SERVICES
        for source in mounts(service)
        if source.startswith(("./", "../"))
    ]
    assert len(mounted) >= 5  # Caddyfile, Prometheus' two files, Grafana's two folders
    for source in mounted:
        assert (ROOT / source).exists(), source


def test_every_service_volume_and_network_named_is_declared() -> None:
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, name
        for needed in service.get("depends_on", {}):
            assert needed in SERVICES, (name, needed)
        for source in mounts(name):
            if not source.startswith(("./", "../", "/")):
                assert source in COMPOSE["volumes"], (name, source)
        for network in service.get("networks", []):
            assert network == "default" or network in COMPOSE["networks"], (name, network)


def test_every_iotdeck_variable_is_a_real_setting() -> None:
    names = {name for service in SERVICES for name in environment(service)}
    assert "IOTDECK_METRICS_PORT" in names
    assert unknown_settings(names) == []


def test_required_variables_are_explained_in_the_deployment_guide() -> None:
    required = {m[0] for m in VARIABLE.findall(COMPOSE_FILE.read_text()) if m[1] in {":?", "?"}}
    assert {"POSTGRES_PASSWORD", "IOTDECK_JWT_SECRET", "GRAFANA_ADMIN_PASSWORD"} <= required
    guide = DEPLOYMENT_DOC.read_text()
    for name in required:
        assert name in guide, name


# the iotdeck processes ------------------------------------------------------------------------


def test_iotdeck_processes_read_their_environment_as_meant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected = {"migrate", "mqtt-broker", "app", "ingest-1", "ingest-2", "worker"}
    assert set(iotdeck_services()) >= expected
    for name in iotdeck_services():
        settings = read_settings(environment(name), monkeypatch)
        assert settings.log_format == "json" and not settings.demo, name
        assert settings.timescaledb == "on" and settings.redis_url, name
        assert urlsplit(settings.mqtt_url).hostname == "mqtt-broker", name
        # Docker's SIGKILL comes after stop_grace_period: the process must be done by then
        assert seconds(SERVICES[name]["stop_grace_period"]) >= settings.shutdown_timeout + 5


def test_platform_processes_may_use_the_brokers_tls_listener(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PLATFORM_MQTT_URL=mqtts://mqtt-broker:8883 works whatever names devices use: the
    broker's certificate always names `mqtt-broker` too."""
    given = {
        "PLATFORM_MQTT_URL": "mqtts://mqtt-broker:8883",
        "IOTDECK_BROKER_HOSTNAMES": "mqtt.example.com",
    }
    broker = read_settings(environment("mqtt-broker", given), monkeypatch)
    assert broker.broker_hostnames == ["mqtt.example.com", "mqtt-broker"]
    assert broker.broker_host == "0.0.0.0"
    assert {"1883:1883", "8883:8883"} <= set(SERVICES["mqtt-broker"]["ports"])
    for name in iotdeck_services("ingest"):
        settings = read_settings(environment(name, given), monkeypatch)
        assert settings.mqtt_url == "mqtts://mqtt-broker:8883"


def test_ingest_workers_have_fixed_distinct_client_ids_under_one_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each worker's client id names a persistent session that the broker keeps dealing
    shared messages to: a recreated container must come back under the same id, which a
    `--scale` replica (its id from a new container's hostname) would not."""
    workers = iotdeck_services("ingest")
    assert len(workers) >= 2
    client_ids = set()
    for name in workers:
        assert "deploy" not in SERVICES[name] and "scale" not in SERVICES[name]
        settings = read_settings(environment(name), monkeypatch)
        assert settings.ingest_shared_group
        client_ids.add(environment(name)["IOTDECK_INGEST_CLIENT_ID"])
        # Prometheus reaches /metrics from its own container
        assert settings.host == "0.0.0.0"
        assert str(settings.metrics_port) in SERVICES[name]["expose"]
    assert len(client_ids) == len(workers)
    assert sorted(addressed_as("ingest")) == sorted(workers)


def test_the_app_believes_only_caddys_network() -> None:
    subnet = COMPOSE["networks"]["proxy"]["ipam"]["config"][0]["subnet"]
    assert environment("app")["IOTDECK_TRUSTED_PROXIES"] == interpolate(subnet, {})
    members = [name for name, s in SERVICES.items() if "proxy" in s.get("networks", [])]
    assert sorted(members) == ["app", "proxy"]
    assert "ports" not in SERVICES["app"]


# Prometheus and Grafana ------------------------------------------------------------------------


def test_prometheus_finds_every_target_and_its_rules() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = 0
    for job in config["scrape_configs"]:
        for discovery in job.get("dns_sd_configs", []):
            for name in discovery["names"]:
                services = addressed_as(name)
                assert services, name
                for service in services:
                    assert str(discovery["port"]) in SERVICES[service]["expose"], service
                    targets += 1
    assert targets >= 4  # the app, two ingest workers and the workers
    mounted = mounts("prometheus")
    config_target = mounted["./deploy/prometheus/prometheus.yml"]
    for rules in config["rule_files"]:
        assert str(Path(config_target).parent / rules) in mounted.values()
    # its UI answers on the host's loopback only
    assert SERVICES["prometheus"]["ports"] == ["127.0.0.1:9090:9090"]


def test_grafana_is_provisioned_and_served_under_its_prefix() -> None:
    grafana = environment("grafana", {"SITE_ADDRESS": "iot.example.com"})
    mounted = mounts("grafana")
    assert mounted["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    for path in (PROVISIONING / "datasources").glob("*.yml"):
        for source in yaml.safe_load(path.read_text())["datasources"]:
            url = urlsplit(source["url"])
            assert addressed_as(str(url.hostname)) == ["prometheus"]
            assert url.port == 9090
    for path in (PROVISIONING / "dashboards").glob("*.yml"):
        for provider in yaml.safe_load(path.read_text())["providers"]:
            assert provider["options"]["path"] == mounted["./deploy/grafana/dashboards"]
    assert grafana["GF_SERVER_ROOT_URL"] == f"https://iot.example.com{GRAFANA_PREFIX}/"
    assert grafana["GF_SERVER_SERVE_FROM_SUB_PATH"] == "true"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "sample-grafana_admin_password"
    upstream = environment("proxy")["GRAFANA_UPSTREAM"]
    assert addressed_as(upstream.split(":")[0]) == ["grafana"]
    assert f"path {GRAFANA_PREFIX} {GRAFANA_PREFIX}/*" in CADDYFILE.read_text()
    # Caddy reaches Grafana on a network of their own, not on the app's trusted one
    assert "proxy" not in SERVICES["grafana"]["networks"]


# Caddy for real --------------------------------------------------------------------------------


@contextmanager
def upstream() -> Iterator[Receivers]:
    """A plain HTTP server standing in for one of Caddy's upstreams, for the block."""
    server = Receivers()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.skipif(CADDY is None, reason=MISSING)
def test_caddy_sends_grafana_its_prefix_and_keeps_metrics_inside(tmp_path: Path) -> None:
    with (
        upstream() as app,
        upstream() as grafana,
        caddy(
            tmp_path, app.address, None, internal_root(tmp_path), grafana=grafana.address
        ) as proxy,
    ):
        with httpx.Client(base_url=proxy.https, verify=proxy.trusted) as browser:
            assert browser.get("/grafana/login").status_code == 200
            assert browser.get(GRAFANA_PREFIX).status_code == 200
            assert browser.get("/metrics").status_code == 404
            assert browser.get("/metrics/").status_code == 404
            assert browser.get("/devices").status_code == 200
    assert [r.path for r in grafana.received] == ["/grafana/login", GRAFANA_PREFIX]
    assert not [path for path in (r.path for r in app.received) if path.startswith("/metrics")]
    assert "/devices" in [r.path for r in app.received]
