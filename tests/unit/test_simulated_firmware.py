"""A simulated device's firmware: answers, redeliveries, expiry, configuration; no broker."""

import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from app.services.seed import command_types
from app.sim.firmware import (
    ACTIONS,
    ANSWER_MEMORY,
    EXPIRED,
    MalformedCommand,
    SimulatedFirmware,
)
from app.sim.signals import (
    DEFAULT_TYPES,
    AirQualitySignals,
    PowerMeterSignals,
    Signals,
    ThermostatSignals,
    make_signals,
)

NOW = datetime(2026, 11, 29, 10, 30, tzinfo=UTC)


class FakeDevice:
    """What the firmware drives: an interval and signals."""

    def __init__(self, device_type: str = "thermostat") -> None:
        self.interval = 1.0
        self.signals: Signals = make_signals(device_type, "seed")

    def set_interval(self, seconds: float) -> None:
        """Publish every `seconds`."""
        self.interval = seconds


def _firmware(device_type: str = "thermostat") -> SimulatedFirmware:
    actions = [entry["action"] for entry in command_types()[device_type]]
    return SimulatedFirmware(FakeDevice(device_type), actions)


def _command(action: str, params: Any = None, command_id: str = "c1", **extra: Any) -> bytes:
    expires = (NOW + timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    document = {"command_id": command_id, "action": action, "expires_at": expires, **extra}
    if params is not None:
        document["params"] = params
    return orjson.dumps(document)


def _answers(firmware: SimulatedFirmware, payload: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(answer) for answer in firmware.on_command(payload, NOW).answers]


def test_every_catalogued_command_runs_with_its_example_params() -> None:
    catalog = command_types()
    assert set(catalog) == set(DEFAULT_TYPES)
    for device_type, entries in catalog.items():
        for entry in entries:
            assert set(entry) == {"action", "label", "description", "params"}
            firmware = _firmware(device_type)
            reply = firmware.on_command(_command(entry["action"], entry["params"]), NOW)
            statuses = [orjson.loads(answer)["status"] for answer in reply.answers]
            if entry["action"] == "reboot":
                assert (statuses, reply.reboot) == (["acknowledged"], "c1")
            else:
                assert statuses == ["acknowledged", "executed"], (device_type, entry)


def test_every_action_the_firmware_knows_is_offered_to_some_type() -> None:
    offered = {entry["action"] for entries in command_types().values() for entry in entries}
    assert offered == set(ACTIONS)


def test_command_types_is_a_copy_callers_may_change() -> None:
    command_types()["thermostat"].clear()
    assert command_types()["thermostat"]


def test_set_interval_answers_acknowledged_then_executed_with_the_change() -> None:
    firmware = _firmware()
    answers = _answers(firmware, _command("set_interval", {"seconds": 5}))
    assert answers == [
        {"command_id": "c1", "status": "acknowledged"},
        {
            "command_id": "c1",
            "status": "executed",
            "result": {"interval_seconds": 5.0, "previous_interval_seconds": 1.0},
        },
    ]
    assert firmware.device.interval == 5


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (_command("explode"), "unknown action 'explode'"),
        (_command("reset_energy"), "unknown action 'reset_energy'"),  # a power meter's
        (_command("set_interval", {"seconds": 3601}), "params.seconds must be a number"),
        (_command("set_interval", {"seconds": float("nan")}), "params.seconds must be"),
        (_command("set_interval", [5]), "params must be a JSON object"),
        (_command("set_setpoint", {"celsius": None}), "params.celsius must be a number"),
        (orjson.dumps({"command_id": "c1", "action": 3}), "action must be a string"),
    ],
)
def test_refusals_follow_the_acknowledgement_and_change_nothing(payload: bytes, error: str) -> None:
    firmware = _firmware()
    acknowledged, failed = _answers(firmware, payload)
    assert acknowledged["status"] == "acknowledged"
    assert failed["status"] == "failed" and failed["error"].startswith(error)
    assert firmware.device.interval == 1.0


def test_an_expired_command_fails_at_once_and_is_not_executed() -> None:
    firmware = _firmware()
    late = _command("set_interval", {"seconds": 5}, expires_at="2026-11-29T10:29:59Z")
    assert _answers(firmware, late) == [{"command_id": "c1", "status": "failed", "error": EXPIRED}]
    assert firmware.device.interval == 1.0


def test_a_zoneless_expiry_is_utc_and_a_broken_one_is_refused() -> None:
    firmware = _firmware()
    zoneless = _command("set_interval", {"seconds": 5}, expires_at="2026-11-29T10:31:00")
    assert [a["status"] for a in _answers(firmware, zoneless)] == ["acknowledged", "executed"]
    broken = _command("set_interval", {"seconds": 5}, command_id="c2", expires_at="soon")
    assert _answers(firmware, broken)[0]["error"] == "expires_at must be an ISO 8601 time"


