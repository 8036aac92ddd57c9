"""Per (device, metric) time-bounded sample buffers and the window functions over them.

Times are integer microseconds since the epoch inside this module, so window bounds are exact;
`to_us` / `from_us` convert at the edges. A window `fn(metric, D)` evaluated at `now` covers the
points with time in (now - D, now] (SPEC section 7).
"""

import math
from bisect import bisect_right
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from itertools import accumulate

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# a buffer never holds more than this many points, whatever the windows ask for (bounded memory)
DEFAULT_MAX_POINTS = 100_000
# evicted points are dropped from the lists in batches, so eviction stays amortised O(1)
_COMPACT_MIN = 256


def to_us(moment: datetime) -> int:
    """A timezone-aware datetime as integer microseconds since the epoch."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"time must be timezone-aware, got {moment!r}")
    return (moment - _EPOCH) // _MICROSECOND


def from_us(micros: int) -> datetime:
    """Integer microseconds since the epoch as a UTC datetime."""
    return _EPOCH + timedelta(microseconds=micros)


def seconds_to_us(seconds: float) -> int:
    """A duration in seconds as integer microseconds."""
    return round(seconds * 1_000_000)


class Series:
    """The recent points of one metric of one device, sorted by event time.

    Keeps the latest point (by event time) forever and, in the buffer, only points newer than
    `latest_time - retention` (older ones can never fall in a window whose `now` is at least
    the latest time). Prefix sums make sum/avg/count O(log n) for any window.
    """

    __slots__ = (
        "latest_time",
        "latest_value",
        "max_points",
        "prefix",
        "retention",
        "since",
        "start",
        "times",
        "values",
    )

    def __init__(
        self, retention_us: int = 0, max_points: int = DEFAULT_MAX_POINTS, since: int | None = None
    ) -> None:
        self.retention = retention_us
        self.since = since  # when watching began: `nodata` counts silence from here
        self.max_points = max_points
        self.latest_time: int | None = None
        self.latest_value: float | None = None
        self.times: list[int] = []
        self.values: list[float] = []
        self.prefix: list[float] = [0.0]  # prefix[k] = sum(values[:k])
        self.start = 0  # points before `start` are evicted but not yet compacted away

    def __len__(self) -> int:
        return len(self.times) - self.start

    def add(self, time_us: int, value: float) -> bool:
        """Store one point; False when it is older than the latest one (out of order)."""
        in_order = self.latest_time is None or time_us >= self.latest_time
        if in_order:
            self.latest_time, self.latest_value = time_us, value
        if self.retention <= 0:
            return in_order
        times = self.times
        if in_order and (len(times) == self.start or time_us >= times[-1]):
            times.append(time_us)
            self.values.append(value)
            self.prefix.append(self.prefix[-1] + value)
        elif self.latest_time is not None and time_us > self.latest_time - self.retention:
            at = bisect_right(times, time_us, self.start)
            times.insert(at, time_us)
            self.values.insert(at, value)
            # rebuilding the tail is O(points after it): late points are rare and near the end
            self.prefix[at + 1 :] = list(accumulate(self.values[at:], initial=self.prefix[at]))[1:]
        self._evict()
        return in_order

    def extend(self, points: Iterable[tuple[int, float]]) -> None:
        """Store many points (any order), e.g. stored history after a restart."""
        for time_us, value in sorted(points):
            self.add(time_us, value)

    def set_retention(self, retention_us: int) -> None:
        """Change how far back the buffer keeps points (shrinking evicts at once)."""
        self.retention = retention_us
        if retention_us <= 0:
            self.times, self.values, self.prefix, self.start = [], [], [0.0], 0
        else:
            self._evict()

    def bounds(self, low_us: int, high_us: int) -> tuple[int, int]:
        """Indexes [i, j) of the points with time in (low, high]."""
        times, start = self.times, self.start
        return bisect_right(times, low_us, start), bisect_right(times, high_us, start)

    def _evict(self) -> None:
        times = self.times
        if self.latest_time is None:
            return
        cutoff = self.latest_time - self.retention
        start = max(bisect_right(times, cutoff, self.start), len(times) - self.max_points)
        self.start = start
        if start >= _COMPACT_MIN and start * 2 >= len(times):
            del times[:start]
            del self.values[:start]
            self.prefix = list(accumulate(self.values, initial=0.0))
            self.start = 0


# -- window functions: (series, low, high) -> value over (low, high], None when unknown ------

Aggregate = Callable[[Series, int, int], float | None]


def _count(series: Series, low: int, high: int) -> float:
    i, j = series.bounds(low, high)
    return float(j - i)


def _sum(series: Series, low: int, high: int) -> float | None:
    i, j = series.bounds(low, high)
    return series.prefix[j] - series.prefix[i] if j > i else None


def _avg(series: Series, low: int, high: int) -> float | None:
    i, j = series.bounds(low, high)
    return (series.prefix[j] - series.prefix[i]) / (j - i) if j > i else None


def _min(series: Series, low: int, high: int) -> float | None:
    i, j = series.bounds(low, high)
    return min(series.values[i:j]) if j > i else None


def _max(series: Series, low: int, high: int) -> float | None:
    i, j = series.bounds(low, high)
    return max(series.values[i:j]) if j > i else None


def _last(series: Series, low: int, high: int) -> float | None:
    i, j = series.bounds(low, high)
    return series.values[j - 1] if j > i else None


def _delta(series: Series, low: int, high: int) -> float | None:
    i, j = series.bounds(low, high)
    return series.values[j - 1] - series.values[i] if j > i else None


def _rate(series: Series, low: int, high: int) -> float | None:
    i, j = series.bounds(low, high)
    if j - i < 2 or series.times[j - 1] == series.times[i]:
        return None  # one point, or all at one instant: no time to divide by
    seconds = (series.times[j - 1] - series.times[i]) / 1_000_000
    return (series.values[j - 1] - series.values[i]) / seconds


def _stddev(series: Series, low: int, high: int) -> float | None:
    i, j = series.bounds(low, high)
    if j <= i:
        return None
    window = series.values[i:j]
    mean = sum(window) / len(window)  # two passes: no cancellation from sums of squares
    return math.sqrt(sum((x - mean) ** 2 for x in window) / (j - i))  # population


AGGREGATES: dict[str, Aggregate] = {
    "avg": _avg,
    "min": _min,
    "max": _max,
    "sum": _sum,
    "count": _count,
    "last": _last,
    "delta": _delta,
    "rate": _rate,
    "stddev": _stddev,
}


def aggregate(function: str, series: Series | None, low_us: int, high_us: int) -> float | None:
    """Window `function` over the points of `series` with time in (low, high]."""
    if series is None:
        return 0.0 if function == "count" else None
    return AGGREGATES[function](series, low_us, high_us)
