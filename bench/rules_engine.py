"""The rule set and telemetry of `iotdeck bench rules`, and the engine measured alone.

`rule_texts` builds the benchmark's rules (thresholds, windows avg/max/min/rate/delta/stddev
over 1-10 min, `for`, `clear when`, `nodata`; type and all-device scopes), `point_stream`
the points of devices reporting every 10 s. `measure` compiles the rules once into a
`rules.engine.Engine` and feeds it the stream, with the evaluator's tick every 10 s of event
time: microseconds per point (median of the passes), rules evaluated per point, the tick's
cost, transitions. No database, broker or clock: only the engine.
"""

import math
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

from app.workers.evaluation import TICK_SECONDS
from rules.compiler import CompiledRule, compile_rule
from rules.engine import Engine
from rules.parser import parse_rule

TYPES = ("thermostat", "cold-room", "greenhouse", "server-rack")
REPORT_S = 10.0  # each device reports all its metrics every 10 s
# every rule reads what the benchmark devices send (temperature, humidity, battery); the
# thresholds lie outside the normal values of both benchmarks (the ingest benchmark's
# payloads: temperature 20-29.6, humidity 40-45.2), so alerts come from incidents and low
# batteries, not from every device at once
TEMPLATES = (
    ("threshold", "when temperature > {hot} clear when temperature < {cool}"),
    ("avg", "when avg(temperature, {w}m) > {warm} for {h}m severity critical"),
    ("max", "when max(humidity, {w}m) > {humid} cooldown 10m"),
    ("rate", "when rate(battery, {w}m) < -0.02 severity info"),
    ("delta", "when delta(temperature, {w}m) > {rise}"),
    ("nodata", "when nodata(temperature, {w}m) severity critical"),
    (
        "compound",
        "when temperature > {warm} and humidity > {humid} for {h}m clear when temperature < {cool}",
    ),
    ("band", "when not humidity between {dry} and {humid}"),
    ("battery", "when battery < {low} severity info clear when battery > {charged}"),
    ("spread", "when min(temperature, {w}m) < {cold} or stddev(humidity, {w}m) > 3"),
)


# the templates without window functions (`for` holds no points): the rule engine's memory
# per device is measured with these (`iotdeck bench fleet`)
WINDOWLESS = ("threshold", "compound", "band", "battery")


def rule_texts(count: int, seed: int = 5, kinds: tuple[str, ...] | None = None) -> list[str]:
    """`count` rules cycling through the templates (or those of `kinds`); ~30% on every device."""
    rng = random.Random(seed)
    templates = [t for t in TEMPLATES if kinds is None or t[0] in kinds]
    texts = []
    for index in range(count):
        kind, when = templates[index % len(templates)]
        hot = rng.choice((32, 34, 35))
        low = rng.choice((5, 10))
        values = {
            "hot": hot,
            "cool": hot - 4,
            "warm": rng.choice((30, 31)),
            "humid": rng.choice((47, 48, 50)),
            "dry": rng.choice((35, 38)),
            "rise": rng.choice((10, 12, 15)),
            "cold": rng.choice((5, 10)),
            "low": low,
            "charged": low + 10,
            "w": rng.choice((1, 2, 5, 10)),
            "h": rng.choice((1, 2)),
        }
        scope = "" if rng.random() < 0.3 else f' on type "{TYPES[index % len(TYPES)]}"'
        texts.append(f'rule "{kind} {index + 1}"{scope} {when.format(**values)}')
    return texts


Point = tuple[str, str, str, datetime, float]


