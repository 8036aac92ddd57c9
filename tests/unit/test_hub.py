"""In-process fan-out: filters, bounded queues, dropping the oldest."""

import asyncio

from app.core.bus import TELEMETRY_BATCH, Hub, telemetry_batch, telemetry_channel


async def test_each_subscriber_gets_what_its_filter_accepts() -> None:
    hub = Hub(asyncio.get_running_loop())
    one = hub.subscribe(channels=["iot:telemetry:1"])
    everything = hub.subscribe(lambda channel: True)
    hub.deliver("iot:telemetry:2", {"n": 1})
    hub.deliver("iot:telemetry:1", {"n": 2})
    assert await one.get() == ("iot:telemetry:1", {"n": 2})
    assert [await everything.get() for _ in range(2)] == [
        ("iot:telemetry:2", {"n": 1}),
        ("iot:telemetry:1", {"n": 2}),
    ]


async def test_a_slow_subscriber_loses_its_oldest_messages_only() -> None:
    hub = Hub(asyncio.get_running_loop())
    slow = hub.subscribe(lambda _: True, size=3)
    fast = hub.subscribe(lambda _: True, size=100)
    for n in range(10):
        hub.deliver("c", {"n": n})
    assert slow.dropped == 7
    assert [(await slow.get())[1]["n"] for _ in range(3)] == [7, 8, 9]
    assert fast.dropped == 0
    assert [(await fast.get())[1]["n"] for _ in range(10)] == list(range(10))


async def test_closed_subscriptions_stop_receiving() -> None:
    hub = Hub(asyncio.get_running_loop())
    subscription = hub.subscribe(lambda _: True)
    indexed = hub.subscribe(channels=["c", "d"])
    assert hub.subscribers == 2
    subscription.close()
    indexed.close()
    hub.deliver("c", {})
    assert hub.subscribers == 0
    assert [item async for item in subscription] == []


async def test_delivery_from_another_thread() -> None:
    hub = Hub(asyncio.get_running_loop())
    subscription = hub.subscribe(lambda _: True)
    await asyncio.to_thread(hub.deliver_threadsafe, [("c", {"n": 1}), ("c", {"n": 2})])
    assert await asyncio.wait_for(subscription.get(), 5) == ("c", {"n": 1})
    assert await asyncio.wait_for(subscription.get(), 5) == ("c", {"n": 2})


async def test_get_many_takes_what_is_queued_up_to_a_limit_in_order() -> None:
    hub = Hub(asyncio.get_running_loop())
    reader = hub.subscribe(lambda _: True)
    waiting = asyncio.create_task(reader.get_many(3))
    await asyncio.sleep(0)  # it waits for a first message
    assert not waiting.done()
    for n in range(5):
        hub.deliver("c", {"n": n})
    assert [m["n"] for _, m in await waiting] == [0, 1, 2]
    assert [m["n"] for _, m in await reader.get_many(10)] == [3, 4]


async def test_a_telemetry_batch_is_delivered_as_each_device_s_own_message() -> None:
    hub = Hub(asyncio.get_running_loop())
    first = hub.subscribe(channels=[telemetry_channel("a")])
    telemetry = hub.subscribe(lambda channel: channel.startswith(telemetry_channel("")))
    everything = hub.subscribe(lambda _: True)
    points = {"a": [{"metric": "t", "value": 1.0}], "b": [{"metric": "h", "value": 2.0}]}
    hub.deliver(TELEMETRY_BATCH, {"v": 1, "correlation_id": "c1", **telemetry_batch(points)})
    expected = [
        (telemetry_channel(device), {"v": 1, "correlation_id": "c1", "device_id": device, **p})
        for device, p in (("a", {"points": points["a"]}), ("b", {"points": points["b"]}))
    ]
    assert await first.get() == expected[0]
    assert first.waiting == 0
    assert [await telemetry.get() for _ in range(2)] == expected
    # nobody gets the batch itself, not even a subscriber to every channel
    assert [await everything.get() for _ in range(2)] == expected
    assert everything.waiting == 0
