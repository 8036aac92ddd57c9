"""The device topics of SPEC section 5, spelt in one place: `devices/{id}/{leaf}`."""

import uuid

TELEMETRY = "telemetry"  # device -> platform: points
STATUS = "status"  # device -> platform: online / offline, and the last will
ANSWERS = "commands/ack"  # device -> platform: answers to commands
COMMANDS = "commands"  # platform -> device
CONFIG = "config"  # platform -> device, retained

# what ingest subscribes to, for every device
INGEST_TOPICS = tuple(f"devices/+/{leaf}" for leaf in (TELEMETRY, STATUS, ANSWERS))


def device_topic(device_id: uuid.UUID | str, leaf: str) -> str:
    """The topic `leaf` (one of the constants above) of one device."""
    return f"devices/{device_id}/{leaf}"


def command_topic(device_id: uuid.UUID | str) -> str:
    """Where a device receives its commands."""
    return device_topic(device_id, COMMANDS)


def config_topic(device_id: uuid.UUID | str) -> str:
    """Where a device finds its configuration (retained)."""
    return device_topic(device_id, CONFIG)
