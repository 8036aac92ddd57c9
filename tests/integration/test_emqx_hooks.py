"""EMQX 5's HTTP authenticator and authorizer calls, as EMQX sends them, on both databases."""

import base64
import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import FastAPI
from sqlmodel import Session

from app.core import db
from app.core.config import Settings
from app.core.models import DeviceCreate
from app.mqtt import emqx
from app.services import credentials, devices

SECRET = "emqx-shared-secret-" + "s" * 24
# the body templates of docs/deployment.md#emqx, as configured in EMQX
AUTH_BODY = {
    "clientid": "${clientid}",
    "username": "${username}",
    "password": "${password}",
    "peerhost": "${peerhost}",
    "cert_common_name": "${cert_common_name}",
    "cert_pem": "${cert_pem}",
}
ACL_BODY = {
    "clientid": "${clientid}",
    "username": "${username}",
    "topic": "${topic}",
    "action": "${action}",
    "qos": "${qos}",
    "retain": "${retain}",
}
OTHER = "6f1c2a8e-0c1b-4a51-9d1e-1a0000000002"


def rendered(template: dict[str, str], **client: str) -> dict[str, str]:
    """What EMQX posts: every placeholder replaced by the client's value, "" when it has none."""
    return {
        key: re.sub(r"\$\{(\w+)\}", lambda m: client.get(m[1], ""), value)
        for key, value in template.items()
    }


def der_base64(certificate_pem: str) -> str:
    """`${cert_pem}` as EMQX renders it: the certificate's DER in base64."""
    der = x509.load_pem_x509_certificate(certificate_pem.encode()).public_bytes(Encoding.DER)
    return base64.b64encode(der).decode()


def _client(secret: str) -> httpx.AsyncClient:
    api = FastAPI()
    api.include_router(emqx.create_router(Settings(emqx_secret=secret)))
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(api),
        base_url="http://test",
        headers={emqx.SECRET_HEADER: SECRET},
    )


@pytest.fixture
async def hooks() -> AsyncIterator[httpx.AsyncClient]:
    """The two endpoints in an app configured with SECRET; calls carry the secret."""
    async with _client(SECRET) as client:
        yield client


@pytest.fixture
def device(session: Session) -> uuid.UUID:
    """A registered device, committed so that the endpoints' sessions see it."""
    made = devices.create_device(session=session, data=DeviceCreate(name="Boiler", type="boiler"))
    session.commit()
    return made.id


async def login(hooks: httpx.AsyncClient, **client: str) -> dict:
    """POST /mqtt/auth as EMQX would for this client; the JSON answer."""
    answer = await hooks.post("/mqtt/auth", json=rendered(AUTH_BODY, peerhost="10.0.0.7", **client))
    assert answer.status_code == 200, answer.text
    return answer.json()


