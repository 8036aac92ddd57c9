"""Component helpers that need no page: relative times and status words."""

from datetime import UTC, datetime, timedelta

import pytest

from app.core.models import DeviceStatus
from components.relative_time import absolute_time, relative_time
from components.status_badge import status_label

NOW = datetime(2025, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ago", "expected"),
    [
        (timedelta(seconds=5), "just now"),
        (timedelta(minutes=3, seconds=20), "3 min ago"),
        (timedelta(hours=5, minutes=59), "5 h ago"),
        (timedelta(days=1, hours=2), "1 day ago"),
        (timedelta(days=12), "12 days ago"),
        (timedelta(days=45), "2025-10-15"),
    ],
)
def test_relative_time(ago: timedelta, expected: str) -> None:
    assert relative_time(NOW - ago, now=NOW) == expected


def test_never_seen() -> None:
    assert relative_time(None, now=NOW) == "never"
    assert absolute_time(None) == "never"


def test_naive_times_are_utc() -> None:
    naive = datetime(2025, 11, 29, 11, 57)  # SQLite returns naive datetimes
    assert relative_time(naive, now=NOW) == "3 min ago"
    assert absolute_time(naive) == "2025-11-29 11:57 UTC"


def test_status_words() -> None:
    assert [status_label(status) for status in DeviceStatus] == ["Online", "Offline", "Unknown"]
    assert status_label("SOMETHING_NEW") == "Unknown"
