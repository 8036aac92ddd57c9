"""`iotdeck bench realtime`: K GraphQL subscribers, each on its own device, devices at 1 Hz.

One run: a private Mosquitto with the project's config, a fresh PostgreSQL database, and
one `iotdeck serve` process (ingest in-process, in-process bus). K devices are registered;
K WebSocket clients (graphql-transport-ws, the `websockets` library) each subscribe to
`telemetryReceived` of their own device; one paho publisher sends every device one
message a second, stamped with its publish time. Reported: delivered messages/s,
publish-to-client latency p50/p99, messages the server dropped for slow subscribers
(`bus_dropped_total`), and the server's RSS per 100 subscribers.
"""

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
import websockets
from sqlmodel import Session

from app.core import db, migrate
from app.core.models import DeviceCreate, Role, UserCreate
from app.services import devices, users
from bench.ingest import BENCH_RATE_LIMIT
from bench.services import (
    PG_ADMIN_URL,
    Mosquitto,
    broker_and_database,
    iotdeck_environment,
    rss_kb,
    serving,
)

PASSWORD = "bench password 1"
SUBSCRIPTION = (
    "subscription ($id: ID!) { telemetryReceived(deviceId: $id) { time value metricName } }"
)


@dataclass(frozen=True)
class Options:
    """What to run."""

    subscribers: int = 1000
    seconds: float = 30.0
    pg_admin_url: str = PG_ADMIN_URL


def _dropped(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("bus_dropped_total")
    )


class Clients:
    """K subscribers; each records the latency of every point it receives."""

    def __init__(self, ws_url: str, token: str, device_ids: list[uuid.UUID]) -> None:
        self.ws_url = ws_url
        self.token = token
        self.device_ids = device_ids
        self.latencies: list[float] = []
        self.subscribed = 0
        self.errors: list[str] = []

    async def _one(self, device_id: uuid.UUID, ready: asyncio.Event, stop: asyncio.Event) -> None:
        async with websockets.connect(
            self.ws_url, subprotocols=["graphql-transport-ws"], max_queue=None, open_timeout=120
        ) as socket:
            init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {self.token}"}}
            await socket.send(json.dumps(init))
            assert json.loads(await socket.recv())["type"] == "connection_ack"
            subscribe = {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": SUBSCRIPTION, "variables": {"id": str(device_id)}},
            }
            await socket.send(json.dumps(subscribe))
            self.subscribed += 1
            if self.subscribed == len(self.device_ids):
                ready.set()
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(socket.recv(), 0.5)
                except TimeoutError:
                    continue
                message = orjson.loads(raw)
                if message["type"] == "next":
                    point = message["payload"]["data"]["telemetryReceived"]
                    sent = datetime.fromisoformat(point["time"]).timestamp()
                    self.latencies.append(time.time() - sent)
                elif message["type"] == "error":
                    self.errors.append(str(message["payload"]))

    async def run(self, ready: asyncio.Event, stop: asyncio.Event) -> None:
        """Connect everyone (in waves, to be kind to the accept queue) and listen."""
        tasks = []
        for index, device_id in enumerate(self.device_ids):
            tasks.append(asyncio.create_task(self._one(device_id, ready, stop)))
            if index % 50 == 49:
                await asyncio.sleep(0.25)
        await asyncio.gather(*tasks)


