"""`iotdeck bench dashboard`: a 12-widget dashboard over N devices at R Hz, K viewers in Chromium.

One run: a private Mosquitto (open, iotdeck's queue settings), a fresh PostgreSQL database, one
`iotdeck serve` process (ingest in-process, in-process bus, default settings). N devices of
one type publish `temperature` and `bench_sent` (the publish time in epoch milliseconds)
from one paced paho publisher for the whole run. The dashboard (`dashboard_spec`): 4 stats
showing `bench_sent` of 4 devices (the latency probes), 2 gauges, 2 timeseries of 3 series
over the last 15 minutes, a bar chart and a device table over the type, open alerts and the
fleet's counts. Viewers are signed-in pages of one headless Chromium (`bench.dashboard_viewers`).

Three steady windows of the same length, in one run: no viewer (the baseline), one viewer,
then K viewers (the others open one by one, each while the ones before it watch). Each
window reports the server's CPU and RSS, the browser's CPU, the database's transactions per
second (`pg_stat_database`: every query the server makes is in one) and, measured in the
browser, publish-to-screen latency. First renders are timed as each viewer opens. Per-viewer
figures are differences against the window without viewers.
"""

import asyncio
import itertools
import math
import os
import statistics
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
from playwright.async_api import async_playwright
from sqlmodel import Session

from app.core import db, migrate
from app.core.models import DashboardVisibility, DeviceCreate, Role, UserCreate
from app.services import dashboards, devices, users
from app.services.dashboards import DashboardChange
from bench.dashboard_viewers import CHROMIUM, CHROMIUM_ARGS, Viewer
from bench.ingest import BENCH_RATE_LIMIT
from bench.services import (
    PG_ADMIN_URL,
    Mosquitto,
    broker_and_database,
    iotdeck_environment,
    rss_kb,
    serving,
)

DEVICE_TYPE = "bench"
OWNER, VIEWER = "owner@example.com", "viewer@example.com"
PASSWORD = "bench password 1"
PROBES = 4  # stat widgets showing `bench_sent`, side by side on the first row
RENDER_GOAL_S = 1.5
P99_GOAL_MS = 500.0
GOAL_VIEWERS = 20  # the p99 goal is stated for this many viewers
QUERY_GOAL = 0.01  # at most one transaction per 100 live points a viewer is shown
# PostgreSQL 15 flushes an idle backend's statistics up to 10 s late: a window starts this long
# after the last change, so it counts none of the queries of the step before (this also
# outlasts NiceGUI's 3 s reconnect timeout, after which a page left has no client)
SETTLE_S = 11.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Options:
    """What to run."""

    viewers: int = 20
    devices: int = 50
    rate: float = 1.0
    seconds: float = 30.0
    pg_admin_url: str = PG_ADMIN_URL


def dashboard_spec(device_ids: list[str]) -> dict[str, Any]:
    """The 12 widgets; with fewer than 12 devices, devices repeat."""

    def device(index: int) -> str:
        return device_ids[index % len(device_ids)]

    def widget(kind: str, number: int, place: tuple[int, int, int, int], **options: Any) -> dict:
        x, y, w, h = place
        identity = {"id": f"{kind}-{number}", "type": kind, "title": f"{kind} {number}"}
        return identity | {"x": x, "y": y, "w": w, "h": h, "options": options}

    probes = [
        widget("stat", i, (3 * i, 0, 3, 3), device=device(i), metric="bench_sent", decimals=0)
        for i in range(PROBES)
    ]
    gauges = [
        widget("gauge", i, (3 * i, 3, 3, 3), device=device(4 + i), metric="temperature", max=40)
        for i in range(2)
    ]
    charts = [
        widget(
            "timeseries",
            i,
            (6 * i, 6, 6, 5),
            series=[{"device": device(6 + 3 * i + j), "metric": "temperature"} for j in range(3)],
            unit="°C",
        )
        for i in range(2)
    ]
    fleet_wide = [
        widget("fleet", 0, (6, 3, 3, 3), show="devices"),
        widget("alerts", 0, (9, 3, 3, 3)),
        widget("bar", 0, (0, 11, 6, 5), deviceType=DEVICE_TYPE, metric="temperature", limit=100),
        widget("device_table", 0, (6, 11, 6, 5), deviceType=DEVICE_TYPE, metrics=["temperature"]),
    ]
    return {
        "version": 1,
        "name": "Bench",
        "time": {"from": "now-15m", "to": "now"},
        "widgets": probes + gauges + charts + fleet_wide,
    }