def point_stream(device_types: list[tuple[str, str]], count: int, seed: int = 7) -> list[Point]:
    """`count` points, by time: every device sends temperature, humidity, battery each 10 s.

    Temperature and humidity follow slow waves with noise around each device's own level;
    3% of the devices overheat once (+12 °C over a few minutes), 2% get damp once; batteries
    drain slowly (3% of them fast); 1% of the devices stop sending temperature halfway.
    """
    rng = random.Random(seed)
    rounds = math.ceil(count / (3 * len(device_types)))
    span = rounds * REPORT_S
    start = datetime(2026, 11, 1, tzinfo=UTC)
    stream: list[Point] = []
    for device_id, device_type in device_types:
        offset, period, phase = rng.uniform(0, REPORT_S), rng.uniform(900, 1800), rng.random()
        warmth, swing = rng.uniform(19, 25), rng.uniform(0.5, 3)
        damp, damp_swing = rng.uniform(41.5, 44), rng.uniform(0.3, 1.2)
        overheat = rng.uniform(0, span) if rng.random() < 0.03 else math.inf
        wet = rng.uniform(0, span) if rng.random() < 0.02 else math.inf
        battery = rng.uniform(20, 100)
        drain = rng.uniform(1.5, 3) if rng.random() < 0.03 else rng.uniform(0, 0.05)  # %/min
        falls_silent = rng.random() < 0.01
        for k in range(rounds):
            second = k * REPORT_S + offset + rng.uniform(-1, 1)
            at = start + timedelta(seconds=second)
            wave = math.sin(2 * math.pi * (second / period + phase))
            if not (falls_silent and k > rounds // 2):
                temperature = warmth + swing * wave + 12 * _incident(second - overheat)
                temperature = round(temperature + rng.gauss(0, 0.2), 2)
                stream.append((device_id, device_type, "temperature", at, temperature))
            humidity = damp - damp_swing * wave + 8 * _incident(second - wet)
            humidity = round(humidity + rng.gauss(0, 0.3), 1)
            stream.append((device_id, device_type, "humidity", at, humidity))
            level = round(max(0.0, battery - drain * second / 60), 1)
            stream.append((device_id, device_type, "battery", at, level))
    stream.sort(key=lambda point: point[3])
    return stream[:count]


def _incident(elapsed: float) -> float:
    """0 to 1 and back: 4 minutes up, 3 at the top, 4 down (seconds since it began)."""
    if not 0 <= elapsed < 660:
        return 0.0
    return min(1.0, elapsed / 240, (660 - elapsed) / 240)


def _segments(stream: list[Point]) -> list[tuple[list[Point], datetime]]:
    """The stream cut at each tick of the evaluator (every TICK_SECONDS of event time)."""
    segments, begin = [], 0
    step = timedelta(seconds=TICK_SECONDS)
    tick = stream[0][3] + step
    for index, point in enumerate(stream):
        if point[3] >= tick:
            segments.append((stream[begin:index], tick))
            begin, tick = index, tick + step
    segments.append((stream[begin:], tick))
    return segments


def _feed(
    compiled: list[CompiledRule],
    device_types: list[tuple[str, str]],
    segments: list[tuple[list[Point], datetime]],
) -> dict:
    """One pass through the stream with a fresh engine: seconds on points and on ticks."""
    engine = Engine(compiled)
    for device_id, device_type in device_types:  # as the evaluator knows every device
        engine.watch(device_id, device_type, segments[0][0][0][3])
    on_point = engine.on_point
    point_s, tick_s, found = 0.0, [], []
    for points, tick in segments:
        started = time.perf_counter()
        for device_id, device_type, metric, at, value in points:
            transitions = on_point(device_id, device_type, metric, at, value)
            if transitions:
                found += transitions
        point_s += time.perf_counter() - started
        started = time.perf_counter()
        found += engine.tick(tick)
        tick_s.append(time.perf_counter() - started)
    return {
        "point_s": point_s,
        "tick_ms": statistics.median(tick_s) * 1000,
        "fired": sum(t.kind == "FIRED" for t in found),
        "cleared": sum(t.kind == "CLEARED" for t in found),
    }


def measure(*, rules: int, devices: int, points: int, repeats: int) -> dict:
    """µs per point through the engine, median of `repeats` passes, with what it did."""
    compiled = [compile_rule(f"r{i}", parse_rule(t)) for i, t in enumerate(rule_texts(rules))]
    device_types = [(str(uuid.uuid4()), TYPES[i % len(TYPES)]) for i in range(devices)]
    stream = point_stream(device_types, points)
    segments = _segments(stream)
    in_scope: dict[tuple[str, str], int] = {}
    for device_id, device_type, metric, _, _ in stream:
        if (device_id, metric) not in in_scope:
            in_scope[(device_id, metric)] = sum(
                metric in rule.metrics and rule.applies_to(device_id, device_type)
                for rule in compiled
            )
    rules_per_point = sum(in_scope[(p[0], p[2])] for p in stream) / len(stream)
    passes = [_feed(compiled, device_types, segments) for _ in range(repeats)]
    per_point = [p["point_s"] / len(stream) * 1e6 for p in passes]
    median = statistics.median(per_point)
    return {
        "rules": len(compiled),
        "devices": devices,
        "points": len(stream),
        "event_time_minutes": round((stream[-1][3] - stream[0][3]).total_seconds() / 60, 1),
        "repeats": repeats,
        "us_per_point": round(median, 2),
        "us_per_point_min": round(min(per_point), 2),
        "points_per_s": round(1e6 / median),
        "rules_per_point": round(rules_per_point, 1),
        "us_per_rule_evaluation": round(median / rules_per_point, 3) if rules_per_point else None,
        "tick_ms": round(statistics.median(p["tick_ms"] for p in passes), 1),
        "fired": passes[0]["fired"],
        "cleared": passes[0]["cleared"],
    }
