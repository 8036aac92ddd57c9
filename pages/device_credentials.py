"""A device's broker credentials on its page (ADMIN only): the services behind the
Credentials panel, run off the event loop."""

import uuid

from nicegui import run, ui

from app.core import db
from app.core.errors import NotFoundError
from app.core.models import CredentialKind, DeviceCredential, Role
from app.services import credentials
from app.services.credentials import IssuedCredentials
from components.credentials_panel import CredentialsPanel
from pages.auth import load_acting_user


def _live(device_id: uuid.UUID) -> list[DeviceCredential]:
    with db.session_scope() as session:
        return credentials.credentials_of(session=session, device_id=device_id)


def _issued(device_id: uuid.UUID, kind: CredentialKind) -> IssuedCredentials:
    with db.session_scope() as session:
        return credentials.issue_credentials(session=session, device_id=device_id, kind=kind)


def _revoked(device_id: uuid.UUID) -> int:
    with db.session_scope() as session:
        return credentials.revoke_credentials(session=session, device_id=device_id)


class DeviceCredentials:
    """The Credentials section of a device page; the page shows it to admins only."""

    def __init__(self, device_id: uuid.UUID) -> None:
        """Remember the device."""
        self.device_id = device_id

    def create(self) -> CredentialsPanel:
        """The section, in the current column."""
        panel = CredentialsPanel(load=self.load, issue=self.issue, revoke=self.revoke)
        panel.create()
        return panel

    async def load(self) -> list[DeviceCredential] | None:
        """The device's live credentials (None while the app shuts down)."""
        return await run.io_bound(_live, self.device_id)

    async def issue(self, kind: CredentialKind) -> IssuedCredentials | None:
        """A new credential of `kind` as the signed-in admin; None when refused."""
        if await load_acting_user(Role.ADMIN) is None:
            return None
        try:
            return await run.io_bound(_issued, self.device_id, kind)
        except NotFoundError:
            ui.notify("This device was deleted in the meantime", type="warning")
            return None

    async def revoke(self) -> bool:
        """Revoke every credential of the device as the signed-in admin; False when refused."""
        if await load_acting_user(Role.ADMIN) is None:
            return False
        count = await run.io_bound(_revoked, self.device_id)
        if count is None:  # the app is shutting down
            return False
        ui.notify(f"{count} credential{'s' if count != 1 else ''} revoked", type="positive")
        return True