def _publish(port: int, device_ids: list[uuid.UUID], seconds: float, counter: list[int]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.monotonic()
    second = 0
    while (elapsed := time.monotonic() - started) < seconds:
        if elapsed < second:
            time.sleep(min(0.01, second - elapsed))
            continue
        # spread each second's messages over the second, as independent devices would
        for index, device_id in enumerate(device_ids):
            target = second + index / len(device_ids)
            delay = target - (time.monotonic() - started)
            if delay > 0:
                time.sleep(delay)
            stamp = datetime.now(UTC).isoformat()
            payload = orjson.dumps({"t": float(second), "ts": stamp})
            client.publish(f"devices/{device_id}/telemetry", payload, qos=1)
            counter[0] += 1
        second += 1
    client.loop_stop()
    client.disconnect()


def run(options: Options) -> dict:
    """Run the load test and return its figures."""
    with broker_and_database(options.pg_admin_url, "iotdeck-rt-") as (folder, broker, url):
        return _measure(options, folder, broker, url)


def _measure(options: Options, folder: Path, broker: Mosquitto, url: str) -> dict:
    engine = db.init_engine(url)
    migrate.upgrade(engine)
    with Session(engine) as session:
        ids = [
            devices.create_device(session=session, data=DeviceCreate(name=f"rt {i}", type="t")).id
            for i in range(options.subscribers)
        ]
        data = UserCreate(email="bench@example.com", password=PASSWORD, role=Role.VIEWER)
        users.create_user(session=session, data=data)
        session.commit()
    engine.dispose()
    env = iotdeck_environment(
        IOTDECK_DATABASE_URL=url,
        IOTDECK_MQTT_URL=broker.url,
        IOTDECK_JWT_SECRET="bench-" + "s" * 40,
        IOTDECK_INGEST_CLIENT_ID=f"rt-{uuid.uuid4().hex[:6]}",
        IOTDECK_INGEST_BATCH_MS="50",
        IOTDECK_LOG_LEVEL="WARNING",
        # 1 message/s per device is under the default limit too; set, like every benchmark
        **BENCH_RATE_LIMIT,
        # every subscriber signs in as the one bench account (200 by default)
        IOTDECK_GRAPHQL_MAX_SUBSCRIPTIONS_PER_USER=str(options.subscribers),
    )
    with serving(folder, env) as (server, base):
        login = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"
        answer = httpx.post(
            f"{base}/graphql",
            json={"query": login, "variables": {"e": "bench@example.com", "p": PASSWORD}},
            timeout=30,
        ).json()
        token = answer["data"]["login"]["token"]
        idle_kb = rss_kb(server.pid)
        return asyncio.run(
            _drive(
                options,
                base=base,
                token=token,
                ids=ids,
                broker=broker,
                pid=server.pid,
                idle_kb=idle_kb,
            )
        )


async def _drive(
    options: Options,
    *,
    base: str,
    token: str,
    ids: list[uuid.UUID],
    broker: Mosquitto,
    pid: int,
    idle_kb: int,
) -> dict:
    clients = Clients(base.replace("http", "ws") + "/graphql", token, ids)
    ready, stop = asyncio.Event(), asyncio.Event()
    listening = asyncio.create_task(clients.run(ready, stop))
    await asyncio.wait_for(ready.wait(), 120)
    await asyncio.sleep(1)  # the last subscriptions reach the server's hub
    subscribed_kb = rss_kb(pid)
    dropped_before = await asyncio.to_thread(_dropped, base)
    published = [0]
    publisher = threading.Thread(
        target=_publish, args=(broker.port, ids, options.seconds, published), daemon=True
    )
    publisher.start()
    await asyncio.to_thread(publisher.join)
    await asyncio.sleep(2)  # the last second's points reach their subscribers
    stop.set()
    await listening
    dropped_after = await asyncio.to_thread(_dropped, base)
    latencies = sorted(clients.latencies)

    def percentile(p: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1)

    return {
        "subscribers": options.subscribers,
        "published_msgs": published[0],
        "delivered_msgs": len(latencies),
        "delivered_msgs_per_s": round(len(latencies) / options.seconds),
        "p50_latency_ms": percentile(0.50),
        "p99_latency_ms": percentile(0.99),
        "dropped": dropped_after - dropped_before,
        "errors": len(clients.errors),
        "server_rss_mb": round(subscribed_kb / 1024, 1),
        "server_rss_mb_per_100_subscribers": round(
            (subscribed_kb - idle_kb) / 1024 / options.subscribers * 100, 2
        ),
    }
