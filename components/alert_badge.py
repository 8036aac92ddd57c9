"""The header's open-alert badge: how many alerts are open, a link to them, kept live."""

from collections.abc import Awaitable, Callable

from nicegui import background_tasks, ui

from app.core import bus
from components.deferred import Deferred
from components.live import LiveFeed

RECOUNT_DELAY = 0.3  # a burst of alert changes costs one count, not one per change


class AlertBadge(ui.link):
    """A bell with the open-alert count; red while any alert is open."""

    def __init__(self, *, load: Callable[[], Awaitable[int | None]], live: LiveFeed | None) -> None:
        """Count with `load` in the background, and again when `live` pushes an alert change.

        `load` reads off the event loop and gives None while the app shuts down.
        """
        super().__init__(target="/alerts")
        self._load = load
        self.count = -1
        self.classes(
            "relative flex items-center justify-center w-9 h-9 rounded-full no-underline "
            "text-slate-600 hover:bg-slate-100"
        )
        self.mark("alert-badge")
        with self:
            ui.icon("notifications", size="sm")
            self._bubble = ui.label().classes(
                "absolute -top-0.5 -right-1 min-w-[1.15rem] h-[1.15rem] px-1 rounded-full "
                "bg-red-600 text-white text-[10px] font-semibold leading-[1.15rem] text-center "
                "ring-2 ring-white"
            )
            self._bubble.mark("alert-count")
            self._tip = ui.tooltip("")
        self._bubble.set_visibility(False)  # until the first count arrives
        # not while the page is built: the page does not wait for the count
        background_tasks.create(self.recount(), name="open-alert count")
        self._recount = Deferred(self.recount, RECOUNT_DELAY)
        if live is not None:
            live.listen(bus.ALERTS, lambda _channel, _message: self._recount.soon())

    def set_count(self, count: int) -> None:
        """Show `count` open alerts (the bubble hides at zero)."""
        if count == self.count:
            return
        self.count = count
        self._bubble.text = "99+" if count > 99 else str(count)
        self._bubble.set_visibility(count > 0)
        self.props(f"data-count={count}")
        self._tip.text = (
            "No open alerts" if count == 0 else f"{count} open alert{'s' if count != 1 else ''}"
        )

    async def recount(self) -> None:
        """Read the count again and show it."""
        count = await self._load()
        if count is not None and not self.is_deleted:  # None: the app is shutting down
            self.set_count(count)
