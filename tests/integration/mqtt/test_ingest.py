"""MQTT ingest against a real Mosquitto and real databases."""

import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import paho.mqtt.client as mqtt
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine
from sqlmodel import Session, func, select

from app.core.models import Device, DeviceCreate, DeviceStatus, TelemetryPoint
from app.mqtt.connection import BrokerAddress
from app.mqtt.ingest import IngestWorker
from app.services import devices, telemetry
from bench.services import IotdeckBroker, Mosquitto
from tests.integration.conftest import Publish
from tests.waiting import wait_until

pytestmark = pytest.mark.all_backends


@pytest.fixture
def device(engine: Engine) -> Device:
    """A registered device."""
    with Session(engine) as session:
        created = devices.create_device(session=session, data=DeviceCreate(name="d", type="t"))
        session.commit()
        session.refresh(created)
        return created


def _count(engine: Engine, device_id: uuid.UUID) -> int:
    with Session(engine) as session:
        query = select(func.count()).where(TelemetryPoint.device_id == device_id)
        return session.exec(query).one()


def _rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("telemetry_rejected_total", {"reason": reason}) or 0.0


def test_both_payload_formats_are_stored_exactly(
    engine: Engine, ingest: IngestWorker, publish: Publish, device: Device
) -> None:
    stamp = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=123000)
    later = stamp.replace(microsecond=0) + timedelta(minutes=1)
    topic = f"devices/{device.id}/telemetry"
    publish(
        topic,
        {
            "device_id": str(device.id),
            "timestamp": stamp.isoformat(),
            "metrics": [
                {"name": "temperature", "value": 23.5, "unit": "°C"},
                {"name": "humidity", "value": 65.2, "unit": "%"},
            ],
        },
    )
    publish(topic, {"temperature": 24.25, "battery": 97, "ts": later.isoformat()})
    wait_until(lambda: _count(engine, device.id) == 4)
    with Session(engine) as session:
        rows = session.exec(
            select(TelemetryPoint).order_by(TelemetryPoint.time, TelemetryPoint.metric_name)
        ).all()
        stored = [(r.time, r.metric_name, r.value, r.unit) for r in rows]
        seen = session.get(Device, device.id)
        assert seen.status == DeviceStatus.ONLINE and seen.last_seen_at is not None
    assert stored == [
        (stamp, "humidity", 65.2, "%"),
        (stamp, "temperature", 23.5, "°C"),
        (later, "battery", 97.0, None),
        (later, "temperature", 24.25, None),
    ]


BAD_PAYLOADS = [
    ("malformed_json", b"{nope"),
    ("invalid_value", b'{"metrics": [{"name": "t", "value": "hot"}]}'),
    ("non_finite_value", b'{"t": NaN}'),
    ("invalid_metric_name", orjson.dumps({"metrics": [{"name": "n" * 101, "value": 1}]})),
    ("too_many_metrics", orjson.dumps({f"m{i}": i for i in range(1001)})),
    ("oversized", b'{"t": "' + b"x" * 70000 + b'"}'),
    ("future_timestamp", orjson.dumps({"t": 1, "timestamp": "2999-01-01T00:00:00Z"})),
]


def test_bad_payloads_are_counted_and_nothing_is_stored(
    engine: Engine, ingest: IngestWorker, publish: Publish, device: Device
) -> None:
    topic = f"devices/{device.id}/telemetry"
    cases = [(reason, topic, payload) for reason, payload in BAD_PAYLOADS]
    cases += [
        ("device_id_mismatch", topic, orjson.dumps({"device_id": str(uuid.uuid4()), "t": 1})),
    ]
    before = {reason: _rejected(reason) for reason, _, _ in cases}
    for _reason, case_topic, payload in cases:
        publish(case_topic, payload)
    publish(topic, {"good": 1.5})
    wait_until(lambda: _count(engine, device.id) == 1)
    for reason, _, _ in cases:
        assert _rejected(reason) == before[reason] + 1, reason
    with Session(engine) as session:
        assert (
            telemetry.latest(session=session, device_id=device.id, metric_name="good").value == 1.5
        )
        assert session.exec(select(func.count()).select_from(TelemetryPoint)).one() == 1


