"""OpenTelemetry spans from an MQTT batch to its alerts, notifications and commands.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set:
then `configure` installs the SDK with a batching OTLP/HTTP exporter, which reads the
standard OTEL_* variables itself (headers, timeout, compression, OTEL_BSP_*, the sampler
of OTEL_TRACES_SAMPLER). Otherwise `span` costs a function call and makes nothing.

The correlation id IS the trace id (docs/operations.md). The stages run in different
processes (ingest, the evaluator, the dispatchers) and pass nothing to each other but the
correlation id the logs already carry (`app.core.logs`), so each stage rebuilds its parent from
it: trace id = the id's 32 hex digits, span id = its last 16. The stage that begins the
id (`begins=True`: an ingest batch, a clock-driven evaluation) is given exactly those ids,
so the others hang below it in one tree. Every process asks the same sampler about the
same trace id, so a trace is kept or dropped whole. An id that is not 32 lowercase hex
digits (an X-Request-ID a client chose) starts a trace of its own, the id in the
`iotdeck.correlation_id` attribute.
"""

import atexit
import contextlib
import contextvars
import logging
import os
import re
import threading
from collections.abc import Iterator

from opentelemetry import context, trace
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

from app.core.redaction import redacted

logger = logging.getLogger(__name__)

ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
TRACE_ID = re.compile("[0-9a-f]{32}")
PREFIX = "iotdeck."  # of every attribute our spans carry
# at exit, the spans still queued get this long: a collector that is away must not hold
# the process past its graceful stop (IOTDECK_SHUTDOWN_TIMEOUT leaves 5 s of margin)
EXIT_FLUSH_SECONDS = 2.0

_CORRELATION = context.create_key("iotdeck-correlation-id")  # of the current span
_chosen: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "iotdeck_trace_ids", default=None
)
_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None  # None: tracing is off


class _Ids(RandomIdGenerator):
    """Random ids, except those `span` chose for the first span of a correlation id.

    The chosen ones are ids of `logs.new_id`, random in every digit, as the W3C random
    flag that RandomIdGenerator sets on the trace promises.
    """

    def generate_trace_id(self) -> int:
        chosen = _chosen.get()
        return chosen[0] if chosen is not None else super().generate_trace_id()

    def generate_span_id(self) -> int:
        chosen = _chosen.get()
        return chosen[1] if chosen is not None else super().generate_span_id()


def configure(service_name: str) -> bool:
    """Export spans over OTLP/HTTP if an endpoint is configured; whether they are exported.

    Once per process, before the work starts (serve, ingest). OTEL_SERVICE_NAME (or
    service.name in OTEL_RESOURCE_ATTRIBUTES) wins over `service_name`; OTEL_SDK_DISABLED
    turns it all off.
    """
    global _provider, _tracer  # noqa: PLW0603 - one provider per process
    if _provider is not None:
        return True
    endpoint = next((os.environ[name] for name in ENDPOINTS if os.environ.get(name)), None)
    if endpoint is None or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    # imported here: requests and protobuf load only in a process that exports
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    named = OTELResourceDetector().detect().attributes.get(SERVICE_NAME) or service_name
    resource = Resource.create({SERVICE_NAME: named})
    # our own flush at exit, bounded; the SDK's would wait up to 30 s for a dead collector
    _provider = TracerProvider(resource=resource, id_generator=_Ids(), shutdown_on_exit=False)
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)
    _tracer = _provider.get_tracer("iotdeck")
    atexit.register(shutdown)
    logger.info("tracing: spans of %s exported to %s", named, redacted(endpoint))
    return True


def shutdown() -> None:
    """Send the spans still queued (for at most EXIT_FLUSH_SECONDS), then stop exporting."""
    global _provider, _tracer
    if _provider is None:
        return
    provider, _provider, _tracer = _provider, None, None
    # in a thread of its own: the SDK's flush takes no timeout; a daemon dies with the process
    flushing = threading.Thread(target=provider.shutdown, name="tracing-shutdown", daemon=True)
    flushing.start()
    flushing.join(EXIT_FLUSH_SECONDS)


