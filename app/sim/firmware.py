"""What a simulated device's firmware does with commands and configuration (docs/commands.md).

Pure: no MQTT, no clock of its own. The `Simulator` hands it each message received on
`devices/{id}/commands` or `devices/{id}/config` and publishes the answers it returns on
`devices/{id}/commands/ack`. The rules a real firmware should follow, shown here:

- a command already seen (QoS 1 may deliver it twice) is not executed again; its last
  answer is sent again instead;
- a command received after its `expires_at` is not executed: it is answered `failed`
  ("expired before it was received"), so an operator learns why, should the platform not
  have expired it yet (clocks differ);
- otherwise `acknowledged` at once, then `executed` with a result, or `failed` with an error
  for an unknown action or bad parameters.
"""

import math
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, TypeVar

import orjson

from app.sim.signals import AirQualitySignals, PowerMeterSignals, Signals, ThermostatSignals

ANSWER_MEMORY = 256  # command ids remembered per device, to answer redeliveries
EXPIRED = "expired before it was received"
MIN_INTERVAL, MAX_INTERVAL = 0.1, 3600.0
CONFIG_KEYS = ("interval",)  # seconds between telemetry messages


class Refused(Exception):
    """A command (or configuration value) the firmware will not carry out; the message says why."""


class MalformedCommand(Exception):
    """A message on the commands topic without a command id: there is nobody to answer."""


class Device(Protocol):
    """What commands act on (`app.sim.simulator.SimulatedDevice`)."""

    interval: float
    signals: Signals

    def set_interval(self, seconds: float) -> None:
        """Publish every `seconds`."""


class Reply(NamedTuple):
    """The answers to publish, in order, and the id of a reboot to carry out (then `finish`)."""

    answers: list[bytes]
    reboot: str | None = None


Params = dict[str, Any]
S = TypeVar("S", bound=Signals)


@dataclass(frozen=True)
class Action:
    """A command the firmware knows: `check` validates params; `run` None is the reboot."""

    check: Callable[[Params], Params]
    run: Callable[[Device, Params, datetime], dict[str, Any]] | None


def answer(command_id: str, status: str, *, error: str | None = None, result: Any = None) -> bytes:
    """An answer as `devices/{id}/commands/ack` carries it."""
    document: dict[str, Any] = {"command_id": command_id, "status": status}
    if error is not None:
        document["error"] = error
    if result is not None:
        document["result"] = result
    return orjson.dumps(document)


def number(
    values: Params, name: str, low: float, high: float, *, default: float | None = None
) -> float:
    """`values[name]` as a finite number in [low, high]; `default` when absent (if given)."""
    value = values.get(name, default)
    valid = isinstance(value, int | float) and not isinstance(value, bool)
    if not (valid and math.isfinite(value) and low <= value <= high):
        raise Refused(f"params.{name} must be a number between {low:g} and {high:g}")
    return float(value)


def _only(params: Params, action: str, *names: str) -> None:
    """Refuse parameters the action does not have: a typo must not pass for a default."""
    for key in params:
        if key not in names:
            raise Refused(f"params.{key} is not a parameter of {action}")


def _interval(params: Params) -> Params:
    seconds = number(params, "seconds", MIN_INTERVAL, MAX_INTERVAL)
    _only(params, "set_interval", "seconds")
    return {"seconds": seconds}


def _set_interval(device: Device, params: Params, _at: datetime) -> dict[str, Any]:
    previous = device.interval
    device.set_interval(params["seconds"])
    return {"interval_seconds": params["seconds"], "previous_interval_seconds": previous}


def _setpoint(params: Params) -> Params:
    celsius = number(params, "celsius", -30, 50)
    _only(params, "set_setpoint", "celsius")
    return {"celsius": celsius}


def _set_setpoint(device: Device, params: Params, _at: datetime) -> dict[str, Any]:
    previous = _signals(device, ThermostatSignals).set_setpoint(params["celsius"])
    return {"setpoint_celsius": params["celsius"], "previous_setpoint_celsius": previous}


def _reference(params: Params) -> Params:
    reference = number(params, "reference_ppm", 350, 2000, default=420)
    _only(params, "calibrate", "reference_ppm")
    return {"reference_ppm": reference}


def _calibrate(device: Device, params: Params, at: datetime) -> dict[str, Any]:
    offset = _signals(device, AirQualitySignals).calibrate(params["reference_ppm"], at)
    return {"reference_ppm": params["reference_ppm"], "offset_ppm": round(offset, 1)}


