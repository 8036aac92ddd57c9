"""Ingest's memory of rollup marks: an open hour is marked once, a closing one every time."""

import uuid
from datetime import UTC, datetime, timedelta

from app.services.rollups import MARK_AGAIN_BEFORE_END, MarkedHours

HOUR = datetime(2026, 12, 6, 15, 0, tzinfo=UTC)
DEVICE, OTHER = uuid.uuid4(), uuid.uuid4()


class Clock:
    """A wall clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_a_committed_mark_of_an_open_hour_is_not_written_again() -> None:
    marked = MarkedHours(clock=Clock(HOUR + timedelta(minutes=10)))
    first = {(DEVICE, "t", HOUR)}
    assert marked.unmarked(first) == first
    marked.remember(first)
    assert marked.unmarked(first) == set()
    # another device, another metric, another hour: still to write
    others = {(OTHER, "t", HOUR), (DEVICE, "h", HOUR), (DEVICE, "t", HOUR + timedelta(hours=1))}
    assert marked.unmarked(first | others) == others


def test_a_mark_not_yet_committed_is_written_again() -> None:
    # a batch that failed and is retried: its marks were never remembered
    marked = MarkedHours(clock=Clock(HOUR + timedelta(minutes=10)))
    marks = {(DEVICE, "t", HOUR)}
    assert marked.unmarked(marks) == marks
    assert marked.unmarked(marks) == marks


def test_marks_of_an_hour_about_to_end_are_written_with_every_batch() -> None:
    clock = Clock(HOUR + timedelta(minutes=10))
    marked = MarkedHours(clock=clock)
    marks = {(DEVICE, "t", HOUR)}
    marked.remember(marks)
    clock.now = HOUR + timedelta(hours=1) - MARK_AGAIN_BEFORE_END
    assert marked.unmarked(marks) == marks  # the rollup job may take it from now on
    marked.remember(marks)
    clock.now = HOUR + timedelta(hours=1, minutes=30)  # late points for the hour that is over
    assert marked.unmarked(marks) == marks


def test_only_open_hours_are_kept() -> None:
    clock = Clock(HOUR + timedelta(minutes=10))
    marked = MarkedHours(clock=clock)
    marked.remember({(DEVICE, "t", HOUR)})
    clock.now = HOUR + timedelta(hours=1, minutes=5)
    next_hour = {(DEVICE, "t", HOUR + timedelta(hours=1))}
    marked.remember(next_hour)
    # the closed hour is forgotten; the open one is remembered
    assert marked.unmarked({(DEVICE, "t", HOUR)} | next_hour) == {(DEVICE, "t", HOUR)}
    assert list(marked._open) == [HOUR + timedelta(hours=1)]
