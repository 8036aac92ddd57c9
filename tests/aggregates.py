"""A Python reference for bucket aggregates, to compare the services' answers with."""

from collections.abc import Iterable
from datetime import UTC, datetime

import pytest

from app.services.telemetry import Aggregate, Point


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


def as_tuples(result: Iterable[Aggregate]) -> list[tuple]:
    """A service's aggregates in the reference's shape."""
    return [(a.bucket, a.avg, a.min, a.max, a.count) for a in result]
