"""`app/mqtt/link.py` against a real Mosquitto: ready after its subscriptions, the hop into
asyncio on every (re)connection, the gauge, and a clean stop."""

import asyncio
import logging
import uuid

import pytest
from prometheus_client import REGISTRY

from app.mqtt.connection import BrokerAddress
from app.mqtt.link import Link, connection_answer
from bench.services import Mosquitto


def _gauge(label: str) -> float | None:
    return REGISTRY.get_sample_value("mqtt_connected", {"client": label})


async def _wait(condition, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def test_ready_hops_to_the_loop_on_each_connection_and_stops_cleanly(
    open_mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    label = f"test-{uuid.uuid4().hex[:8]}"
    topic = f"test/{label}/#"
    link = Link(
        BrokerAddress.parse(open_mosquitto.url),
        label,
        name="test link",
        persistent=False,
        subscriptions=[topic],
        gauge=label,
    )
    link.client.reconnect_delay_set(min_delay=1, max_delay=1)  # the restart below: be quick
    assert _gauge(label) == 0  # the series exists, saying "not yet", from the start
    loop = asyncio.get_running_loop()
    readies: list[asyncio.AbstractEventLoop] = []
    # on paho's thread there is no running loop: get_running_loop would raise there
    link.on_ready_in_loop(lambda: readies.append(asyncio.get_running_loop()))
    caplog.set_level(logging.INFO, logger="app.mqtt.link")
    link.start()
    try:
        await _wait(lambda: readies == [loop])  # called on this loop, not paho's thread
        assert link.ready and _gauge(label) == 1
        assert f"test link subscribed on {open_mosquitto.url} as {label}" in caplog.text

        open_mosquitto.stop()
        await _wait(lambda: not link.ready)
        assert _gauge(label) == 0
        assert "test link lost the broker" in caplog.text
        open_mosquitto.start()  # same port: paho reconnects and subscribes again
        await _wait(lambda: readies == [loop, loop])
        assert link.ready and _gauge(label) == 1
    finally:
        link.stop()
    assert _gauge(label) is None  # no client here any more: no series
    assert link.client.socket() is None


def test_the_probe_reports_the_brokers_answer(open_mosquitto: Mosquitto) -> None:
    assert connection_answer(BrokerAddress.parse(open_mosquitto.url), 10) == "Success"
    closed = BrokerAddress(host="127.0.0.1", port=open_mosquitto.port)
    open_mosquitto.stop()
    assert connection_answer(closed, 2) == "no answer"
