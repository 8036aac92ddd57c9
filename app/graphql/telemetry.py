"""Telemetry over GraphQL (seed section 1.4): raw series, aggregates, latest value, metrics."""

import uuid
from collections.abc import Callable
from typing import Annotated, TypeVar

import strawberry
from sqlmodel import Session

from app.core.errors import NotFoundError
from app.core.intervals import parse_interval
from app.graphql import arguments
from app.graphql.context import Info, in_session
from app.graphql.permissions import IsAuthenticated, requires
from app.graphql.types import TelemetryAggregation, TelemetryPoint, TelemetrySeries
from app.services import devices, telemetry

T = TypeVar("T")
DEFAULT_LIMIT = 1000
DEFAULT_NAMES_LIMIT = 100
# `from` is a Python keyword: the argument keeps its GraphQL name, the parameter cannot
From = Annotated[str, strawberry.argument(name="from")]


async def _on_device(device_id: uuid.UUID, work: Callable[[Session], T]) -> T:
    """`work` in one session; NOT_FOUND when no device has this id."""

    def run(session: Session) -> T:
        # the service's argument checks (from < to, bucket count) go first: bad input is
        # BAD_USER_INPUT whether or not the device exists
        result = work(session)
        if devices.get_device(session=session, device_id=device_id) is None:
            raise NotFoundError("device", device_id)
        return result

    return await in_session(run)


@strawberry.type
class TelemetryQuery:
    """Read access to telemetry, for every signed-in role."""

    @strawberry.field(
        description="Stored values of one metric with from <= time < to, oldest first; "
        "`limit` is 1 to 10000.",
        extensions=requires(IsAuthenticated()),
    )
    async def device_telemetry(
        self,
        device_id: strawberry.ID,
        metric_name: str,
        from_: From,
        to: str,
        limit: int | None = DEFAULT_LIMIT,
    ) -> TelemetrySeries:
        """The first `limit` values of the metric in the range."""
        device = arguments.device_id(device_id)
        name = arguments.metric_name(metric_name)
        start, end = arguments.moment(from_, "from"), arguments.moment(to, "to")
        # an explicit null means "not given": the default applies
        count = arguments.point_limit(DEFAULT_LIMIT if limit is None else limit)
        samples = await _on_device(
            device,
            lambda session: telemetry.series(
                session=session,
                device_id=device,
                metric_name=name,
                start=start,
                end=end,
                limit=count,
            ),
        )
        points = [TelemetryPoint.from_sample(sample) for sample in samples]
        return TelemetrySeries(metric_name=name, points=points)

    @strawberry.field(
        description="Avg, min, max and count of one metric per `interval` bucket with "
        "from <= time < to; buckets start at multiples of `interval` since 1970-01-01T00:00Z. "
        'Intervals: "30 seconds", "1 minute", "15 minutes", "1 hour", "1 day", "5m", "1h", "1d".',
        extensions=requires(IsAuthenticated()),
    )
    async def device_telemetry_aggregated(
        self, device_id: strawberry.ID, metric_name: str, from_: From, to: str, interval: str
    ) -> list[TelemetryAggregation]:
        """One entry per bucket holding values, oldest first."""
        device = arguments.device_id(device_id)
        name = arguments.metric_name(metric_name)
        start, end = arguments.moment(from_, "from"), arguments.moment(to, "to")
        seconds = parse_interval(interval)
        buckets = await _on_device(
            device,
            lambda session: telemetry.aggregate(
                session=session,
                device_id=device,
                metric_name=name,
                start=start,
                end=end,
                bucket_seconds=seconds,
            ),
        )
        return [TelemetryAggregation.from_aggregate(bucket) for bucket in buckets]

    @strawberry.field(
        description="The newest value of one metric, or null when it has none.",
        extensions=requires(IsAuthenticated()),
    )
    async def device_latest_metric(
        self, device_id: strawberry.ID, metric_name: str
    ) -> TelemetryPoint | None:
        """The metric's newest value."""
        device = arguments.device_id(device_id)
        name = arguments.metric_name(metric_name)
        sample = await _on_device(
            device,
            lambda session: telemetry.latest(session=session, device_id=device, metric_name=name),
        )
        return None if sample is None else TelemetryPoint.from_sample(sample)

    @strawberry.field(
        description="The metrics a device has reported, sorted by name, one page; `limit` is "
        "1 to the server's page size.",
        extensions=requires(IsAuthenticated()),
    )
    async def device_metrics(
        self,
        info: Info,
        device_id: strawberry.ID,
        limit: int | None = DEFAULT_NAMES_LIMIT,
        offset: int | None = 0,
    ) -> list[str]:
        """One page of the device's metric names."""
        device = arguments.device_id(device_id)
        max_limit = info.context.settings.max_page_size
        count, skip = arguments.page(
            limit, offset, default=DEFAULT_NAMES_LIMIT, max_limit=max_limit
        )
        return await _on_device(
            device,
            lambda session: telemetry.metric_names(
                session=session, device_id=device, limit=count, offset=skip, max_limit=max_limit
            ),
        )
