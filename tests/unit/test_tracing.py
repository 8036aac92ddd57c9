"""Tracing is off without an OTLP endpoint, and a correlation id maps onto a trace id."""

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from app.core import tracing


def test_without_an_endpoint_no_exporter_is_installed_and_spans_cost_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in tracing.ENDPOINTS:
        monkeypatch.delenv(name, raising=False)
    assert tracing.configure("iotdeck-test") is False
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)

    ran = []
    with tracing.span("ingest.batch", "a" * 32, begins=True, messages=3):
        tracing.annotate(points=2)
        tracing.failed("nothing to mark")
        ran.append(trace.get_current_span())
    assert ran == [trace.INVALID_SPAN]  # no span was made, none is current
    with pytest.raises(ValueError, match="boom"), tracing.span("command.publish", None):
        raise ValueError("boom")  # the block's errors go through untouched


@pytest.mark.parametrize(
    ("correlation_id", "expected"),
    [
        ("0af7651916cd43dd8448eb211c80319c", 0x0AF7651916CD43DD8448EB211C80319C),
        ("0AF7651916CD43DD8448EB211C80319C", None),  # W3C trace ids are lowercase
        ("0x" + "1" * 30, None),
        ("0" * 32, None),  # no valid trace id
        ("abc", None),  # an X-Request-ID a client chose
        ("a" * 33, None),
        (None, None),
    ],
)
def test_a_correlation_id_is_a_trace_id_when_it_is_32_lowercase_hex_digits(
    correlation_id: str | None, expected: int | None
) -> None:
    assert tracing.trace_id(correlation_id) == expected
