"""One connection publishing telemetry for a slice of a large fleet, paced evenly.

Run by `bench/ingest_fleet.py` in its own process (`python -m bench.fleet_publisher`), a
few of them side by side: real fleets reach the broker over many connections, but a few
paho clients, each cycling through its devices' distinct topics
(`devices/{id}/telemetry`), offer the broker and ingest the same stream of messages
without thousands of sockets on the benchmark's two cores.

Reads one JSON line on stdin: `port`, `ids` (a file of device ids, one a line), `rate`
(messages/s of this process), `seconds`; connects and prints "connected"; then reads the
start time (a `time.time()`) on the next line, so that publishers that took different
times to start still begin together. Message k goes out at start + k/rate to device
k mod n: each device publishes every n/rate seconds, its phase shifted by its place in the
slice, so the load is even over time, never a burst per round. When the window ends it
prints one JSON line at once (messages sent, acknowledged by then, the seconds taken),
and another once the broker has acknowledged everything (or a minute has passed).
"""

import json
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt

from bench.ingest import METRICS

# paho scans its in-flight list on every PUBACK (STACK-NOTES): a small window, and the
# rest waits in paho's queue; `acked` at the end says whether the broker kept up
MAX_INFLIGHT = 100
ACK_WAIT_S = 60.0


def payload(at: datetime, index: int) -> bytes:
    """A seed-format message of 3 metrics, stamped with its publish time."""
    values = (20 + index % 97 / 10, 40 + index % 53 / 10, 100 - index % 100)
    metrics = [{**metric, "value": value} for metric, value in zip(METRICS, values, strict=True)]
    return orjson.dumps({"timestamp": at.isoformat(), "metrics": metrics})


class _Acks:
    """PUBACKs counted on paho's thread."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def on_publish(self, *_: object) -> None:
        with self.lock:
            self.count += 1


def main() -> None:
    """Connect, wait for the start time, publish for `seconds`, report."""
    config = json.loads(sys.stdin.readline())
    topics = [
        f"devices/{uuid.UUID(line)}/telemetry" for line in Path(config["ids"]).read_text().split()
    ]
    rate, seconds = float(config["rate"]), float(config["seconds"])
    acks = _Acks()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(MAX_INFLIGHT)
    client.on_publish = acks.on_publish
    client.connect("127.0.0.1", int(config["port"]))
    client.loop_start()
    sys.stdout.write("connected\n")
    sys.stdout.flush()
    time.sleep(max(0.0, float(sys.stdin.readline()) - time.time()))
    started = time.monotonic()
    sent = 0
    last = datetime.now(UTC)
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate) + 1
        while sent < due:
            # one device's messages are 1/its rate apart; across devices a stamp may repeat,
            # but each (device, metric, time) must be unique: never the same stamp twice
            last = max(datetime.now(UTC), last + timedelta(microseconds=1))
            client.publish(topics[sent % len(topics)], payload(last, sent), qos=1)
            sent += 1
        time.sleep(min(0.005, max(0.0, sent / rate - (time.monotonic() - started))))
    taken = time.monotonic() - started
    window = {"sent": sent, "acked_in_window": acks.count, "seconds": taken}
    sys.stdout.write(json.dumps(window) + "\n")
    sys.stdout.flush()
    deadline = time.monotonic() + ACK_WAIT_S
    while acks.count < sent and time.monotonic() < deadline:
        time.sleep(0.01)  # PUBACKs arrive on paho's thread: no event to wait on
    client.disconnect()
    client.loop_stop()
    sys.stdout.write(json.dumps({"acked": acks.count}) + "\n")


if __name__ == "__main__":
    main()
