"""The device simulator against a real Mosquitto, the real ingest worker and real databases."""

import asyncio
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from amqtt.broker import Broker
from sqlalchemy import Engine
from sqlmodel import Session, func, select

from app.core.models import Device, DeviceStatus, TelemetryPoint
from app.mqtt.connection import BrokerAddress
from app.mqtt.ingest import IngestWorker
from app.services import devices, telemetry
from app.services.seed import seed_demo
from app.sim.signals import DEFAULT_TYPES
from app.sim.simulator import DeviceSpec, Simulator, backfill, demo_devices, ensure_devices
from bench.services import IotdeckBroker, free_port, iotdeck_environment, wait_for_port
from tests.waiting import wait_until

IOTDECK = str(Path(sys.executable).with_name("iotdeck"))
METRICS = {
    "thermostat": {"temperature", "humidity", "battery"},
    "air_quality": {"co2", "pm25", "voc", "battery"},
    "power_meter": {"power", "voltage", "energy"},
}


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a shell with this test's database."""
    return iotdeck_environment(
        IOTDECK_DATABASE_URL=database_url, IOTDECK_DATA_DIR=str(tmp_path / "data")
    )


@pytest.fixture
def amqtt_port() -> Iterator[int]:
    """An amqtt broker (MQTT 3.1.1 only, like the embedded one) on its own event loop."""
    port = free_port()
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }

    async def started() -> Broker:
        # built inside its loop: built outside, its shutdown hangs 5 s on a foreign future
        broker = Broker(config)
        await broker.start()
        return broker

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    broker = asyncio.run_coroutine_threadsafe(started(), loop).result(10)
    wait_for_port(port)
    yield port
    asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def _status(engine: Engine, device_id: uuid.UUID) -> DeviceStatus:
    with Session(engine) as session:
        return session.get(Device, device_id).status


def _reports_all_metrics(engine: Engine, spec: DeviceSpec) -> bool:
    with Session(engine) as session:
        names = set(telemetry.metric_names(session=session, device_id=spec.id))
        latest = telemetry.latest(session=session, device_id=spec.id, metric_name="battery")
    if spec.type != "power_meter" and latest is not None:
        assert 0 <= latest.value <= 100
    return names == METRICS[spec.type]


def _simulated(engine: Engine) -> list[Device]:
    with Session(engine) as session:
        return list(session.exec(select(Device).where(Device.name.startswith("Simulated "))))


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_devices_report_their_metrics_then_go_offline_on_stop(
    engine: Engine, ingest: IngestWorker, mosquitto: IotdeckBroker, protocol: str
) -> None:
    specs = ensure_devices(3, DEFAULT_TYPES)
    assert sorted(spec.type for spec in specs) == sorted(DEFAULT_TYPES)
    address = BrokerAddress("127.0.0.1", mosquitto.port, protocol=protocol)
    logins = mosquitto.device_addresses([spec.id for spec in specs], protocol=protocol)
    simulator = Simulator(address, specs, rate=20, logins=logins)
    simulator.start()
    try:
        assert simulator.wait_connected(10)
        for spec in specs:
            wait_until(lambda spec=spec: _reports_all_metrics(engine, spec))
            wait_until(lambda spec=spec: _status(engine, spec.id) == DeviceStatus.ONLINE)
    finally:
        simulator.stop()
    for spec in specs:
        wait_until(lambda spec=spec: _status(engine, spec.id) == DeviceStatus.OFFLINE)
    assert simulator.published >= 3


def test_ensure_devices_reuses_devices_by_name(engine: Engine) -> None:
    first = ensure_devices(4, ["thermostat", "power_meter"])
    names = sorted(device.name for device in _simulated(engine))
    assert names == [
        "Simulated power_meter 1",
        "Simulated power_meter 2",
        "Simulated thermostat 1",
        "Simulated thermostat 2",
    ]
    more = ensure_devices(5, ["thermostat", "power_meter", "thermostat"])
    assert more[:4] == first
    assert more[4].type == "thermostat"
    assert len(_simulated(engine)) == 5
    with Session(engine) as session:
        seed_demo(session=session, admin_password="long enough password")
        session.commit()
    listed = demo_devices()
    assert len(listed) == 15
    assert {spec.type for spec in listed} == set(DEFAULT_TYPES)


