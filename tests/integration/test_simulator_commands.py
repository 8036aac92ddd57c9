"""Simulated devices answer commands and apply configuration as docs/commands.md asks.

Against a private broker, first with a paho client on the platform's login in its place, then
end to end with the real command dispatcher and ingest worker, on both databases.
"""

import asyncio
import contextlib
import itertools
import logging
import statistics
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from app.core.models import CommandStatus, DeviceCommand
from app.mqtt.connection import BrokerAddress
from app.services import commands
from app.services.commands import CommandInput
from app.services.credentials import COMMANDS_ACCOUNT
from app.sim.firmware import EXPIRED
from app.sim.simulator import SimulatedDevice, Simulator, ensure_devices
from app.workers.command_dispatch import CommandDispatcher
from bench.services import IotdeckBroker
from tests.firmware import connected_service
from tests.integration.conftest import Publish
from tests.waiting import wait_until

RATE = 1.0  # telemetry messages per second per device before any command
Simulate = Callable[..., Simulator]


class Watcher:
    """Everything the broker routes under `devices/#`, in arrival order (the platform's view)."""

    def __init__(self, broker: IotdeckBroker) -> None:
        self._messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = connected_service(broker)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.subscribe("devices/#", qos=1)
        assert subscribed.wait(10)

    def _on_message(self, _client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self._messages.append((message.topic, message.payload))

    def messages(self, device: SimulatedDevice) -> list[tuple[str, bytes]]:
        """(last topic level, payload) of the device's messages, oldest first."""
        prefix = f"devices/{device.id}/"
        with self._lock:
            found = [(t, p) for t, p in self._messages if t.startswith(prefix)]
        return [(topic.rsplit("/", 1)[-1], payload) for topic, payload in found]

    def on(self, topic: str) -> list[bytes]:
        """The payloads received on `topic`, oldest first."""
        with self._lock:
            return [payload for t, payload in self._messages if t == topic]

    def answers(self, device: SimulatedDevice, command_id: str) -> list[dict[str, Any]]:
        """The device's answers to one command, oldest first."""
        documents = [orjson.loads(p) for p in self.on(device.answers_topic)]
        return [d for d in documents if d["command_id"] == command_id]

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publish(platform_publish: Publish) -> Publish:
    """Commands and configuration come from the platform's side here."""
    return platform_publish


@pytest.fixture
def watcher(mosquitto: IotdeckBroker) -> Iterator[Watcher]:
    """A subscriber to every device topic of this test's broker, as the platform."""
    watching = Watcher(mosquitto)
    yield watching
    watching.close()


@pytest.fixture
def simulate(engine: Engine, mosquitto: IotdeckBroker, watcher: Watcher) -> Iterator[Simulate]:
    """Start a simulator for registered devices of the given types; stopped after the test."""
    del engine  # ensure_devices registers them through the process-wide engine
    started: list[Simulator] = []

    def start(*types: str, **options: Any) -> Simulator:
        specs = ensure_devices(len(types), types)
        logins = mosquitto.device_addresses([spec.id for spec in specs])
        address = BrokerAddress("127.0.0.1", mosquitto.port)
        simulator = Simulator(address, specs, rate=RATE, logins=logins, **options)
        started.append(simulator)
        simulator.start()
        assert simulator.wait_connected(10)
        for device in simulator.devices:
            # `online` follows the SUBSCRIBE on the device's connection: commands reach it now
            wait_until(lambda d=device: b"online" in watcher.on(d.status_topic))
        return simulator

    yield start
    for simulator in started:
        simulator.stop()


def _command(action: str, params: dict | None = None, *, expires_in: float = 60) -> dict:
    """A command as the platform's dispatcher publishes it (`commands.device_message`)."""
    now = datetime.now(UTC)
    return {
        "command_id": str(uuid.uuid4()),
        "action": action,
        "params": {} if params is None else params,
        "timestamp": now.isoformat().replace("+00:00", "Z"),
        "expires_at": (now + timedelta(seconds=expires_in)).isoformat().replace("+00:00", "Z"),
    }


def _ask(
    publish: Publish, watcher: Watcher, device: SimulatedDevice, command: dict, count: int = 2
) -> list[dict[str, Any]]:
    """Publish `command` to the device; its answers once `count` of them have arrived."""
    publish(device.commands_topic, command)
    command_id = command["command_id"]
    wait_until(lambda: len(watcher.answers(device, command_id)) >= count)
    return watcher.answers(device, command_id)


def test_set_interval_is_acknowledged_executed_and_speeds_telemetry_up(
    simulate: Simulate, publish: Publish, watcher: Watcher
) -> None:
    (device,) = simulate("thermostat").devices
    answers = _ask(publish, watcher, device, _command("set_interval", {"seconds": 0.1}))
    assert [a["status"] for a in answers] == ["acknowledged", "executed"]
    assert answers[1]["result"] == {"interval_seconds": 0.1, "previous_interval_seconds": 1.0}
    assert device.interval == 0.1
    before = len(watcher.on(device.telemetry_topic))
    # the message already scheduled keeps the old pace; the ten after it take the new one
    wait_until(lambda: len(watcher.on(device.telemetry_topic)) >= before + 11)
    times = [
        datetime.fromisoformat(orjson.loads(payload)["timestamp"])
        for payload in watcher.on(device.telemetry_topic)[before + 1 :]
    ]
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]
    assert statistics.median(gaps) < 0.3  # was about 1 s


