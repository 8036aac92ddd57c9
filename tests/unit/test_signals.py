"""Simulated signals: pure functions of a seed and the time they are asked about."""

import itertools
import statistics
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.mqtt.payloads import parse_telemetry
from app.sim.signals import (
    DEFAULT_TYPES,
    Reading,
    Signals,
    daily_cycle,
    make_signals,
    occupancy,
    telemetry_payload,
)

MONDAY = datetime(2024, 6, 3, tzinfo=UTC)
SATURDAY = datetime(2024, 6, 8, tzinfo=UTC)
METRICS = {
    "thermostat": {"temperature": "°C", "humidity": "%", "battery": "%"},
    "air_quality": {"co2": "ppm", "pm25": "µg/m³", "voc": "ppb", "battery": "%"},
    "power_meter": {"power": "kW", "voltage": "V", "energy": "kWh"},
}


def _series(signals: Signals, start: datetime, step: timedelta, count: int) -> list[dict]:
    return [{r.name: r.value for r in signals.sample(start + i * step)} for i in range(count)]


def _mean_at(device_type: str, metric: str, day: datetime, hour: int, seeds: int = 40) -> float:
    """The mean of a metric at one hour of `day`, over many devices (noise averages out)."""
    values = []
    for seed in range(seeds):
        readings = make_signals(device_type, seed).sample(day + timedelta(hours=hour))
        values += [r.value for r in readings if r.name == metric]
    return statistics.fmean(values)


@pytest.mark.parametrize("device_type", DEFAULT_TYPES)
def test_each_type_reports_its_metrics_with_units(device_type: str) -> None:
    readings = make_signals(device_type, "seed").sample(MONDAY)
    assert {r.name: r.unit for r in readings} == METRICS[device_type]


def test_unknown_types_report_like_thermostats() -> None:
    readings = make_signals("weather_station", 1).sample(MONDAY)
    assert {r.name for r in readings} == set(METRICS["thermostat"])


@pytest.mark.parametrize("device_type", DEFAULT_TYPES)
def test_same_seed_and_times_give_the_same_readings(device_type: str) -> None:
    step = timedelta(seconds=37)
    first = _series(make_signals(device_type, "d1"), MONDAY, step, 200)
    again = _series(make_signals(device_type, "d1"), MONDAY, step, 200)
    other = _series(make_signals(device_type, "d2"), MONDAY, step, 200)
    assert first == again
    assert first != other


@pytest.mark.parametrize("seed", range(20))
def test_a_week_of_values_stays_in_plausible_ranges(seed: int) -> None:
    step, count = timedelta(minutes=7), 7 * 24 * 60 // 7
    thermostat = _series(make_signals("thermostat", seed), MONDAY, step, count)
    air = _series(make_signals("air_quality", seed), MONDAY, step, count)
    power = _series(make_signals("power_meter", seed), MONDAY, step, count)
    for row in thermostat:
        assert 5 <= row["temperature"] <= 40
        assert 0 <= row["humidity"] <= 100
        assert 0 <= row["battery"] <= 100
    for row in air:
        assert 400 <= row["co2"] <= 2000
        assert 0 <= row["pm25"] <= 100
        assert 0 <= row["voc"] <= 1000
    for row in power:
        assert 0 < row["power"] <= 150
        assert 207 <= row["voltage"] <= 253


def test_values_are_rounded_for_display() -> None:
    step = timedelta(seconds=13)
    rows = [
        *_series(make_signals("thermostat", 3), MONDAY, step, 50),
        *_series(make_signals("air_quality", 3), MONDAY, step, 50),
        *_series(make_signals("power_meter", 3), MONDAY, step, 50),
    ]
    for row in rows:
        for value in row.values():
            assert round(value, 3) == value


def test_temperature_peaks_in_the_afternoon_and_bottoms_out_at_night() -> None:
    afternoon = _mean_at("thermostat", "temperature", MONDAY, 15)
    night = _mean_at("thermostat", "temperature", MONDAY, 3)
    morning = _mean_at("thermostat", "temperature", MONDAY, 9)
    assert afternoon - night > 2.5
    assert night < morning < afternoon
    assert daily_cycle(MONDAY + timedelta(hours=15)) == pytest.approx(1)
    assert daily_cycle(MONDAY + timedelta(hours=3)) == pytest.approx(-1)


