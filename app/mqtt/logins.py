"""How platform processes and simulated devices log in to the broker (SPEC 8.1).

A URL with credentials in it wins (another broker, another scheme of accounts). Otherwise
a platform process logs in with its service account, found (or created) in the shared
database, which `iotdeck mqtt-broker` and the embedded broker accept. Over `mqtts://` the
broker is verified against IOTDECK_MQTT_CA_FILE, or else the platform CA; with the platform
CA, a process also presents a certificate for its service account, made at start and never
stored (the TLS listener of `iotdeck mqtt-broker` takes the certificate's CN as username).
"""

import dataclasses
import hashlib
import uuid
from collections.abc import Iterable
from pathlib import Path

from app.core import db
from app.core.models import CredentialKind
from app.mqtt.connection import BrokerAddress
from app.services import credentials

SERVICE_CERTIFICATE_DAYS = 30


def _read_ca(ca_file: str) -> str:
    return Path(ca_file).read_text() if ca_file else ""


def service_address(address: BrokerAddress, account: str, *, ca_file: str = "") -> BrokerAddress:
    """`address` logged in as the service account `account` unless it has credentials."""
    if address.username is not None and not address.tls:
        return address
    with db.session_scope() as session:
        changes: dict[str, object] = {}
        username = address.username
        if username is None:
            username, changes["password"] = credentials.service_login(
                session=session, username=account
            )
            changes["username"] = username
        if address.tls:
            changes["ca_pem"] = _read_ca(ca_file) or credentials.ca_bundle(session)
            if not ca_file:
                pair = credentials.sign(
                    credentials.authority(session), username, days=SERVICE_CERTIFICATE_DAYS
                )
                changes["certificate"] = (pair.certificate_pem, pair.private_key_pem)
    return dataclasses.replace(address, **changes)


def _unguessable(name: str) -> str:
    """`name` plus a suffix derived from the ingest account's password.

    Every platform process computes the same suffix; no device can, so no device can name
    what carries it.
    """
    with db.session_scope() as session:
        _, secret = credentials.service_login(session=session, username=credentials.INGEST_ACCOUNT)
    return f"{name}-{hashlib.sha256(f'{secret}:{name}'.encode()).hexdigest()[:16]}"


def shared_group(group: str) -> str:
    """The `$share` group ingest workers really join: `group` plus a secret suffix.

    Mosquitto 2.0's acl_file does not check SUBSCRIBE (only what it delivers), and a shared
    group hands each message to one member: a device that joined ingest's group would make
    its share vanish.
    """
    return _unguessable(group) if group else ""


def session_client_id(client_id: str) -> str:
    """The client id ingest really connects with: IOTDECK_INGEST_CLIENT_ID plus a secret suffix.

    Mosquitto 2.0 lets any logged-in client take over the session of a client id it names,
    subscriptions and queued messages included; what it then may not read is dropped. A
    device that guessed ingest's id would make ingest's backlog vanish.
    """
    return _unguessable(client_id)


def device_addresses(
    address: BrokerAddress, device_ids: Iterable[uuid.UUID], *, ca_file: str = ""
) -> dict[uuid.UUID, BrokerAddress]:
    """Each device's own login, issued now: a password, or a certificate over TLS.

    Issuing replaces the device's previous credential of that kind. With credentials in
    the URL (another broker's scheme of accounts) every device uses those.
    """
    ids = list(device_ids)
    if address.username is not None:
        return dict.fromkeys(ids, address)
    kind = CredentialKind.CERTIFICATE if address.tls else CredentialKind.PASSWORD
    logins = {}
    with db.session_scope() as session:
        ca_pem = (_read_ca(ca_file) or credentials.ca_bundle(session)) if address.tls else ""
        for device_id in ids:
            issued = credentials.issue_credentials(session=session, device_id=device_id, kind=kind)
            certificate = (
                (issued.certificate_pem, issued.private_key_pem)
                if issued.certificate_pem and issued.private_key_pem
                else None
            )
            logins[device_id] = dataclasses.replace(
                address,
                username=issued.username,
                password=issued.password,
                ca_pem=ca_pem,
                certificate=certificate,
            )
    return logins