async def may(hooks: httpx.AsyncClient, username: str, action: str, topic: str) -> str:
    """POST /mqtt/acl as EMQX would; "allow" or "deny"."""
    body = rendered(ACL_BODY, clientid="c1", username=username, topic=topic, action=action, qos="1")
    answer = await hooks.post("/mqtt/acl", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()["result"]


ALLOW = {"result": "allow", "is_superuser": False}
DENY = {"result": "deny", "is_superuser": False}


# authentication ------------------------------------------------------------------------


async def test_a_device_password_is_allowed_and_not_a_superuser(
    hooks: httpx.AsyncClient, session: Session, device: uuid.UUID
) -> None:
    issued = credentials.issue_credentials(session=session, device_id=device, kind="PASSWORD")
    session.commit()
    assert issued.password is not None
    assert (
        await login(hooks, clientid="boiler", username=str(device), password=issued.password)
        == ALLOW
    )


async def test_a_wrong_revoked_or_missing_password_is_denied(
    hooks: httpx.AsyncClient, session: Session, device: uuid.UUID
) -> None:
    issued = credentials.issue_credentials(session=session, device_id=device, kind="PASSWORD")
    session.commit()
    assert issued.password is not None
    assert await login(hooks, username=str(device), password=issued.password + "x") == DENY
    assert await login(hooks, username=str(device)) == DENY
    assert await login(hooks, username=OTHER, password=issued.password) == DENY
    assert await login(hooks) == DENY  # anonymous: every placeholder renders empty
    credentials.revoke_credentials(session=session, device_id=device)
    session.commit()
    assert await login(hooks, username=str(device), password=issued.password) == DENY


async def test_a_service_account_is_a_superuser(hooks: httpx.AsyncClient, session: Session) -> None:
    username, password = credentials.service_login(session=session, username="iotdeck-ingest")
    session.commit()
    assert await login(hooks, username=username, password=password) == {
        "result": "allow",
        "is_superuser": True,
    }
    # over TLS a platform process also shows a certificate naming its account
    assert (await login(hooks, username=username, password=password, cert_common_name=username))[
        "is_superuser"
    ]
    assert await login(hooks, username=username, password=password[:-1]) == DENY


async def test_a_live_certificate_is_allowed(
    hooks: httpx.AsyncClient, session: Session, device: uuid.UUID
) -> None:
    issued = credentials.issue_credentials(session=session, device_id=device, kind="CERTIFICATE")
    session.commit()
    assert issued.certificate_pem is not None
    # the TLS listener maps the CN to the username (peer_cert_as_username = cn)
    common = {"username": str(device), "cert_common_name": str(device)}
    assert await login(hooks, **common) == ALLOW
    assert await login(hooks, **common, cert_pem=der_base64(issued.certificate_pem)) == ALLOW


async def test_a_replaced_or_revoked_certificate_is_denied(
    hooks: httpx.AsyncClient, session: Session, device: uuid.UUID
) -> None:
    first = credentials.issue_credentials(session=session, device_id=device, kind="CERTIFICATE")
    credentials.issue_credentials(session=session, device_id=device, kind="CERTIFICATE")
    session.commit()
    assert first.certificate_pem is not None
    common = {"username": str(device), "cert_common_name": str(device)}
    # still signed by the platform CA, so EMQX's TLS check passes: only cert_pem tells
    assert await login(hooks, **common, cert_pem=der_base64(first.certificate_pem)) == DENY
    credentials.revoke_credentials(session=session, device_id=device)
    session.commit()
    assert await login(hooks, **common) == DENY


async def test_a_certificate_needs_a_device_certificate_credential_and_its_cn_as_username(
    hooks: httpx.AsyncClient, session: Session, device: uuid.UUID
) -> None:
    issued = credentials.issue_credentials(session=session, device_id=device, kind="PASSWORD")
    session.commit()
    assert issued.password is not None
    # a password credential is no certificate, even with the password sent along
    assert (
        await login(
            hooks, username=str(device), password=issued.password, cert_common_name=str(device)
        )
        == DENY
    )
    assert await login(hooks, username="localhost", cert_common_name="localhost") == DENY
    credentials.issue_credentials(session=session, device_id=device, kind="CERTIFICATE")
    session.commit()
    # the authorizer sees only the username: it must be the certificate's device
    assert await login(hooks, username=OTHER, cert_common_name=str(device)) == DENY
    assert await login(hooks, username="iotdeck-ingest", cert_common_name=str(device)) == DENY


# authorization -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "leaf"),
    [
        ("publish", "telemetry"),
        ("publish", "status"),
        ("publish", "commands/ack"),
        ("subscribe", "commands"),
        ("subscribe", "config"),
    ],
)
async def test_a_device_may_use_its_own_topics(
    hooks: httpx.AsyncClient, action: str, leaf: str
) -> None:
    device = str(uuid.uuid4())
    assert await may(hooks, device, action, f"devices/{device}/{leaf}") == "allow"


