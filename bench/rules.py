"""`iotdeck bench rules`: what 100 rules over 1,000 devices cost, alone and beside ingest.

1. Engine alone (`bench/rules_engine.py`): microseconds per point through the compiled
   rules, rules evaluated per point, the cost of the periodic tick.
2. Beside ingest: the ingest benchmark's machinery (`bench/ingest.py`: private Mosquitto,
   fresh PostgreSQL database, ingest worker process, one C publisher per device on the
   same cores) plus a private Redis as the bus, run twice in one run: without rules, then
   with the rules stored and an evaluator process (`bench/rules_evaluator.py`, the
   evaluator as `iotdeck serve` runs it) reading the committed points from the bus; ingest
   publishes to that bus both times. Each configuration drains a backlog (ingest's
   ceiling), then runs live attempts of the ingest benchmark. Without rules the first
   attempt offers the drain rate and each next one 90% of what the last committed, until
   ingest keeps up (everything committed within 1 s of the publishers stopping). With
   rules, after a short warm-up, the first attempt offers 75% of the rate sustained
   without (the target: rules cost at most 25%), then 90% and 100% while ingest and the
   evaluator keep up, or else 60%, 50%, 40%, 30% until they do. The evaluator keeps up
   when it evaluated every committed point, dropped no bus message and finished within
   1 s of ingest. Each phase gets a new evaluator (see `_Macro.evaluating`).

What the evaluator's bus queue drops in a burst it replays from storage: each phase reports
the points dropped and replayed, and as lost the committed points evaluated neither live
nor by a replay (every point here is of a metric the rules read); the table says WARNING
when any was lost.
"""

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

from sqlalchemy import Engine as Database
from sqlalchemy import text
from sqlmodel import Session

from app.core import db, migrate
from app.core.models import DeviceCreate
from app.services import devices, rules
from app.services.rules import RuleInput
from app.workers.evaluation import TICK_SECONDS
from bench import ingest, rules_engine
from bench.rules_engine import TYPES, rule_texts
from bench.services import (
    PG_ADMIN_URL,
    Mosquitto,
    RedisServer,
    fresh_database,
    iotdeck_environment,
)

# with rules, live attempts offer fractions of the rate ingest sustained without: the
# target's first (rules may cost 25%), then up while ingest and evaluator keep up, or down
RULES_TARGET = 0.75
RULES_UP = (0.9, 1.0)
RULES_DOWN = (0.6, 0.5, 0.4, 0.3)
SEARCH_ATTEMPTS = 5  # without rules: attempts to find the rate ingest sustains
WARM_UP_S = 3.0  # with rules: live points before the attempts, at the lowest rate
# with rules, last: the fleet's own shape, every device once per this many seconds (the
# latency an operator sees, where the attempts above measure a fleet flooding ingest)
FLEET_PERIOD_S = 1.0
KEPT_UP_S = ingest.SUSTAINED_CATCH_UP_S


@dataclass(frozen=True)
class Options:
    """What to run."""

    rules: int = 100
    devices: int = 1000
    points: int = 200_000
    repeats: int = 5
    seconds: float = 10.0
    backlog: int = 30_000
    workers: int = 1
    macro: bool = True
    pg_admin_url: str = PG_ADMIN_URL


