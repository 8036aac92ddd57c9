"""Payload validation: every rejection reason, both accepted formats."""

import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from app.core.models import DeviceStatus
from app.mqtt.connection import BrokerAddress
from app.mqtt.ingest import IngestWorker, Received
from app.mqtt.payloads import (
    Rejected,
    device_id_from_topic,
    parse_answer,
    parse_status,
    parse_telemetry,
)

DEVICE = uuid.UUID("6f1c2a8e-0c1b-4a51-9d1e-1a0000000001")
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _parse(document: object) -> list:
    raw = document if isinstance(document, bytes) else orjson.dumps(document)
    return parse_telemetry(DEVICE, raw, NOW)


def test_seed_format() -> None:
    points = _parse(
        {
            "device_id": str(DEVICE),
            "timestamp": "2026-11-29T11:59:00+01:00",
            "metrics": [
                {"name": "temperature", "value": 23.5, "unit": "°C"},
                {"name": "door.open", "value": True},
            ],
        }
    )
    at = datetime(2026, 11, 29, 10, 59, tzinfo=UTC)
    assert [(p.device_id, p.metric_name, p.time, p.value, p.unit) for p in points] == [
        (DEVICE, "temperature", at, 23.5, "°C"),
        (DEVICE, "door.open", at, 1.0, None),
    ]


def test_flat_format_with_epoch_milliseconds_and_arrival_time() -> None:
    points = _parse({"temperature": 21, "humidity": 40.5, "ts": 1_795_867_200_000})
    assert [(p.metric_name, p.value) for p in points] == [("temperature", 21.0), ("humidity", 40.5)]
    assert points[0].time == datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert _parse({"temperature": 1})[0].time == NOW


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (b'{"temperature": NaN}', "non_finite_value"),
        (b'{"metrics": [{"name": "t", "value": Infinity}]}', "non_finite_value"),
        (b'{"temperature": 1e400}', "non_finite_value"),
        (b"[1, 2]", "invalid_format"),
        ({"metrics": {"name": "t"}}, "invalid_format"),
        ({"metrics": ["t"]}, "invalid_format"),
        ({"metrics": [{"name": "t", "value": "hot"}]}, "invalid_value"),
        ({"metrics": [{"name": "t"}]}, "invalid_value"),
        ({"temperature": "hot"}, "invalid_value"),
        ({"temperature": None}, "invalid_value"),
        ({"metrics": [{"name": "x" * 101, "value": 1}]}, "invalid_metric_name"),
        ({"metrics": [{"name": "", "value": 1}]}, "invalid_metric_name"),
        ({"bad name!": 1}, "invalid_metric_name"),
        ({"metrics": [{"name": "t", "value": 1, "unit": "u" * 51}]}, "unit_too_long"),
        ({"metrics": [{"name": f"m{i}", "value": i} for i in range(1001)]}, "too_many_metrics"),
        (b'{"t": "' + b"x" * 65536 + b'"}', "oversized"),
        ({"t": 1, "timestamp": "2026-11-29T12:06:00Z"}, "future_timestamp"),
        ({"t": 1, "timestamp": "2026-11-29T12:00:00"}, "invalid_timestamp"),
        ({"t": 1, "timestamp": "yesterday"}, "invalid_timestamp"),
        ({"t": 1, "timestamp": True}, "invalid_timestamp"),
        ({"t": 1, "device_id": str(uuid.uuid4())}, "device_id_mismatch"),
        ({}, "no_metrics"),
        ({"metrics": []}, "no_metrics"),
    ],
)
def test_each_rejection_reason(payload: object, reason: str) -> None:
    with pytest.raises(Rejected) as caught:
        _parse(payload)
    assert caught.value.reason == reason


def test_a_timestamp_just_inside_the_future_margin_is_accepted() -> None:
    soon = NOW + timedelta(minutes=4, seconds=59)
    assert _parse({"t": 1, "timestamp": soon.isoformat()})[0].time == soon


def test_topic_ids() -> None:
    assert device_id_from_topic(f"devices/{DEVICE}/telemetry") == DEVICE
    with pytest.raises(Rejected) as caught:
        device_id_from_topic("devices/boiler-1/telemetry")
    assert caught.value.reason == "invalid_device_id"


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"online", DeviceStatus.ONLINE),
        (b"OFFLINE", DeviceStatus.OFFLINE),
        (b'{"status": "offline", "reason": "battery"}', DeviceStatus.OFFLINE),
        (b'"online"', DeviceStatus.ONLINE),
    ],
)
def test_status_payloads(payload: bytes, status: DeviceStatus) -> None:
    assert parse_status(payload) == status


@pytest.mark.parametrize("payload", [b"sleepy", b'{"status": 1}', b"{broken"])
def test_bad_status_payloads(payload: bytes) -> None:
    with pytest.raises(Rejected):
        parse_status(payload)


@pytest.mark.parametrize(
    ("stamp", "where"),
    [
        ("0001-01-01T00:00:00+01:00", "out of range"),  # before the first UTC instant
        ("9999-12-31T23:59:59-01:00", "out of range"),  # after the last one
        ("0001-01-01T00:00:00Z", "retention"),
        (-62_135_596_801, "out of range"),  # a second before year 1
        (1e300, "out of range"),
    ],
)
def test_an_unrepresentable_timestamp_is_rejected_not_raised(stamp: object, where: str) -> None:
    with pytest.raises(Rejected) as caught:
        _parse({"t": 1, "timestamp": stamp})
    assert caught.value.reason == "invalid_timestamp"
    assert caught.value.detail.startswith("timestamp ") and where in caught.value.detail


