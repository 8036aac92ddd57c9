"""Payload validation: every rejection reason, both accepted formats."""

import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from app.models import DeviceStatus
from app.mqtt.payloads import Rejected, device_id_from_topic, parse_status, parse_telemetry

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
    points = _parse({"temperature": 21, "humidity": 40.5, "ts": 1_764_417_600_000})
    assert [(p.metric_name, p.value) for p in points] == [("temperature", 21.0), ("humidity", 40.5)]
    assert points[0].time == datetime(2025, 11, 29, 12, 0, tzinfo=UTC)
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
