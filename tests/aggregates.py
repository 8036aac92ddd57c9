"""A Python reference for bucket aggregates, and the service's answers in its shape."""

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest
from sqlmodel import Session

from app.services import telemetry
from app.services.telemetry import Point


def reference(points: Iterable[Point], start: datetime, end: datetime, width: int) -> list[tuple]:
    """(bucket, avg, min, max, count) per `width`-second bucket of start <= time < end."""
    buckets: dict[int, list[float]] = {}
    for p in points:
        if start <= p.time < end:
            buckets.setdefault(int(p.time.timestamp()) // width * width, []).append(p.value)
    return [
        (datetime.fromtimestamp(k, UTC), pytest.approx(sum(v) / len(v)), min(v), max(v), len(v))
        for k, v in sorted(buckets.items())
    ]


def aggregated(
    session: Session,
    device_id: uuid.UUID,
    metric_name: str,
    start: datetime,
    end: datetime,
    *,
    width: int,
) -> list[tuple]:
    """What `telemetry.aggregate` answers, in the reference's shape."""
    result = telemetry.aggregate(
        session=session,
        device_id=device_id,
        metric_name=metric_name,
        start=start,
        end=end,
        bucket_seconds=width,
    )
    return [(a.bucket, a.avg, a.min, a.max, a.count) for a in result]
