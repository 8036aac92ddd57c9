"""`iotdeck bench ingest --rate-per-device R` and `--fleet`: ingest with fleets of any size.

Real fleets are many devices each reporting now and then, not 50 devices at 200 messages/s.
One run of one fleet size (`--devices N --rate-per-device R`):
1. a private Mosquitto (iotdeck's queue settings) and a fresh database; N devices
   registered in bulk (one COPY into `devices`), ONLINE and just seen, as a fleet that
   already runs: what is measured is the steady state, not N first contacts;
2. one ingest worker process (`bench/ingest_worker.py`, as `iotdeck ingest` runs it);
3. a few publisher processes (`bench/fleet_publisher.py`, one paho connection each) share
   the devices, each device on its own topic `devices/{id}/telemetry`, QoS 1, 3 metrics a
   message, each device every 1/R s on average, spread evenly over time;
4. measured over the window: offered messages/s and points/s, points/s committed after a
   warm-up, the lag at the end (points published but not yet committed when the
   publishers stop), how long ingest then takes to catch up and whether anything is lost,
   ingest's peak RSS and CPU, and the `devices` table's churn (pg_stat_user_tables:
   updates, HOT updates, dead tuples, before and after).
`--fleet` runs that for 100, 1,000, 10,000 and 100,000 devices at the same offered total
(rate per device = total / N), each size on its own broker and database, and sets the
figures beside the issue's goals: committed points/s with 10,000 devices at least 90% of
the figure with 100, ingest RSS under 300 MB with 100,000.
"""

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from sqlalchemy import Engine, text

from app.core import db, migrate
from app.core.models import DeviceStatus
from bench.ingest import BENCH_RATE_LIMIT, METRICS, Worker
from bench.services import (
    BulkDevice,
    OnServer,
    broker_and_database,
    iotdeck_environment,
    register_devices,
)

FLEET_SIZES = (100, 1_000, 10_000, 100_000)
# the offered total of `--fleet`: what one worker sustained with 100 devices in the issue's
# probe, and where 5,000 devices fell 92k points behind before the fleet-size work
FLEET_TOTAL_RATE = 6_000.0
PUBLISHERS = 4
WARM_UP_S = 2.0  # committed points/s is counted from here to the end of the window
CATCH_UP_TIMEOUT_S = 120.0
RATIO_GOAL = 0.90  # committed points/s, 10,000 devices against 100
RSS_GOAL_MB = 300.0  # ingest peak RSS with 100,000 devices
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Options(OnServer):
    """One fleet size."""

    devices: int = 1_000
    rate_per_device: float = 1.0  # messages/s of each device, on average
    seconds: float = 20.0
    publishers: int = PUBLISHERS
    timescaledb: bool = False


