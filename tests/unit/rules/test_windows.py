"""Window buffers and functions against a straightforward Python reference (seeded random data)."""

import math
import random
import statistics
from datetime import UTC, datetime, timedelta

import pytest

from rules.ast import WINDOW_FUNCTIONS
from rules.windows import AGGREGATES, Series, aggregate, from_us, seconds_to_us, to_us

SECOND = 1_000_000


def reference(  # noqa: PLR0911
    function: str, points: list[tuple[int, float]], low: int, high: int
) -> float | None:
    """The window function computed the obvious way over (low, high]."""
    inside = sorted(p for p in points if low < p[0] <= high)
    values = [v for _, v in inside]
    if function == "count":
        return float(len(values))
    if not values:
        return None
    first, last = inside[0], inside[-1]
    match function:
        case "avg":
            return statistics.fmean(values)
        case "sum":
            return math.fsum(values)
        case "min":
            return min(values)
        case "max":
            return max(values)
        case "last":
            return last[1]
        case "delta":
            return last[1] - first[1]
        case "rate":
            seconds = (last[0] - first[0]) / SECOND
            return None if seconds == 0 else (last[1] - first[1]) / seconds
        case "stddev":
            return statistics.pstdev(values)
    raise AssertionError(function)


def test_every_ast_window_function_has_an_implementation() -> None:
    assert set(AGGREGATES) == set(WINDOW_FUNCTIONS)


@pytest.mark.parametrize("function", WINDOW_FUNCTIONS)
def test_window_function_matches_reference_on_random_data(function: str) -> None:
    rng = random.Random(f"windows-{function}")
    retention = 300 * SECOND
    series = Series(retention)
    points: list[tuple[int, float]] = []
    clock = 1_700_000_000 * SECOND
    for step in range(2_000):
        clock += rng.randint(0, 5 * SECOND)
        # one point in ten arrives late, up to a minute behind
        time = clock - rng.randint(0, 60 * SECOND) if rng.random() < 0.1 else clock
        value = rng.uniform(-50, 50)
        series.add(time, value)
        points.append((time, value))
        if step % 7 == 0:
            now = series.latest_time
            assert now is not None
            for span in (1 * SECOND, 30 * SECOND, 300 * SECOND):
                got = AGGREGATES[function](series, now - span, now)
                want = reference(function, points, now - span, now)
                assert (got is None) == (want is None), (function, span, step)
                if want is not None:
                    assert got == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_window_excludes_its_left_edge_and_includes_now() -> None:
    series = Series(60 * SECOND)
    for second, value in ((0, 1.0), (10, 2.0), (20, 4.0)):
        series.add(second * SECOND, value)
    assert AGGREGATES["count"](series, 10 * SECOND, 20 * SECOND) == 1.0
    assert AGGREGATES["sum"](series, 10 * SECOND, 20 * SECOND) == 4.0
    assert AGGREGATES["sum"](series, 9 * SECOND, 20 * SECOND) == 6.0
    assert AGGREGATES["sum"](series, 0, 19 * SECOND) == 2.0


def test_empty_window_is_unknown_except_count_which_is_zero() -> None:
    series = Series(60 * SECOND)
    series.add(0, 1.0)
    for function in WINDOW_FUNCTIONS:
        expected = 0.0 if function == "count" else None
        assert AGGREGATES[function](series, 100 * SECOND, 200 * SECOND) == expected
        assert aggregate(function, None, 0, SECOND) == expected


def test_rate_with_one_point_is_unknown() -> None:
    series = Series(60 * SECOND)
    series.add(5 * SECOND, 3.0)
    assert AGGREGATES["rate"](series, 0, 10 * SECOND) is None
    assert AGGREGATES["delta"](series, 0, 10 * SECOND) == 0.0


def test_rate_is_per_second_between_first_and_last_point() -> None:
    series = Series(60 * SECOND)
    series.add(0, 10.0)
    series.add(4 * SECOND, 18.0)
    assert AGGREGATES["rate"](series, -SECOND, 4 * SECOND) == 2.0


def test_buffer_keeps_only_what_the_longest_window_needs() -> None:
    series = Series(10 * SECOND)
    for second in range(5_000):
        series.add(second * SECOND, float(second))
    assert len(series) == 10
    assert len(series.times) < 600  # evicted points are compacted away in batches
    assert AGGREGATES["sum"](series, 4_989 * SECOND, 4_999 * SECOND) == sum(range(4_990, 5_000))


def test_buffer_is_bounded_by_max_points() -> None:
    series = Series(10_000 * SECOND, max_points=100)
    for second in range(1_000):
        series.add(second * SECOND, 1.0)
    assert len(series) == 100


def test_late_point_is_inserted_in_place_without_moving_latest() -> None:
    series = Series(60 * SECOND)
    series.add(0, 1.0)
    series.add(20 * SECOND, 3.0)
    assert series.add(10 * SECOND, 2.0) is False
    assert (series.latest_time, series.latest_value) == (20 * SECOND, 3.0)
    assert series.values[series.start :] == [1.0, 2.0, 3.0]
    assert AGGREGATES["sum"](series, -1, 20 * SECOND) == 6.0


def test_point_too_old_for_any_window_is_dropped() -> None:
    series = Series(10 * SECOND)
    series.add(100 * SECOND, 1.0)
    series.add(50 * SECOND, 9.0)
    assert len(series) == 1


def test_bare_metric_series_keeps_only_the_latest_point() -> None:
    series = Series(0)
    series.add(SECOND, 1.0)
    series.add(2 * SECOND, 2.0)
    series.add(SECOND // 2, 0.5)
    assert len(series) == 0
    assert (series.latest_time, series.latest_value) == (2 * SECOND, 2.0)


def test_extend_primes_from_unsorted_history() -> None:
    series = Series(60 * SECOND)
    series.extend([(3 * SECOND, 3.0), (1 * SECOND, 1.0), (2 * SECOND, 2.0)])
    assert series.values[series.start :] == [1.0, 2.0, 3.0]
    assert series.latest_value == 3.0


def test_time_conversion_round_trips_and_refuses_naive_times() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
    assert from_us(to_us(moment)) == moment
    assert to_us(moment + timedelta(minutes=5)) - to_us(moment) == seconds_to_us(300)
    with pytest.raises(ValueError, match="timezone-aware"):
        to_us(datetime(2026, 1, 2))
