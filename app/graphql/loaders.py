"""Batch functions for per-item fields, so `devices { metrics }` costs one worker thread."""

import functools
import uuid
from collections.abc import Awaitable, Callable, Sequence

from sqlmodel import Session

from app.core.models import DeviceCredential, User
from app.graphql.context import in_session
from app.services import credentials, telemetry, users
from app.services.telemetry import Sample


@functools.cache
def metric_names(limit: int) -> Callable[[Sequence[str]], Awaitable[list[list[str]]]]:
    """The batch function of the first `limit` metric names of each device (one per limit)."""

    async def load(device_ids: Sequence[str]) -> list[list[str]]:
        return await in_session(
            lambda session: [
                telemetry.metric_names(
                    session=session, device_id=device_id, limit=limit, max_limit=limit
                )
                for device_id in device_ids
            ]
        )

    return load


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


async def users_by_id(user_ids: Sequence[uuid.UUID]) -> list[User | None]:
    """The users with these ids (None where one is gone), in one query."""

    def load(session: Session) -> list[User | None]:
        found = {user.id: user for user in users.users_by_id(session=session, ids=user_ids)}
        return [found.get(user_id) for user_id in user_ids]

    return await in_session(load)
