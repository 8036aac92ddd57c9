"""What the rule evaluator's input missed, kept small enough to replay from storage.

Its points come from the partitioned streams, which drop nothing; two things can still be
missed. A stream append that failed comes back as a gap entry (app/core/bus.py `Gaps`:
each device with the first and last time of its lost points), and the evaluator's bus
subscription (rule and alert changes) is bounded and drops its oldest message when full.
Both were committed before they were published, so storage has their points; what must
not be lost is *which* points. Each is recorded here as ranges (one entry per device,
however long the outage), with whether a rule, alert or device event went too. The
evaluator takes that record with the next entries it evaluates and replays it from storage
before them (`app/workers/evaluation.py`).

Order makes the replay exact: a gap entry is appended before the entries that follow the
failed append, so what it stands for is newer than everything the evaluator read before
and older than what comes after it. Replayed first, each device's points reach the engine
in the order they were committed, as if nothing had been missed.
"""

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from app.core import bus, metrics
from app.core.streams import Span, widen

logger = logging.getLogger(__name__)

TELEMETRY_PREFIX = bus.telemetry_channel("")
# a burst that lasts says so once a minute; a short one once, when it is over
REMIND_EVERY = timedelta(minutes=1)


@dataclass
class Dropped:
    """Dropped bus messages, reduced to what a replay needs."""

    messages: int = 0
    points: int = 0
    events: int = 0  # rule, alert and device messages among them
    ranges: dict[str, Span] = field(default_factory=dict)  # by device id

    def __bool__(self) -> bool:
        return self.messages > 0

    def add(self, channel: str, message: bus.Message) -> int:
        """Note one message (telemetry: widen its device's range); how many points it had.

        Raises KeyError, TypeError or ValueError, noting nothing, if it cannot be read.
        """
        if not channel.startswith(TELEMETRY_PREFIX):
            self.messages += 1
            self.events += 1
            return 0
        device_id = str(message["device_id"])
        times = [datetime.fromisoformat(point["time"]) for point in message["points"]]
        self.messages += 1
        self.points += len(times)
        if times:
            widen(self.ranges, device_id, min(times), max(times))
        return len(times)

    def merge(self, other: "Dropped") -> None:
        """Add what `other` holds to this record."""
        self.messages += other.messages
        self.points += other.points
        self.events += other.events
        for device_id, (first, last) in other.ranges.items():
            widen(self.ranges, device_id, first, last)


def from_gap(entry: bus.Message) -> Dropped:
    """A stream's gap entry (app/core/bus.py `Gaps`: appends that failed) as a replay's record."""
    ranges = {
        str(device_id): (datetime.fromisoformat(first), datetime.fromisoformat(last))
        for device_id, (first, last) in entry["ranges"].items()
    }
    events = int(entry["events"])
    return Dropped(messages=len(ranges) + events, events=events, ranges=ranges)


class DropLog:
    """The drops of the evaluator's subscription, from the hook to their replay.

    Recorded and taken on the event loop; settled by the evaluator in its worker thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._new = Dropped()  # dropped since the last batch was taken
        self._taken = Dropped()  # taken with a batch, not replayed yet

    def record(self, channel: str, message: bus.Message) -> None:
        """The subscription's `on_drop` hook: note the message and count it on /metrics."""
        try:
            with self._lock:
                points = self._new.add(channel, message)
        except (KeyError, TypeError, ValueError) as unreadable:  # never break the hub's delivery
            logger.warning(
                "rule evaluator: a dropped message on %s is unreadable (%r)", channel, unreadable
            )
            points = 0
        metrics.EVALUATOR_DROPPED_MESSAGES.inc()
        metrics.EVALUATOR_DROPPED_POINTS.inc(points)

    def add(self, lost: Dropped) -> None:
        """Note what never reached the evaluator another way (a stream's gap entry)."""
        with self._lock:
            self._new.merge(lost)

    def take(self) -> Dropped:
        """What was dropped before the batch just taken from the queue (call at once, on the loop).

        The record stays "taken" until `replayed` or `put_back`; one not settled (its
        evaluation was interrupted) is taken again with the next batch.
        """
        with self._lock:
            self._taken.merge(self._new)
            self._new = Dropped()
            return self._taken

    def replayed(self) -> None:
        """The taken record is replayed."""
        with self._lock:
            self._taken = Dropped()

    def put_back(self, batch: Iterable[tuple[str, bus.Message]]) -> None:
        """The replay failed: the taken record and its batch (not evaluated) wait for the next."""
        with self._lock:
            again = self._taken
            for channel, message in batch:
                try:
                    again.add(channel, message)
                except (KeyError, TypeError, ValueError):
                    continue  # unreadable live as well: nothing to replay
            again.merge(self._new)
            self._new, self._taken = again, Dropped()

    def behind(self) -> frozenset[str]:
        """Devices with dropped points not replayed yet: their windows and timers lag."""
        with self._lock:
            return frozenset(self._new.ranges.keys() | self._taken.ranges.keys())


class BurstLog:
    """One warning per burst with its counts, when it is over (and each minute it lasts)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._started: datetime | None = None  # the burst's first replay
        self._told: datetime | None = None  # its first replay, or its last reminder
        self._last: datetime | None = None  # its latest replay
        self._replays = 0
        self._dropped = Dropped()
        self._replayed = 0

    def replayed(self, dropped: Dropped, points: int) -> None:
        """A record was replayed (`points` read back from storage)."""
        now = self._clock()
        if self._started is None or self._told is None:
            self._started = self._told = now
        self._replays += 1
        self._last = now
        self._dropped.merge(dropped)
        self._replayed += points
        if now - self._told >= REMIND_EVERY:
            self._told = now
            self._warn("keeps having gaps", now - self._started)

    def quiet(self) -> None:
        """Nothing was dropped since the last replay: a burst in progress is over."""
        if self._started is not None and self._last is not None:
            self._warn("had gaps", self._last - self._started)
            self._started = self._told = self._last = None
            self._replays, self._dropped, self._replayed = 0, Dropped(), 0

    def _warn(self, how: str, lasted: timedelta) -> None:
        logger.warning(
            "rule evaluator: its input %s (%d replay(s) in %.1f s): %d message(s) with %d"
            " point(s) of %d device(s) missed, %d point(s) replayed from storage",
            how,
            self._replays,
            lasted.total_seconds(),
            self._dropped.messages,
            self._dropped.points,
            len(self._dropped.ranges),
            self._replayed,
        )