def test_a_timestamp_older_than_the_retention_is_rejected() -> None:
    with pytest.raises(Rejected) as caught:
        _parse({"t": 1, "ts": (NOW - timedelta(days=91)).isoformat()})
    assert caught.value.reason == "invalid_timestamp"
    assert caught.value.detail == "ts is older than the 90-day retention"


def test_a_timestamp_just_inside_the_retention_is_accepted() -> None:
    old = NOW - timedelta(days=89)
    assert _parse({"t": 1, "timestamp": old.isoformat()})[0].time == old


def test_the_retention_is_a_parameter() -> None:
    raw = orjson.dumps({"t": 1, "timestamp": (NOW - timedelta(days=8)).isoformat()})
    assert parse_telemetry(DEVICE, raw, NOW, max_age=timedelta(days=9))
    with pytest.raises(Rejected, match="older than the 7-day retention"):
        parse_telemetry(DEVICE, raw, NOW, max_age=timedelta(days=7))


def test_the_ingest_worker_applies_its_retention() -> None:
    worker = IngestWorker(BrokerAddress("127.0.0.1", 1883), client_id="t", retention_days=7)
    stamp = (NOW - timedelta(days=8)).isoformat()
    message = Received(
        f"devices/{DEVICE}/telemetry", orjson.dumps({"t": 1, "ts": stamp}), 1, 1, NOW
    )
    assert worker._parse([message]).rejected == 1


# Hostile values as JSON text, so tokens no encoder writes (NaN, 1e400, lone surrogates) fit in
_DEEP = 1000  # just inside orjson's 1024 levels; str() or orjson.dumps() of it would raise
HOSTILE = [
    b"null",
    b"true",
    b"false",
    b"0",
    b"-1",
    b"1.5",
    b"-0.0",
    b"5e-324",
    b"1e308",
    b"18446744073709551615",
    b"-9223372036854775808",
    b"1e400",
    b"-1e400",
    b"1" + b"0" * 400,
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b'""',
    b'"x"',
    b'"\\u0000"',
    b'"\\ud800"',
    b'"\\udfff"',
    '"\u202e\u200fonline"'.encode(),
    '"😀"'.encode(),
    '"ONLİNE"'.encode(),
    b'"online"',
    b'"offline"',
    b'"executed"',
    b'"0001-01-01T00:00:00+01:00"',
    b'"9999-12-31T23:59:59-23:59"',
    b'"+275760-09-13T00:00:00Z"',
    b'"2026-11-29T12:00:00+99:00"',
    b'"2026-02-30T00:00:00Z"',
    f'"{DEVICE}"'.encode(),
    f'"urn:uuid:{DEVICE}"'.encode(),
    b"[]",
    b"[1]",
    b"{}",
    b'{"a": 1}',
    b'{"name": "t", "value": 1}',
    b"[" * _DEEP + b"]" * _DEEP,
    b"[" * 300 + b"]" * 300,
    b"[" * 60_000,
    b'"' + b"x" * 70_000 + b'"',
]
_METRIC = {b"name": b'"t"', b"value": b"1", b"unit": b'"C"'}
_STAMP = f'"{NOW.isoformat()}"'.encode()
BASES = [
    {b"device_id": f'"{DEVICE}"'.encode(), b"timestamp": _STAMP, b"metrics": b"[]"},  # + metric
    {b"ts": _STAMP, b"temperature": b"1", b"status": b'"online"'},
    {b"command_id": f'"{uuid.uuid4()}"'.encode(), b"status": b'"executed"', b"error": b'"e"'},
]
FIELDS = [
    b"device_id", b"timestamp", b"ts", b"metrics", b"temperature", b"status", b"command_id",
    b"error", b"result",
]  # fmt: skip


def _object(fields: dict[bytes, bytes]) -> bytes:
    return b"{" + b",".join(b'"' + key + b'":' + value for key, value in fields.items()) + b"}"


def _seed(metric: dict[bytes, bytes]) -> dict[bytes, bytes]:
    return {**BASES[0], b"metrics": b"[" + _object(metric) + b"]"}


def _corpus() -> list[bytes]:
    corpus = [
        b"", b" ", b"\xff\xfe", b"\xef\xbb\xbf{}", b'{"t": "\xc3\x28"}', b"{" * 60_000,
        b'{"\\ud800": 1}', '{"\u202e": 1, "😀": 2}'.encode(), b"online\x00", b"x" * 65_537,
        b'{"t": 1, "t": "x"}', orjson.dumps({f"m{i}": i for i in range(1001)}),
    ]  # fmt: skip
    for value in HOSTILE:
        corpus.append(value)
        corpus += [_object({**_seed(_METRIC), key: value}) for key in FIELDS]
        corpus += [_object({**base, key: value}) for base in BASES[1:] for key in FIELDS]
        corpus += [_object(_seed({**_METRIC, key: value})) for key in _METRIC]
        corpus.append(_object({**_seed(_METRIC), b"metrics": b"[" + value + b"]"}))
    return corpus


CORPUS = _corpus()


def _telemetry(payload: bytes) -> None:
    for point in parse_telemetry(DEVICE, payload, NOW):
        assert math.isfinite(point.value) and point.time.tzinfo is UTC
        assert NOW - timedelta(days=90) <= point.time <= NOW + timedelta(minutes=5)


@pytest.mark.parametrize("parse", [_telemetry, parse_status, parse_answer])
def test_no_payload_raises_anything_but_rejected(parse: Callable[[bytes], object]) -> None:
    escaped = []
    for payload in CORPUS:
        try:
            parse(payload)
        except Rejected:
            pass
        except Exception as exc:  # collected, so one run names every offender
            escaped.append((payload[:60], repr(exc)[:80]))
    assert escaped == []
    assert len(CORPUS) > 1000