BETWEEN = "must be a number between"
REFUSALS = [
    ("explode", {}, "unknown action 'explode'"),
    ("calibrate", {}, "unknown action 'calibrate'"),  # an air_quality command
    ("set_interval", {"seconds": 0}, f"params.seconds {BETWEEN} 0.1 and 3600"),
    ("set_interval", {"seconds": "fast"}, f"params.seconds {BETWEEN} 0.1 and 3600"),
    ("set_interval", {"seconds": True}, f"params.seconds {BETWEEN} 0.1 and 3600"),
    ("set_interval", {}, f"params.seconds {BETWEEN} 0.1 and 3600"),
    ("set_interval", {"seconds": 5, "unit": "s"}, "params.unit is not a parameter of set_interval"),
    ("set_setpoint", {"celsius": 99}, f"params.celsius {BETWEEN} -30 and 50"),
    ("reboot", {"now": True}, "params.now is not a parameter of reboot"),
]


def test_unknown_actions_and_bad_params_fail_with_the_reason(
    simulate: Simulate, publish: Publish, watcher: Watcher
) -> None:
    (device,) = simulate("thermostat").devices
    for action, params, error in REFUSALS:
        answers = _ask(publish, watcher, device, _command(action, params))
        assert [(a["status"], a.get("error")) for a in answers] == [
            ("acknowledged", None),
            ("failed", error),
        ], action
    assert device.interval == 1 / RATE
    assert b"offline" not in watcher.on(device.status_topic)  # no reboot either


def test_a_command_received_after_its_expiry_fails_unexecuted(
    simulate: Simulate, publish: Publish, watcher: Watcher
) -> None:
    (device,) = simulate("thermostat").devices
    command = _command("set_interval", {"seconds": 0.2}, expires_in=-1)
    answers = _ask(publish, watcher, device, command, count=1)
    assert answers == [{"command_id": command["command_id"], "status": "failed", "error": EXPIRED}]
    assert device.interval == 1 / RATE


def test_a_redelivered_command_is_answered_again_but_executed_once(
    simulate: Simulate, publish: Publish, watcher: Watcher
) -> None:
    (device,) = simulate("thermostat").devices
    first = _command("set_interval", {"seconds": 0.5})
    answers = _ask(publish, watcher, device, first)
    _ask(publish, watcher, device, _command("set_interval", {"seconds": 2}))
    again = _ask(publish, watcher, device, first, count=3)  # QoS 1 delivered it twice
    assert [a["status"] for a in again] == ["acknowledged", "executed", "executed"]
    assert again[2] == answers[1]  # the stored outcome, not a new execution
    assert device.interval == 2  # executing it again would have put 0.5 back


def test_reboot_goes_offline_then_online_then_answers_executed(
    simulate: Simulate, publish: Publish, watcher: Watcher
) -> None:
    (device,) = simulate("power_meter", reboot_seconds=0.5).devices
    answers = _ask(publish, watcher, device, _command("reboot"))
    assert [a["status"] for a in answers] == ["acknowledged", "executed"]
    assert answers[1]["result"] == {"downtime_seconds": 0.5}
    timeline = watcher.messages(device)
    events = [
        p.decode() if kind == "status" else kind
        for kind, p in timeline
        if kind in ("status", "ack")
    ]
    assert events == ["online", "ack", "offline", "online", "ack"]
    went = timeline.index(("status", b"offline"))
    came = timeline.index(("status", b"online"), went)
    assert all(kind != "telemetry" for kind, _ in timeline[went:came])  # silent meanwhile


