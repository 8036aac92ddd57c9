"""Device credentials over GraphQL (SPEC 8.1): issue and revoke, ADMIN only.

`Device.credentials` (in types.py) lists what is live, never a secret; the secret of a new
credential is in the answer to `issueDeviceCredentials` and nowhere else.
"""

import uuid

import strawberry
from sqlmodel import Session

from app.core import models
from app.core.errors import NotFoundError
from app.graphql import arguments
from app.graphql.context import in_session
from app.graphql.permissions import IsAdmin, requires
from app.graphql.types import CredentialKind, Device
from app.services import credentials, devices
from app.services.credentials import IssuedCredentials


@strawberry.type(
    description="A credential as issued, shown this once: the platform keeps no readable copy "
    "of the password or the private key."
)
class DeviceCredentials:
    """The secret of a new credential and the CA bundle that verifies the broker."""

    username: str = strawberry.field(description="The device id (a certificate's CN too).")
    password: str | None = strawberry.field(description="PASSWORD only.")
    certificate_pem: str | None = strawberry.field(description="CERTIFICATE only.")
    private_key_pem: str | None = strawberry.field(description="CERTIFICATE only.")
    ca_certificate_pem: str = strawberry.field(
        description="The platform CA certificates (PEM) a device trusts the broker's TLS with."
    )

    @classmethod
    def from_issued(cls, issued: IssuedCredentials) -> "DeviceCredentials":
        """The GraphQL view of what issuing handed out."""
        return cls(
            username=issued.username,
            password=issued.password,
            certificate_pem=issued.certificate_pem,
            private_key_pem=issued.private_key_pem,
            ca_certificate_pem=issued.ca_certificate_pem,
        )


def _revoke(session: Session, device_id: uuid.UUID) -> models.Device:
    """Revoke every credential of an existing device; the device."""
    device = devices.get_device(session=session, device_id=device_id)
    if device is None:
        raise NotFoundError("device", device_id)
    credentials.revoke_credentials(session=session, device_id=device_id)
    return device


@strawberry.type
class CredentialsMutation:
    """Issuing and revoking device credentials, ADMIN only."""

    @strawberry.mutation(
        description="A new credential for the device, replacing its previous one of this kind; "
        "the secret is returned this once (ADMIN).",
        extensions=requires(IsAdmin()),
    )
    async def issue_device_credentials(
        self, device_id: strawberry.ID, kind: CredentialKind
    ) -> DeviceCredentials:
        """NOT_FOUND when no device has this id."""
        device = arguments.device_id(device_id)
        issued = await in_session(
            lambda session: credentials.issue_credentials(
                session=session, device_id=device, kind=kind
            )
        )
        return DeviceCredentials.from_issued(issued)

    @strawberry.mutation(
        description="Revoke all of the device's credentials: the broker cuts it off within "
        "seconds (ADMIN).",
        extensions=requires(IsAdmin()),
    )
    async def revoke_device_credentials(self, device_id: strawberry.ID) -> Device:
        """The device, now without credentials; NOT_FOUND when no device has this id."""
        device = arguments.device_id(device_id)
        return Device.from_model(await in_session(lambda session: _revoke(session, device)))
