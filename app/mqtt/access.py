"""Which device topics a device may use (SPEC 8.1), as pure functions of its id and a topic.

Every broker iotdeck ships or configures applies these rules: Mosquitto's ACL file, the
EMQX HTTP authorizer and the embedded broker. A device publishes only to its own
`telemetry`, `status` and `commands/ack` and subscribes only to its own `commands` and
`config`, by exact topic: no wildcard, no `$share/...`, nothing below or beside those
topics. Service accounts are not devices; the callers let them use every topic.
"""

from app.mqtt.topics import ANSWERS, COMMANDS, CONFIG, STATUS, TELEMETRY, device_topic

PUBLISH_LEAVES = (TELEMETRY, STATUS, ANSWERS)
SUBSCRIBE_LEAVES = (COMMANDS, CONFIG)
# a device id holding one of these could reach past its own topic level
_UNSAFE_IN_ID = ("/", "+", "#", "\0")


def _is_safe_id(device_id: str) -> bool:
    return bool(device_id) and not any(mark in device_id for mark in _UNSAFE_IN_ID)


def _own_topics(device_id: str, leaves: tuple[str, ...]) -> frozenset[str]:
    if not _is_safe_id(device_id):
        return frozenset()
    return frozenset(device_topic(device_id, leaf) for leaf in leaves)


def device_may_publish(device_id: str, topic: str) -> bool:
    """True when the device may publish to `topic`: its telemetry, status or command acks."""
    return topic in _own_topics(device_id, PUBLISH_LEAVES)


def device_may_subscribe(device_id: str, topic_filter: str) -> bool:
    """True when the device may subscribe to (and receive on) `topic_filter`.

    Only its own `commands` and `config` topics, spelt out: a filter with a wildcard
    could match another device's topics, so none is accepted.
    """
    return topic_filter in _own_topics(device_id, SUBSCRIBE_LEAVES)
