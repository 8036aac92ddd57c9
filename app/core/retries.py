"""How iotdeck waits for what it depends on: backoff policies and circuit breakers, in one place.

Backoff is exponential with full jitter: each wait is drawn uniformly between 0 and a
window that doubles after every failure up to a cap, so processes that lost a server at
the same moment do not all come back to it at the same moment.
- PostgreSQL (ingest commits): `DATABASE_WAIT`, windows 0.5, 1, 2, 4, 8 s, then 10 s,
  for as long as the error is the database being away (`app.core.db.is_transient`).
- Redis: each command (a publish) is retried by redis-py itself, 3 times within about
  0.7 s (`redis_retry`): a restart costs nothing, an outage costs ingest little; the bus
  subscription reconnects forever with `REDIS_WAIT` (same windows as the database).
- The broker: paho reconnects by itself, doubling its delay from `min_delay` to
  `max_delay`, without jitter. `broker_reconnect_delays` draws both bounds per client,
  so a fleet that lost the broker together spreads its reconnections.

A `CircuitBreaker` stops calling a dependency that keeps failing and lets one call try
it again now and then; the database and each notification target have one.
"""

import asyncio
import logging
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import redis
import redis.asyncio.retry
import redis.retry
from redis.backoff import ExponentialWithJitterBackoff
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    wait_random_exponential,
)

logger = logging.getLogger(__name__)

DATABASE_WAIT = wait_random_exponential(multiplier=0.5, max=10)
REDIS_WAIT_CAP = 10.0  # seconds
REDIS_WAIT = wait_random_exponential(multiplier=0.5, max=REDIS_WAIT_CAP)
REDIS_COMMAND_RETRIES = 3
BROKER_MIN_DELAY = (0.5, 1.5)  # seconds: the first reconnection delay is drawn in this range
BROKER_MAX_DELAY = (20.0, 30.0)  # ...and the cap of the doubling in this one


def retry_while(
    transient: Callable[[BaseException], bool],
    *,
    stopping: threading.Event,
    before_sleep: Callable[[RetryCallState], None],
) -> Retrying:
    """Retry, with `DATABASE_WAIT` between attempts, for as long as the error is `transient`.

    Any other error is raised at once (retrying cannot help). When `stopping` is set, the
    wait ends early and no further attempt is made: tenacity raises `RetryError`.
    """
    return Retrying(
        retry=retry_if_exception(transient),
        wait=DATABASE_WAIT,
        stop=lambda _state: stopping.is_set(),
        sleep=stopping.wait,
        before_sleep=before_sleep,
    )


def reconnect_redis(before_sleep: Callable[[RetryCallState], None]) -> AsyncRetrying:
    """Retry connecting to Redis forever (cancel the task to stop), `REDIS_WAIT` apart."""
    return AsyncRetrying(
        retry=retry_if_exception_type((redis.RedisError, OSError)),
        wait=REDIS_WAIT,
        before_sleep=before_sleep,
    )


def _command_backoff() -> ExponentialWithJitterBackoff:
    return ExponentialWithJitterBackoff(cap=0.5, base=0.05)


def redis_retry() -> redis.retry.Retry:
    """The retry of each Redis command of a (synchronous) client."""
    return redis.retry.Retry(_command_backoff(), REDIS_COMMAND_RETRIES)


def async_redis_retry() -> redis.asyncio.retry.Retry:
    """The retry of each Redis command of an asyncio client."""
    return redis.asyncio.retry.Retry(_command_backoff(), REDIS_COMMAND_RETRIES)


def stop_if_cancelled() -> None:
    """Raise CancelledError if the current task is being cancelled.

    To call after each redis-py command of a loop, whether it returned or raised: a task
    cancelled during a command may see it return normally or raise a ConnectionError
    instead (measured here with redis-py 8.2 and hiredis: 1 cancel in 100 or so), and a
    loop that goes on swallows the cancel (a worker that never stops).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def jittered(failures: int) -> float:
    """A wait after `failures` failures in a row, in `REDIS_WAIT`'s windows (full jitter)."""
    return random.uniform(0, min(REDIS_WAIT_CAP, 0.5 * 2 ** (failures - 1)))


def broker_reconnect_delays() -> tuple[float, float]:
    """paho's (min_delay, max_delay) for one client, drawn once: its jitter."""
    return random.uniform(*BROKER_MIN_DELAY), random.uniform(*BROKER_MAX_DELAY)


def clock_time(moment: datetime) -> str:
    """A moment as an operator reads it in a status line: 14:03:27 UTC."""
    return moment.astimezone(UTC).strftime("%H:%M:%S UTC")


class CircuitBreaker:
    """Stops calling something that keeps failing, and tries it again now and then.

    Closed: calls go through; `threshold` failures in a row open it. Open: `allow()` says
    no until the cooldown ends, then lets one call through (half-open) and re-arms the
    cooldown, so a probe that never reports back cannot keep the circuit shut. Any
    success closes it; a probe's failure opens it again for twice as long, at most
    `max_cooldown`. Failures of calls that started before it opened do not lengthen it.
    Thread-safe; `on_change(is_open)` runs on each opening and closing.
    """

    def __init__(
        self,
        name: str,
        *,
        threshold: int = 5,
        cooldown: timedelta = timedelta(seconds=30),
        max_cooldown: timedelta = timedelta(minutes=10),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_change: Callable[[bool], None] = lambda _is_open: None,
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.base_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self.failures = 0  # in a row
        self.last_error: str | None = None
        self.opened_at: datetime | None = None  # None while closed
        self.retry_at: datetime | None = None  # when the next probe may go
        self.cooldown = cooldown
        self._probing = False

    @property
    def is_open(self) -> bool:
        """True while calls are refused (or a probe is out)."""
        return self.opened_at is not None

    def allow(self) -> bool:
        """Whether a call may go now; while open, True once per cooldown (the probe)."""
        if self.opened_at is None:
            return True
        with self._lock:
            now = self._clock()
            if self.retry_at is None or now < self.retry_at:
                return False
            self.retry_at = now + self.cooldown
            self._probing = True
            return True

    def success(self) -> None:
        """A call worked: closed, the count of failures reset."""
        if self.failures == 0 and self.opened_at is None:
            return  # the common case, without the lock
        with self._lock:
            was_open = self.opened_at is not None
            self.failures, self.opened_at, self.retry_at = 0, None, None
            self.cooldown, self._probing = self.base_cooldown, False
        if was_open:
            logger.info("%s: circuit closed, it answers again", self.name)
            self._on_change(False)

    def failure(self, error: str) -> None:
        """A call failed with `error` (a short phrase, kept for `describe`)."""
        with self._lock:
            now = self._clock()
            self.failures += 1
            self.last_error = error
            opening = self.opened_at is None
            if opening:
                if self.failures < self.threshold:
                    return
                self.opened_at = now
            elif self._probing:
                self.cooldown = min(self.cooldown * 2, self.max_cooldown)
            else:
                return  # a call from before the opening: no news
            self._probing = False
            self.retry_at = now + self.cooldown
        logger.warning("%s: %s", self.name, self.describe())
        if opening:
            self._on_change(True)

    def describe(self) -> str:
        """Why calls are refused, for operators; empty while closed."""
        opened_at, retry_at = self.opened_at, self.retry_at
        if opened_at is None or retry_at is None:
            return ""
        return (
            f"circuit open since {clock_time(opened_at)}, {self.failures} failures in a row, "
            f"last error: {self.last_error}; next try at {clock_time(retry_at)}"
        )
