"""The evaluator's drop bookkeeping: what a full bus queue pushed out, kept per device."""

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from app.core import bus
from app.workers.evaluation_drops import BurstLog, DropLog, Dropped

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _telemetry(device: str, *seconds: float) -> tuple[str, bus.Message]:
    points = [{"metric": "temperature", "time": _at(s).isoformat(), "value": 1.0} for s in seconds]
    return bus.telemetry_channel(device), {"device_id": device, "points": points}


def _counted(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_a_record_keeps_each_device_s_first_and_last_time_and_counts() -> None:
    dropped = Dropped()
    assert not dropped
    assert dropped.add(*_telemetry("a", 10, 5)) == 2
    assert dropped.add(*_telemetry("b", 7)) == 1
    assert dropped.add(*_telemetry("a", 30)) == 1
    assert dropped.add(bus.RULES, {"type": "UPDATED"}) == 0
    assert dropped
    assert (dropped.messages, dropped.points, dropped.events) == (4, 4, 1)
    assert dropped.ranges == {"a": (_at(5), _at(30)), "b": (_at(7), _at(7))}


def test_an_unreadable_message_notes_nothing() -> None:
    dropped = Dropped()
    with pytest.raises(KeyError):
        dropped.add(bus.telemetry_channel("a"), {"device_id": "a"})
    assert (dropped.messages, dropped.ranges) == (0, {})


def test_merging_widens_the_ranges() -> None:
    first, second = Dropped(), Dropped()
    first.add(*_telemetry("a", 10, 20))
    second.add(*_telemetry("a", 5))
    second.add(*_telemetry("b", 1))
    first.merge(second)
    assert first.ranges == {"a": (_at(5), _at(20)), "b": (_at(1), _at(1))}
    assert (first.messages, first.points) == (3, 4)


async def test_the_hub_hands_the_dropped_oldest_message_to_the_log() -> None:
    log = DropLog()
    messages, points = (_counted(f"evaluator_dropped_{n}_total") for n in ("messages", "points"))
    hub = bus.Hub(asyncio.get_running_loop())
    queue = hub.subscribe(lambda _: True, size=2, on_drop=log.record)
    for n in range(5):  # 0, 1 and 2 are pushed out
        hub.deliver(*_telemetry(f"d{n % 2}", n, n + 0.5))
    assert queue.dropped == 3
    taken = log.take()
    assert taken.ranges == {"d0": (_at(0), _at(2.5)), "d1": (_at(1), _at(1.5))}
    assert _counted("evaluator_dropped_messages_total") - messages == 3
    assert _counted("evaluator_dropped_points_total") - points == 6
    assert [(await queue.get())[1]["points"][0]["time"] for _ in range(2)] == [
        _at(3).isoformat(),
        _at(4).isoformat(),
    ]


def test_an_unreadable_drop_is_counted_and_does_not_break_delivery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = DropLog()
    before = _counted("evaluator_dropped_messages_total")
    with caplog.at_level(logging.WARNING):
        log.record(bus.telemetry_channel("a"), {"points": "nonsense"})
    assert _counted("evaluator_dropped_messages_total") - before == 1
    assert "unreadable" in caplog.text
    assert not log.take()


def test_taken_drops_stay_behind_until_replayed() -> None:
    log = DropLog()
    log.record(*_telemetry("a", 1))
    taken = log.take()
    assert taken.ranges == {"a": (_at(1), _at(1))}
    log.record(*_telemetry("b", 2))  # dropped while the batch is evaluated
    assert log.behind() == {"a", "b"}
    log.replayed()
    assert log.behind() == {"b"}
    assert log.take().ranges == {"b": (_at(2), _at(2))}


def test_a_record_not_settled_is_taken_again_with_the_next_batch() -> None:
    log = DropLog()
    log.record(*_telemetry("a", 1))
    log.take()  # its evaluation was interrupted before the replay
    log.record(*_telemetry("b", 2))
    assert log.take().ranges == {"a": (_at(1), _at(1)), "b": (_at(2), _at(2))}


def test_a_failed_replay_puts_the_record_and_its_batch_back() -> None:
    log = DropLog()
    log.record(*_telemetry("a", 1))
    log.take()
    log.record(*_telemetry("c", 9))  # newer than the batch
    log.put_back([_telemetry("b", 5), (bus.ALERTS, {"type": "RESOLVED"})])
    again = log.take()
    assert again.ranges == {"a": (_at(1), _at(1)), "b": (_at(5), _at(5)), "c": (_at(9), _at(9))}
    assert again.events == 1  # the alert change is read again before the replay


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_one_warning_per_burst_with_its_counts(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    burst = BurstLog(clock)
    with caplog.at_level(logging.WARNING):
        burst.quiet()  # no burst: nothing to say
        for second in range(3):
            clock.now = _at(second)
            dropped = Dropped()
            dropped.add(*_telemetry("a", second))
            dropped.add(*_telemetry("b", second, second + 0.5))
            burst.replayed(dropped, 3)
        assert _warnings(caplog) == []  # said once, when it is over
        clock.now = _at(10)
        burst.quiet()
        burst.quiet()
    assert _warnings(caplog) == [
        "rule evaluator: its input had gaps (3 replay(s) in 2.0 s): 6 message(s) with"
        " 9 point(s) of 2 device(s) missed, 9 point(s) replayed from storage"
    ]


def test_a_lasting_burst_says_so_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    burst = BurstLog(clock)
    with caplog.at_level(logging.WARNING):
        for second in range(0, 150, 10):
            clock.now = _at(second)
            dropped = Dropped()
            dropped.add(*_telemetry("a", second))
            burst.replayed(dropped, 1)
    said = _warnings(caplog)
    assert len(said) == 2  # at 60 s and 120 s
    assert said[0].startswith("rule evaluator: its input keeps having gaps (7 replay(s) in 60.0 s)")