def live_points_per_period(spec: dict[str, Any], devices_count: int) -> int:
    """Live points one viewer's widgets show each time every device has published once."""
    shown = 0
    for widget in spec["widgets"]:
        options = widget.get("options", {})
        if widget["type"] in ("stat", "gauge"):
            shown += 1
        elif widget["type"] == "timeseries":
            shown += len(options["series"])
        elif widget["type"] == "bar":
            shown += min(devices_count, options.get("limit", 20))
        elif widget["type"] == "device_table":
            rows = min(devices_count, options.get("pageSize", 20))
            shown += rows * len(options.get("metrics", []))
    return shown


class Publisher(threading.Thread):
    """Every device at `rate` Hz, spread over each period, until stopped."""

    def __init__(self, port: int, device_ids: list[str], rate: float) -> None:
        """Ready to publish to the broker on `port`; `start` starts it."""
        super().__init__(daemon=True)
        self.port, self.device_ids, self.period = port, device_ids, 1.0 / rate
        self.stopping = threading.Event()
        self.published = 0

    def run(self) -> None:
        """Publish until `stop`."""
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        started = time.monotonic()
        count = len(self.device_ids)
        try:
            for tick in itertools.count():
                for index, device_id in enumerate(self.device_ids):
                    due = started + (tick + index / count) * self.period
                    if self.stopping.wait(max(0.0, due - time.monotonic())):
                        return
                    temperature = 20 + 5 * math.sin(time.time() / 60 + index)
                    metrics = [
                        {"name": "temperature", "value": round(temperature, 2)},
                        {"name": "bench_sent", "value": time.time() * 1000},
                    ]
                    topic = f"devices/{device_id}/telemetry"
                    client.publish(topic, orjson.dumps({"metrics": metrics}), qos=1)
                    self.published += 1
        finally:
            client.loop_stop()
            client.disconnect()

    def stop(self) -> None:
        """Stop publishing and wait for the thread (if it ever started)."""
        self.stopping.set()
        if self.ident is not None:
            self.join(10)


@dataclass(frozen=True)
class Sample:
    """Counters at one moment: the server's and browser's CPU, RSS, database, machine."""

    at: float
    server_cpu_s: float
    browser_cpu_s: float
    server_rss_kb: int
    transactions: int
    machine_busy: int
    machine_total: int


