"""Prometheus metrics of this process, served at /metrics."""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

router = APIRouter(tags=["metrics"])

MESSAGES_RECEIVED = Counter(
    "mqtt_messages_received_total", "MQTT messages received by ingest", ["kind"]
)
POINTS_INGESTED = Counter(
    "telemetry_points_ingested_total", "Telemetry points committed (duplicates excluded)"
)
TELEMETRY_REJECTED = Counter(
    "telemetry_rejected_total", "Device messages refused whole, by reason", ["reason"]
)
BATCH_SECONDS = Histogram(
    "ingest_batch_seconds",
    "Time to write and commit one ingest batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
COMMAND_ANSWERS_REJECTED = Counter(
    "command_acks_rejected_total",
    "Device answers on devices/{id}/commands/ack refused, by reason",
    ["reason"],
)
COMMANDS_PUBLISHED = Counter("commands_published_total", "Commands handed to the broker")
STORAGE_RETRIES = Counter(
    "ingest_storage_retries_total", "Batch writes retried because the database failed"
)


@router.get("/metrics")
def metrics() -> Response:
    """Every metric of this process in Prometheus' text format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
