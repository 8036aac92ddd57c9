"""Wait for a condition instead of sleeping a guessed time."""

import asyncio
import time
from collections.abc import Awaitable, Callable


def _checked(condition: Callable[[], object], deadline: float, timeout: float) -> object:
    """`condition()`'s value; AssertionError once it is still falsy past `deadline`."""
    value = condition()
    if not value and time.monotonic() > deadline:
        raise AssertionError(f"condition not met within {timeout} s: {condition}")
    return value


def wait_until(
    condition: Callable[[], object], timeout: float = 15.0, every: float = 0.05
) -> object:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := _checked(condition, deadline, timeout)):
        time.sleep(every)
    return value


async def wait_for(
    condition: Callable[[], object], timeout: float = 15.0, every: float = 0.02
) -> object:
    """`wait_until` for code on an event loop: polls without blocking the loop."""
    deadline = time.monotonic() + timeout
    while not (value := _checked(condition, deadline, timeout)):
        await asyncio.sleep(every)
    return value


async def wait_for_async(
    condition: Callable[[], Awaitable[object]], timeout: float = 15.0, every: float = 0.02
) -> object:
    """`wait_for` with a condition that must be awaited (it reads Redis, say)."""
    deadline = time.monotonic() + timeout
    while not (value := await condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        await asyncio.sleep(every)
    return value
