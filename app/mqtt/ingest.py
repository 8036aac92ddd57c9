"""The ingest worker: MQTT telemetry and status -> storage, acknowledged only after commit.

Threads: paho's network thread (its `Link`, app/mqtt/link.py) only queues what arrives; a
parser thread cuts it into batches and validates them; a committer thread has each batch
written in one transaction (`app/services/ingest.py`), then sends its PUBACKs in arrival
order (parsing the next batch overlaps the database's work on this one). A message is
therefore acknowledged only once its rows are durable; if the process dies first, the
broker redelivers it (persistent session) and the primary key (device_id, metric_name,
time) turns the second copy into a no-op. While the database is down the batch is retried
with backoff and nothing new is acknowledged, so the backlog waits in the broker. A batch
that fails for any other reason is committed in halves, down to single messages: the one
that still fails alone is rejected as poison (and acknowledged), the others are stored.
"""

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from paho.mqtt.client import Client, MQTTMessage
from tenacity import RetryCallState, RetryError

from app.core import db, logs, metrics, retries, tracing
from app.core.models import DeviceStatus
from app.mqtt.bulk_client import BulkClient
from app.mqtt.connection import BrokerAddress
from app.mqtt.link import Link
from app.mqtt.payloads import (
    Rejected,
    device_id_from_topic,
    parse_answer,
    parse_status,
    parse_telemetry,
)
from app.mqtt.rate_limit import RateLimiter
from app.mqtt.topics import INGEST_TOPICS
from app.services import ingest
from app.services.commands import Answer
from app.services.last_seen import LastSeen
from app.services.rollups import MarkedHours
from app.services.telemetry import Point

logger = logging.getLogger(__name__)

# labelled children resolved once: labels() costs microseconds per call on the hot path
_RECEIVED = {
    kind: metrics.MESSAGES_RECEIVED.labels(kind) for kind in ("telemetry", "status", "ack")
}
_RATE_LIMITED = metrics.RATE_LIMIT_REFUSALS.labels("mqtt")


@dataclass(frozen=True)
class Received:
    """One MQTT message as the network thread hands it over."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    arrival: datetime


@dataclass
class _Parsed:
    """A batch after validation, on its way from the parser to the committer."""

    messages: list[Received]
    correlation_id: str  # on every line about the batch, and on its bus messages
    candidates: list[tuple[Received, uuid.UUID, str, object]] = field(default_factory=list)
    rejected: int = 0
    # decided once, on the first commit attempt: a retried batch must not spend tokens twice
    over_limit: set[int] | None = None  # indexes into candidates
    reported: set[uuid.UUID] = field(default_factory=set)  # their rate_limited_at to set
    # the candidates the last attempt did not store (unknown device, over the limit)
    skipped: set[int] | None = None
    began: int = field(default_factory=time.time_ns)  # its ingest.batch span's start


@dataclass
class BatchResult:
    """What one committed batch changed; handed to listeners (bus, rule engine)."""

    points: list[Point] = field(default_factory=list)
    status_changes: dict[uuid.UUID, DeviceStatus] = field(default_factory=dict)
    rejected: int = 0

    def add(self, part: "BatchResult") -> None:
        """Count in what a part of the same batch, committed on its own, changed."""
        self.points.extend(part.points)
        self.status_changes.update(part.status_changes)
        self.rejected += part.rejected


class _Abandoned(Exception):
    """Shutting down while the database is away: the batch stays in the broker."""


def _culprit(parsed: _Parsed) -> Received | None:
    """The message to blame when `parsed` failed for good: the only one it tried to store."""
    if len(parsed.candidates) == 1 and not parsed.skipped:
        return parsed.candidates[0][0]
    return None


def _halves(parsed: _Parsed) -> list[_Parsed]:
    """The candidates the failed attempt tried to store, in two batches to commit apart.

    The skipped ones (unknown device, over the limit) were counted already: left out.
    """
    skipped = parsed.skipped or set()
    storable = [c for i, c in enumerate(parsed.candidates) if i not in skipped]
    middle = (len(storable) + 1) // 2
    return [
        _Parsed(
            messages=[candidate[0] for candidate in half],
            correlation_id=parsed.correlation_id,
            candidates=half,
            # screened already: policing again would spend the devices' tokens twice
            over_limit=None if parsed.skipped is None else set(),
            reported=parsed.reported,
        )
        for half in (storable[:middle], storable[middle:])
        if half
    ]


def _error_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _claimed_device(topic: str) -> str | None:
    """The device id a topic names (`devices/{id}/...`), as sent: maybe no device's."""
    parts = topic.split("/")
    return parts[1] if len(parts) > 2 else None