def test_a_redelivery_repeats_the_last_answer_without_executing_again() -> None:
    firmware = _firmware()
    first = _answers(firmware, _command("set_interval", {"seconds": 5}))
    _answers(firmware, _command("set_interval", {"seconds": 7}, command_id="c2"))
    assert _answers(firmware, _command("set_interval", {"seconds": 5})) == [first[-1]]
    assert firmware.device.interval == 7


def test_a_reboot_redelivered_before_it_finished_is_acknowledged_again() -> None:
    firmware = _firmware("power_meter")
    assert firmware.on_command(_command("reboot"), NOW).reboot == "c1"
    again = firmware.on_command(_command("reboot"), NOW)
    assert again.reboot is None
    assert [orjson.loads(a)["status"] for a in again.answers] == ["acknowledged"]
    done = orjson.loads(firmware.finish("c1", {"downtime_seconds": 2.0}))
    assert done == {"command_id": "c1", "status": "executed", "result": {"downtime_seconds": 2.0}}
    assert _answers(firmware, _command("reboot")) == [done]


def test_it_remembers_a_bounded_number_of_commands() -> None:
    firmware = _firmware()
    for index in range(ANSWER_MEMORY + 1):
        _answers(firmware, _command("set_interval", {"seconds": 5}, command_id=f"c{index}"))
    firmware.device.set_interval(1.0)
    # the oldest was forgotten: a (very late) redelivery of it is executed again
    assert len(_answers(firmware, _command("set_interval", {"seconds": 5}, command_id="c0"))) == 2
    assert firmware.device.interval == 5


@pytest.mark.parametrize(
    "payload", [b"not json", b"[]", b'{"action": "reboot"}', b'{"command_id": 7}']
)
def test_a_message_without_a_command_id_cannot_be_answered(payload: bytes) -> None:
    with pytest.raises(MalformedCommand):
        _firmware().on_command(payload, NOW)


def test_calibrate_reads_the_reference_now_and_reports_the_offset() -> None:
    firmware = _firmware("air_quality")
    signals = firmware.device.signals
    assert isinstance(signals, AirQualitySignals)
    _ack, executed = _answers(firmware, _command("calibrate", {}))  # reference 420 by default
    offset = executed["result"]["offset_ppm"]
    assert executed["result"]["reference_ppm"] == 420
    readings = [
        {r.name: r.value for r in signals.sample(NOW + timedelta(seconds=s))}["co2"]
        for s in range(200)
    ]
    assert abs(statistics.fmean(readings) - 420) < 10  # noise only
    assert offset < 0  # an office at 10:30, even on a Sunday, holds more than outdoor CO2


def test_a_setpoint_draws_the_temperature_to_it_over_minutes() -> None:
    signals = make_signals("thermostat", "seed")
    assert isinstance(signals, ThermostatSignals)

    def temperature(at: datetime) -> float:
        return {r.name: r.value for r in signals.sample(at)}["temperature"]

    before = statistics.fmean(temperature(NOW + timedelta(seconds=s)) for s in range(60))
    assert signals.set_setpoint(4) is None
    start = NOW + timedelta(seconds=60)
    soon = temperature(start + timedelta(seconds=30))
    later = [temperature(start + timedelta(minutes=30, seconds=s)) for s in range(60)]
    assert soon > 10  # no jump
    assert before > 15 and abs(statistics.fmean(later) - 4) < 4  # the daily swing remains
    assert signals.set_setpoint(6) == 4


def test_reset_energy_restarts_the_counter_from_zero() -> None:
    signals = make_signals("power_meter", "seed")
    assert isinstance(signals, PowerMeterSignals)

    def energy(at: datetime) -> float:
        return {r.name: r.value for r in signals.sample(at)}["energy"]

    reading = energy(NOW)
    assert signals.reset_energy() == pytest.approx(reading, abs=0.001)
    after = [energy(NOW + timedelta(minutes=m)) for m in range(1, 60)]
    assert 0 < after[0] < after[-1] < 200  # counting again, from zero


def test_configuration_applies_known_settings_and_reports_the_rest() -> None:
    firmware = _firmware()
    applied, problems = firmware.on_config(orjson.dumps({"interval": 2, "colour": "red"}))
    assert applied == {"interval": 2.0}
    assert problems == ["'colour' is not a setting of this device: ignored"]
    assert firmware.device.interval == 2
    applied, problems = firmware.on_config(b'{"interval": 0}')
    assert (applied, problems) == ({}, ["interval must be a number between 0.1 and 3600: ignored"])
    assert firmware.on_config(b"") == ({}, [])  # a cleared retained config: nothing changes
    assert firmware.on_config(b"[1]") == ({}, ["the configuration is not a JSON object"])
    assert firmware.on_config(b"{") == ({}, ["the configuration is not JSON"])
    assert firmware.device.interval == 2
