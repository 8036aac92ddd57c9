"""Device credentials over GraphQL (SPEC 8.1): ADMIN issues and revokes, any role reads."""

import re
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from sqlmodel import col, select

from app.core import db
from app.core.models import CredentialKind, DeviceCreate, DeviceCredential, Role
from app.services import credentials, devices
from tests.integration.graphql.client import GraphQLClient, code_of
from tests.integration.graphql.conftest import Account

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ISSUE = (
    "mutation($deviceId: ID!, $kind: CredentialKind!) {"
    " issueDeviceCredentials(deviceId: $deviceId, kind: $kind) {"
    " username password certificatePem privateKeyPem caCertificatePem } }"
)
REVOKE = (
    "mutation($deviceId: ID!) { revokeDeviceCredentials(deviceId: $deviceId) {"
    " id credentials { kind } } }"
)
LISTED = (
    "query($id: ID!) { device(id: $id) { credentials { kind createdAt fingerprint expiresAt } } }"
)
DELETE = "mutation($id: ID!) { deleteDevice(id: $id) { success } }"


def _device(name: str = "Boiler") -> str:
    with db.session_scope() as session:
        data = DeviceCreate(name=name, type="thermostat")
        return str(devices.create_device(session=session, data=data).id)


def _stored(device_id: str) -> list[DeviceCredential]:
    """Every credential row of the device, revoked ones included."""
    with db.session_scope() as session:
        query = select(DeviceCredential).where(DeviceCredential.device_id == uuid.UUID(device_id))
        return list(session.exec(query.order_by(col(DeviceCredential.created_at))))


async def _issue(api: GraphQLClient, token: str, device_id: str, kind: str) -> dict[str, str]:
    variables = {"deviceId": device_id, "kind": kind}
    return (await api.data(ISSUE, variables, token=token))["issueDeviceCredentials"]


async def _listed(api: GraphQLClient, token: str, device_id: str) -> list[dict[str, str]]:
    return (await api.data(LISTED, {"id": device_id}, token=token))["device"]["credentials"]


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR])
async def test_only_an_admin_issues_and_revokes(
    api: GraphQLClient, accounts: dict[Role, Account], role: Role
) -> None:
    device_id = _device()
    token = accounts[role].token
    issued = await api.error(ISSUE, {"deviceId": device_id, "kind": "PASSWORD"}, token=token)
    assert code_of(issued) == "FORBIDDEN"
    revoked = await api.error(REVOKE, {"deviceId": device_id}, token=token)
    assert code_of(revoked) == "FORBIDDEN"
    assert _stored(device_id) == []
    # reading what is live is every role's right
    assert await _listed(api, token, device_id) == []


async def test_a_password_is_shown_once_and_only_its_hash_is_kept(
    api: GraphQLClient, admin: str, viewer: str
) -> None:
    device_id = _device()
    issued = await _issue(api, admin, device_id, "PASSWORD")
    assert issued["username"] == device_id
    assert issued["password"] and len(issued["password"]) >= 32
    assert issued["certificatePem"] is None and issued["privateKeyPem"] is None
    assert issued["caCertificatePem"].startswith("-----BEGIN CERTIFICATE-----")
    [stored] = _stored(device_id)
    assert stored.password_hash is not None and issued["password"] not in stored.password_hash
    assert credentials.password_matches(stored.password_hash, issued["password"])
    [listed] = await _listed(api, viewer, device_id)
    assert listed["kind"] == "PASSWORD" and ISO_Z.match(listed["createdAt"])
    assert listed["fingerprint"] == stored.fingerprint and listed["expiresAt"] is None


async def test_a_certificate_names_the_device_and_verifies_against_the_ca(
    api: GraphQLClient, admin: str
) -> None:
    device_id = _device()
    issued = await _issue(api, admin, device_id, "CERTIFICATE")
    assert issued["username"] == device_id and issued["password"] is None
    certificate = x509.load_pem_x509_certificate(issued["certificatePem"].encode())
    [common_name] = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert common_name.value == device_id
    ca = x509.load_pem_x509_certificate(issued["caCertificatePem"].encode())
    certificate.verify_directly_issued_by(ca)  # raises when the signature is not the CA's
    key = serialization.load_pem_private_key(issued["privateKeyPem"].encode(), password=None)
    assert key.public_key() == certificate.public_key()
    [listed] = await _listed(api, admin, device_id)
    assert listed["kind"] == "CERTIFICATE" and ISO_Z.match(listed["expiresAt"])
    assert listed["expiresAt"].startswith(certificate.not_valid_after_utc.strftime("%Y-%m-%dT%H"))
    assert listed["fingerprint"] == credentials.fingerprint(certificate)


