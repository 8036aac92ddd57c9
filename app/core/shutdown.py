"""Graceful shutdown (SPEC 11): what a process does between SIGTERM and its exit.

On SIGTERM or SIGINT every process stops taking work, finishes and acknowledges what it
took, and exits within IOTDECK_SHUTDOWN_TIMEOUT (docs/operations.md). `Shutdown` keeps
that deadline, logs the first line of the stop and the last one with how long it took,
and turns what had to be left at the deadline into the exit code: 0 when everything
taken was finished, 1 when something was left to the next process. Nothing is lost
then either: the broker redelivers what was not acknowledged, a notification's claim
runs out and is retried, the next evaluator replays the stored telemetry.
"""

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Awaitable
from types import FrameType
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
LEFT_UNDONE = 1  # the exit code when something was left to the next process


class Shutdown:
    """One process's graceful stop: its deadline, its first and last log lines, its exit code."""

    def __init__(self, process: str, timeout: float) -> None:
        self.process = process
        self.timeout = timeout
        self.requested = threading.Event()  # set by SIGTERM or SIGINT once `listen` ran
        self._signal = ""
        self._began: float | None = None
        self._left: list[str] = []

    def listen(self) -> threading.Event:
        """From now on SIGTERM and SIGINT request the stop (main thread); `requested`."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        return self.requested

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # no logging in a signal handler (its lock may be held): `begin` logs, on the thread
        # that waits for `requested`
        self._signal = self._signal or signal.Signals(signum).name
        self.requested.set()

    @property
    def started(self) -> bool:
        """True once the stop began."""
        return self._began is not None

    def begin(self, why: str = "") -> None:
        """Start the clock and log the first line; later calls change nothing."""
        if self._began is not None:
            return
        self._began = time.monotonic()
        why = why or self._signal
        logger.info(
            "%s shutting down%s: taking no new work, finishing what it took within %g s",
            self.process,
            f" on {why}" if why else "",
            self.timeout,
        )

    def remaining(self) -> float:
        """Seconds left until the deadline (all of them before the stop began)."""
        if self._began is None:
            return self.timeout
        return max(0.0, self._began + self.timeout - time.monotonic())

    def left_undone(self, what: str) -> None:
        """Note (and log) work abandoned at the deadline: the exit code becomes 1."""
        self._left.append(what)
        logger.warning("%s left to the next process: %s", self.process, what)

    def finish(self) -> int:
        """Log the last line, with how long the stop took; the exit code (0 or 1)."""
        took = 0.0 if self._began is None else time.monotonic() - self._began
        if self._left:
            logger.warning(
                "%s stopped in %.1f s, leaving %d thing(s) to the next process: %s",
                self.process, took, len(self._left), "; ".join(self._left),
            )  # fmt: skip
            return LEFT_UNDONE
        logger.info("%s stopped in %.1f s, everything it took finished", self.process, took)
        return 0


async def finish_first(work: Awaitable[T]) -> T:
    """Await `work`; when the caller is cancelled meanwhile, `work` still ends first.

    Work already taken (a batch evaluated in a thread, a round of sends) then ends whole,
    its results committed, before the cancel goes on; a second cancel stops waiting.
    """
    running = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.wait({running})
        if not running.cancelled() and (error := running.exception()) is not None:
            logger.error("work in progress failed while stopping", exc_info=error)
        raise
