"""The rule evaluator as `iotdeck serve` runs it, plus a probe of what it evaluated and when.

Run by `bench/rules.py` in its own process (`python -m bench.rules_evaluator STATUS.json`)
so its CPU is its own: the Redis bus listener and `app.workers.evaluation.run_evaluator` share one
event loop, as in `iotdeck serve` (without the web pages). It prints `ready` once the bus
listens and the evaluator has started (rules loaded, history replayed, alerts aligned).
Every 0.2 s it rewrites STATUS.json with the points evaluated so far (live, and replayed
from storage after its bus queue dropped messages) and whether a turn is in progress; on
SIGTERM it adds its figures under "final": points and bus messages evaluated live,
transitions, publish-to-evaluated latency (payload timestamps are publish times; one
sample per device message), bus messages and points dropped, points replayed, ticks, CPU
seconds since ready, peak RSS.
"""

import asyncio
import contextlib
import json
import os
import resource
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from prometheus_client import REGISTRY

from app.core import bus, db
from app.core.config import get_settings
from app.workers import evaluation, leases
from app.workers.background import _tune_garbage_collector
from app.workers.evaluation_drops import Dropped
from rules.engine import Transition

STATUS_EVERY_S = 0.2


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _dropped() -> tuple[float, float]:
    """The evaluator's dropped bus messages and points so far."""
    return (
        REGISTRY.get_sample_value("evaluator_dropped_messages_total") or 0.0,
        REGISTRY.get_sample_value("evaluator_dropped_points_total") or 0.0,
    )


def _percentiles_ms(samples: list[float]) -> tuple[float | None, float | None]:
    """p50 and p99 in milliseconds."""
    if len(samples) < 2:
        return None, None
    cuts = statistics.quantiles(samples, n=100)
    return round(cuts[49] * 1000, 1), round(cuts[98] * 1000, 1)


class Probe:
    """What the evaluator did since it was ready; its worker thread counts, the loop reads."""

    def __init__(self) -> None:
        self.loaded = threading.Event()
        self.reset()

    def reset(self) -> None:
        """Zero the counters (start-up is not measured)."""
        self.points = self.messages = self.fired = self.cleared = self.replayed = 0
        self.busy = False  # a turn (a batch and its replay, or a tick) is in progress
        self.latencies: list[float] = []
        self.ticks: list[float] = []
        self.cpu_at_start = _cpu_seconds()
        self.dropped_at_start = _dropped()

    def evaluated(self, message: bus.Message, found: list[Transition]) -> None:
        """Count one bus message (its points and transitions) and its latency."""
        now = time.time()
        points = message["points"]
        self.points += len(points)
        self.messages += 1
        for transition in found:
            if transition.kind == "FIRED":
                self.fired += 1
            else:
                self.cleared += 1
        stamp = None
        for point in points:  # one sample per device message (its points share a time)
            if point["time"] != stamp:
                stamp = point["time"]
                self.latencies.append(now - datetime.fromisoformat(stamp).timestamp())

    def figures(self) -> dict:
        """Everything counted, as JSON-ready figures."""
        p50, p99 = _percentiles_ms(self.latencies)
        (messages, points), (messages_then, points_then) = _dropped(), self.dropped_at_start
        return {
            "points": self.points,
            "messages": self.messages,
            "replayed": self.replayed,
            "fired": self.fired,
            "cleared": self.cleared,
            "p50_latency_ms": p50,
            "p99_latency_ms": p99,
            "dropped": messages - messages_then,
            "dropped_points": points - points_then,
            "ticks": len(self.ticks),
            "max_tick_ms": round(max(self.ticks, default=0.0) * 1000, 1),
            "cpu_s": round(_cpu_seconds() - self.cpu_at_start, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }


PROBE = Probe()


class ProbedEvaluator(evaluation.Evaluator):
    """The production evaluator, reporting to PROBE."""

    def start(self, fresh: Callable[[str], bool] | None = None) -> list[Transition]:
        """Start as usual (load, replay history, align with alerts), then say so."""
        found = super().start(fresh)
        PROBE.loaded.set()
        return found

    def on_messages(
        self, batch: list[tuple[str, bus.Message]], dropped: Dropped | None = None
    ) -> list[Transition]:
        """Evaluate a batch as usual, busy meanwhile (a long replay is progress)."""
        PROBE.busy = True
        try:
            return super().on_messages(batch, dropped)
        finally:
            PROBE.busy = False

    def recover(self, dropped: Dropped) -> list[Transition]:
        """Replay what was dropped as usual, then count the points read back and transitions."""
        before = self.replayed_points
        found = super().recover(dropped)
        PROBE.replayed += self.replayed_points - before
        PROBE.fired += sum(t.kind == "FIRED" for t in found)
        PROBE.cleared += sum(t.kind == "CLEARED" for t in found)
        return found

    def _evaluate(self, message: bus.Message) -> list[Transition]:
        """Evaluate one telemetry message as usual, then count."""
        found = super()._evaluate(message)
        PROBE.evaluated(message, found)
        return found

    def tick(self, now: datetime | None = None) -> list[Transition]:
        """Tick as usual, timed."""
        started = time.perf_counter()
        found = super().tick(now)
        PROBE.ticks.append(time.perf_counter() - started)
        return found


def _status() -> dict:
    return {"points": PROBE.points, "replayed": PROBE.replayed, "busy": PROBE.busy}


def _write(path: Path, figures: dict) -> None:
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(figures))
    os.replace(partial, path)  # the benchmark never reads half a file


async def _run(status: Path) -> None:
    settings = get_settings()
    db.init_engine(settings.database_url)
    loop = asyncio.get_running_loop()
    hub = bus.Hub(loop)
    redis_bus = bus.make_bus(settings.redis_url, settings.partitions)
    await redis_bus.start(hub)
    bus.set_bus(redis_bus, hub)
    assert redis_bus.streams is not None
    evaluation.Evaluator = ProbedEvaluator  # run_evaluator builds its evaluator by this name
    evaluating = asyncio.create_task(
        evaluation.run_evaluator(
            hub,
            redis_bus.streams,
            leases.make_owner(settings.redis_url, settings.partitions, evaluation.GROUP),
        )
    )
    while not (redis_bus.healthy and PROBE.loaded.is_set()):
        if evaluating.done():
            evaluating.result()  # raises what stopped it
            raise RuntimeError("the evaluator stopped before it was ready")
        await asyncio.sleep(0.02)
    _tune_garbage_collector()  # as `iotdeck serve` does once started
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    PROBE.reset()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while not stop.is_set():
        _write(status, _status())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), STATUS_EVERY_S)
    evaluating.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await evaluating
    await redis_bus.stop()
    _write(status, {**_status(), "final": PROBE.figures()})


def main() -> None:
    """Evaluate until SIGTERM, then write the final figures."""
    asyncio.run(_run(Path(sys.argv[1])))


if __name__ == "__main__":
    main()
