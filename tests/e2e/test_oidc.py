"""Single sign-on through a real OpenID Connect provider, in Chromium, against `iotdeck serve`."""

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from playwright.async_api import Browser, Page, Route, expect

from app.web.oidc import SsoFailure
from tests.e2e.conftest import (
    VIEWPORT,
    Server,
    graphql_as,
    screenshot,
    seeded_server,
    server_environment,
)
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, Person, Provider, running_provider

PROVIDER_NAME = "Example ID"
SSO_BUTTON = f"Sign in with {PROVIDER_NAME}"
USERS_HEADING = "Who can sign in, and what they may do"


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    """The test's OpenID Connect provider, shared by this module's tests."""
    with running_provider() as running:
        yield running


@pytest.fixture(scope="module")
def sso_server(provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A seeded `iotdeck serve` that trusts `provider`, registered there as a client."""
    root = tmp_path_factory.mktemp("e2e-oidc")
    env = server_environment(
        root,
        IOTDECK_JWT_SECRET="e2e-oidc-" + "k" * 40,
        IOTDECK_OIDC_ISSUER=provider.issuer,
        IOTDECK_OIDC_CLIENT_ID=CLIENT_ID,
        IOTDECK_OIDC_CLIENT_SECRET=CLIENT_SECRET,
        IOTDECK_OIDC_NAME=PROVIDER_NAME,
        IOTDECK_OIDC_ROLE_MAP="iot-admins=ADMIN,iot-ops=OPERATOR",
    )
    with seeded_server(root, [], env) as server:
        provider.client.redirect_uris = [f"{server.url}/auth/oidc/callback"]
        yield server


@pytest.fixture(autouse=True)
def well_behaved(provider: Provider) -> None:
    """Each test starts with a provider that signs tokens for iotdeck, not someone else."""
    provider.audience = None


def _someone(**person: Any) -> Person:
    """A person the provider knows and iotdeck has not seen yet."""
    return Person(email=f"sso-{uuid.uuid4().hex[:8]}@example.com", **person)


async def _through_provider(page: Page, server: Server, path: str = "/devices") -> None:
    """From a dashboard page, signed out: the SSO button, then the provider's Continue."""
    await page.goto(f"{server.url}{path}")
    await page.get_by_role("link", name=SSO_BUTTON).click()
    await expect(page).to_have_title("Test identity provider")
    await page.get_by_role("button", name="Continue as").click()


async def _sso_error(page: Page, failure: SsoFailure) -> None:
    """The login page, showing `failure`'s message, and still signed out."""
    await expect(page.get_by_text(failure.message)).to_be_visible()
    await expect(page.get_by_role("link", name=SSO_BUTTON)).to_be_visible()
    assert "/login?" in page.url and f"sso_error={failure.value}" in page.url


async def test_login_page_offers_the_provider(page: Page, sso_server: Server) -> None:
    await page.goto(f"{sso_server.url}/users")
    button = page.get_by_role("link", name=SSO_BUTTON)
    await expect(button).to_be_visible()
    # the button keeps the page asked for, as a local path only
    assert await button.get_attribute("href") == "/auth/oidc/login?redirect_to=%2Fusers"
    await expect(page.get_by_text("or", exact=True)).to_be_visible()
    await screenshot(page, "oidc-01-login-with-sso")


async def test_admin_by_claim_lands_on_the_page_asked_for(
    page: Page, sso_server: Server, provider: Provider
) -> None:
    provider.person = _someone(name="Ada Admin", roles=["iot-admins"])
    await _through_provider(page, sso_server, "/users")
    await page.wait_for_url(f"{sso_server.url}/users")
    await expect(page.get_by_text(USERS_HEADING)).to_be_visible()
    await expect(page.get_by_text(provider.person.email).first).to_be_visible()
    # the code flow ran with PKCE (S256) and a nonce
    asked = provider.authorizations[-1]
    assert asked["code_challenge_method"] == "S256" and asked["nonce"]


async def test_no_mapped_role_is_viewer_and_refused_users(
    page: Page, sso_server: Server, provider: Provider
) -> None:
    provider.person = _someone(roles=["unrelated-group"])
    await _through_provider(page, sso_server, "/users")
    await page.wait_for_url(f"{sso_server.url}/users")
    await expect(page.get_by_text("Not allowed")).to_be_visible()
    await expect(page.get_by_text(USERS_HEADING)).to_have_count(0)
    await page.goto(f"{sso_server.url}/devices")
    await expect(page.get_by_text("VIEWER", exact=True)).to_be_visible()


async def test_role_only_in_userinfo_is_read_there(
    page: Page, sso_server: Server, provider: Provider
) -> None:
    provider.person = _someone(roles=["iot-ops"], roles_in_id_token=False)
    await _through_provider(page, sso_server)
    await page.wait_for_url(f"{sso_server.url}/devices")
    await expect(page.get_by_text("OPERATOR", exact=True)).to_be_visible()


async def test_existing_account_takes_the_provider_role(
    page: Page, sso_server: Server, provider: Provider
) -> None:
    # the seeded viewer signs in through the provider, which says admin
    provider.person = Person(email=sso_server.viewer_email, roles=["admin"])
    await _through_provider(page, sso_server, "/users")
    await page.wait_for_url(f"{sso_server.url}/users")
    await expect(page.get_by_text(USERS_HEADING)).to_be_visible()
    found = graphql_as(sso_server, sso_server.admin_email, "{ users { email role } }")["users"]
    assert {"email": sso_server.viewer_email, "role": "ADMIN"} in found


async def test_target_off_site_is_replaced_by_home(
    page: Page, sso_server: Server, provider: Provider
) -> None:
    provider.person = _someone()
    await page.goto(f"{sso_server.url}/auth/oidc/login?redirect_to=https://evil.example/x")
    await page.get_by_role("button", name="Continue as").click()
    await page.wait_for_url(f"{sso_server.url}/")  # the home dashboard


async def test_wrong_audience_is_refused(
    page: Page, sso_server: Server, provider: Provider
) -> None:
    provider.person = _someone(roles=["iot-admins"])
    provider.audience = "another-client"
    await _through_provider(page, sso_server, "/users")
    await _sso_error(page, SsoFailure.TOKEN)
    await screenshot(page, "oidc-02-login-with-sso-error")
    await page.goto(f"{sso_server.url}/users")
    await page.wait_for_url(f"{sso_server.url}/login?redirect_to=%2Fusers")


async def test_callback_in_another_browser_is_refused(
    browser: Browser, sso_server: Server, provider: Provider
) -> None:
    # login CSRF: the attacker's own code and state, opened in the victim's browser
    provider.person = _someone(roles=["iot-admins"])
    attacker = await browser.new_context(viewport=VIEWPORT)
    attacker_page = await attacker.new_page()
    stolen: list[str] = []

    async def stop_before_callback(route: Route) -> None:
        # the approval's redirect names the callback; keep it instead of following it
        if route.request.method != "POST":
            await route.continue_()
            return
        answer = await route.fetch(max_redirects=0)
        stolen.append(answer.headers["location"])
        await route.fulfill(status=200, body="kept")

    await attacker_page.route(f"{provider.issuer}/authorize*", stop_before_callback)
    await _through_provider(attacker_page, sso_server)
    await expect(attacker_page.get_by_text("kept")).to_be_visible()
    await attacker.close()
    assert len(stolen) == 1 and stolen[0].startswith(f"{sso_server.url}/auth/oidc/callback?")
    victim = await browser.new_context(viewport=VIEWPORT)
    victim_page = await victim.new_page()
    await victim_page.goto(stolen[0])
    await _sso_error(victim_page, SsoFailure.STATE)
    await victim.close()
    # refused before the code was exchanged: the provider still holds it, unused
    code = dict(parse_qsl(urlsplit(stolen[0]).query))["code"]
    assert code in provider.codes


async def test_disabled_account_is_refused(
    page: Page, sso_server: Server, provider: Provider
) -> None:
    person = _someone(roles=["iot-admins"])
    create = (
        "mutation($e: String!, $p: String!) { createUser(email: $e, password: $p, role: VIEWER)"
        " { id } }"
    )
    created = graphql_as(
        sso_server, sso_server.admin_email, create, e=person.email, p="a-long-password"
    )
    disable = "mutation($id: ID!) { updateUser(input: {id: $id, isActive: false}) { id } }"
    graphql_as(sso_server, sso_server.admin_email, disable, id=created["createUser"]["id"])
    provider.person = person
    await _through_provider(page, sso_server)
    await _sso_error(page, SsoFailure.DISABLED)


async def test_cancel_at_the_provider_comes_back_refused(
    page: Page, sso_server: Server, provider: Provider
) -> None:
    provider.person = _someone()
    await page.goto(f"{sso_server.url}/devices")
    await page.get_by_role("link", name=SSO_BUTTON).click()
    await page.get_by_role("button", name="Cancel").click()
    await _sso_error(page, SsoFailure.DENIED)
