"""Prometheus metrics of this process, served at /metrics.

Every metric is defined here, so each process (`serve`, `ingest`) exposes the same names
(docs/operations.md lists them). Labels stay low-cardinality: a route template, a kind, a
reason, never a device id, a user or a raw path. Label values known in advance are created
at import, so their series exist (at 0) before the first event and `rate()` sees it.
"""

from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

router = APIRouter(tags=["metrics"])
# a `*_created` series beside every counter and histogram doubles the series and no query
# reads them
disable_created_metrics()

# --- HTTP and GraphQL (app/web/http_metrics.py, app/graphql/metrics.py) -----------------------

# web latency: a cached page or a small query takes milliseconds, a report seconds
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by method and route template",
    ["method", "route"],
    buckets=HTTP_BUCKETS,
)
GRAPHQL_OPERATIONS = Counter(
    "graphql_operations_total",
    "GraphQL operations by type (query, mutation, subscription) and result (ok, error), "
    "counted when they end",
    ["type", "result"],
)
GRAPHQL_SUBSCRIPTIONS_ACTIVE = Gauge(
    "graphql_subscriptions_active", "GraphQL subscriptions streaming now"
)
RATE_LIMIT_REFUSALS = Counter(
    "rate_limit_refusals_total",
    "Requests refused by a rate limit: http, graphql, signin (throttled sign-in), "
    "mqtt (device messages over their rate)",
    ["scope"],
)

# --- ingest (app/mqtt/ingest.py) ----------------------------------------------------------

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
STORAGE_RETRIES = Counter(
    "ingest_storage_retries_total", "Batch writes retried because the database failed"
)
INGEST_BACKLOG = Gauge(
    "ingest_backlog_messages", "Messages received from the broker and not yet committed and acked"
)
INGEST_LAST_COMMIT = Gauge(
    "ingest_last_commit_timestamp_seconds", "Unix time at which ingest last committed a batch"
)
INGEST_POISON = Counter(
    "ingest_poison_messages_total",
    "Messages rejected because their batch failed deterministically and they failed alone",
)
MQTT_CONNECTED = Gauge(
    "mqtt_connected",
    "1 while this process's MQTT client (ingest, dispatcher) is connected, else 0",
    ["client"],
)

# --- the bus (app/core/bus.py) -----------------------------------------------------------------

BUS_KINDS = ("telemetry", "alerts", "commands", "status", "other")
BUS_PUBLISHED = Counter(
    "bus_published_total", "Bus messages this process handed to its transport, by kind", ["kind"]
)
BUS_DELIVERED = Counter(
    "bus_delivered_total", "Bus messages handed to this process's local subscribers"
)
BUS_DROPPED = Counter("bus_dropped_total", "Bus messages a slow subscriber lost (oldest first)")
BUS_RECEIVED = Counter("bus_received_total", "Bus messages this process received")

# --- rules and alerts (app/workers/evaluation.py) -------------------------------------------------

EVALUATOR_LEADER = Gauge(
    "evaluator_leader", "1 while this process owns partitions and evaluates their rules"
)
PARTITIONS_CONFIGURED = Gauge(
    "partitions_configured", "IOTDECK_PARTITIONS: the partitions devices are spread over"
)
EVALUATOR_PARTITIONS = Gauge(
    "evaluator_partitions",
    "Partitions whose devices this process evaluates (app/workers/leases.py)",
)
EVALUATOR_LAG = Gauge(
    "evaluator_lag_seconds",
    "Age of the newest point of the last evaluated batch when its evaluation ended",
)
EVALUATOR_QUEUE_DEPTH = Gauge(
    "evaluator_queue_depth", "Bus messages waiting for the rule evaluator"
)
# a burst the evaluator's bus queue could not hold: the messages are replayed from storage
EVALUATOR_DROPPED_MESSAGES = Counter(
    "evaluator_dropped_messages_total",
    "Bus messages the rule evaluator's queue dropped (oldest first) in a burst",
)
EVALUATOR_DROPPED_POINTS = Counter(
    "evaluator_dropped_points_total",
    "Telemetry points in the bus messages the rule evaluator's queue dropped",
)
# the partitioned streams the evaluator reads (app/core/streams.py), per partition, as its owner
# sees them every few seconds
STREAM_LENGTH = Gauge(
    "stream_entries", "Entries in a partition's stream, read or not", ["partition"]
)
STREAM_UNDELIVERED = Gauge(
    "stream_undelivered_entries",
    "Entries of a partition's stream the rule evaluator has not read yet",
    ["partition"],
)
STREAM_PENDING = Gauge(
    "stream_pending_entries",
    "Entries of a partition's stream read and not acknowledged yet",
    ["partition"],
)
STREAM_OLDEST_PENDING = Gauge(
    "stream_oldest_pending_seconds",
    "Since the oldest unacknowledged entry of a partition's stream was read (0: none)",
    ["partition"],
)
_PER_PARTITION = (STREAM_LENGTH, STREAM_UNDELIVERED, STREAM_PENDING, STREAM_OLDEST_PENDING)