@pytest.mark.parametrize(
    ("action", "topic"),
    [
        ("publish", f"devices/{OTHER}/telemetry"),
        ("publish", "devices/{me}/commands"),
        ("publish", "devices/{me}/telemetry/x"),
        ("subscribe", f"devices/{OTHER}/commands"),
        ("subscribe", "devices/+/commands"),
        ("subscribe", "devices/{me}/#"),
        ("subscribe", "#"),
        ("subscribe", "$share/g/devices/{me}/commands"),
        ("subscribe", "devices/{me}/telemetry"),
        ("all", "devices/{me}/telemetry"),
    ],
)
async def test_a_device_may_use_nothing_else(
    hooks: httpx.AsyncClient, action: str, topic: str
) -> None:
    device = str(uuid.uuid4())
    assert await may(hooks, device, action, topic.format(me=device)) == "deny"


@pytest.mark.parametrize("action", ["publish", "subscribe", "all"])
async def test_a_service_account_may_use_every_topic(hooks: httpx.AsyncClient, action: str) -> None:
    assert await may(hooks, "iotdeck-ingest", action, "devices/+/telemetry") == "allow"
    assert await may(hooks, "iotdeck-commands", action, f"devices/{OTHER}/commands") == "allow"


# the secret and bad requests -----------------------------------------------------------


@pytest.mark.parametrize("path", ["/mqtt/auth", "/mqtt/acl"])
async def test_without_a_configured_secret_the_endpoints_are_not_there(path: str) -> None:
    async with _client("") as client:
        answer = await client.post(path, json={})
    assert answer.status_code == 404
    assert "IOTDECK_EMQX_SECRET" in answer.json()["detail"]


@pytest.mark.parametrize("path", ["/mqtt/auth", "/mqtt/acl"])
@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET + "x"])
async def test_a_missing_or_wrong_secret_is_refused(
    hooks: httpx.AsyncClient, path: str, secret: str | None
) -> None:
    headers = {emqx.SECRET_HEADER: secret} if secret is not None else {}
    hooks.headers.pop(emqx.SECRET_HEADER)
    answer = await hooks.post(path, json=rendered(ACL_BODY), headers=headers)
    assert answer.status_code == 401
    assert emqx.SECRET_HEADER in answer.json()["detail"]


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("/mqtt/auth", b"{not json", "JSON"),
        ("/mqtt/auth", b'["username"]', "JSON object"),
        ("/mqtt/auth", b'{"password": "p"}', "'username'"),
        ("/mqtt/auth", b'{"username": "u"}', "'password'"),
        ("/mqtt/auth", b'{"username": 7, "password": "p"}', "'username'"),
        ("/mqtt/auth", b'{"username": "u", "password": "p", "cert_pem": "%%"}', "'cert_pem'"),
        ("/mqtt/acl", b"", "JSON"),
        ("/mqtt/acl", b'{"username": "u", "action": "publish"}', "'topic'"),
        ("/mqtt/acl", b'{"username": "u", "topic": "t"}', "'action'"),
        ("/mqtt/acl", b'{"username": "u", "topic": "t", "action": "read"}', "'action'"),
        ("/mqtt/acl", b'{"topic": "t", "action": "publish"}', "'username'"),
    ],
)
async def test_a_bad_body_is_a_400_naming_the_field(
    hooks: httpx.AsyncClient, path: str, body: bytes, named: str
) -> None:
    answer = await hooks.post(path, content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert named in answer.json()["detail"]


async def test_an_unreachable_database_is_a_503_not_a_500(hooks: httpx.AsyncClient) -> None:
    # nothing listens on port 1
    db.init_engine("postgresql+psycopg://postgres@127.0.0.1:1/iotdeck?connect_timeout=1")
    answer = await hooks.post("/mqtt/auth", json=rendered(AUTH_BODY, username="u", password="p"))
    assert answer.status_code == 503
    assert answer.json() == {"detail": "database unreachable"}
