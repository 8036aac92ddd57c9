"""The device topic rules every broker applies (SPEC 8.1)."""

import pytest

from app.mqtt.access import (
    PUBLISH_LEAVES,
    SUBSCRIBE_LEAVES,
    device_may_publish,
    device_may_subscribe,
)

A = "6f1c2a8e-0c1b-4a51-9d1e-1a0000000001"
B = "6f1c2a8e-0c1b-4a51-9d1e-1a0000000002"


@pytest.mark.parametrize("leaf", PUBLISH_LEAVES)
def test_a_device_publishes_to_its_own_topics(leaf: str) -> None:
    assert device_may_publish(A, f"devices/{A}/{leaf}")


@pytest.mark.parametrize("leaf", SUBSCRIBE_LEAVES)
def test_a_device_subscribes_to_its_own_topics(leaf: str) -> None:
    assert device_may_subscribe(A, f"devices/{A}/{leaf}")


@pytest.mark.parametrize(
    "topic",
    [
        f"devices/{B}/telemetry",
        f"devices/{A}/commands",
        f"devices/{A}/config",
        f"devices/{A}/telemetry/x",
        f"devices/{A}/telemetry/",
        f"devices/{A}/../{B}/telemetry",
        f"devices/{A}/status/../../{B}/status",
        f"/devices/{A}/telemetry",
        f"devices/{A.upper()}/telemetry",
        f"devices/{A}/commands/ack/x",
        f"devices/{A}/+",
        f"devices/{A}/#",
        "devices/+/telemetry",
        "#",
        "",
    ],
)
def test_a_device_publishes_nowhere_else(topic: str) -> None:
    assert not device_may_publish(A, topic)


@pytest.mark.parametrize(
    "topic_filter",
    [
        f"devices/{B}/commands",
        f"devices/{B}/config",
        f"devices/{A}/telemetry",
        f"devices/{A}/commands/ack",
        f"devices/{A}/commands/#",
        f"devices/{A}/commands/+",
        f"devices/{A}/+",
        f"devices/{A}/#",
        "devices/+/commands",
        "devices/#",
        "#",
        "+/+/+",
        f"$share/group/devices/{A}/commands",
        f"$queue/devices/{A}/commands",
        f"devices/{A}/../{B}/commands",
        f"devices/{A}/commands/x",
        "",
    ],
)
def test_a_device_subscribes_to_nothing_else(topic_filter: str) -> None:
    assert not device_may_subscribe(A, topic_filter)


@pytest.mark.parametrize("device_id", ["", "+", "#", f"{A}/telemetry", "x\0y"])
def test_an_id_that_is_not_one_topic_level_gets_nothing(device_id: str) -> None:
    # an id such as "+" would otherwise turn the device's own topic into a wildcard
    assert not device_may_publish(device_id, f"devices/{device_id}/telemetry")
    assert not device_may_subscribe(device_id, f"devices/{device_id}/commands")