async def test_issuing_again_replaces_the_credential_of_that_kind(
    api: GraphQLClient, admin: str
) -> None:
    device_id = _device()
    first = await _issue(api, admin, device_id, "PASSWORD")
    second = await _issue(api, admin, device_id, "PASSWORD")
    await _issue(api, admin, device_id, "CERTIFICATE")
    kinds = sorted(entry["kind"] for entry in await _listed(api, admin, device_id))
    assert kinds == ["CERTIFICATE", "PASSWORD"]
    with db.session_scope() as session:
        live = credentials.credentials_of(session=session, device_id=device_id)
        assert sorted(c.kind for c in live) == [CredentialKind.CERTIFICATE, CredentialKind.PASSWORD]
        for password, valid in ((first["password"], False), (second["password"], True)):
            login = {"username": device_id, "password": password}
            assert credentials.password_credential(session=session, **login) is valid
    assert len(_stored(device_id)) == 3


async def test_revoking_leaves_no_live_credential(api: GraphQLClient, admin: str) -> None:
    device_id = _device()
    await _issue(api, admin, device_id, "PASSWORD")
    await _issue(api, admin, device_id, "CERTIFICATE")
    revoked = (await api.data(REVOKE, {"deviceId": device_id}, token=admin))[
        "revokeDeviceCredentials"
    ]
    assert revoked == {"id": device_id, "credentials": []}
    assert all(row.revoked_at is not None for row in _stored(device_id))
    # revoking nothing is not an error
    again = await api.data(REVOKE, {"deviceId": device_id}, token=admin)
    assert again["revokeDeviceCredentials"]["credentials"] == []


async def test_credentials_of_many_devices_in_one_query(api: GraphQLClient, admin: str) -> None:
    with_password, bare = _device("A"), _device("B")
    await _issue(api, admin, with_password, "PASSWORD")
    listing = await api.data("{ devices { id credentials { kind } } }", token=admin)
    found = {device["id"]: device["credentials"] for device in listing["devices"]}
    assert found == {with_password: [{"kind": "PASSWORD"}], bare: []}


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"deviceId": "nope", "kind": "PASSWORD"}, "deviceId"),
        ({"deviceId": str(uuid.uuid4()), "kind": "ROOT"}, "kind"),
        ({"deviceId": str(uuid.uuid4()), "kind": "password"}, "kind"),
    ],
)
async def test_bad_arguments_name_the_field(
    api: GraphQLClient, admin: str, variables: dict[str, str], field: str
) -> None:
    error = await api.error(ISSUE, variables, token=admin)
    assert code_of(error) == "BAD_USER_INPUT"
    assert error["extensions"]["field"] == field


async def test_bad_and_unknown_device_ids(api: GraphQLClient, admin: str) -> None:
    bad = await api.error(REVOKE, {"deviceId": "nope"}, token=admin)
    assert (code_of(bad), bad["extensions"]["field"]) == ("BAD_USER_INPUT", "deviceId")
    unknown = str(uuid.uuid4())
    for query, variables in (
        (ISSUE, {"deviceId": unknown, "kind": "CERTIFICATE"}),
        (REVOKE, {"deviceId": unknown}),
    ):
        error = await api.error(query, variables, token=admin)
        assert code_of(error) == "NOT_FOUND" and unknown in error["message"]
    assert _stored(unknown) == []


async def test_deleting_a_device_revokes_its_credentials(api: GraphQLClient, admin: str) -> None:
    device_id = _device()
    await _issue(api, admin, device_id, "PASSWORD")
    await _issue(api, admin, device_id, "CERTIFICATE")
    assert await api.data(DELETE, {"id": device_id}, token=admin) == {
        "deleteDevice": {"success": True}
    }
    # the rows stay (a revoked certificate stays on the CRL), none of them live
    rows = _stored(device_id)
    assert len(rows) == 2 and all(row.revoked_at is not None for row in rows)
    with db.session_scope() as session:
        state = credentials.broker_state(session=session)
    assert device_id not in state.devices and device_id not in state.passwords
