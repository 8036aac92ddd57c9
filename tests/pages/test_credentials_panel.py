"""The Credentials panel of a device's page: admins only, the secret shown once, confirmations."""

from collections.abc import Callable

from nicegui import ui
from nicegui.testing import User

from app.core import db
from app.core.models import CredentialKind, Device, DeviceCredential
from app.services import credentials
from tests.pages.conftest import Account


def _live(device: Device) -> list[DeviceCredential]:
    with db.session_scope() as session:
        return credentials.credentials_of(session=session, device_id=device.id)


def _issue(device: Device, kind: CredentialKind) -> None:
    with db.session_scope() as session:
        credentials.issue_credentials(session=session, device_id=device.id, kind=kind)


def _shown(user: User, marker: str) -> str:
    """The text of a read-only secret field of the dialog."""
    [field] = user.find(marker=marker).elements
    assert isinstance(field, ui.input | ui.textarea)
    return field.value


def _is_login(device: Device, password: str) -> bool:
    with db.session_scope() as session:
        login = {"username": str(device.id), "password": password}
        return credentials.password_credential(session=session, **login)


async def test_admin_issues_a_password_and_sees_it_once(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    device = add_device("Gate")
    await user.open(f"/devices/{device.id}")
    await user.should_see(marker="no-credentials")
    user.find(marker="issue-password").click()
    await user.should_see(marker="secret-dialog")
    await user.should_see("will not be shown again")
    password = _shown(user, "secret-password")
    assert _shown(user, "secret-username") == str(device.id)
    assert _is_login(device, password)
    user.find(marker="download-password").click()
    download = await user.download.next()
    assert download.text == f"username: {device.id}\npassword: {password}\n"
    user.find(marker="secret-done").click()
    await user.should_not_see(marker="secret-dialog")
    await user.should_see(marker="credential-password")
    await user.should_not_see(marker="no-credentials")
    # nothing brings the secret back: not the page, not a reload
    await user.open(f"/devices/{device.id}")
    await user.should_see(marker="credential-password")
    await user.should_not_see(marker="secret-password")


async def test_a_certificate_comes_with_its_key_and_the_ca_as_files(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    device = add_device("Gate")
    await user.open(f"/devices/{device.id}")
    await user.should_see(marker="no-credentials")
    user.find(marker="issue-certificate").click()
    await user.should_see(marker="secret-dialog")
    assert _shown(user, "secret-certificate").startswith("-----BEGIN CERTIFICATE-----")
    user.find(marker="download-key").click()
    key = await user.download.next()
    assert key.text == _shown(user, "secret-key")
    assert key.text.startswith("-----BEGIN PRIVATE KEY-----")
    user.find(marker="download-ca").click()
    assert (await user.download.next()).text == _shown(user, "secret-ca")
    [live] = _live(device)
    assert live.kind == CredentialKind.CERTIFICATE


async def test_issuing_again_asks_before_replacing(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    device = add_device("Gate")
    _issue(device, CredentialKind.PASSWORD)
    [before] = _live(device)
    await user.open(f"/devices/{device.id}")
    await user.should_see(marker="credential-password")
    user.find(marker="issue-password").click()
    await user.should_see("Replace the password?")
    user.find(marker="confirm-cancel").click()
    await user.should_not_see("Replace the password?")
    assert [credential.id for credential in _live(device)] == [before.id]
    await user.should_not_see(marker="secret-dialog")
    user.find(marker="issue-password").click()
    await user.should_see("Replace the password?")
    user.find(marker="confirm-ok").click()
    await user.should_see(marker="secret-dialog")
    [after] = _live(device)
    assert after.id != before.id and _is_login(device, _shown(user, "secret-password"))


async def test_revoke_all_asks_for_confirmation(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    device = add_device("Gate")
    _issue(device, CredentialKind.PASSWORD)
    _issue(device, CredentialKind.CERTIFICATE)
    await user.open(f"/devices/{device.id}")
    await user.should_see(marker="credential-certificate")
    user.find(marker="revoke-all").click()
    await user.should_see("Revoke all credentials?")
    user.find(marker="confirm-cancel").click()
    await user.should_not_see("Revoke all credentials?")
    assert len(_live(device)) == 2
    user.find(marker="revoke-all").click()
    await user.should_see("Revoke all credentials?")
    user.find(marker="confirm-ok").click()
    await user.should_see("2 credentials revoked")
    await user.should_see(marker="no-credentials")
    assert _live(device) == []


async def _no_panel(user: User, device: Device) -> None:
    _issue(device, CredentialKind.PASSWORD)
    await user.open(f"/devices/{device.id}")
    await user.should_see(marker="device-name")
    await user.should_not_see(marker="section-credentials")
    await user.should_not_see(marker="credential-password")
    await user.should_not_see(marker="issue-password")


async def test_a_viewer_does_not_see_the_panel(
    user: User, add_device: Callable[..., Device], viewer: Account
) -> None:
    del viewer
    await _no_panel(user, add_device("Gate"))


async def test_an_operator_does_not_see_the_panel(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    await _no_panel(user, add_device("Gate"))
