"""The graceful stop's deadline and exit code, and `finish_first`: work taken ends whole."""

import asyncio

import pytest

from app.core.shutdown import LEFT_UNDONE, Shutdown, finish_first
from tests.waiting import wait_for


class HeldWork:
    """Work that ends only when released, and says whether it ended."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = False

    async def run(self) -> str:
        """Wait for `release`; the result."""
        self.started.set()
        await self.release.wait()
        self.finished = True
        return "done"


async def test_the_result_comes_through_when_nothing_is_cancelled() -> None:
    work = HeldWork()
    work.release.set()
    assert await finish_first(work.run()) == "done"


async def test_a_cancelled_caller_lets_the_work_end_then_stops() -> None:
    work = HeldWork()
    caller = asyncio.create_task(finish_first(work.run()))
    await work.started.wait()
    caller.cancel()
    done, _ = await asyncio.wait({caller}, timeout=0.2)
    assert not done, "the cancel did not wait for the work"
    work.release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert work.finished


async def test_a_second_cancel_stops_waiting_for_the_work() -> None:
    work = HeldWork()
    caller = asyncio.create_task(finish_first(work.run()))
    await work.started.wait()
    caller.cancel()
    await asyncio.wait({caller}, timeout=0.05)  # the caller now waits for the work
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert not work.finished
    work.release.set()  # the abandoned work still ends on its own
    await wait_for(lambda: work.finished, timeout=1)


def test_the_deadline_runs_from_the_start_of_the_stop() -> None:
    shutdown = Shutdown("test", timeout=5)
    assert not shutdown.started
    assert shutdown.remaining() == 5
    shutdown.begin()
    assert shutdown.started
    assert 4 < shutdown.remaining() <= 5


def test_the_exit_code_is_0_unless_something_was_left() -> None:
    shutdown = Shutdown("test", timeout=5)
    shutdown.begin()
    assert shutdown.finish() == 0
    shutdown.left_undone("a batch of 3 messages")
    assert shutdown.finish() == LEFT_UNDONE == 1
