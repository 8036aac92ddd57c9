"""Live pages: one bus subscription per open page, and the header's connection indicator.

A page builds one `LiveFeed` while it is being created. The feed subscribes to this
process's hub once, consumes the subscription in a background task inside the page's UI
context, and closes both when NiceGUI deletes the page's client (tab closed, or gone
longer than the reconnect timeout), so nothing has to remember to unsubscribe.

Every feed also hears `iot:alerts`, for the header's open-alert badge: widgets outside the
page body `listen` to it, and the page's own handler gets it only when the page asked.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from nicegui import background_tasks, ui

from app.core import bus

logger = logging.getLogger(__name__)

PAGE_QUEUE = 500  # a page that falls this far behind loses the oldest; the safety net catches up
SAFETY_SECONDS = 30.0  # the slow refresh beside the push path: catches what a page missed

HEADER_CHANNELS = frozenset({bus.ALERTS})  # what the header shows on every page

Handler = Callable[[str, bus.Message], None]

# the browser's side of honesty: a page whose socket is down cannot hear the server say so
_SOCKET_HOOK = """
if (!window.iotdeckSocketHook) {
window.iotdeckSocketHook = true;
const mark = (down) => document.body.classList.toggle('iotdeck-socket-down', down);
window.socket.on('disconnect', () => mark(true));
window.socket.on('connect', () => mark(false));
mark(!window.socket.connected);
}
"""
_CSS = """
.live-indicator .live-off { display: none; }
.live-indicator.live-idle .live-on,
body.iotdeck-socket-down .live-indicator .live-on { display: none; }
.live-indicator.live-idle .live-off,
body.iotdeck-socket-down .live-indicator .live-off { display: inline-flex; }
"""


class LiveIndicator(ui.element):
    """A dot and a word: "Live" (green) while pushes arrive, "Offline" (grey) otherwise."""

    def __init__(self) -> None:
        """Start as offline until the feed says it is subscribed."""
        super().__init__("span")
        ui.add_css(_CSS)
        self.classes("live-indicator inline-flex items-center text-xs font-medium")
        self.mark("live-indicator")
        with self:
            for part, word, dot, tone in (
                ("live-on", "Live", "bg-green-500 animate-pulse", "text-green-700"),
                ("live-off", "Offline", "bg-slate-400", "text-slate-500"),
            ):
                with ui.element("span").classes(f"{part} inline-flex items-center gap-1.5 {tone}"):
                    ui.element("span").classes(f"inline-block w-2 h-2 rounded-full {dot}")
                    ui.label(word)
            self._tip = ui.tooltip("")
        self.live = False
        self.set_live(False)

    def set_live(self, live: bool) -> None:
        """Show whether this page's subscription is open (the browser adds its socket state)."""
        self.live = live
        if live:
            self.classes(remove="live-idle")
        else:
            self.classes(add="live-idle")
        self.props(f"data-live={'true' if live else 'false'}")
        self._tip.text = "Receiving live updates" if live else "Not receiving live updates"


class LiveFeed:
    """One hub subscription for the page being built, handled in its UI context."""

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        channels: Iterable[str] = (),
        accepts: Callable[[str], bool] | None = None,
    ) -> None:
        """Subscribe to `channels` (or what `accepts` allows); `handler` takes each message."""
        self.client = ui.context.client
        self._handler = handler
        wanted = frozenset(channels)
        self._wants: Callable[[str], bool] = accepts or wanted.__contains__
        self._listeners: dict[str, list[Handler]] = {}
        self._indicators: list[LiveIndicator] = []
        self._task: asyncio.Task | None = None
        self.subscription: bus.Subscription | None = None
        try:
            hub = bus.get_hub()
        except RuntimeError:
            logger.warning("live: no bus hub in this process; pages will not update by push")
            return
        if accepts is None:
            subscription = hub.subscribe(channels=wanted | HEADER_CHANNELS, size=PAGE_QUEUE)
        else:
            header = HEADER_CHANNELS.__contains__
            subscription = hub.subscribe(lambda c: header(c) or accepts(c), size=PAGE_QUEUE)
        self.subscription = subscription
        self._task = background_tasks.create(self._consume(), name="live page feed")
        self.client.on_delete(self.close)

    @property
    def live(self) -> bool:
        """True while the subscription is open and the bus delivers."""
        return (
            self.subscription is not None and not self.subscription.closed and bus.get_bus().healthy
        )

    def indicator(self) -> LiveIndicator:
        """A connection indicator for this page (place it in the header)."""
        indicator = LiveIndicator()
        indicator.set_live(self.live)
        self._indicators.append(indicator)
        if not self._indicators[1:]:
            self.client.on_connect(self._hook_socket)
            ui.timer(SAFETY_SECONDS, self.refresh_state, immediate=False)
        return indicator

    def listen(self, channel: str, handler: Handler) -> None:
        """Also hand messages of a header channel (`iot:alerts`) to `handler`."""
        if channel not in HEADER_CHANNELS:
            raise ValueError(f"{channel} is not a header channel; pass it to the page's feed")
        self._listeners.setdefault(channel, []).append(handler)

    def _hook_socket(self) -> None:
        self.client.run_javascript(_SOCKET_HOOK)

    def refresh_state(self) -> None:
        """Bring the indicators in line with the bus (a Redis outage turns them grey)."""
        for indicator in self._indicators:
            if indicator.live != self.live:
                indicator.set_live(self.live)

    async def _consume(self) -> None:
        assert self.subscription is not None
        async for channel, message in self.subscription:
            handlers = list(self._listeners.get(channel, ()))
            if self._handler is not None and self._wants(channel):
                handlers.append(self._handler)
            with self.client:
                for handler in handlers:
                    try:
                        handler(channel, message)
                    except Exception:  # one bad message must not end the page's feed
                        logger.exception("live: handling a message on %s failed", channel)

    def close(self) -> None:
        """Unsubscribe and stop consuming; safe to call twice."""
        if self.subscription is not None:
            self.subscription.close()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        for indicator in self._indicators:
            with contextlib.suppress(RuntimeError):  # the page may already be gone
                indicator.set_live(False)
