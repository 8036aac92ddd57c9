"""Batch functions for per-device fields, so `devices { metrics }` costs one worker thread."""

import uuid
from collections.abc import Sequence

from sqlmodel import Session

from app.graphql.context import in_session
from app.models import DeviceCredential
from app.services import credentials, telemetry
from app.services.telemetry import Sample


async def metric_names(device_ids: Sequence[str]) -> list[list[str]]:
    """The sorted metric names of each device, in one session."""
    return await in_session(
        lambda session: [
            telemetry.metric_names(session=session, device_id=device_id) for device_id in device_ids
        ]
    )


async def latest_samples(keys: Sequence[tuple[str, str]]) -> list[Sample | None]:
    """The newest value of each (device id, metric name), or None, in one session."""
    return await in_session(
        lambda session: [
            telemetry.latest(session=session, device_id=device_id, metric_name=name)
            for device_id, name in keys
        ]
    )


async def device_credentials(device_ids: Sequence[str]) -> list[list[DeviceCredential]]:
    """The live credentials of each device, in one query."""
    ids = [uuid.UUID(device_id) for device_id in device_ids]

    def load(session: Session) -> list[list[DeviceCredential]]:
        found = credentials.live_credentials(session=session, device_ids=ids)
        return [found.get(device_id, []) for device_id in ids]

    return await in_session(load)