def test_humidity_moves_against_temperature() -> None:
    rows = _series(make_signals("thermostat", 5), MONDAY, timedelta(minutes=10), 2 * 144)
    correlation = statistics.correlation(
        [row["temperature"] for row in rows], [row["humidity"] for row in rows]
    )
    assert correlation < -0.8


def test_co2_follows_office_hours_on_weekdays_only() -> None:
    office = _mean_at("air_quality", "co2", MONDAY, 11)
    night = _mean_at("air_quality", "co2", MONDAY, 3)
    weekend = _mean_at("air_quality", "co2", SATURDAY, 11)
    assert office - night > 300
    assert weekend < night + 100
    assert occupancy(MONDAY + timedelta(hours=11)) == pytest.approx(1)
    assert occupancy(MONDAY + timedelta(hours=3)) == 0
    # a dip at lunch, between two full hours
    assert occupancy(MONDAY + timedelta(hours=13)) < occupancy(MONDAY + timedelta(hours=16))


def test_power_follows_a_load_curve() -> None:
    working = _mean_at("power_meter", "power", MONDAY, 11)
    night = _mean_at("power_meter", "power", MONDAY, 3)
    assert working > 2.5 * night > 0


@pytest.mark.parametrize("device_type", ["thermostat", "air_quality"])
def test_battery_drains_but_never_rises_or_goes_below_zero(device_type: str) -> None:
    signals = make_signals(device_type, 9)
    levels = [row["battery"] for row in _series(signals, MONDAY, timedelta(minutes=5), 500)]
    assert all(later <= earlier for earlier, later in itertools.pairwise(levels))
    assert levels[-1] < levels[0]
    # years later it is flat, empty, and stays so even if time is asked out of order
    years = [row["battery"] for row in _series(signals, MONDAY, timedelta(days=365), 10)]
    assert years[-3:] == [0.0, 0.0, 0.0]
    assert {r.value for r in signals.sample(MONDAY) if r.name == "battery"} == {0.0}


def test_energy_counter_only_increases() -> None:
    signals = make_signals("power_meter", 11)
    rows = _series(signals, MONDAY, timedelta(minutes=1), 24 * 60)
    energy = [row["energy"] for row in rows]
    assert all(later > earlier for earlier, later in itertools.pairwise(energy))
    # about the mean power times a day
    mean_power = statistics.fmean(row["power"] for row in rows)
    assert energy[-1] - energy[0] == pytest.approx(mean_power * 24, rel=0.02)
    # the same instant again, or an earlier one, adds nothing
    last = energy[-1]
    repeated = MONDAY + timedelta(minutes=24 * 60 - 1)
    for at in (repeated, MONDAY):
        assert [r.value for r in signals.sample(at) if r.name == "energy"] == [last]


def test_thermostats_spike_now_and_then() -> None:
    rows = _series(make_signals("thermostat", 2), MONDAY, timedelta(seconds=30), 5000)
    temperatures = [row["temperature"] for row in rows]
    median = statistics.median(temperatures)
    outliers = [t for t in temperatures if abs(t - median) > 6.5]
    assert 0 < len(outliers) < 0.05 * len(temperatures)


def test_payload_is_what_ingest_accepts() -> None:
    device_id = uuid.uuid4()
    at = datetime(2024, 6, 3, 12, 30, 15, 123456, tzinfo=UTC)
    readings = [Reading("temperature", 21.5, "°C"), Reading("pm25", 7.2, "µg/m³")]
    payload = telemetry_payload(str(device_id), at, readings)
    assert b'"timestamp":"2024-06-03T12:30:15.123456Z"' in payload
    points = parse_telemetry(device_id, payload, arrival=at)
    assert [(p.metric_name, p.time, p.value, p.unit) for p in points] == [
        ("temperature", at, 21.5, "°C"),
        ("pm25", at, 7.2, "µg/m³"),
    ]
