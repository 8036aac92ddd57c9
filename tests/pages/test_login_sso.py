"""The login page's single sign-on parts when no provider is configured (this suite's default)."""

from nicegui.testing import User

from app.web.oidc import SsoFailure


async def test_without_an_issuer_there_is_no_sso_button_and_no_route(user: User) -> None:
    await user.open("/login")
    await user.should_see("Sign in to the operator dashboard")
    await user.should_not_see(marker="login-sso")
    response = await user.http_client.get("/auth/oidc/login", follow_redirects=False)
    assert response.status_code == 404


async def test_a_failure_code_shows_its_fixed_message(user: User) -> None:
    await user.open(f"/login?sso_error={SsoFailure.DISABLED.value}")
    await user.should_see(SsoFailure.DISABLED.message)


async def test_anything_else_in_the_error_parameter_is_not_shown(user: User) -> None:
    await user.open("/login?sso_error=Your+account+was+hacked,+call+0800")
    await user.should_see("Sign in to the operator dashboard")
    await user.should_not_see("hacked")
    for failure in SsoFailure:
        await user.should_not_see(failure.message)
