"""`iotdeck bench rules --rule-workers 1 --rule-workers 2`: rule evaluation shared by partition.

The same backlog of committed points, evaluated by 1, then 2 (or more) evaluator
processes sharing the partitions through Redis leases (`bench/rules_evaluator.py`: the
evaluator as `iotdeck worker` runs it, probed), on one PostgreSQL database, one private
Redis and the benchmark's 100 rules over 1,000 devices reporting every 10 s:

1. the evaluators start and split the 16 partitions between them (before any point);
2. the backlog (`bench/rules_engine.py`'s telemetry, moved to end now) goes into the
   partitions' streams as ingest appends it: one entry per batch and partition, batches of
   200 device messages;
3. the time from the first append to the last point evaluated gives points/s, and each
   process's CPU seconds give points per CPU-second (per worker core).

Between configurations the alerts and deliveries are deleted and the streams removed,
so each configuration does the same work. The ratio of points/s between the largest and
the smallest number of processes, in one run, is the figure; the machine's cores bound
it (a 2-core machine also runs Redis and PostgreSQL).
"""

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

import redis
from sqlalchemy import text
from sqlmodel import Session

from app.core import bus, db, migrate
from app.core.models import DeviceCreate
from app.core.streams import RULES, RedisStreams
from app.services import devices, rules
from app.services.rules import RuleInput
from app.workers import leases
from bench.rules import EvaluatorProcess
from bench.rules_engine import TYPES, point_stream, rule_texts
from bench.services import PG_ADMIN_URL, RedisServer, fresh_database, iotdeck_environment

PARTITIONS = 16
BATCH_DEVICES = 200  # device messages per ingest batch (a stream entry per partition of it)
SPLIT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Options:
    """What to run."""

    rules: int = 100
    devices: int = 1000
    points: int = 150_000
    workers: tuple[int, ...] = (1, 2)
    pg_admin_url: str = PG_ADMIN_URL


def _batches(device_types: list[tuple[str, str]], count: int) -> list[bus.Message]:
    """The benchmark's telemetry ending now, as ingest batches (one message per device and
    report: its metrics at one time)."""
    stream = point_stream(device_types, count)
    shift = datetime.now(UTC) - max(point[3] for point in stream)
    reports: dict[tuple[str, datetime], list[bus.Message]] = {}
    for device_id, _type, metric, at, value in stream:
        moved = (at + shift).isoformat()
        reports.setdefault((device_id, at), []).append(
            {"metric": metric, "time": moved, "value": value}
        )
    ordered = sorted(reports.items(), key=lambda item: item[0][1])
    batches = []
    for first in range(0, len(ordered), BATCH_DEVICES):
        chunk = ordered[first : first + BATCH_DEVICES]
        batch = bus.telemetry_batch({})
        batch["devices"] = [{"device_id": d, "points": p} for (d, _), p in chunk]
        batch["correlation_id"] = uuid.uuid4().hex
        batches.append(batch)
    return batches


def _split(client: redis.Redis, count: int) -> bool:
    """`count` live members evaluate every partition between them."""
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    raw = client.hgetall(leases.MEMBERS.format(group=RULES)).values()
    records = [json.loads(record) for record in raw]
    using = [set(r["using"]) for r in records if r["expires"] > now_ms]
    every = set().union(*using) if using else set()
    return len(using) == count and all(using) and every == set(range(PARTITIONS))


