"""SPEC 8.2's browser side, in Chromium against `iotdeck serve`: sessions, sign-out,
redirects after sign-in, and the sign-in lock as the login page shows it."""

import re
import uuid

from playwright.async_api import Browser, Page, expect

from tests.e2e.conftest import VIEWPORT, Server, graphql_as, screenshot, sign_in

SESSION_COOKIE = "session"


async def _session_cookie(page: Page) -> dict:
    cookies = await page.context.cookies()
    return next(cookie for cookie in cookies if cookie["name"] == SESSION_COOKIE)


async def test_sign_in_gives_a_new_session_and_sign_out_ends_it(
    page: Page, browser: Browser, server: Server
) -> None:
    await page.goto(f"{server.url}/login")
    before = await _session_cookie(page)
    assert before["httpOnly"]
    assert before["sameSite"] == "Lax"
    await sign_in(page, server, server.admin_email)
    after = await _session_cookie(page)
    assert after["value"] != before["value"]
    # someone holding the cookie from before sign-in (session fixation) is not signed in
    planted = await browser.new_context(viewport=VIEWPORT)
    try:
        fixed = {"name": SESSION_COOKIE, "value": before["value"], "url": server.url}
        await planted.add_cookies([fixed])
        other = await planted.new_page()
        await other.goto(f"{server.url}/devices")
        await expect(other).to_have_url(re.compile(r"/login\?redirect_to="))
    finally:
        await planted.close()
    sign_out = page.get_by_role("button", name="Sign out")
    await expect(sign_out).to_be_visible()
    await screenshot(page, "security-01-header-sign-out")
    await sign_out.click()
    await expect(page).to_have_url(f"{server.url}/login")
    await page.goto(f"{server.url}/devices")
    await expect(page).to_have_url(re.compile(r"/login\?redirect_to="))


async def test_a_redirect_target_hidden_behind_a_tab_stays_on_site(
    page: Page, server: Server
) -> None:
    await page.goto(f"{server.url}/login?redirect_to=/%09/evil.example")
    await page.get_by_label("Email").fill(server.viewer_email)
    await page.get_by_label("Password", exact=True).fill(server.password)
    await page.get_by_label("Password", exact=True).press("Enter")
    await expect(page).to_have_url(f"{server.url}/")  # the home dashboard, on this site


async def test_the_login_page_says_when_a_locked_account_may_retry(
    page: Page, server: Server
) -> None:
    # an account of its own: locking a demo account would lock the other tests out
    email = f"locked-{uuid.uuid4().hex[:8]}@example.com"
    create = (
        "mutation($e: String!, $p: String!) "
        "{ createUser(email: $e, password: $p, role: VIEWER) { id } }"
    )
    graphql_as(server, server.admin_email, create, e=email, p=server.password)
    await page.goto(f"{server.url}/login")
    await page.get_by_label("Email").fill(email)
    password = page.get_by_label("Password", exact=True)
    for _ in range(5):
        await password.fill("not the password")
        await password.press("Enter")
        # a failed attempt empties the field: the next one starts after it
        await expect(password).to_have_value("")
    await password.fill(server.password)
    await password.press("Enter")
    locked = re.compile(r"Too many failed sign-in attempts: try again in \d+ s")
    await expect(page.get_by_text(locked)).to_be_visible()
    await expect(page).to_have_url(f"{server.url}/login")
    await screenshot(page, "security-02-login-locked")
