"""`iotdeck simulate` measured for `iotdeck bench fleet`: CPU, connections, messages.

Runs the command as an operator would, against the benchmark's open broker and database,
then reads from outside: its CPU (/proc/<pid>/stat) over a window, its established
connections to the broker (/proc/net/tcp), and the telemetry messages the broker passed
on meanwhile (a QoS 0 subscriber) against those due.
"""

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt

from bench.ingest_fleet import process_cpu_s
from bench.services import iotdeck_environment

if TYPE_CHECKING:
    from bench.fleet import Options

IOTDECK = str(Path(sys.executable).with_name("iotdeck"))


def _sockets(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def broker_connections(pid: int, port: int) -> int:
    """Established TCP connections from process `pid` to 127.0.0.1:`port` (/proc/net/tcp)."""
    inodes = _sockets(pid)
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port and inode in inodes:
                count += 1
    return count


class _Counter:
    """A QoS 0 subscriber counting the telemetry messages the broker passes on."""

    def __init__(self, port: int) -> None:
        self.received = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("devices/+/telemetry", qos=0)
        self.client.loop_start()

    def _on_message(self, *_: object) -> None:
        self.received += 1

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def measure(options: "Options", broker_url: str, port: int, url: str) -> dict:
    """`iotdeck simulate --devices N` for a while: CPU, connections, messages delivered."""
    env = iotdeck_environment(IOTDECK_DATABASE_URL=url, IOTDECK_LOG_LEVEL="WARNING")
    command = [IOTDECK, "simulate", "--devices", str(options.simulate_devices)]
    command += ["--rate", str(options.simulate_rate), "--broker", broker_url]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("simulating"):
            raise RuntimeError(f"iotdeck simulate did not start: {line!r}")
        ready_s = time.perf_counter() - started
        time.sleep(max(2.0, 2 / options.simulate_rate))  # connected, phases spread
        counter = _Counter(port)
        cpu_before, at = process_cpu_s(process.pid), time.monotonic()
        time.sleep(options.simulate_seconds)
        cpu_after, seconds = process_cpu_s(process.pid), time.monotonic() - at
        received, connections = counter.received, broker_connections(process.pid, port)
        counter.close()
        process.send_signal(signal.SIGTERM)
        stopping = time.perf_counter()
        code = process.wait(120)
        stop_s = time.perf_counter() - stopping
    finally:
        if process.poll() is None:
            process.kill()
    due = options.simulate_devices * options.simulate_rate
    return {
        "devices": options.simulate_devices,
        "rate_per_device": options.simulate_rate,
        "started_s": round(ready_s, 1),
        "cpu_pct_of_one_core": round((cpu_after - cpu_before) / seconds * 100, 1),
        "broker_connections": connections,
        "msgs_per_s_due": round(due, 1),
        "msgs_per_s_delivered": round(received / seconds, 1),
        "stopped_s": round(stop_s, 1),
        "exit_code": code,
    }