def _processes() -> dict[int, tuple[int, str, int]]:
    """Every process: its parent, its name and its CPU ticks (user + system, all threads)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # it ended meanwhile
        name, fields = text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1].split()
        found[int(stat.parent.name)] = (int(fields[1]), name, int(fields[11]) + int(fields[12]))
    return found


def _browser_ticks(processes: dict[int, tuple[int, str, int]]) -> int:
    """The ticks of the Chromium processes this process started (through Playwright)."""

    def ours(pid: int) -> bool:
        while pid > 1:
            if pid == os.getpid():
                return True
            pid = processes.get(pid, (0, "", 0))[0]
        return False

    return sum(
        ticks
        for pid, (_, name, ticks) in processes.items()
        if name.startswith("chrom") and ours(pid)
    )


def _sample(pid: int, stats: psycopg.Connection) -> Sample:
    processes = _processes()
    cpu = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    row = stats.execute(  # autocommit: a fresh statistics snapshot each time
        "SELECT xact_commit + xact_rollback FROM pg_stat_database"
        " WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return Sample(
        at=time.monotonic(),
        server_cpu_s=processes[pid][2] / _CLOCK_TICKS,
        browser_cpu_s=_browser_ticks(processes) / _CLOCK_TICKS,
        server_rss_kb=rss_kb(pid),
        transactions=int(row[0]),
        machine_busy=sum(cpu) - cpu[3] - cpu[4],  # all but idle and iowait
        machine_total=sum(cpu),
    )


def _window(before: Sample, after: Sample) -> dict[str, float]:
    seconds = after.at - before.at
    busy = (after.machine_busy - before.machine_busy) / (after.machine_total - before.machine_total)
    return {
        "server_cpu_pct": round((after.server_cpu_s - before.server_cpu_s) / seconds * 100, 1),
        "browser_cpu_pct": round((after.browser_cpu_s - before.browser_cpu_s) / seconds * 100, 1),
        "server_rss_mb": round(after.server_rss_kb / 1024, 1),
        "db_transactions_per_s": round((after.transactions - before.transactions) / seconds, 2),
        "machine_busy_pct": round(busy * 100, 1),
    }


def run(options: Options) -> dict:
    """Run the benchmark and return its figures."""
    with broker_and_database(options.pg_admin_url, "iotdeck-dash-") as (folder, broker, url):
        return _measure(options, folder, broker, url)


def _prepare(options: Options, url: str) -> tuple[list[str], str, dict[str, Any]]:
    """Devices, the two accounts and the shared dashboard; its id and spec."""
    engine = db.init_engine(url)
    migrate.upgrade(engine)
    with Session(engine) as session:
        ids = [
            str(devices.create_device(session=session, data=data).id)
            for data in (
                DeviceCreate(name=f"sensor {i:03}", type=DEVICE_TYPE)
                for i in range(options.devices)
            )
        ]
        owner = users.create_user(
            session=session, data=UserCreate(email=OWNER, password=PASSWORD, role=Role.OPERATOR)
        )
        users.create_user(
            session=session, data=UserCreate(email=VIEWER, password=PASSWORD, role=Role.VIEWER)
        )
        change = DashboardChange(
            name="Bench", visibility=DashboardVisibility.SHARED, spec=dashboard_spec(ids)
        )
        made = dashboards.create_dashboard(session=session, user=owner, data=change)
        dashboard_id, spec = str(made.id), made.spec
        session.commit()
    engine.dispose()
    return ids, dashboard_id, spec


def _measure(options: Options, folder: Path, broker: Mosquitto, url: str) -> dict:
    ids, dashboard_id, spec = _prepare(options, url)
    env = iotdeck_environment(
        IOTDECK_DATABASE_URL=url,
        IOTDECK_MQTT_URL=broker.url,
        IOTDECK_DATA_DIR=str(folder / "data"),
        IOTDECK_JWT_SECRET="bench-" + "s" * 40,
        IOTDECK_INGEST_CLIENT_ID=f"dash-{uuid.uuid4().hex[:6]}",
        IOTDECK_LOG_LEVEL="WARNING",
        **BENCH_RATE_LIMIT,
    )
    publisher = Publisher(broker.port, ids, options.rate)
    with serving(folder, env) as (server, base):
        publisher.start()
        try:
            with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as stats:
                _wait_for_history(stats, len(ids))
                steps = _Steps(options, server.pid, stats)
                raw = asyncio.run(steps.drive(base, f"{base}/dashboards/{dashboard_id}", spec))
        finally:
            publisher.stop()
    return _figures(options, raw, spec, publisher.published)


def _wait_for_history(stats: psycopg.Connection, count: int, timeout: float = 60.0) -> None:
    """Return once every device has a stored point: every widget then has data to show."""
    deadline = time.monotonic() + timeout
    query = (
        "SELECT count(DISTINCT device_id) FROM device_telemetry WHERE metric_name = 'bench_sent'"
    )
    while (row := stats.execute(query).fetchone()) is None or row[0] < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {row and row[0]} of {count} devices stored a point")
        time.sleep(0.2)  # polling the table: there is no event to wait on


class _Steps:
    """The run in the browser: sign-ins, the cold render, then the three windows."""

    def __init__(self, options: Options, pid: int, stats: psycopg.Connection) -> None:
        self.options, self.pid, self.stats = options, pid, stats

    async def steady(self) -> tuple[dict[str, Any], float, float]:
        """Settle, then one window: its figures, its start and its end (epoch seconds)."""
        await asyncio.sleep(SETTLE_S)
        before, start = _sample(self.pid, self.stats), time.time()
        await asyncio.sleep(self.options.seconds)
        after, end = _sample(self.pid, self.stats), time.time()
        return _window(before, after), start, end

    async def drive(self, base: str, url: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Every step; the raw figures of each window."""
        cards = len(spec["widgets"])
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            try:
                # one after another: sign-in is not measured, and many at once starve the cores
                viewers = [
                    await Viewer.signed_in(browser, base, VIEWER, PASSWORD)
                    for _ in range(self.options.viewers)
                ]
                first = viewers[0]
                cold = await first.open(url, cards)  # the server's first dashboard since start
                await first.leave()
                idle, _, _ = await self.steady()
                alone = await first.open(url, cards)
                one, one_start, one_end = await self.steady()
                joining = [await viewer.open(url, cards) for viewer in viewers[1:]]
                many, start, end = await self.steady()
            finally:
                await browser.close()
        return {
            "cold_render_s": cold,
            "idle": idle,
            "one": one | _shown([first], [alone], one_start, one_end),
            "many": many | _shown(viewers, joining, start, end),
        }