def trace_id(correlation_id: str | None) -> int | None:
    """The trace id a correlation id stands for, if it is one: 32 lowercase hex digits.

    Lowercase only, as W3C trace ids are written: the id and the trace id then read the same.
    """
    if correlation_id is None or not TRACE_ID.fullmatch(correlation_id):
        return None
    return int(correlation_id, 16) or None  # all zeros is no valid trace id


def _span_id(number: int) -> int:
    """The span id of a correlation id's first span: the trace id's low 64 bits."""
    return number & 0xFFFF_FFFF_FFFF_FFFF or 1


def _kept(number: int, name: str) -> bool:
    """Whether this process's sampler keeps trace `number` when it begins with no parent.

    What the process that began the trace decided, provided both read the same
    OTEL_TRACES_SAMPLER: the ratio sampler decides on the trace id alone.
    """
    provider = _provider  # None once shut down (at exit): nothing is kept then
    if provider is None:
        return False
    return provider.sampler.should_sample(context.Context(), number, name).decision.is_sampled()


def _parent(
    name: str, correlation_id: str | None, number: int | None, begins: bool
) -> tuple[context.Context | None, tuple[int, int] | None]:
    """What the span hangs below (None: the current span), and the ids `_Ids` must give it."""
    if correlation_id is not None and context.get_value(_CORRELATION) == correlation_id:
        return None, None  # inside a span of the same id (alert.open in rules.evaluate)
    if number is None:
        return context.Context(), None  # a trace of its own
    if begins:
        return context.Context(), (number, _span_id(number))  # the root the others point at
    flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if _kept(number, name) else 0)
    remote = trace.SpanContext(number, _span_id(number), is_remote=True, trace_flags=flags)
    return trace.set_span_in_context(trace.NonRecordingSpan(remote), context.Context()), None


def _attributes(fields: dict[str, object]) -> dict[str, str | bool | int | float]:
    """`fields` as span attributes: prefixed, ids as text, the None ones left out."""
    return {
        PREFIX + key: value if isinstance(value, str | bool | int | float) else str(value)
        for key, value in fields.items()
        if value is not None
    }


@contextlib.contextmanager
def span(
    name: str,
    correlation_id: str | None,
    *,
    begins: bool = False,
    kind: SpanKind = SpanKind.INTERNAL,
    start_time: int | None = None,
    **attributes: object,
) -> Iterator[None]:
    """A span of the work of `correlation_id`, current in this block; nothing if tracing is off.

    `begins`: this work began the id (an ingest batch), so its span is the trace's root.
    `start_time` (ns since the epoch): when the work began, if before this block.
    `attributes` are named without their `iotdeck.` prefix. An exception out of the block
    is recorded on the span, which then ends in error.
    """
    tracer = _tracer
    if tracer is None:
        yield
        return
    number = trace_id(correlation_id)
    fields = _attributes(attributes)
    if number is None and correlation_id is not None:
        fields[PREFIX + "correlation_id"] = correlation_id
    parent, ids = _parent(name, correlation_id, number, begins)
    chosen = _chosen.set(ids)
    try:
        started = tracer.start_span(name, parent, kind, fields, start_time=start_time)
    finally:
        _chosen.reset(chosen)
    marked = context.attach(context.set_value(_CORRELATION, correlation_id))
    try:
        with trace.use_span(started, end_on_exit=True):
            yield
    finally:
        context.detach(marked)


def annotate(**attributes: object) -> None:
    """Add what the work learnt (points stored, an outcome) to the current span."""
    if _tracer is not None:
        trace.get_current_span().set_attributes(_attributes(attributes))


def failed(reason: str, error: BaseException | None = None) -> None:
    """Mark the current span failed: for a failure caught in its block, not raised through it."""
    if _tracer is None:
        return
    current = trace.get_current_span()
    if error is not None:
        current.record_exception(error)
    current.set_status(Status(StatusCode.ERROR, reason))