def _reject(message: Received, reason: str, detail: str, *, log: bool = True) -> None:
    metrics.TELEMETRY_REJECTED.labels(reason).inc()
    if log:
        logger.warning(
            "rejected message on %s: %s: %s",
            message.topic,
            reason,
            detail,
            extra={"device_id": _claimed_device(message.topic)},
        )


class IngestWorker:
    """Consumes device telemetry and status from the broker into storage."""

    def __init__(
        self,
        address: BrokerAddress,
        *,
        client_id: str,
        shared_group: str = "",
        batch_messages: int = 2000,
        batch_ms: int = 200,
        rate_limit: str = "10/second",
        rate_burst: int = 600,
        retention_days: int = 90,
        last_seen_flush: float = 5.0,
    ) -> None:
        self.address = address
        self._max_age = timedelta(days=retention_days)  # older telemetry would be purged at once
        self._batch_messages = batch_messages
        self._batch_seconds = batch_ms / 1000
        self._inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._known = ingest.KnownDevices()
        # what batches would otherwise write again and again: devices' last contact
        # (written every `last_seen_flush` seconds) and rollup marks of open hours
        self._last_seen = LastSeen(last_seen_flush)
        self._marked = MarkedHours()
        self._limiter = RateLimiter(rate_limit, rate_burst)
        self._listeners: list[Callable[[BatchResult], None]] = []
        # messages taken from the broker, and those of them committed and acknowledged
        self._taken = 0
        self._finished = 0
        # parsing batch N+1 overlaps the database writing batch N; one parsed batch waits
        self._parsed: queue.Queue[_Parsed | None] = queue.Queue(maxsize=1)
        self._parser = threading.Thread(target=self._parse_loop, name="ingest-parser", daemon=True)
        self._committer = threading.Thread(
            target=self._commit_loop, name="ingest-committer", daemon=True
        )
        prefix = f"$share/{shared_group}/" if shared_group else ""
        self._link = Link(
            address,
            client_id,
            name="ingest",
            persistent=True,
            subscriptions=[prefix + topic for topic in INGEST_TOPICS],
            gauge="ingest",
            client_class=BulkClient,
        )
        self._client = self._link.client
        self._client.manual_ack_set(True)
        self._client.on_message = self._on_message
        # commits wait for a database that is away; anything else fails at once
        self._retrying = retries.retry_while(
            db.is_transient, stopping=self._stopping, before_sleep=self._storage_failed
        )

    @property
    def connected(self) -> bool:
        """True while connected and subscribed."""
        return self._link.ready

    def add_listener(self, listener: Callable[[BatchResult], None]) -> None:
        """Call `listener` (on the committer thread) after each committed batch."""
        self._listeners.append(listener)

    def start(self) -> None:
        """Connect and start consuming in background threads."""
        self._parser.start()
        self._committer.start()
        self._link.start()

    def wait_connected(self, timeout: float) -> bool:
        """Block until subscribed on the broker, or `timeout` seconds pass."""
        return self._link.wait_ready(timeout)

    def stop(self, timeout: float = 30.0) -> int:
        """Take no more messages; commit and acknowledge those taken, write devices' last
        contact, then disconnect.

        Returns how many taken messages were left unacknowledged (0: none), because the
        database was down or `timeout` passed: the broker redelivers them to the next session.
        """
        self._stopping.set()
        deadline = time.monotonic() + timeout
        self._parser.join(timeout)
        self._committer.join(max(0.0, deadline - time.monotonic()))
        self._link.stop()
        return self._taken - self._finished

    # network thread -------------------------------------------------------------------

    def _on_message(self, _client: Client, _userdata: object, message: MQTTMessage) -> None:
        if self._stopping.is_set():
            return  # left unacknowledged: the broker redelivers it to the next session
        self._inbox.put(
            Received(message.topic, message.payload, message.mid, message.qos, datetime.now(UTC))
        )
        self._taken += 1
        metrics.INGEST_BACKLOG.inc()

    # parser and committer threads -------------------------------------------------------

    def _collect(self) -> list[Received]:
        try:
            first = self._inbox.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self._batch_seconds
        while len(batch) < self._batch_messages:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self._inbox.get(timeout=remaining)
                    if remaining > 0
                    else self._inbox.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _parse_loop(self) -> None:
        while True:
            batch = self._collect()
            if batch:
                # one id per batch, from its rejections to the alerts its points fire
                with logs.bind(correlation_id=logs.new_id()):
                    self._parsed.put(self._parse(batch))
            elif self._stopping.is_set() and self._inbox.empty():
                self._parsed.put(None)
                return

    def _commit_loop(self) -> None:
        abandoned = False
        while (parsed := self._next_parsed()) is not None:
            with (
                logs.bind(correlation_id=parsed.correlation_id),
                # the root of the trace of everything the batch causes (app/core/tracing.py)
                tracing.span(
                    "ingest.batch",
                    parsed.correlation_id,
                    begins=True,
                    kind=tracing.SpanKind.CONSUMER,
                    start_time=parsed.began,
                    messages=len(parsed.messages),
                ),
            ):
                # after an abandoned batch nothing more is acknowledged: acks stay in order
                abandoned = abandoned or not self._process(parsed)
                if not abandoned:
                    self._finished += len(parsed.messages)
                else:
                    tracing.failed("left unacknowledged in the broker at shutdown")
        self._flush_last_seen(force=True)  # stopping: before stop() returns

    def _next_parsed(self) -> "_Parsed | None":
        """The next parsed batch (None: stopping); meanwhile writes last contacts when due."""
        while True:
            self._flush_last_seen()
            try:
                return self._parsed.get(timeout=self._last_seen.due_in())
            except queue.Empty:
                continue

    def _flush_last_seen(self, *, force: bool = False) -> None:
        """Write devices' last contact if due; kept for the next try if the database is away."""
        try:
            self._last_seen.flush(db.get_engine(), force=force)
        except Exception as error:
            transient = db.is_transient(error)
            logger.warning(
                "could not write devices' last contact (%s); trying again in %.0f s",
                db.short_error(error) if transient else _error_line(error),
                self._last_seen.interval,
                exc_info=not transient,
            )

    def _process(self, parsed: "_Parsed") -> bool:
        """Commit (`_store`), then acknowledge; False if abandoned at shutdown."""
        try:
            result = self._store(parsed)
        except _Abandoned:
            # shutting down with the database away: leave the batch in the broker
            return False
        tracing.annotate(points=len(result.points), rejected=result.rejected)
        # PUBACKs in arrival order, as MQTT requires; QoS 0 messages take none
        self._client.ack_many([m.mid for m in parsed.messages if m.qos == 1])
        metrics.INGEST_BACKLOG.dec(len(parsed.messages))
        for listener in self._listeners:
            try:
                listener(result)
            except Exception:
                logger.exception("ingest listener failed")
        return True

    def _store(self, parsed: "_Parsed", *, whole: bool = True) -> BatchResult:
        """Commit `parsed`, retrying while the database is away; split it if it fails for good.

        An error that waiting cannot cure (a value the database refuses, a bug) comes from
        some message of the batch: the halves are committed apart, down to single
        messages, and one that still fails alone is rejected as poison. It is acknowledged
        with the others, so the broker does not hand it over again and again.
        """
        try:
            return self._retrying(self._commit, parsed)
        except RetryError:
            raise _Abandoned from None
        except Exception as error:
            failure = error
        if whole:
            logger.error(
                "a batch of %d messages failed (%s); committing it in parts to find the culprit",
                len(parsed.messages),
                _error_line(failure),
                exc_info=failure,
            )
        if (culprit := _culprit(parsed)) is not None:
            metrics.INGEST_POISON.inc()
            _reject(culprit, "poison", f"it fails even alone: {_error_line(failure)}")
            return BatchResult(rejected=parsed.rejected + 1)
        result = BatchResult(rejected=parsed.rejected + len(parsed.skipped or ()))
        for half in _halves(parsed):
            result.add(self._store(half, whole=False))
        return result

    def _storage_failed(self, state: RetryCallState) -> None:
        """Before each wait for the database: count and say it."""
        metrics.STORAGE_RETRIES.inc()
        parsed: _Parsed = state.args[0]
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning(
            "storage failed (%s); retrying the batch of %d in %.1f s",
            db.short_error(error) if error is not None else "?",
            len(parsed.messages),
            wait,
        )

    def _commit(self, parsed: "_Parsed") -> BatchResult:
        """One attempt at storing `parsed` (`_write`), as an ingest.commit span."""
        with tracing.span("ingest.commit", parsed.correlation_id, messages=len(parsed.messages)):
            result = self._write(parsed)
            tracing.annotate(points=len(result.points), rejected=result.rejected)
            return result

    def _write(self, parsed: "_Parsed") -> BatchResult:
        started = time.perf_counter()
        result = BatchResult(rejected=parsed.rejected)
        skipped = self._screen(parsed, result)
        committed = ingest.commit_batch(
            messages=[
                ingest.Message(device_id, kind, content, message.arrival, message.topic)
                for index, (message, device_id, kind, content) in enumerate(parsed.candidates)
                if index not in skipped
            ],
            rate_limited=parsed.reported,
            arrival=parsed.messages[-1].arrival,
            last_seen=self._last_seen,
            marked=self._marked,
        )
        metrics.INGEST_LAST_COMMIT.set_to_current_time()
        for message, refused in committed.refused_answers:
            answer: Answer = message.content  # type: ignore[assignment]
            metrics.COMMAND_ANSWERS_REJECTED.labels(refused).inc()
            logger.warning(
                "refused the answer on %s to command %s: %s",
                message.topic,
                answer.command_id,
                refused,
                extra={"device_id": message.device_id, "command_id": answer.command_id},
            )
        if committed.dropped_devices:
            self._known.forget(committed.dropped_devices)
        result.points = committed.points
        result.status_changes = committed.status_changes
        metrics.POINTS_INGESTED.inc(committed.stored)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        # the one line naming an accepted message's batch id: at DEBUG, it is every batch
        logger.debug(
            "batch of %d message(s) committed: %d point(s) stored, %d rejected",
            len(parsed.messages),
            committed.stored,
            result.rejected,
        )
        return result

    def _screen(self, parsed: "_Parsed", result: BatchResult) -> set[int]:
        """The candidates not to store: those of unknown devices or over their rate limit."""
        known = self._known.filter_known({c[1] for c in parsed.candidates})
        if parsed.over_limit is None:
            self._police(parsed, known)
        skipped = set(parsed.over_limit or ())  # already counted and reported by _police
        for index, (message, device_id, _kind, _content) in enumerate(parsed.candidates):
            if device_id not in known:
                _reject(message, "unknown_device", f"no device {device_id}")
                skipped.add(index)
        result.rejected += len(skipped)
        parsed.skipped = skipped
        return skipped

    def _police(self, parsed: "_Parsed", known: dict[uuid.UUID, str]) -> None:
        """Mark the candidates over their device's rate limit; count them, report some.

        Every message kind counts. A device's refusals are logged, and its rate_limited_at
        set, at most once a minute; the others are only counted.
        """
        now = time.monotonic()
        self._limiter.refresh(now, ingest.rate_overrides)
        parsed.over_limit = set()
        for index, (message, device_id, _kind, _content) in enumerate(parsed.candidates):
            device_type = known.get(device_id)
            if device_type is None or self._limiter.allow(device_id, device_type, now):
                continue
            parsed.over_limit.add(index)
            _RATE_LIMITED.inc()
            if not self._limiter.report_due(device_id, now):
                _reject(message, "rate_limited", "", log=False)
                continue
            parsed.reported.add(device_id)
            limit = self._limiter.limit_for(device_type)
            detail = f"over the limit of its type {device_type} ({limit}); for a minute, "
            _reject(message, "rate_limited", detail + "its further refusals are only counted")

    def _parse(self, batch: list[Received]) -> "_Parsed":
        """Each message validated into (message, device, kind, content); rejections counted."""
        parsed = _Parsed(messages=batch, correlation_id=logs.correlation_id() or logs.new_id())
        for message in batch:
            kind = message.topic.rsplit("/", 1)[-1]
            _RECEIVED[kind].inc()
            try:
                device_id = device_id_from_topic(message.topic)
                if kind == "telemetry":
                    content: object = parse_telemetry(
                        device_id, message.payload, message.arrival, self._max_age
                    )
                elif kind == "ack":
                    content = parse_answer(message.payload)
                else:
                    content = parse_status(message.payload)
            except Rejected as rejected:
                _reject(message, rejected.reason, rejected.detail)
                parsed.rejected += 1
                continue
            except Exception:  # a bug must cost one message, never the worker
                logger.exception(
                    "could not parse the message on %s",
                    message.topic,
                    extra={"device_id": _claimed_device(message.topic)},
                )
                _reject(message, "internal_error", "see the traceback above")
                parsed.rejected += 1
                continue
            parsed.candidates.append((message, device_id, kind, content))
        return parsed