class EvaluatorProcess:
    """`python -m bench.rules_evaluator`, ready to evaluate; one per phase."""

    STALLED_S = 2.0  # no progress for this long: what is missing is not coming
    BUSY_LIMIT_S = 600.0  # a turn in progress counts as progress, up to this long in all

    def __init__(self, env: dict[str, str], status: Path) -> None:
        self.status = status
        command = [sys.executable, "-m", "bench.rules_evaluator", str(status)]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the rule evaluator did not start")

    def progress(self) -> int:
        """Points evaluated live or replayed so far."""
        return self._progress()[0]

    def final(self) -> dict:
        """Stop it; the figures it wrote on its way out."""
        self.stop()
        return json.loads(self.status.read_text())["final"]

    def _progress(self) -> tuple[int, bool]:
        """Points evaluated live or replayed so far, and whether a turn is in progress."""
        try:
            status = json.loads(self.status.read_text())
        except FileNotFoundError:
            return 0, False
        return status["points"] + status["replayed"], status["busy"]

    def finish(self, committed: int) -> dict:
        """Wait until it has evaluated `committed` points (or stalls), stop it; its figures.

        A turn in progress (a long replay, a batch opening many alerts) is progress.
        """
        started = progress_at = time.perf_counter()
        seen, _ = self._progress()
        while (
            seen < committed
            and time.perf_counter() - progress_at < self.STALLED_S
            and time.perf_counter() - started < self.BUSY_LIMIT_S
        ):
            time.sleep(0.05)
            now, busy = self._progress()
            if now > seen or busy:
                seen, progress_at = now, time.perf_counter()
        behind = progress_at - started
        figures = self.final()
        lost = committed - figures["points"] - figures["replayed"]
        cpu_us = figures["cpu_s"] / max(1, figures["points"] + figures["replayed"]) * 1e6
        return {
            "evaluated_points": figures["points"],
            "evaluator_dropped_msgs": round(figures["dropped"]),
            "evaluator_dropped_points": round(figures["dropped_points"]),
            "evaluator_replayed_points": figures["replayed"],
            "evaluator_lost_points": lost,
            "evaluator_behind_s": round(behind, 2),
            "evaluator_kept_up": lost <= 0 and not figures["dropped"] and behind <= KEPT_UP_S,
            "evaluator_p50_latency_ms": figures["p50_latency_ms"],
            "evaluator_p99_latency_ms": figures["p99_latency_ms"],
            "evaluator_cpu_s": figures["cpu_s"],
            "evaluator_cpu_us_per_point": round(cpu_us, 1),
            "evaluator_bus_msgs": figures["messages"],
            "evaluator_max_tick_ms": figures["max_tick_ms"],
            "evaluator_peak_rss_mb": figures["peak_rss_mb"],
            "fired": figures["fired"],
            "cleared": figures["cleared"],
        }

    def stop(self) -> None:
        """SIGTERM (it writes its final figures) and wait; safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(60)


class _Macro:
    """One broker, bus and database; configurations run one after the other on them."""

    def __init__(
        self, options: Options, folder: Path, broker: Mosquitto, database: Database, env: dict
    ) -> None:
        self.options = options
        self.folder = folder
        self.broker = broker
        self.database = database
        self.env = env
        self.ids: list[uuid.UUID] = []

    def workers(self, tag: str) -> list[ingest.Worker]:
        """Ingest worker processes, connected and subscribed."""
        return [
            ingest.Worker(
                {**self.env, "IOTDECK_INGEST_CLIENT_ID": f"bench-ingest-{n}"},
                self.folder / f"{tag}-{n}.json",
            )
            for n in range(self.options.workers)
        ]

    @contextmanager
    def evaluating(self, tag: str, evaluate: bool) -> Iterator[EvaluatorProcess | None]:
        """An empty table, and an evaluator process for one phase when `evaluate`.

        A new evaluator per phase: it replays nothing, so its windows hold only this
        phase's points. One evaluator across the whole run would keep ten minutes of
        devices that publish several messages a second (hundreds of points per window,
        where a device reporting every 10 s has 60), and min, max and stddev cost in
        proportion. Alerts opened by an earlier phase stay open: a new evaluator aligns
        with them at start, as after a restart.
        """
        with self.database.begin() as connection:
            connection.execute(text("TRUNCATE device_telemetry, telemetry_rollup_pending"))
        if not evaluate:
            yield None
            return
        evaluator = EvaluatorProcess(self.env, self.folder / f"{tag}-evaluator.json")
        try:
            yield evaluator
        finally:
            evaluator.stop()

    def drain(self, tag: str, evaluate: bool) -> dict:
        """Ingest drains a backlog queued while it was stopped (its ceiling)."""
        with self.evaluating(f"{tag}-drain", evaluate) as evaluator:
            backlog = self.options.backlog // len(self.ids) * len(self.ids)
            # stamped now, as live points are: a day-old backlog would make every device
            # look silent for a day and fire every `nodata` rule at once
            start = datetime.now(UTC)
            endpoint = ingest.Endpoint.open(self.broker)
            ingest._publish_backlog(endpoint, self.ids, backlog, self.folder, start)
            draining = self.workers(f"{tag}-drain")
            started = time.perf_counter()
            points = backlog * len(ingest.METRICS)
            first, first_count, last = ingest._wait_for_count(self.database, points, timeout=600)
            for worker in draining:
                worker.stop()
            # from the first rows seen, as the ingest benchmark does; a backlog small enough
            # to be stored at once (tests) is timed from the workers' start instead
            if last > first:
                rate = (points - first_count) / (last - first)
            else:
                rate = points / (last - started)
            drained = {"drain_points_per_s": round(rate)}
            if evaluator is not None:
                drained |= evaluator.finish(ingest._count(self.database))
                # the backlog waited in the broker: publish-to-evaluated latency means nothing
                del drained["evaluator_p50_latency_ms"], drained["evaluator_p99_latency_ms"]
        return drained

    def live(self, tag: str, rate: float, evaluate: bool, seconds: float = 0) -> dict:
        """One live attempt of the ingest benchmark at `rate` messages/s."""
        with self.evaluating(tag, evaluate) as evaluator:
            attempt = ingest._live(
                ingest.Options(seconds=seconds or self.options.seconds),
                broker=ingest.Endpoint.open(self.broker),
                engine=self.database,
                ids=self.ids,
                live=self.workers(tag),
                rate=rate,
            )
            attempt["ingest_kept_up"] = attempt["catch_up_s"] <= ingest.SUSTAINED_CATCH_UP_S
            if evaluator is not None:
                attempt |= evaluator.finish(ingest._count(self.database))
        return attempt

    def without_rules(self) -> dict:
        """Drain; live from the drain rate, then 90% of what each attempt committed."""
        drained = self.drain("none", evaluate=False)
        rate = drained["drain_points_per_s"] / len(ingest.METRICS)
        attempts: list[dict] = []
        while len(attempts) < SEARCH_ATTEMPTS:
            attempts.append(self.live(f"none-live-{len(attempts)}", rate, evaluate=False))
            if attempts[-1]["ingest_kept_up"]:
                break
            rate = 0.9 * min(rate, attempts[-1]["committed_msgs_per_s"])
        return _configuration(drained, None, attempts, attempts[-1]["ingest_kept_up"])

    def with_rules(self, base: float) -> dict:
        """Drain, warm up, then live at fractions of `base`: the target first, then up or down.

        Kept up at the target fraction: up while both keep up. Not: down until they do.
        """
        drained = self.drain("rules", evaluate=True)
        # the drain's payloads differ from the live ones: conditions already true in live
        # data (low batteries) open their alerts here, not in the first attempt
        warm_up = self.live("rules-warm-up", base * RULES_DOWN[-1], True, WARM_UP_S)
        attempts: list[dict] = []

        def kept_up(fraction: float) -> bool:
            attempt = self.live(f"rules-live-{len(attempts)}", base * fraction, evaluate=True)
            attempt["fraction"] = fraction
            attempts.append(attempt)
            return attempt["ingest_kept_up"] and attempt["evaluator_kept_up"]

        best = None
        if kept_up(RULES_TARGET):
            best = attempts[-1]
            for fraction in RULES_UP:
                if not kept_up(fraction):
                    break
                best = attempts[-1]
        else:
            for fraction in RULES_DOWN:
                if kept_up(fraction):
                    best = attempts[-1]
                    break
        configuration = _configuration(drained, warm_up, attempts, best is not None, best)
        configuration["fleet"] = self.live(
            "rules-fleet", len(self.ids) / FLEET_PERIOD_S, evaluate=True
        )
        return configuration


def _configuration(
    drained: dict,
    warm_up: dict | None,
    attempts: list[dict],
    sustained: bool,
    best: dict | None = None,
) -> dict:
    return {
        "drain": drained,
        "warm_up": warm_up,
        "live": best or attempts[-1],  # the sustained attempt, else the last one tried
        "sustained": sustained,
        "attempts": attempts,
    }


def macro(options: Options) -> dict:
    """Committed points/s of the ingest benchmark without rules and with them."""
    with (
        TemporaryDirectory(prefix="iotdeck-bench-rules-") as tmp,
        fresh_database(options.pg_admin_url) as url,
    ):
        folder = Path(tmp)
        (folder / "mosquitto").mkdir()
        (folder / "redis").mkdir()
        broker = Mosquitto(folder / "mosquitto").start()
        redis = RedisServer(folder / "redis").start()
        database = db.init_engine(url)
        try:
            env = iotdeck_environment(
                IOTDECK_DATABASE_URL=url,
                IOTDECK_MQTT_URL=broker.url,
                IOTDECK_REDIS_URL=redis.url,
                IOTDECK_LOG_LEVEL="WARNING",
                IOTDECK_INGEST_SHARED_GROUP="bench" if options.workers > 1 else "",
                **ingest.BENCH_RATE_LIMIT,  # the ingest benchmark's load shape
            )
            return _compare(_Macro(options, folder, broker, database, env))
        finally:
            broker.stop()
            redis.stop()
            database.dispose()


def _compare(run: _Macro) -> dict:
    options = run.options
    migrate.upgrade(run.database)
    with Session(run.database) as session:
        for index in range(options.devices):
            data = DeviceCreate(name=f"bench {index}", type=TYPES[index % len(TYPES)])
            run.ids.append(devices.create_device(session=session, data=data).id)
        session.commit()
    for worker in run.workers("session"):  # creates the persistent sessions, then leaves
        worker.stop()
    without = run.without_rules()
    with Session(run.database) as session:
        for rule in rule_texts(options.rules):
            rules.create_rule(session=session, data=RuleInput(expression=rule))
        session.commit()
    base = without["live"]["offered_msgs_per_s"]
    with_rules = run.with_rules(base)
    none_rate = without["live"]["committed_points_per_s"]
    rules_rate = with_rules["live"]["committed_points_per_s"]
    return {
        "devices": options.devices,
        "rules": options.rules,
        "workers": options.workers,
        "seconds": options.seconds,
        "committed_points_per_s_without_rules": none_rate,
        "committed_points_per_s_with_rules": rules_rate,
        "sustained_without_rules": without["sustained"],
        "sustained_with_rules": with_rules["sustained"],
        # only a rate sustained with rules makes a ratio: below the lowest rate tried, none
        "ratio": round(rules_rate / none_rate, 3) if with_rules["sustained"] else None,
        "target_met": with_rules["sustained"] and with_rules["live"]["fraction"] >= RULES_TARGET,
        "drain_points_per_s_without_rules": without["drain"]["drain_points_per_s"],
        "drain_points_per_s_with_rules": with_rules["drain"]["drain_points_per_s"],
        "drain_ratio": round(
            with_rules["drain"]["drain_points_per_s"] / without["drain"]["drain_points_per_s"], 3
        ),
        "lost_points": sum(
            a["lost_points"]
            for c in (without, with_rules)
            for a in [*c["attempts"], c["warm_up"] or {"lost_points": 0}, c.get("fleet", {})]
            if a
        ),
        "fleet_period_s": FLEET_PERIOD_S,
        "fleet_evaluator_p99_latency_ms": with_rules["fleet"]["evaluator_p99_latency_ms"],
        "without_rules": without,
        "with_rules": with_rules,
    }


def run(options: Options) -> dict:
    """Both parts (the macro one unless `options.macro` is False)."""
    engine = rules_engine.measure(
        rules=options.rules, devices=options.devices, points=options.points, repeats=options.repeats
    )
    return {"micro": engine, "macro": macro(options) if options.macro else None}


def table(result: dict) -> str:
    """The figures as a table a person reads."""
    m = result["micro"]
    lines = [
        f"rules benchmark: {m['rules']} rules, {m['devices']:,} devices",
        "",
        f"engine alone: {m['points']:,} points over {m['event_time_minutes']} min of event"
        f" time, median of {m['repeats']}",
        f"  per point          {m['us_per_point']} µs (min {m['us_per_point_min']}),"
        f" {m['points_per_s']:,} points/s on one core",
        f"  rules per point    {m['rules_per_point']}"
        f" ({m['us_per_rule_evaluation']} µs per rule evaluation)",
        f"  tick               {m['tick_ms']} ms for every device, every {TICK_SECONDS:g} s",
        f"  transitions        {m['fired']:,} fired, {m['cleared']:,} cleared",
    ]
    if result["macro"] is None:
        return "\n".join(lines)
    x = result["macro"]
    none, ruled = x["without_rules"], x["with_rules"]
    live = ruled["live"]

    def row(name: str, key: str, part: str = "live") -> str:
        a, b = (f"{c[part][key]:,}" if c[part].get(key) is not None else "-" for c in (none, ruled))
        return f"  {name:<28}{a:>14}{b:>14}"

    lines += [
        "",
        f"ingest benchmark, {x['workers']} ingest process(es), {x['seconds']:g} s live,"
        " same broker, Redis bus and database:",
        f"  {'':<28}{'without rules':>14}{'with rules':>14}",
        row("live committed points/s", "committed_points_per_s"),
        row("offered messages/s", "offered_msgs_per_s"),
        row("commit latency p50 ms", "p50_latency_ms"),
        row("commit latency p99 ms", "p99_latency_ms"),
        row("drain points/s", "drain_points_per_s", "drain"),
        f"  sustained: without rules {none['sustained']}, with rules {ruled['sustained']}"
        + ("" if ruled["sustained"] else " (not at any rate tried: the last one is shown)"),
        f"  ratio with/without: live {x['ratio']}, drain {x['drain_ratio']};"
        f" target (0.75) met: {x['target_met']}; lost points {x['lost_points']}",
        f"  evaluator (drain): {_evaluated(ruled['drain'])},"
        f" behind {ruled['drain']['evaluator_behind_s']} s",
        f"  evaluator (live): kept up {live['evaluator_kept_up']}, {_evaluated(live)},"
        f" behind {live['evaluator_behind_s']} s",
        f"  evaluator latency p50/p99 {live['evaluator_p50_latency_ms']}/"
        f"{live['evaluator_p99_latency_ms']} ms, {live['evaluator_cpu_us_per_point']} µs CPU"
        f" per point, {live['fired']} fired, {live['cleared']} cleared",
        f"  fleet shape, every device every {x['fleet_period_s']:g} s"
        f" ({ruled['fleet']['offered_msgs_per_s']:,} msgs/s): evaluator latency p50/p99"
        f" {ruled['fleet']['evaluator_p50_latency_ms']}/"
        f"{ruled['fleet']['evaluator_p99_latency_ms']} ms (publish to evaluated; goal: p99"
        " commit to alert under 1 s), kept up"
        f" {ruled['fleet']['evaluator_kept_up']}",
        "  attempts (offered msgs/s -> committed points/s, ingest/evaluator kept up):",
    ]
    for name, configuration in (("without", none), ("with", ruled)):
        tried = ", ".join(
            (f"{a['fraction']:.0%} " if "fraction" in a else "")
            + f"{a['offered_msgs_per_s']:,} -> {a['committed_points_per_s']:,}"
            + f" ({'y' if a['ingest_kept_up'] else 'n'}"
            + (f"/{'y' if a['evaluator_kept_up'] else 'n'}" if "evaluator_kept_up" in a else "")
            + ")"
            for a in configuration["attempts"]
        )
        lines.append(f"    {name} rules: {tried}")
    phases = [("the drain", ruled["drain"]), ("the warm-up", ruled["warm_up"])]
    phases += [(f"live attempt {n + 1}", a) for n, a in enumerate(ruled["attempts"])]
    phases.append(("the fleet-shape attempt", ruled["fleet"]))
    lines += [
        f"  WARNING: the evaluator lost {p['evaluator_lost_points']:,} points in {name}"
        f" (evaluated neither live nor by a replay; {p['evaluator_dropped_points']:,} dropped,"
        f" {p['evaluator_replayed_points']:,} replayed)"
        for name, p in phases
        if p and p["evaluator_lost_points"] > 0
    ]
    return "\n".join(lines)


def _evaluated(phase: dict) -> str:
    """What the evaluator did in a phase: live, dropped, replayed, lost."""
    return (
        f"evaluated {phase['evaluated_points']:,} points live and"
        f" {phase['evaluator_replayed_points']:,} replayed from storage after"
        f" {phase['evaluator_dropped_msgs']:,} bus messages"
        f" ({phase['evaluator_dropped_points']:,} points) were dropped;"
        f" lost {phase['evaluator_lost_points']:,}"
    )