def _configuration(
    count: int, env: dict[str, str], folder: Path, url: str, batches: list[bus.Message]
) -> dict:
    client = redis.Redis.from_url(url)
    processes = [
        EvaluatorProcess(env, folder / f"evaluator-{count}-{n}.json") for n in range(count)
    ]
    try:
        deadline = time.monotonic() + SPLIT_TIMEOUT_S
        while not _split(client, count):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} evaluator(s) did not split the partitions")
            time.sleep(0.1)
        streams = RedisStreams(url, PARTITIONS)
        total = sum(len(p["points"]) for batch in batches for p in batch["devices"])
        started = time.perf_counter()
        for batch in batches:
            streams.append(bus.work_items([(bus.TELEMETRY_BATCH, batch)], PARTITIONS))
        appended = time.perf_counter() - started
        while sum(process.progress() for process in processes) < total:
            time.sleep(0.02)
        seconds = time.perf_counter() - started
    finally:
        finals = [process.final() for process in processes]
    cpu = sum(final["cpu_s"] for final in finals)
    return {
        "processes": count,
        "points": total,
        "seconds": round(seconds, 2),
        "append_seconds": round(appended, 2),  # the backlog reaching the streams
        "points_per_s": round(total / seconds),
        "cpu_s": round(cpu, 2),
        "cores_used": round(cpu / seconds, 2),  # by the evaluators, on average
        "points_per_cpu_s": round(total / cpu) if cpu else None,
        "per_process_points": [final["points"] for final in finals],
        "fired": sum(final["fired"] for final in finals),
    }


def _reset(database: object, url: str) -> None:
    """No alerts, deliveries or streams: the next configuration does the same work."""
    with database.begin() as connection:  # type: ignore[attr-defined]
        connection.execute(text("DELETE FROM notification_deliveries"))
        connection.execute(text("DELETE FROM device_commands"))
        connection.execute(text("DELETE FROM alerts"))
    client = redis.Redis.from_url(url)
    client.delete(*[f"iot:partition:{p}" for p in range(PARTITIONS)])
    client.delete(leases.MEMBERS.format(group=RULES))


def run(options: Options) -> dict:
    """Each number of evaluator processes on the same backlog; points/s and the ratio."""
    with (
        TemporaryDirectory(prefix="iotdeck-bench-scaling-") as tmp,
        fresh_database(options.pg_admin_url) as url,
    ):
        folder = Path(tmp)
        server = RedisServer(folder / "redis").start()
        database = db.init_engine(url)
        try:
            migrate.upgrade(database)
            with Session(database) as session:
                made = [
                    devices.create_device(
                        session=session,
                        data=DeviceCreate(name=f"bench {n}", type=TYPES[n % len(TYPES)]),
                    )
                    for n in range(options.devices)
                ]
                for rule in rule_texts(options.rules):
                    rules.create_rule(session=session, data=RuleInput(expression=rule))
                session.commit()
                device_types = [(str(device.id), device.type) for device in made]
            batches = _batches(device_types, options.points)
            env = iotdeck_environment(
                IOTDECK_DATABASE_URL=url,
                IOTDECK_REDIS_URL=server.url,
                IOTDECK_PARTITIONS=str(PARTITIONS),
                IOTDECK_LOG_LEVEL="WARNING",
            )
            runs = []
            for count in options.workers:
                _reset(database, server.url)
                runs.append(_configuration(count, env, folder, server.url, batches))
        finally:
            server.stop()
            database.dispose()
    low, high = runs[0], runs[-1]
    return {
        "devices": options.devices,
        "rules": options.rules,
        "runs": runs,
        "ratio": round(high["points_per_s"] / low["points_per_s"], 3),
    }


def table(result: dict) -> str:
    """The runs side by side, and the ratio of the last to the first."""
    lines = [
        f"rule evaluation shared by partition: {result['rules']} rules, "
        f"{result['devices']} devices, {PARTITIONS} partitions",
        f"{'processes':>10} {'points':>9} {'seconds':>8} {'points/s':>9} "
        f"{'CPU s':>7} {'cores':>6} {'points/CPU-s':>13} {'alerts':>7}",
    ]
    for r in result["runs"]:
        lines.append(
            f"{r['processes']:>10} {r['points']:>9} {r['seconds']:>8} {r['points_per_s']:>9} "
            f"{r['cpu_s']:>7} {r['cores_used']:>6} {r['points_per_cpu_s'] or '-':>13} "
            f"{r['fired']:>7}"
        )
    first, last = result["runs"][0]["processes"], result["runs"][-1]["processes"]
    lines.append(f"points/s with {last} vs {first}: {result['ratio']}x")
    return "\n".join(lines)