def test_topics_of_no_device_are_rejected_behind_an_open_broker(
    engine: Engine, open_mosquitto: Mosquitto, device: Device
) -> None:
    # `iotdeck mqtt-broker` lets no one publish there; an external broker without
    # per-device ACLs might: ingest's own checks still hold
    worker = IngestWorker(
        BrokerAddress("127.0.0.1", open_mosquitto.port), client_id="open-ingest", batch_ms=20
    )
    worker.start()
    assert worker.wait_connected(10)
    anyone = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    anyone.connect("127.0.0.1", open_mosquitto.port)
    anyone.loop_start()
    cases = [
        ("unknown_device", f"devices/{uuid.uuid4()}/telemetry"),
        ("invalid_device_id", "devices/not-a-uuid/telemetry"),
    ]
    try:
        before = {reason: _rejected(reason) for reason, _ in cases}
        for _, topic in cases:
            anyone.publish(topic, b'{"t": 1}', qos=1).wait_for_publish(5)
        anyone.publish(f"devices/{device.id}/telemetry", b'{"good": 1}', qos=1).wait_for_publish(5)
        wait_until(lambda: _count(engine, device.id) == 1)
        for reason, _ in cases:
            assert _rejected(reason) == before[reason] + 1, reason
    finally:
        anyone.disconnect()
        anyone.loop_stop()
        worker.stop()


def test_status_messages_and_last_will(
    engine: Engine,
    ingest: IngestWorker,
    publish: Publish,
    device: Device,
    mosquitto: IotdeckBroker,
) -> None:
    def status() -> DeviceStatus:
        with Session(engine) as session:
            return session.get(Device, device.id).status

    publish(f"devices/{device.id}/status", b"online")
    wait_until(lambda: status() == DeviceStatus.ONLINE)
    publish(f"devices/{device.id}/status", {"status": "offline"})
    wait_until(lambda: status() == DeviceStatus.OFFLINE)
    # a device that dies without a clean disconnect: the broker publishes its last will
    login = mosquitto.device_address(device.id)
    device_process = subprocess.Popen(
        [
            "mosquitto_sub",
            "-p",
            str(mosquitto.port),
            "-u",
            str(login.username),
            "-P",
            str(login.password),
            "-t",
            f"devices/{device.id}/commands",
            "--will-topic",
            f"devices/{device.id}/status",
            "--will-payload",
            "offline",
            "--will-qos",
            "1",
        ]
    )
    publish(f"devices/{device.id}/status", b"online")
    wait_until(lambda: status() == DeviceStatus.ONLINE)
    device_process.kill()
    device_process.wait()
    wait_until(lambda: status() == DeviceStatus.OFFLINE)


def test_silent_devices_are_marked_offline(engine: Engine, device: Device) -> None:
    now = datetime.now(UTC)
    with Session(engine) as session:
        telemetry.write_points(
            session=session,
            points=[telemetry.Point(device.id, "t", now, 1.0)],
            seen_at=now - timedelta(minutes=10),
        )
        session.commit()
        assert (
            devices.mark_silent_offline(session=session, silent_since=now - timedelta(minutes=11))
            == []
        )
        silent = devices.mark_silent_offline(
            session=session, silent_since=now - timedelta(minutes=5)
        )
        session.commit()
        assert silent == [device.id]
        assert session.get(Device, device.id).status == DeviceStatus.OFFLINE


def test_shared_subscription_splits_messages_between_workers(
    engine: Engine, mosquitto: IotdeckBroker, publish: Publish, device: Device
) -> None:
    address = mosquitto.service_address()
    received: dict[str, int] = {"a": 0, "b": 0}
    workers = []
    for name in received:
        worker = IngestWorker(
            address,
            client_id=f"shared-{name}-{uuid.uuid4().hex[:6]}",
            shared_group="g",
            batch_ms=20,
        )

        def count(result, name: str = name) -> None:
            received[name] += len(result.points)

        worker.add_listener(count)
        worker.start()
        assert worker.wait_connected(10)
        workers.append(worker)
    try:
        start = datetime.now(UTC) - timedelta(minutes=30)
        for index in range(200):
            stamp = (start + timedelta(seconds=index)).isoformat()
            publish(f"devices/{device.id}/telemetry", {"n": index, "ts": stamp})
        wait_until(lambda: _count(engine, device.id) == 200)
    finally:
        for worker in workers:
            worker.stop()
    assert received["a"] + received["b"] == 200
    assert received["a"] > 0 and received["b"] > 0