def _count(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM device_telemetry")).scalar_one()


def device_churn(url: str) -> dict[str, int]:
    """`devices` in pg_stat_user_tables: rows, updates (HOT among them), dead tuples.

    A new connection each time, so the figures are not an earlier snapshot's. Call it
    after the writers have exited: a backend reports its counters when it ends.
    """
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as connection:
        row = connection.execute(
            "SELECT n_live_tup, n_tup_upd, n_tup_hot_upd, n_dead_tup"
            " FROM pg_stat_user_tables WHERE relname = 'devices'"
        ).fetchone()
    assert row is not None
    return dict(zip(("live", "updated", "hot_updated", "dead"), map(int, row), strict=True))


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _machine() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine."""
    cpu = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(cpu) - cpu[3] - cpu[4], sum(cpu)


def fleet_rows(count: int, *, device_type: str = "fleet") -> list[BulkDevice]:
    """`count` devices, ONLINE and seen just now, as a running fleet looks."""
    now = datetime.now(UTC)
    return [
        BulkDevice(uuid.uuid4(), f"fleet {n:06d}", device_type, DeviceStatus.ONLINE, now)
        for n in range(count)
    ]


class Publishers:
    """`python -m bench.fleet_publisher` processes, each with a slice of the devices."""

    def __init__(self, folder: Path, port: int, ids: list[uuid.UUID], options: Options) -> None:
        count = max(1, min(options.publishers, len(ids)))
        total = options.rate_per_device * len(ids)
        self.processes = []
        for n in range(count):
            share = ids[n::count]
            path = folder / f"publisher-{n}.ids"
            path.write_text("\n".join(map(str, share)))
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.fleet_publisher"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            config = {
                "port": port,
                "ids": str(path),
                "rate": total * len(share) / len(ids),
                "seconds": options.seconds,
            }
            self._say(process, json.dumps(config))
            self.processes.append(process)
        for process in self.processes:
            if self._line(process) != "connected":
                raise RuntimeError("a fleet publisher did not connect")

    @staticmethod
    def _say(process: subprocess.Popen, line: str) -> None:
        assert process.stdin is not None
        process.stdin.write(line + "\n")
        process.stdin.flush()

    @staticmethod
    def _line(process: subprocess.Popen) -> str:
        assert process.stdout is not None
        return process.stdout.readline().strip()

    def start(self, at: float) -> None:
        """Have every publisher begin at `at` (a `time.time()`)."""
        for process in self.processes:
            self._say(process, repr(at))

    def window(self) -> list[dict]:
        """What each sent in its window, read as the window ends."""
        return [json.loads(self._line(process)) for process in self.processes]

    def finish(self) -> int:
        """Wait for every publisher to exit; how many of their messages were acknowledged."""
        acked = 0
        for process in self.processes:
            acked += json.loads(self._line(process))["acked"]
            process.wait(60)
        return acked

    def kill(self) -> None:
        """Stop the publishers still running (after a failure)."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def run(options: Options) -> dict:
    """One fleet size on its own broker and database (see the module docstring)."""
    with broker_and_database(options.pg_admin_url, "iotdeck-fleet-") as (folder, broker, url):
        engine = db.make_engine(url)
        try:
            migrate.upgrade(engine, timescaledb=options.layout)
            rows = fleet_rows(options.devices)
            started = time.perf_counter()
            register_devices(engine, rows)
            registered_s = time.perf_counter() - started
            return {
                "devices": options.devices,
                "rate_per_device": options.rate_per_device,
                "registered_s": round(registered_s, 2),
                **_measure(
                    options, folder, broker.port, url=url, engine=engine, ids=[r.id for r in rows]
                ),
            }
        finally:
            engine.dispose()


def _measure(
    options: Options, folder: Path, port: int, *, url: str, engine: Engine, ids: list[uuid.UUID]
) -> dict:
    env = iotdeck_environment(
        IOTDECK_DATABASE_URL=url,
        IOTDECK_MQTT_URL=f"mqtt://127.0.0.1:{port}",
        IOTDECK_LOG_LEVEL="WARNING",
        IOTDECK_TIMESCALEDB=options.layout,
        IOTDECK_INGEST_CLIENT_ID=f"bench-fleet-{uuid.uuid4().hex[:8]}",
        **BENCH_RATE_LIMIT,
    )
    churn_before = device_churn(url)
    worker = Worker(env, folder / "ingest.json")
    publishers: Publishers | None = None
    try:
        publishers = Publishers(folder, port, ids, options)
        run = _drive(options, engine, worker.process.pid, publishers)
        measured = worker.stop()
    finally:  # after a failure, nothing of the run is left behind
        if publishers is not None:
            publishers.kill()
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()
    churn_after = device_churn(url)
    sent, published = run["sent"], run["published"]
    window = run["end_at"] - run["warm_at"]
    machine = [after - before for before, after in zip(*run["machine"], strict=True)]
    offered_msgs = sum(p["sent"] / p["seconds"] for p in sent)
    caught_up = run["caught_up_at"] is not None
    return {
        "seconds": options.seconds,
        "publishers": len(sent),
        "offered_msgs_per_s": round(offered_msgs),
        "offered_points_per_s": round(offered_msgs * len(METRICS)),
        "committed_points_per_s": round((run["end_count"] - run["warm_count"]) / window),
        "lag_points_at_end": max(0, published - run["end_count"]),
        "publisher_unacked_at_end": sum(p["sent"] - p["acked_in_window"] for p in sent),
        "publisher_unacked_in_all": published // len(METRICS) - run["acked"],
        "catch_up_s": round(run["caught_up_at"] - run["end_at"], 2) if caught_up else None,
        "lost_points": published - run["final"] if caught_up else None,
        "p50_latency_ms": measured["p50_latency_ms"],
        "p99_latency_ms": measured["p99_latency_ms"],
        "rejected": measured["rejected"],
        "ingest_peak_rss_mb": measured["peak_rss_mb"],
        "ingest_cpu_pct": round(run["cpu_s"] / window * 100, 1),
        "machine_busy_pct": round(machine[0] / max(1, machine[1]) * 100, 1),
        "devices_table": {
            "before": churn_before,
            "after": churn_after,
            "updates": churn_after["updated"] - churn_before["updated"],
            "hot_updates": churn_after["hot_updated"] - churn_before["hot_updated"],
            "dead_tuples": churn_after["dead"],
        },
    }


def _drive(options: Options, engine: Engine, pid: int, publishers: Publishers) -> dict:
    """Publish for the window, then wait for ingest to catch up: the raw readings."""
    start = time.time() + 0.5
    publishers.start(start)
    time.sleep(max(0.0, start + WARM_UP_S - time.time()))
    warm_at, warm_count = time.monotonic(), _count(engine)
    cpu_before, machine_before = process_cpu_s(pid), _machine()
    time.sleep(max(0.0, start + options.seconds - time.time()))
    end_at, end_count = time.monotonic(), _count(engine)
    cpu_after, machine_after = process_cpu_s(pid), _machine()
    sent = publishers.window()
    published = sum(p["sent"] for p in sent) * len(METRICS)
    caught_up_at = _wait_for(engine, published, CATCH_UP_TIMEOUT_S)
    return {
        "sent": sent,
        "published": published,
        "warm_at": warm_at,
        "warm_count": warm_count,
        "end_at": end_at,
        "end_count": end_count,
        "cpu_s": cpu_after - cpu_before,
        "machine": (machine_before, machine_after),
        "caught_up_at": caught_up_at,
        "final": _count(engine),
        "acked": publishers.finish(),
    }


def _wait_for(engine: Engine, target: int, timeout: float) -> float | None:
    """When the table first held `target` points (time.monotonic), or None if it did not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _count(engine) >= target:
            return time.monotonic()
        time.sleep(0.05)  # polling a count: there is no event to wait on
    return None


def run_fleet(
    *,
    sizes: tuple[int, ...] = FLEET_SIZES,
    total_rate: float = FLEET_TOTAL_RATE,
    seconds: float = 30.0,
    timescaledb: bool = False,
) -> dict:
    """Every size of `sizes` at the same offered total; the rows and the goals."""
    rows = []
    for size in sizes:
        options = Options(
            devices=size,
            rate_per_device=total_rate / size,
            seconds=seconds,
            timescaledb=timescaledb,
        )
        rows.append(run(options))
    by_size = {row["devices"]: row for row in rows}
    goals: dict[str, object] = {"ratio_goal": RATIO_GOAL, "rss_goal_mb": RSS_GOAL_MB}
    smallest, largest = min(sizes), max(sizes)
    compared = 10_000 if 10_000 in by_size else largest
    ratio = by_size[compared]["committed_points_per_s"] / max(
        1, by_size[smallest]["committed_points_per_s"]
    )
    goals |= {
        "ratio_devices": [compared, smallest],
        "ratio": round(ratio, 3),
        "ratio_met": ratio >= RATIO_GOAL,
        "rss_devices": largest,
        "rss_mb": by_size[largest]["ingest_peak_rss_mb"],
        "rss_met": by_size[largest]["ingest_peak_rss_mb"] < RSS_GOAL_MB,
    }
    return {
        "storage": "timescaledb" if timescaledb else "postgresql",
        "offered_total_msgs_per_s": total_rate,
        "rows": rows,
        "goals": goals,
    }


def table(result: dict) -> str:
    """The fleet shape as a markdown table, the goals under it."""
    lines = [
        "| devices | rate per device, msgs/s | offered points/s | committed points/s"
        " | lag at the end, points | catch-up, s | ingest RSS, MB | ingest CPU, % of a core"
        " | `devices` updates (HOT) | dead tuples |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        churn = row["devices_table"]
        catch_up = "-" if row["catch_up_s"] is None else f"{row['catch_up_s']:.2f}"
        lines.append(
            f"| {row['devices']:,} | {row['rate_per_device']:g} | {row['offered_points_per_s']:,}"
            f" | {row['committed_points_per_s']:,} | {row['lag_points_at_end']:,} | {catch_up}"
            f" | {row['ingest_peak_rss_mb']:.1f} | {row['ingest_cpu_pct']:.1f}"
            f" | {churn['updates']:,} ({churn['hot_updates']:,}) | {churn['dead_tuples']:,} |"
        )
    goals = result["goals"]
    compared, smallest = goals["ratio_devices"]
    lines += [
        "",
        f"committed points/s, {compared:,} devices against {smallest:,}: {goals['ratio']:.3f}"
        f" (goal >= {goals['ratio_goal']:.2f}: {'met' if goals['ratio_met'] else 'MISSED'})",
        f"ingest peak RSS with {goals['rss_devices']:,} devices: {goals['rss_mb']:.1f} MB"
        f" (goal < {goals['rss_goal_mb']:g} MB: {'met' if goals['rss_met'] else 'MISSED'})",
    ]
    return "\n".join(lines)