def forget_partition(partition: str) -> None:
    """Stop reporting a partition's stream (its new owner reports it, not a stale copy)."""
    for gauge in _PER_PARTITION:
        try:
            gauge.remove(partition)
        except KeyError:  # never reported here
            pass


STREAM_GAPS_HELD = Gauge(
    "stream_gaps_held",
    "Partitions whose committed points this process could not append yet (Redis away): "
    "kept as gaps, appended first when Redis answers",
)
STREAM_GAPS = Counter(
    "stream_gap_entries_total",
    "Gap entries read: appends that had failed, their points replayed from storage",
)
RULE_EVALUATIONS = Counter(
    "rule_evaluations_total", "Rules evaluated on a committed point, one per (point, rule)"
)
ALERTS_TRIGGERED = Counter(
    "alerts_triggered_total", "Alerts opened (committed), by severity", ["severity"]
)

# --- dispatchers (app/workers/notifications.py, app/workers/command_dispatch.py) ---

NOTIFICATION_CHANNELS = ("email", "webhook")
NOTIFICATION_ATTEMPTS = Counter(
    "notification_attempts_total",
    "Notification attempts by channel and outcome (sent, retry, failed)",
    ["channel", "outcome"],
)
NOTIFICATION_QUEUE_DEPTH = Gauge(
    "notification_queue_depth", "Notification deliveries due and not sent (whole deployment)"
)
NOTIFICATION_CIRCUIT_OPEN = Gauge(
    "notification_circuit_open",
    "Notification targets whose circuit breaker is open, by channel",
    ["channel"],
)
COMMANDS_PUBLISHED = Counter("commands_published_total", "Commands handed to the broker")
COMMAND_DISPATCH_PENDING = Gauge(
    "command_dispatch_pending",
    "Commands due for an online device and not yet confirmed by the broker (at most 500)",
)

# --- the database (app/core/db.py) -------------------------------------------------------------

DATABASE_UP = Gauge(
    "database_up", "1 when the last database check passed (and its breaker is closed), else 0"
)


class PoolCollector(Collector):
    """`db_pool_connections{state}`, read from the engine's pool at each scrape."""

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "db_pool_connections",
            "Database connections of this process: checked_out (in use, overflow included), "
            "idle (open in the pool), overflow (open beyond the pool's size)",
            labels=["state"],
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The family without samples: registering must not read a pool that is not there."""
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Connections checked out, idle in the pool, and open beyond its size (overflow)."""
        from app.core import db  # at scrape time: app.core.db imports this module

        family = self._family()
        try:
            pool = db.get_engine().pool
        except RuntimeError:  # no engine yet
            pool = None
        # pools without these counters (SQLite in memory, NullPool) report 0
        checked_out = getattr(pool, "checkedout", lambda: 0)()
        idle = getattr(pool, "checkedin", lambda: 0)()
        overflow = max(0, getattr(pool, "overflow", lambda: 0)())
        for state, value in (("checked_out", checked_out), ("idle", idle), ("overflow", overflow)):
            family.add_metric([state], value)
        yield family


REGISTRY.register(PoolCollector())


def _create_known_series() -> None:
    """Create the series whose label values are known, at 0 until their first event."""
    for severity in ("info", "warning", "critical"):
        ALERTS_TRIGGERED.labels(severity)
    for scope in ("http", "graphql", "signin", "mqtt"):
        RATE_LIMIT_REFUSALS.labels(scope)
    for kind in ("query", "mutation", "subscription"):
        for result in ("ok", "error"):
            GRAPHQL_OPERATIONS.labels(kind, result)
    for kind in BUS_KINDS:
        BUS_PUBLISHED.labels(kind)
    for channel in NOTIFICATION_CHANNELS:
        NOTIFICATION_CIRCUIT_OPEN.labels(channel)
        for outcome in ("sent", "retry", "failed"):
            NOTIFICATION_ATTEMPTS.labels(channel, outcome)


_create_known_series()


@router.get("/metrics")
def metrics() -> Response:
    """Every metric of this process in Prometheus' text format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
