"""Background workers that go in rounds: a round, then a pause that news cuts short.

The notification dispatcher and the command dispatcher both work like this: decide from
the database what is due, do it, then wait until the next thing falls due, unless a bus
message (an alert fired, a command created, a device online) or the process itself (the
dispatcher's broker connection back, through `app/mqtt/link.py`) says there is news first.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from app.core import bus
from app.core.shutdown import finish_first


class Rounds:
    """Runs rounds until cancelled; `wake` starts the next one without waiting."""

    def __init__(self) -> None:
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Start the next round as soon as the current one is done (on the loop's thread)."""
        self._wake.set()

    async def run(
        self,
        round_: Callable[[], Awaitable[float]],
        news: bus.Subscription | None,
        wakes: Callable[[str, bus.Message], bool],
    ) -> None:
        """Run `round_` (it returns the seconds until the next round is needed) until cancelled.

        A message of `news` that `wakes` accepts ends the pause; `news` is closed at the
        end.
        Cancelled during a round, the round ends first (a graceful stop): what it took is
        done, not half-done.
        """
        listener = asyncio.create_task(self._listen(news, wakes)) if news is not None else None
        try:
            while True:
                # cleared before the round: a wake-up that comes during it is kept
                self._wake.clear()
                pause = await finish_first(round_())
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
                # arrives as the event is set, and the loop would never stop
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._wake.wait()
        finally:
            if listener is not None:
                listener.cancel()
            if news is not None:
                news.close()

    async def _listen(
        self, news: bus.Subscription, wakes: Callable[[str, bus.Message], bool]
    ) -> None:
        async for channel, message in news:
            if wakes(channel, message):
                self.wake()