def _no_params(action: str) -> Callable[[Params], Params]:
    def check(params: Params) -> Params:
        _only(params, action)
        return {}

    return check


def _reset_energy(device: Device, _params: Params, _at: datetime) -> dict[str, Any]:
    before = _signals(device, PowerMeterSignals).reset_energy()
    return {"energy_before_kwh": round(before, 3)}


def _signals(device: Device, kind: type[S]) -> S:
    if not isinstance(device.signals, kind):  # the catalog offers it to a type without it
        raise Refused(f"this device has no {kind.__name__.removesuffix('Signals')} signals")
    return device.signals


ACTIONS: dict[str, Action] = {
    "set_interval": Action(_interval, _set_interval),
    "set_setpoint": Action(_setpoint, _set_setpoint),
    "calibrate": Action(_reference, _calibrate),
    "reset_energy": Action(_no_params("reset_energy"), _reset_energy),
    "reboot": Action(_no_params("reboot"), None),
}


def expiry(value: object) -> datetime | None:
    """A command's `expires_at` (ISO 8601; no zone means UTC); None when absent."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise Refused("expires_at must be an ISO 8601 time")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class SimulatedFirmware:
    """One device's handling of commands and configuration; remembers its last answers."""

    def __init__(self, device: Device, actions: Collection[str]) -> None:
        self.device = device
        self.actions = frozenset(actions)
        self._answers: OrderedDict[str, bytes] = OrderedDict()

    def on_command(self, payload: bytes, now: datetime) -> Reply:
        """The answers to a message on the commands topic; raises MalformedCommand."""
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise MalformedCommand("not JSON") from None
        command_id = document.get("command_id") if isinstance(document, dict) else None
        if not isinstance(command_id, str) or not command_id:
            raise MalformedCommand("no command_id")
        if (last := self._answers.get(command_id)) is not None:
            self._answers.move_to_end(command_id)
            return Reply([last])  # a redelivery: the outcome again, no second execution
        try:
            deadline = expiry(document.get("expires_at"))
        except Refused as refused:
            return Reply([self._remember(command_id, "failed", error=str(refused))])
        if deadline is not None and deadline <= now:
            return Reply([self._remember(command_id, "failed", error=EXPIRED)])
        acknowledged = self._remember(command_id, "acknowledged")
        try:
            action, params = self._checked(document)
            if action.run is None:
                return Reply([acknowledged], reboot=command_id)
            result = action.run(self.device, params, now)
        except Refused as refused:
            return Reply([acknowledged, self._remember(command_id, "failed", error=str(refused))])
        return Reply([acknowledged, self._remember(command_id, "executed", result=result)])

    def finish(self, command_id: str, result: dict[str, Any]) -> bytes:
        """The `executed` answer of a command carried out outside `on_command` (a reboot)."""
        return self._remember(command_id, "executed", result=result)

    def on_config(self, payload: bytes) -> tuple[dict[str, Any], list[str]]:
        """Apply a configuration document: the settings applied, and what was not and why."""
        if not payload.strip():
            return {}, []  # the retained configuration was cleared: keep the running one
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return {}, ["the configuration is not JSON"]
        if not isinstance(document, dict):
            return {}, ["the configuration is not a JSON object"]
        applied: dict[str, Any] = {}
        problems: list[str] = []
        for key in document:
            if key not in CONFIG_KEYS:
                problems.append(f"'{key}' is not a setting of this device: ignored")
                continue
            try:
                seconds = number(document, key, MIN_INTERVAL, MAX_INTERVAL)
            except Refused as refused:
                problems.append(f"{refused}: ignored".removeprefix("params."))
                continue
            self.device.set_interval(seconds)
            applied[key] = seconds
        return applied, problems

    def _checked(self, document: dict[str, Any]) -> tuple[Action, Params]:
        name = document.get("action")
        if not isinstance(name, str):
            raise Refused("action must be a string")
        if name not in self.actions or name not in ACTIONS:
            raise Refused(f"unknown action '{name}'")
        params = document.get("params")
        params = {} if params is None else params
        if not isinstance(params, dict):
            raise Refused("params must be a JSON object")
        action = ACTIONS[name]
        return action, action.check(params)

    def _remember(self, command_id: str, status: str, **fields: Any) -> bytes:
        payload = answer(command_id, status, **fields)
        self._answers[command_id] = payload
        self._answers.move_to_end(command_id)
        while len(self._answers) > ANSWER_MEMORY:
            self._answers.popitem(last=False)
        return payload