def test_backfill_gives_new_devices_history_once(engine: Engine) -> None:
    thermostat, meter = ensure_devices(2, ["thermostat", "power_meter"])
    assert set(backfill([thermostat, meter], hours=1, step=300)) == {thermostat.id, meter.id}
    assert backfill([thermostat, meter], hours=1, step=300) == {}  # they have history now
    with Session(engine) as session:
        for spec in (thermostat, meter):
            query = select(func.count()).where(TelemetryPoint.device_id == spec.id)
            assert session.exec(query).one() == 12 * 3
        assert telemetry.metric_names(session=session, device_id=meter.id) == [
            "energy",
            "power",
            "voltage",
        ]
        newest = telemetry.latest(session=session, device_id=thermostat.id, metric_name="battery")
        # history is not presence: commands must not go out before the device connects
        stored = devices.get_device(session=session, device_id=thermostat.id)
        assert (stored.status, stored.last_seen_at) == (DeviceStatus.UNKNOWN, None)
    assert newest is not None and 0 <= newest.value <= 100


def test_works_with_a_broker_that_speaks_only_3_1_1(amqtt_port: int) -> None:
    received: list[tuple[str, bytes]] = []
    subscribed = threading.Event()
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    watcher.on_message = lambda _c, _u, message: received.append((message.topic, message.payload))
    watcher.on_subscribe = lambda *_: subscribed.set()
    watcher.connect("127.0.0.1", amqtt_port)
    watcher.subscribe("devices/#", qos=1)
    watcher.loop_start()
    try:
        assert subscribed.wait(10)
        specs = [DeviceSpec(uuid.uuid4(), "thermostat"), DeviceSpec(uuid.uuid4(), "air_quality")]
        address = BrokerAddress("127.0.0.1", amqtt_port, protocol="3.1.1")
        simulator = Simulator(address, specs, rate=20)
        simulator.start()
        try:
            for spec in specs:
                telemetry_topic = f"devices/{spec.id}/telemetry"
                wait_until(lambda topic=telemetry_topic: any(t == topic for t, _ in received))
        finally:
            simulator.stop()
        for spec in specs:
            topic = f"devices/{spec.id}/status"
            wait_until(lambda topic=topic: (topic, b"offline") in received)
            assert [payload for t, payload in received if t == topic] == [b"online", b"offline"]
    finally:
        watcher.disconnect()
        watcher.loop_stop()


def _start_command(env: dict[str, str], mosquitto: IotdeckBroker, devices: int) -> subprocess.Popen:
    return subprocess.Popen(
        [IOTDECK, "simulate", "--devices", str(devices), "--rate", "5", "--broker", mosquitto.url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_simulate_command_stops_cleanly_on_sigterm(
    engine: Engine, ingest: IngestWorker, mosquitto: IotdeckBroker, env: dict[str, str]
) -> None:
    process = _start_command(env, mosquitto, devices=2)
    try:
        wait_until(lambda: len(_simulated(engine)) == 2, timeout=20)
        devices = _simulated(engine)
        for device in devices:
            spec = DeviceSpec(device.id, device.type)
            wait_until(lambda spec=spec: _reports_all_metrics(engine, spec))
            wait_until(lambda spec=spec: _status(engine, spec.id) == DeviceStatus.ONLINE)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "simulating 2 devices at 5 messages/s each" in out
    for device in devices:
        wait_until(lambda device=device: _status(engine, device.id) == DeviceStatus.OFFLINE)


def test_a_killed_simulator_goes_offline_through_its_last_will(
    engine: Engine, ingest: IngestWorker, mosquitto: IotdeckBroker, env: dict[str, str]
) -> None:
    process = _start_command(env, mosquitto, devices=1)
    try:
        wait_until(lambda: len(_simulated(engine)) == 1, timeout=20)
        (device,) = _simulated(engine)
        wait_until(lambda: _status(engine, device.id) == DeviceStatus.ONLINE)
    finally:
        process.kill()  # SIGKILL: no offline message, no DISCONNECT; only the will remains
        process.communicate(timeout=10)
    wait_until(lambda: _status(engine, device.id) == DeviceStatus.OFFLINE)
