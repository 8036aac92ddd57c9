"""One trace from an MQTT batch to its alert, webhooks and command, over real OTLP (issue 14).

`iotdeck serve` as a subprocess exporting to a local OTLP/HTTP receiver (POST /v1/traces,
decoded with the collector's own protobuf messages), a private Mosquitto, real webhook
receivers. A rule with two webhooks (one answers 503) and a `command`; a malformed and a
violating message land in one ingest batch. Every span the batch causes must be in the
trace whose id is the batch's correlation id (its log lines, its alert row), hang where it
belongs, carry its attributes, and no webhook URL's secret. An X-Request-ID that is no
trace id starts a trace of its own, the id in an attribute. A second test checks that a
ratio sampler keeps or drops a trace whole across processes.
"""

import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from sqlmodel import select

from app.core import db, logs
from app.core.models import Alert, DeviceCommand
from bench.services import IotdeckBroker, iotdeck_environment
from tests.e2e.conftest import running_server
from tests.integration.conftest import SERVER_SECRET, Publish
from tests.receivers import Receivers
from tests.serving import Log, graphql
from tests.waiting import wait_until

TIMEOUT = 30.0
TOKEN = "s3cret-token"  # in the webhook URLs: never in a span
RULE = """rule "Boiler overheat"
  on device "{device}"
  when temperature > 80
  notify webhook "{ok}", webhook "{failing}"
  command set_fan {{"speed": 3}}
"""
CREATE_RULE = "mutation($e: String!) { createAlertRule(input: {expression: $e}) { id } }"
SEND = "mutation($input: SendCommandInput!) { sendCommand(input: $input) { id } }"