def test_each_type_executes_its_own_commands(
    simulate: Simulate, publish: Publish, watcher: Watcher
) -> None:
    thermostat, air, meter = simulate("thermostat", "air_quality", "power_meter").devices
    setpoint = _ask(publish, watcher, thermostat, _command("set_setpoint", {"celsius": 4}))
    assert setpoint[1]["result"] == {"setpoint_celsius": 4.0, "previous_setpoint_celsius": None}
    calibrated = _ask(publish, watcher, air, _command("calibrate", {"reference_ppm": 420}))
    assert calibrated[1]["status"] == "executed"
    assert set(calibrated[1]["result"]) == {"reference_ppm", "offset_ppm"}
    reset = _ask(publish, watcher, meter, _command("reset_energy"))
    assert reset[1]["result"]["energy_before_kwh"] >= 1000
    seen = len(watcher.on(meter.telemetry_topic))

    def energy_restarted_from_zero() -> bool:
        for payload in watcher.on(meter.telemetry_topic)[seen:]:
            metrics = {m["name"]: m["value"] for m in orjson.loads(payload)["metrics"]}
            if metrics["energy"] < 1:
                return True
        return False

    wait_until(energy_restarted_from_zero)


def test_configuration_is_applied_when_retained_and_when_it_changes(
    simulate: Simulate,
    publish: Publish,
    watcher: Watcher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.sim.simulator")
    spec = ensure_devices(1, ["air_quality"])[0]
    topic = f"devices/{spec.id}/config"
    # as the dispatcher does: retained, so the device finds it when it connects
    retained = orjson.dumps({"interval": 0.25, "colour": "red"})
    publish(topic, retained, retain=True)
    (device,) = simulate("air_quality").devices
    wait_until(lambda: device.interval == 0.25)
    assert "'colour' is not a setting of this device: ignored" in caplog.text
    publish(topic, {"interval": 0.5})
    wait_until(lambda: device.interval == 0.5)
    publish(topic, {"interval": -1})  # refused: the running interval stays
    # one connection, read in order: once this command is answered, that config was read
    _ask(publish, watcher, device, _command("explode"))
    assert device.interval == 0.5
    assert "interval must be a number between 0.1 and 3600: ignored" in caplog.text


# end to end: the platform's dispatcher and ingest worker between operator and device ------


@pytest.fixture
def dispatcher(engine: Engine, mosquitto: IotdeckBroker) -> Iterator[CommandDispatcher]:
    """The command dispatcher on its own event loop, polling often; cancelled after."""
    del engine  # it reads and writes through the process-wide engine
    address = mosquitto.service_address(COMMANDS_ACCOUNT)
    dispatching = CommandDispatcher(address, client_id="commands-test", poll_seconds=0.2)
    running = threading.Event()
    control: dict[str, Any] = {}

    async def main() -> None:
        control["loop"], control["stop"] = asyncio.get_running_loop(), asyncio.Event()
        task = asyncio.create_task(dispatching.run(None))
        running.set()
        await control["stop"].wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert running.wait(10)
    yield dispatching
    control["loop"].call_soon_threadsafe(control["stop"].set)
    thread.join(15)


def _stored(engine: Engine, command_id: uuid.UUID) -> DeviceCommand:
    with Session(engine) as session:
        found = session.get(DeviceCommand, command_id)
        assert found is not None
        return found


def _send(engine: Engine, device: SimulatedDevice, action: str, **fields: Any) -> uuid.UUID:
    with Session(engine) as session:
        data = CommandInput(device_id=device.id, action=action, **fields)
        command = commands.send_command(session=session, data=data)
        session.commit()
        return command.id


@pytest.mark.usefixtures("ingest", "dispatcher")
def test_through_the_platform_commands_end_executed_failed_or_expired(
    engine: Engine, simulate: Simulate
) -> None:
    (device,) = simulate("thermostat").devices
    (mute,) = simulate("power_meter", answer_commands=False).devices
    executed = _send(engine, device, "set_interval", params={"seconds": 0.5})
    failed = _send(engine, device, "explode")
    expired = _send(engine, mute, "reset_energy", timeout_seconds=1)
    for command_id in (executed, failed, expired):
        wait_until(lambda c=command_id: _stored(engine, c).status in commands.FINAL)
    done = _stored(engine, executed)
    assert done.status == CommandStatus.EXECUTED
    assert done.result == {"interval_seconds": 0.5, "previous_interval_seconds": 1.0}
    # the answers may reach ingest before the dispatcher has marked the command SENT
    assert None not in (done.sent_at, done.acknowledged_at, done.executed_at)
    assert done.acknowledged_at <= done.executed_at
    assert device.interval == 0.5
    refused = _stored(engine, failed)
    assert (refused.status, refused.error) == (CommandStatus.FAILED, "unknown action 'explode'")
    silent = _stored(engine, expired)
    assert silent.status == CommandStatus.EXPIRED
    assert silent.error == "no final answer from the device (last status SENT)"
