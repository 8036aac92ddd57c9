"""Wait for a condition instead of sleeping a guessed time."""

import time
from collections.abc import Callable


def wait_until(
    condition: Callable[[], object], timeout: float = 15.0, every: float = 0.05
) -> object:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        time.sleep(every)
