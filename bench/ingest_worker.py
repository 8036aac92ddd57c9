"""The ingest worker as `iotdeck ingest` runs it, plus a publish-to-commit latency probe.

Run by `bench/ingest.py` in its own process (`python -m bench.ingest_worker OUT.json`) so
its memory and CPU are its own. Each payload's timestamp is the moment the load
generator published it; after each commit the probe records commit time minus that
timestamp, once per message. On SIGTERM the worker stops as `iotdeck ingest` does and
the percentiles, CPU seconds and peak RSS are written to OUT.json.
"""

import json
import os
import resource
import signal
import sys
import threading
from datetime import UTC, datetime

from prometheus_client import REGISTRY

from app.core import bus, db
from app.core.config import get_settings
from app.mqtt.ingest import BatchResult
from app.workers.ingest_process import build_worker, ingest_address


def main() -> None:
    """Run until SIGTERM, then write the latency percentiles and peak RSS."""
    out = sys.argv[1]
    settings = get_settings()
    db.init_engine(settings.database_url)
    if settings.redis_url:  # as `iotdeck ingest`: each committed batch goes out on the bus
        if os.environ.get("IOTDECK_BENCH_STREAMS") == "off":  # the baseline of --streams
            bus.set_bus(bus.RedisBus(settings.redis_url))
        else:
            bus.set_bus(bus.make_bus(settings.redis_url, settings.partitions))
    latencies: list[float] = []

    def probe(result: BatchResult) -> None:
        now = datetime.now(UTC).timestamp()
        seen: set[tuple] = set()
        for point in result.points:
            key = (point.device_id, point.time)
            if key not in seen:  # one sample per message, not per metric
                seen.add(key)
                latencies.append(now - point.time.timestamp())

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # the per-device rate limit comes from the environment bench/ingest.py gives this
    # process (BENCH_RATE_LIMIT): high enough that the benchmark's load is never refused
    worker = build_worker(settings, ingest_address(settings))
    worker.add_listener(probe)
    worker.start()
    worker.wait_connected(30)
    sys.stdout.write("subscribed\n")
    sys.stdout.flush()
    stop.wait()
    worker.stop()
    latencies.sort()

    def percentile(p: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1)

    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_kb = usage.ru_maxrss
    with open(out, "w") as handle:
        json.dump(
            {
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
                "p50_latency_ms": percentile(0.50),
                "p99_latency_ms": percentile(0.99),
                "latency_samples": len(latencies),
                "peak_rss_mb": round(peak_kb / 1024, 1),
                "rejected": sum(
                    sample.value
                    for family in REGISTRY.collect()
                    if family.name == "telemetry_rejected"
                    for sample in family.samples
                    if sample.name == "telemetry_rejected_total"
                ),
            },
            handle,
        )


if __name__ == "__main__":
    main()