@dataclass(frozen=True)
class Exported:
    """One span as the collector received it, ids in hex as W3C writes them."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root
    kind: int
    attributes: dict[str, Any]
    status: int
    status_message: str
    events: list[str]


def _values(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: getattr(pair.value, pair.value.WhichOneof("value")) for pair in pairs}


def exported(collector: Receivers) -> list[Exported]:
    """Every span in the OTLP/HTTP requests the collector received so far."""
    found = []
    for request in collector.at("/v1/traces"):
        assert request.headers["content-type"] == "application/x-protobuf"
        for batch in ExportTraceServiceRequest.FromString(request.body).resource_spans:
            service = _values(batch.resource.attributes)["service.name"]
            for scope in batch.scope_spans:
                found += [
                    Exported(
                        service=service,
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        kind=span.kind,
                        attributes=_values(span.attributes),
                        status=span.status.code,
                        status_message=span.status.message,
                        events=[event.name for event in span.events],
                    )
                    for span in scope.spans
                ]
    return found


@pytest.fixture
def collector() -> Iterator[Receivers]:
    """A local OTLP/HTTP receiver: it takes POST /v1/traces and answers 200."""
    started = Receivers()
    yield started
    started.stop()


def _one(spans: list[Exported], name: str, **attributes: Any) -> Exported:
    matching = [
        span
        for span in spans
        if span.name == name
        and all(span.attributes.get(f"iotdeck.{k}") == v for k, v in attributes.items())
    ]
    assert len(matching) == 1, (name, attributes, spans)
    return matching[0]


def _rows(alert_id: str) -> tuple[Alert, DeviceCommand]:
    with db.session_scope() as session:
        alert = session.get(Alert, uuid.UUID(alert_id))
        command = session.exec(
            select(DeviceCommand).where(DeviceCommand.alert_id == uuid.UUID(alert_id))
        ).one()
        session.expunge_all()
        return alert, command


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_one_trace_follows_an_mqtt_batch_to_its_alert_webhooks_and_command(
    *,
    database_url: str,
    accounts: tuple[str, str],
    mosquitto: IotdeckBroker,
    receivers: Receivers,
    collector: Receivers,
    publish: Publish,
    tmp_path: Path,
) -> None:
    token, device_id = accounts
    receivers.script[f"/failing/{TOKEN}"] = [503]
    env = {
        "IOTDECK_DATABASE_URL": database_url,
        "IOTDECK_MQTT_URL": mosquitto.url,
        "IOTDECK_JWT_SECRET": SERVER_SECRET,
        "IOTDECK_DATA_DIR": str(tmp_path / "data"),
        "IOTDECK_WEBHOOK_ALLOW_PRIVATE": "true",  # the receivers listen on 127.0.0.1
        "IOTDECK_LOG_FORMAT": "json",
        # the two messages, published one after the other, wait for each other in one batch
        "IOTDECK_INGEST_BATCH_MS": "1500",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url(""),
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: spans leave soon after they end
    }
    log = Log(tmp_path / "serve.log", TIMEOUT)
    topic = f"devices/{device_id}/telemetry"
    with running_server(tmp_path, ["--host", "127.0.0.1"], env) as server:
        text = RULE.format(
            device=device_id,
            ok=receivers.url(f"/ok/{TOKEN}"),
            failing=receivers.url(f"/failing/{TOKEN}"),
        )
        _, created = graphql(server.url, token, CREATE_RULE, {}, e=text)
        rule_id = created["createAlertRule"]["id"]
        log.one(lambda line: line["event"] == "rule engine: 1 enabled rule(s)")

        publish(topic, b"{not json")
        publish(topic, {"temperature": 85})

        opened = log.one(
            lambda line: line["logger"] == "app.workers.evaluation" and "alert_id" in line
        )
        batch_id, alert_id = opened["correlation_id"], opened["alert_id"]
        alert, command = _rows(alert_id)
        assert alert.correlation_id == batch_id

        names = {"ingest.batch", "ingest.commit", "rules.evaluate", "alert.open"}
        names |= {"notification.send", "command.publish"}

        def whole_trace() -> list[Exported]:
            spans = [span for span in exported(collector) if span.trace_id == batch_id]
            return spans if {span.name for span in spans} == names else []

        spans = wait_until(whole_trace, TIMEOUT)
        assert isinstance(spans, list)
        assert {span.service for span in spans} == {"iotdeck-serve"}

        # the batch is the root, with the span id the other processes derive from its id
        batch = _one(spans, "ingest.batch")
        assert (batch.parent_id, batch.span_id) == ("", batch_id[16:])
        assert batch.kind == Span.SPAN_KIND_CONSUMER
        assert batch.attributes == {
            "iotdeck.messages": 2,
            "iotdeck.points": 1,
            "iotdeck.rejected": 1,
        }
        commit = _one(spans, "ingest.commit")
        assert commit.parent_id == batch.span_id
        assert commit.attributes["iotdeck.points"] == 1

        evaluated = _one(spans, "rules.evaluate")
        assert evaluated.parent_id == batch.span_id
        assert evaluated.attributes == {
            "iotdeck.trigger": "points",
            "iotdeck.points": 1,
            "iotdeck.transitions": 1,
        }
        alert_span = _one(spans, "alert.open")
        assert alert_span.parent_id == evaluated.span_id
        assert alert_span.attributes == {
            "iotdeck.alert_id": alert_id,
            "iotdeck.rule_id": rule_id,
            "iotdeck.device_id": device_id,
            "iotdeck.severity": str(alert.severity),
        }

        # the dispatchers find their parent from the id stored on the rows
        sent = _one(spans, "notification.send", outcome="sent", attempt=1)
        assert (sent.parent_id, sent.kind) == (batch.span_id, Span.SPAN_KIND_CLIENT)
        assert sent.attributes["iotdeck.channel"] == "webhook"
        assert sent.attributes["iotdeck.target"] == receivers.url("/...")  # the host only
        assert sent.attributes["iotdeck.alert_id"] == alert_id
        assert sent.status == Status.STATUS_CODE_UNSET
        failed = _one(spans, "notification.send", outcome="failed", attempt=1)
        assert failed.parent_id == batch.span_id
        assert failed.attributes["iotdeck.permanent"] is False
        assert (failed.status, failed.status_message) == (
            Status.STATUS_CODE_ERROR,
            "HTTP 503 Service Unavailable",
        )
        assert failed.events == ["exception"]

        published = _one(spans, "command.publish")
        assert (published.parent_id, published.kind) == (batch.span_id, Span.SPAN_KIND_PRODUCER)
        assert published.attributes == {
            "iotdeck.command_id": str(command.id),
            "iotdeck.action": "set_fan",
            "iotdeck.device_id": device_id,
        }

        # a request id that is no trace id: a trace of its own, the id as an attribute
        order = {"deviceId": device_id, "action": "reboot"}
        _, data = graphql(server.url, token, SEND, {"X-Request-ID": "abc"}, input=order)
        command_id = data["sendCommand"]["id"]

        def requested() -> list[Exported]:
            return [
                span
                for span in exported(collector)
                if span.attributes.get("iotdeck.command_id") == command_id
            ]

        found = wait_until(requested, TIMEOUT)
        assert isinstance(found, list)
        [own] = found
        assert own.attributes["iotdeck.correlation_id"] == "abc"
        assert own.parent_id == ""
        assert own.trace_id not in (batch_id, "0" * 32)

    # shown by host only: the webhooks' paths (their tokens) are in no export
    assert all(TOKEN.encode() not in request.body for request in collector.at("/v1/traces"))


SAMPLED = """
import sys
from app.core import tracing

stage, ids = sys.argv[1], sys.argv[2:]
assert tracing.configure(stage)
for correlation_id in ids:
    with tracing.span(stage, correlation_id, begins=stage == "ingest.batch"):
        pass
tracing.shutdown()
"""


def test_a_ratio_sampler_keeps_or_drops_a_trace_whole_across_processes(
    collector: Receivers,
) -> None:
    """Each process asks its sampler about the trace id alone: the same answer everywhere."""
    env = iotdeck_environment(
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=collector.url("/v1/traces"),
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0.5",
    )
    ids = [logs.new_id() for _ in range(40)]  # as ingest makes them
    for stage in ("ingest.batch", "rules.evaluate"):  # as ingest, then as the evaluator
        command = [sys.executable, "-c", SAMPLED, stage, *ids]
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=60)

    spans = exported(collector)
    roots = {span.trace_id: span for span in spans if span.name == "ingest.batch"}
    children = {span.trace_id: span for span in spans if span.name == "rules.evaluate"}
    assert set(roots) == set(children)
    assert 0 < len(roots) < len(ids)  # some kept, some dropped (both: 1 chance in 2**39)
    for trace_id, child in children.items():
        assert child.parent_id == roots[trace_id].span_id == trace_id[16:]
