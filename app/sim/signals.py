"""Plausible signals per device type: pure, seeded, with the time passed in.

A seeded `random.Random` and the time given decide every value, so tests replay them
exactly and a device keeps its character (base temperature, load) across runs.
"""

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

HOUR = 3600.0
SETPOINT_APPROACH = 300.0  # seconds: a regulated room closes 63 % of the gap to its setpoint
OUTDOOR_CO2 = 420.0  # ppm: fresh air, what an empty office tends to
SPIKE_CHANCE = 0.01  # per message: an occasional outlier gives alert rules something to catch


@dataclass(frozen=True, slots=True)
class Reading:
    """One metric value as a device reports it."""

    name: str
    value: float
    unit: str


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def _hour_of_day(at: datetime) -> float:
    at = at.astimezone(UTC)
    return at.hour + at.minute / 60 + (at.second + at.microsecond / 1e6) / HOUR


def _ramp(x: float, start: float, end: float) -> float:
    """0 before `start`, 1 after `end`, a smooth S-curve between."""
    t = _clamp((x - start) / (end - start), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def daily_cycle(at: datetime) -> float:
    """-1..1 over the UTC day: lowest at 03:00, highest at 15:00."""
    return math.sin(2 * math.pi * (_hour_of_day(at) - 9) / 24)


def occupancy(at: datetime) -> float:
    """How busy an office is at `at` (UTC), 0..1: weekdays 08-19 h with a lunch dip."""
    hour = _hour_of_day(at)
    present = _ramp(hour, 7.5, 9.5) * (1 - _ramp(hour, 17.0, 19.0))
    lunch = 0.3 * _ramp(hour, 12.0, 12.5) * (1 - _ramp(hour, 13.5, 14.0))
    return present * (1 - lunch) * (1.0 if at.astimezone(UTC).weekday() < 5 else 0.1)


class Signals:
    """Readings of one device over time; subclasses give a device type its metrics."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._previous: datetime | None = None
        self._charge = rng.uniform(60.0, 100.0)
        self._drain = rng.uniform(0.02, 0.1)  # percent per hour: weeks of demo before empty

    def sample(self, at: datetime) -> list[Reading]:
        """The readings of one message at `at` (timezone-aware); counters never run back."""
        elapsed = 0.0
        if self._previous is not None:
            elapsed = max(0.0, (at - self._previous).total_seconds())
        if self._previous is None or at > self._previous:
            self._previous = at
        return self._readings(at, elapsed)

    def _readings(self, at: datetime, elapsed: float) -> list[Reading]:
        raise NotImplementedError

    def _battery(self, elapsed: float) -> Reading:
        self._charge = max(0.0, self._charge - self._drain * elapsed / HOUR)
        return Reading("battery", round(self._charge, 1), "%")


class ThermostatSignals(Signals):
    """temperature (daily cycle, noise, spikes), humidity (moves against it), battery."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self._base = rng.uniform(19.0, 23.0)
        self._swing = rng.uniform(1.5, 3.5)
        self._humidity = rng.uniform(40.0, 55.0)
        self._setpoint: float | None = None

    def set_setpoint(self, celsius: float) -> float | None:
        """Regulate toward `celsius` from now on; the previous setpoint (None: unregulated)."""
        previous, self._setpoint = self._setpoint, celsius
        return previous

    def _readings(self, at: datetime, elapsed: float) -> list[Reading]:
        rng = self._rng
        if self._setpoint is not None:
            # heating or cooling moves the room's mean toward the setpoint, not in one step
            closed = 1.0 - math.exp(-elapsed / SETPOINT_APPROACH)
            self._base += (self._setpoint - self._base) * closed
        offset = self._swing * daily_cycle(at) + rng.gauss(0.0, 0.15)
        if rng.random() < SPIKE_CHANCE:
            offset += rng.choice((-1, 1)) * rng.uniform(4.0, 8.0)
        humidity = _clamp(self._humidity - 2.5 * offset + rng.gauss(0.0, 0.8), 0.0, 100.0)
        return [
            Reading("temperature", round(self._base + offset, 2), "°C"),
            Reading("humidity", round(humidity, 1), "%"),
            self._battery(elapsed),
        ]


class AirQualitySignals(Signals):
    """co2, pm25 and voc rising with office occupancy, battery."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self._co2_peak = rng.uniform(400.0, 900.0)
        self._pm25 = rng.uniform(3.0, 10.0)
        self._voc = rng.uniform(50.0, 150.0)
        self._co2_offset = 0.0  # set by a calibration

    def calibrate(self, reference_ppm: float, at: datetime) -> float:
        """Forced recalibration: read `reference_ppm` at `at` from now on; the new offset."""
        self._co2_offset = reference_ppm - (OUTDOOR_CO2 + self._co2_peak * occupancy(at))
        return self._co2_offset

    def _readings(self, at: datetime, elapsed: float) -> list[Reading]:
        rng = self._rng
        busy = occupancy(at)
        co2 = OUTDOOR_CO2 + self._co2_peak * busy + self._co2_offset + rng.gauss(0.0, 12.0)
        co2 = max(400.0, co2)
        pm25 = self._pm25 + 6.0 * busy + rng.gauss(0.0, 0.8)
        if rng.random() < SPIKE_CHANCE:
            pm25 += rng.uniform(15.0, 40.0)  # dust, cooking, a printer
        voc = self._voc + 250.0 * busy + rng.gauss(0.0, 10.0)
        return [
            Reading("co2", round(co2), "ppm"),
            Reading("pm25", round(max(0.0, pm25), 1), "µg/m³"),
            Reading("voc", round(max(0.0, voc)), "ppb"),
            self._battery(elapsed),
        ]


class PowerMeterSignals(Signals):
    """power (office load curve), voltage around 230 V, energy (an increasing counter)."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self._rated = rng.uniform(10.0, 120.0)
        self._energy = rng.uniform(1_000.0, 50_000.0)

    def reset_energy(self) -> float:
        """Set the energy counter back to zero; the reading it had."""
        before, self._energy = self._energy, 0.0
        return before

    def _readings(self, at: datetime, elapsed: float) -> list[Reading]:
        rng = self._rng
        # standby floor + working hours + a little more in the warm afternoon (cooling)
        load = 0.15 + 0.6 * occupancy(at) + 0.05 * (daily_cycle(at) + 1) + rng.gauss(0.0, 0.02)
        power = self._rated * _clamp(load, 0.05, 1.1)
        self._energy += power * elapsed / HOUR
        voltage = _clamp(231.0 - 3.0 * load + rng.gauss(0.0, 1.2), 207.0, 253.0)
        return [
            Reading("power", round(power, 3), "kW"),
            Reading("voltage", round(voltage, 1), "V"),
            Reading("energy", round(self._energy, 3), "kWh"),
        ]


SIGNALS_BY_TYPE: dict[str, type[Signals]] = {
    "thermostat": ThermostatSignals,
    "air_quality": AirQualitySignals,
    "power_meter": PowerMeterSignals,
}
DEFAULT_TYPES = tuple(SIGNALS_BY_TYPE)


def make_signals(device_type: str, seed: int | str) -> Signals:
    """The generator for `device_type` (unknown types behave like thermostats)."""
    return SIGNALS_BY_TYPE.get(device_type, ThermostatSignals)(random.Random(seed))


def telemetry_payload(device_id: str, at: datetime, readings: Iterable[Reading]) -> bytes:
    """One message in the seed format, timestamp in UTC with a Z."""
    stamp = at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    metrics = [{"name": r.name, "value": r.value, "unit": r.unit} for r in readings]
    return orjson.dumps({"device_id": device_id, "timestamp": stamp, "metrics": metrics})
