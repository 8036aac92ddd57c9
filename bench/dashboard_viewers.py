"""The viewers of `iotdeck bench dashboard`: signed-in pages of Debian's headless Chromium.

Each viewer is a browser context of its own (its own session, as separate people have)
with one page. What the page shows is measured in the page: the time from navigation start
to every card holding its data, and for each update of a stat's `data-value` (a publish
time in epoch milliseconds) `Date.now()` minus that value. The updates are handed to Python
as they happen (an exposed function), so a page the app reloads loses none of them, and
each main-frame navigation is timed: one inside a steady window is a reload by the app.
"""

import time

from playwright.async_api import Browser, BrowserContext, Frame, Page
from playwright.async_api import TimeoutError as PlaywrightTimeout

# Debian's Chromium, never a downloaded one (the e2e tests use it too), and no throttling of
# pages Chromium thinks are in the background (every viewer is "visible" here)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
VIEWPORT = {"width": 1280, "height": 800}
RENDER_TIMEOUT_MS = 30_000

# installed in every document before its scripts: each stat value as it lands
_LATENCY_PROBE = """
new MutationObserver((records) => {
  const now = Date.now();
  for (const record of records) {
    if (!record.target.closest('.dashboard-card[data-type="stat"]')) continue;
    const sent = parseFloat(record.target.getAttribute('data-value'));
    if (!Number.isNaN(sent)) window.benchSeen(now, now - sent);
  }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-value']});
"""
# every card holds its data: the time since navigation start, else false
_COMPLETE = """
(cards) => {
  const all = [...document.querySelectorAll('.dashboard-card')];
  if (all.length < cards) return false;
  const drawn = (plot) => plot && plot.data && plot.data.length > 0
    && plot.data.every((trace) => trace.type === 'indicator' || (trace.x && trace.x.length));
  for (const card of all) {
    const type = card.dataset.type;
    const plots = [...card.querySelectorAll('.js-plotly-plot')];
    if (type === 'stat' || type === 'gauge') {
      const value = card.querySelector('[data-value]');
      if (!value || !value.getAttribute('data-value')) return false;
    }
    if (['stat', 'gauge', 'timeseries', 'bar'].includes(type)) {
      if (!plots.length || !plots.every(drawn)) return false;
    } else if (type === 'device_table') {
      if (!card.querySelector('tbody tr')) return false;
    } else if (!card.querySelector('.dashboard-card-body').innerText.trim()) {
      return false;
    }
  }
  return performance.now();
}
"""


class Viewer:
    """One signed-in browser context with one page, and what that page showed."""

    def __init__(self, context: BrowserContext, page: Page) -> None:
        """Use `signed_in`."""
        self.context, self.page = context, page
        self.seen: list[tuple[float, float]] = []  # (epoch ms shown, latency ms)
        self.navigations: list[float] = []  # epoch s of each main-frame navigation

    @classmethod
    async def signed_in(cls, browser: Browser, base: str, email: str, password: str) -> "Viewer":
        """A new context signed in through the login page, its page left blank (no client)."""
        context = await browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(RENDER_TIMEOUT_MS)
        viewer = cls(context, await context.new_page())
        await context.expose_function("benchSeen", viewer._seen)
        await context.add_init_script(_LATENCY_PROBE)
        viewer.page.on("framenavigated", viewer._navigated)
        page = viewer.page
        await page.goto(f"{base}/login?redirect_to=/dashboards")
        await page.get_by_label("Email").fill(email)
        await page.get_by_label("Password", exact=True).fill(password)
        await page.get_by_label("Password", exact=True).press("Enter")
        await page.wait_for_url(f"{base}/dashboards")
        await page.goto("about:blank")
        return viewer

    def _seen(self, at_ms: float, latency_ms: float) -> None:
        self.seen.append((at_ms, latency_ms))

    def _navigated(self, frame: Frame) -> None:
        if frame.parent_frame is None:
            self.navigations.append(time.time())

    async def open(self, url: str, cards: int) -> float | None:
        """Seconds from navigation start to a complete render; None if it never completed."""
        await self.page.goto(url)
        try:
            done = await self.page.wait_for_function(_COMPLETE, arg=cards)
        except PlaywrightTimeout:
            return None
        return round(await done.json_value() / 1000, 3)

    async def leave(self) -> None:
        """Navigate away: the server drops this page's client after its reconnect timeout."""
        await self.page.goto("about:blank")

    def latencies_ms(self, start: float, end: float) -> list[float]:
        """Publish-to-screen latencies of the stat updates shown between two epoch times (s)."""
        return [latency for at, latency in self.seen if start * 1000 <= at <= end * 1000]

    def reloads(self, start: float, end: float) -> int:
        """Navigations between two epoch times: the app reloaded the page (none were asked)."""
        return sum(start <= at <= end for at in self.navigations)
