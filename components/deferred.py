"""Run a page's callback a little later, once, however many times it was asked for meanwhile.

A burst of pushed alerts refreshes a list once, not once per alert; keystrokes in the rule
editor check the text once the typing pauses.
"""

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from nicegui import background_tasks, ui

logger = logging.getLogger(__name__)


class Deferred:
    """Calls `callback` (sync or async) `delay` seconds after `soon()`, in the page's context.

    With `restart` (a debounce), each `soon()` starts the wait over, so the callback runs
    once the calls stop; without it (a throttle), the first call fixes the time and the
    calls that follow before it ride along.
    """

    def __init__(
        self,
        callback: Callable[[], Awaitable[None] | None],
        delay: float,
        *,
        restart: bool = False,
    ) -> None:
        """Remember the page this was created in."""
        self.client = ui.context.client
        self.callback = callback
        self.delay = delay
        self.restart = restart
        self._waiting: asyncio.Task | None = None  # the task while it sleeps, not while it runs

    @property
    def pending(self) -> bool:
        """True while a call is waiting to run."""
        return self._waiting is not None

    def soon(self) -> None:
        """Ask for one call after the delay."""
        if self._waiting is not None:
            if not self.restart:
                return
            self._waiting.cancel()
        self._waiting = background_tasks.create(self._later(), name="deferred page callback")

    async def _later(self) -> None:
        await asyncio.sleep(self.delay)
        self._waiting = None
        if self.client.is_deleted:
            return
        with self.client:
            try:
                result = self.callback()
                if inspect.isawaitable(result):
                    await result
            except Exception:  # a failed refresh must not end the page's feed
                logger.exception("deferred page callback failed")

    def cancel(self) -> None:
        """Forget a waiting call."""
        if self._waiting is not None:
            self._waiting.cancel()
            self._waiting = None
