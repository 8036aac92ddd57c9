"""What the device page draws: chart series sized for a browser, and latest-value tiles."""

import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlmodel import Session

from app.core.errors import ValidationError
from app.core.models import as_utc
from app.services import telemetry
from app.services.telemetry import Aggregate, Sample

MINUTE, HOUR, DAY = 60, 3600, 86400
# the preset views of the device page, in the order the selector shows them
RANGES: dict[str, timedelta] = {
    "15 min": timedelta(minutes=15),
    "1 h": timedelta(hours=1),
    "24 h": timedelta(hours=24),
    "7 d": timedelta(days=7),
    "30 d": timedelta(days=30),
}
# round widths only: a bucket of "7 min 12 s" would be exact but unreadable on an axis
BUCKET_WIDTHS = (
    10,
    30,
    MINUTE,
    5 * MINUTE,
    15 * MINUTE,
    HOUR,
    3 * HOUR,
    6 * HOUR,
    12 * HOUR,
    DAY,
)
MAX_POINTS = 2000


@dataclass(frozen=True, slots=True)
class ChartData:
    """One metric over [start, end): raw samples, or per-bucket statistics when too dense."""

    metric_name: str
    start: datetime
    end: datetime
    unit: str | None
    bucket_seconds: int | None = None  # None: `samples` holds every stored point
    samples: list[Sample] = field(default_factory=list)
    aggregates: list[Aggregate] = field(default_factory=list)

    @property
    def bucketed(self) -> bool:
        """True when the points are bucket averages (with min and max), not raw values."""
        return self.bucket_seconds is not None


@dataclass(frozen=True, slots=True)
class Tile:
    """The newest value of one metric."""

    metric_name: str
    value: float
    unit: str | None
    time: datetime


def bucket_width(span: timedelta, max_points: int = MAX_POINTS) -> int:
    """The narrowest round bucket width (seconds) giving at most `max_points` buckets."""
    seconds = span.total_seconds()
    limit = max(2, min(max_points, telemetry.MAX_BUCKETS))
    # +1: a range that does not start on a bucket boundary touches one more bucket
    for width in BUCKET_WIDTHS:
        if math.ceil(seconds / width) + 1 <= limit:
            return width
    return math.ceil(seconds / (limit - 1) / DAY) * DAY  # years: whole days


def chart_data(
    *,
    session: Session,
    device_id: uuid.UUID | str,
    metric_name: str,
    start: datetime,
    end: datetime,
    max_points: int = MAX_POINTS,
) -> ChartData:
    """Raw samples of [start, end) when at most `max_points`, else bucket statistics."""
    where = {"session": session, "device_id": device_id, "metric_name": metric_name}
    # one more than allowed tells "few enough" from "too many" without counting them all
    samples = telemetry.series(**where, start=start, end=end, limit=max_points + 1)
    if len(samples) <= max_points:
        unit = samples[-1].unit if samples else _unit(session, device_id, metric_name)
        return ChartData(metric_name, start, end, unit, samples=samples)
    width = bucket_width(end - start, max_points)
    aggregates = telemetry.aggregate(**where, start=start, end=end, bucket_seconds=width)
    unit = _unit(session, device_id, metric_name)
    return ChartData(metric_name, start, end, unit, bucket_seconds=width, aggregates=aggregates)


def _unit(session: Session, device_id: uuid.UUID | str, metric_name: str) -> str | None:
    newest = telemetry.latest(session=session, device_id=device_id, metric_name=metric_name)
    return newest.unit if newest else None


def samples_after(
    *,
    session: Session,
    device_id: uuid.UUID | str,
    metric_name: str,
    after: datetime,
    end: datetime,
    limit: int = MAX_POINTS + 1,
) -> list[Sample]:
    """Raw samples with after < time < end, oldest first: the new tail of a live chart."""
    start = after + timedelta(microseconds=1)
    if start >= end:
        return []
    return telemetry.series(
        session=session,
        device_id=device_id,
        metric_name=metric_name,
        start=start,
        end=end,
        limit=limit,
    )


def tiles(*, session: Session, device_id: uuid.UUID | str) -> list[Tile]:
    """The newest value, unit and time of every metric of a device, by metric name."""
    latest = telemetry.latest_values(session=session, device_id=device_id)
    return [
        Tile(name, sample.value, sample.unit, as_utc(sample.time))
        for name, sample in sorted(latest.items())
    ]


def parse_custom_range(start_text: str | None, end_text: str | None) -> tuple[datetime, datetime]:
    """A custom range typed as ISO 8601 local times, read as UTC; ValidationError on bad input."""
    start = _parse_time("from", start_text)
    end = _parse_time("to", end_text)
    if start >= end:
        raise ValidationError("from", "must be before “To”")
    return start, end


def _parse_time(name: str, text: str | None) -> datetime:
    if not text or not text.strip():
        raise ValidationError(name, "is required")
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(name, "is not a date and time like 2026-11-29T10:30") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