def _shown(
    viewers: list[Viewer], renders: list[float | None], start: float, end: float
) -> dict[str, Any]:
    """What the viewers showed in a window, and how fast the ones that opened for it did."""
    return {
        "render_s": renders,
        "latencies": [ms for viewer in viewers for ms in viewer.latencies_ms(start, end)],
        "reloads": sum(viewer.reloads(start, end) for viewer in viewers),
    }


def _percentile(values: list[float], fraction: float) -> float | None:
    """Nearest rank: a sample that was seen (interpolating small samples overshoots the max)."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(fraction * len(ordered)) - 1)], 1)


def _per_viewer(phase: dict[str, Any], idle: dict[str, Any], viewers: int, shown: float) -> dict:
    """What a window adds over the one without viewers, per viewer."""
    extra_tx = (phase["db_transactions_per_s"] - idle["db_transactions_per_s"]) / viewers
    added = {
        f"{key}_per_viewer": round((phase[key] - idle[key]) / viewers, 2)
        for key in ("server_cpu_pct", "browser_cpu_pct", "server_rss_mb")
    }
    return added | {
        "db_transactions_per_s_per_viewer": round(extra_tx, 3),
        "db_transactions_per_live_point": round(extra_tx / shown, 5),
    }


def _phase(phase: dict[str, Any], idle: dict, viewers: int, options: Options, shown: float) -> dict:
    """One window's figures beside the baseline's."""
    renders = [r for r in phase["render_s"] if r is not None]
    latencies = phase["latencies"]
    window = {k: v for k, v in phase.items() if k not in ("render_s", "latencies")}
    return (
        {"viewers": viewers}
        | window
        | {
            "p50_latency_ms": _percentile(latencies, 0.50),
            "p99_latency_ms": _percentile(latencies, 0.99),
            "max_latency_ms": round(max(latencies), 1) if latencies else None,
            "updates_seen": len(latencies),
            "updates_sent": round(PROBES * options.rate * options.seconds * viewers),
            "renders_opened": len(phase["render_s"]),
            "renders_completed": len(renders),
            "render_p50_s": round(statistics.median(renders), 3) if renders else None,
            "render_max_s": max(renders) if renders else None,
        }
        | _per_viewer(phase, idle, viewers, shown)
    )


def _figures(options: Options, raw: dict, spec: dict[str, Any], published: int) -> dict:
    shown = live_points_per_period(spec, options.devices) * options.rate  # per viewer, per s
    idle = raw["idle"] | {"viewers": 0}
    one = _phase(raw["one"], idle, 1, options, shown)
    many = _phase(raw["many"], idle, options.viewers, options, shown)
    renders = [one["render_max_s"], many["render_max_s"]]
    all_rendered = all(p["renders_completed"] == p["renders_opened"] for p in (one, many))
    p99 = many["p99_latency_ms"]
    return {
        "viewers": options.viewers,
        "devices": options.devices,
        "rate_hz": options.rate,
        "seconds": options.seconds,
        "widgets": len(spec["widgets"]),
        "published_msgs": published,
        "live_points_per_viewer_per_s": shown,
        "cold_render_s": raw["cold_render_s"],
        "phases": {"idle": idle, "one": one, "many": many},
        "goals": {
            "first_render_s": RENDER_GOAL_S,
            "first_render_met": all_rendered
            and all(r is not None and r < RENDER_GOAL_S for r in renders),
            "p99_latency_ms": P99_GOAL_MS,
            "p99_latency_viewers": GOAL_VIEWERS,
            "p99_latency_met": p99 is not None and p99 < P99_GOAL_MS,
            "db_transactions_per_live_point": QUERY_GOAL,
            "no_query_per_live_point_met": many["db_transactions_per_live_point"] < QUERY_GOAL,
        },
    }


def _cell(value: object, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(result: dict) -> str:
    """The figures as a table a person reads: each window beside the baseline, goals last."""
    phases = [result["phases"][name] for name in ("idle", "one", "many")]
    goals, k = result["goals"], result["viewers"]

    def row(name: str, key: str, digits: int = 1, goal: str = "", *, idle: bool = True) -> str:
        cells = [_cell(phase.get(key), digits) for phase in phases]
        cells[0] = cells[0] if idle else ""
        return f"  {name:<34}{cells[0]:>11}{cells[1]:>11}{cells[2]:>12}   {goal}".rstrip()

    def goal(limit: str, met: bool) -> str:
        return f"{limit}: {'met' if met else 'MISSED'}"

    render_goal = goal(f"< {goals['first_render_s']:g} s", goals["first_render_met"])
    p99_goal = goal(
        f"< {goals['p99_latency_ms']:g} ms with {goals['p99_latency_viewers']} viewers",
        goals["p99_latency_met"],
    )
    query_goal = goal(
        f"< {goals['db_transactions_per_live_point']:g}", goals["no_query_per_live_point_met"]
    )
    return "\n".join(
        [
            f"dashboard benchmark: {result['widgets']} widgets, {result['devices']} devices at"
            f" {result['rate_hz']:g} Hz, {k} viewers, {result['seconds']:g} s windows",
            "one `iotdeck serve` (ingest in-process, default settings), PostgreSQL, Mosquitto"
            " and headless Chromium on the same machine",
            "",
            f"  {'':<34}{'0 viewers':>11}{'1 viewer':>11}{f'{k} viewers':>12}   goal",
            row("first render, slowest, s", "render_max_s", 2, render_goal, idle=False),
            row("first render, median, s", "render_p50_s", 2, idle=False),
            row("renders completed / opened", "renders_completed", idle=False)
            + f" / {phases[1]['renders_opened']}, {phases[2]['renders_opened']}",
            row("publish-to-screen p50, ms", "p50_latency_ms", idle=False),
            row("publish-to-screen p99, ms", "p99_latency_ms", 1, p99_goal, idle=False),
            row("publish-to-screen max, ms", "max_latency_ms", idle=False),
            row("stat updates seen", "updates_seen", idle=False),
            row("stat updates sent", "updates_sent", idle=False),
            row("pages the app reloaded", "reloads", idle=False),
            row("server CPU, % of a core", "server_cpu_pct"),
            row("  added per viewer", "server_cpu_pct_per_viewer", 2, idle=False),
            row("server RSS, MB", "server_rss_mb"),
            row("  added per viewer", "server_rss_mb_per_viewer", 2, idle=False),
            row("database transactions/s", "db_transactions_per_s", 2),
            row("  added per viewer", "db_transactions_per_s_per_viewer", 3, idle=False),
            row(
                "  per live point shown",
                "db_transactions_per_live_point",
                5,
                query_goal,
                idle=False,
            ),
            row("browser CPU, % of a core", "browser_cpu_pct"),
            row("  added per viewer", "browser_cpu_pct_per_viewer", 2, idle=False),
            row("machine busy, % of all cores", "machine_busy_pct"),
            "",
            "  cold first render (the server's first dashboard):"
            f" {_cell(result['cold_render_s'], 2)} s;"
            f" the {k - 1} other viewers opened one by one while the ones before watched",
            f"  live points shown per viewer: {result['live_points_per_viewer_per_s']:g}/s;"
            f" messages published: {result['published_msgs']:,}",
        ]
    )
