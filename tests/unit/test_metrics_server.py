"""The metrics port of `iotdeck ingest`: /metrics and /health/live, off at 0, clear when taken."""

import socket

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core.config import ConfigError
from app.core.metrics_server import serving
from bench.services import free_port


def test_it_serves_metrics_and_liveness_and_nothing_else() -> None:
    port = free_port()
    with serving("127.0.0.1", port):
        base = f"http://127.0.0.1:{port}"
        metrics = httpx.get(f"{base}/metrics", timeout=5)
        live = httpx.get(f"{base}/health/live", timeout=5)
        other = httpx.get(f"{base}/health/ready", timeout=5)
    names = {family.name for family in text_string_to_metric_families(metrics.text)}
    assert {"telemetry_points_ingested", "ingest_backlog_messages"} <= names
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    assert other.status_code == 404
    with pytest.raises(httpx.TransportError):  # closed with the block
        httpx.get(f"{base}/health/live", timeout=2)


def test_port_zero_serves_nothing() -> None:
    with serving("127.0.0.1", 0) as server:
        assert server is None


def test_a_taken_port_is_a_config_error_naming_the_variable() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match="IOTDECK_METRICS_PORT"), serving("127.0.0.1", port):
            pass
