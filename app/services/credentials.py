"""Device identity at the broker (SPEC 8.1): credentials, the platform CA, service logins.

A device holds at most one live credential of each kind:
- PASSWORD: username = the device id; only Mosquitto's `$7$` hash is stored (PBKDF2-HMAC-
  SHA512), so the same line goes into Mosquitto's password file and EMQX or the embedded
  broker check it here;
- CERTIFICATE: CN = the device id, signed by the platform CA; the private key is made here,
  handed out once and never stored.
The platform CA lives in the database so that every process finds it: `serve` signs device
certificates, `iotdeck mqtt-broker` trusts it and publishes its revocation list. Platform
processes log in with service accounts created here on first use.
"""

import base64
import hashlib
import hmac
import ipaddress
import secrets
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.core.errors import NotFoundError
from app.core.models import (
    CertificateAuthority,
    CredentialKind,
    Device,
    DeviceCredential,
    ServiceAccount,
    utcnow,
)
from app.services import validation

PBKDF2_ITERATIONS = 101  # what mosquitto_passwd writes for `$7$`; passwords here are random
CA_YEARS = 10
DEVICE_CERTIFICATE_DAYS = 365
# the MQTT logins of platform processes; each may read and write every device topic
INGEST_ACCOUNT = "iotdeck-ingest"
COMMANDS_ACCOUNT = "iotdeck-commands"
SERVICE_ACCOUNTS = (INGEST_ACCOUNT, COMMANDS_ACCOUNT)


# passwords -----------------------------------------------------------------------------


def hash_password(password: str) -> str:
    """Mosquitto's `$7$` format: PBKDF2-HMAC-SHA512, 12-byte salt, base64 fields."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    fields = (base64.b64encode(salt).decode(), base64.b64encode(digest).decode())
    return f"$7${PBKDF2_ITERATIONS}${fields[0]}${fields[1]}"


def password_matches(stored: str, password: str) -> bool:
    """True when `password` hashes to `stored` (a `$7$` line field)."""
    try:
        _, kind, iterations, salt, digest = stored.split("$")
        if kind != "7":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.pbkdf2_hmac(
            "sha512", password.encode(), base64.b64decode(salt), int(iterations)
        )
    except ValueError:
        return False
    return hmac.compare_digest(expected, actual)


def new_secret() -> str:
    """A random password: 32 bytes, URL-safe, nothing a shell or a URL chokes on."""
    return secrets.token_urlsafe(32)


# the platform CA ----------------------------------------------------------------------


@dataclass(frozen=True)
class Authority:
    """A CA able to sign: its database row id, certificate and private key."""

    id: int
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def certificate_pem(self) -> str:
        """The CA certificate in PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def load_authority(row: CertificateAuthority) -> Authority:
    """The signing CA of a `certificate_authorities` row."""
    key = serialization.load_pem_private_key(row.private_key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    certificate = x509.load_pem_x509_certificate(row.certificate_pem.encode())
    assert row.id is not None
    return Authority(row.id, certificate, key)


def self_signed_authority(
    name: x509.Name, *, start: datetime, days: float
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new key and a self-signed CA certificate `name` for it, valid from 5 minutes before
    `start` for `days`, that signs certificates and revocation lists (not other CAs).

    Public so that tests make their throw-away CAs exactly as the platform makes its own.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - timedelta(minutes=5))
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def create_authority(session: Session) -> Authority:
    """A new CA that signs from now on (the previous ones stay trusted until retired)."""
    now = utcnow()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iotdeck"),
            # unique: OpenSSL finds a certificate's CA and revocation list by this name
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"iotdeck device CA {now:%Y-%m-%d} {secrets.token_hex(4)}"
            ),
        ]
    )
    certificate, key = self_signed_authority(name, start=now, days=365 * CA_YEARS)
    row = CertificateAuthority(
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
        private_key_pem=_pem_key(key),
        created_at=now,
    )
    session.add(row)
    session.flush()
    return load_authority(row)


def trusted_authorities(session: Session) -> list[CertificateAuthority]:
    """The CAs the broker trusts (not retired), oldest first."""
    query = select(CertificateAuthority).where(col(CertificateAuthority.retired_at).is_(None))
    return list(session.exec(query.order_by(col(CertificateAuthority.id))))


def authority(session: Session) -> Authority:
    """The CA that signs now (the newest trusted one), created on first use."""
    rows = trusted_authorities(session)
    return load_authority(rows[-1]) if rows else create_authority(session)


def retire_authorities(session: Session, keep: int) -> list[int]:
    """Stop trusting every CA but the one with id `keep`; the ids retired."""
    rows = [row for row in trusted_authorities(session) if row.id != keep]
    for row in rows:
        row.retired_at = utcnow()
        session.add(row)
    session.flush()
    return [row.id for row in rows if row.id is not None]


def ca_bundle(session: Session) -> str:
    """Every trusted CA certificate, PEM, concatenated (what a client verifies against)."""
    rows = trusted_authorities(session)
    if not rows:
        return authority(session).certificate_pem
    return "".join(row.certificate_pem for row in rows)


@dataclass(frozen=True)
class KeyPair:
    """A certificate with its private key, both PEM."""

    certificate_pem: str
    private_key_pem: str
    certificate: x509.Certificate


def sign(
    ca: Authority,
    common_name: str,
    *,
    days: float,
    server_names: tuple[str, ...] = (),
    not_before: datetime | None = None,
) -> KeyPair:
    """A new key and a certificate for `common_name` signed by `ca`.

    With `server_names` (DNS names or IP addresses) it is a TLS server certificate,
    otherwise a client certificate.
    """
    start = not_before or utcnow() - timedelta(minutes=5)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if server_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(name) for name in server_names]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    certificate = builder.sign(ca.key, hashes.SHA256())
    return KeyPair(
        certificate.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key), certificate
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, as colon-separated hex (what openssl prints)."""
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


# device credentials ---------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedCredentials:
    """What issuing hands out, once: the secret and how to verify the broker."""

    credential: DeviceCredential
    username: str
    ca_certificate_pem: str
    password: str | None = None
    certificate_pem: str | None = None
    private_key_pem: str | None = None


def _device(session: Session, device_id: uuid.UUID | str) -> Device:
    device = session.get(Device, validation.parse_id(device_id, "deviceId"))
    if device is None:
        raise NotFoundError("device", device_id)
    return device


def _live(session: Session, device_id: uuid.UUID) -> list[DeviceCredential]:
    return live_credentials(session=session, device_ids=[device_id]).get(device_id, [])


def live_credentials(
    *, session: Session, device_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, list[DeviceCredential]]:
    """The live credentials of each device, PASSWORD before CERTIFICATE, in one query."""
    query = select(DeviceCredential).where(
        col(DeviceCredential.device_id).in_(device_ids), col(DeviceCredential.revoked_at).is_(None)
    )
    found: dict[uuid.UUID, list[DeviceCredential]] = {}
    for credential in session.exec(query.order_by(col(DeviceCredential.kind).desc())):
        found.setdefault(credential.device_id, []).append(credential)
    return found


def credentials_of(*, session: Session, device_id: uuid.UUID | str) -> list[DeviceCredential]:
    """The device's live credentials (never a secret), PASSWORD before CERTIFICATE."""
    return _live(session, validation.parse_id(device_id, "deviceId"))


def issue_credentials(
    *, session: Session, device_id: uuid.UUID | str, kind: CredentialKind | str
) -> IssuedCredentials:
    """A new credential of `kind` for the device, replacing its previous one of that kind."""
    kind = validation.any_of(kind, "kind", CredentialKind)
    device = _device(session, device_id)
    now = utcnow()
    for previous in _live(session, device.id):
        if previous.kind == kind:
            previous.revoked_at = now
            session.add(previous)
    session.flush()
    ca = authority(session)
    username = str(device.id)
    if kind == CredentialKind.PASSWORD:
        password = new_secret()
        stored = hash_password(password)
        credential = DeviceCredential(
            device_id=device.id,
            kind=kind,
            password_hash=stored,
            fingerprint=hashlib.sha256(stored.encode()).hexdigest()[:16],
            created_at=now,
        )
        issued = {"password": password}
    else:
        pair = sign(ca, username, days=DEVICE_CERTIFICATE_DAYS)
        credential = DeviceCredential(
            device_id=device.id,
            kind=kind,
            serial=str(pair.certificate.serial_number),
            certificate_pem=pair.certificate_pem,
            authority_id=ca.id,
            fingerprint=fingerprint(pair.certificate),
            created_at=now,
            expires_at=pair.certificate.not_valid_after_utc,
        )
        issued = {
            "certificate_pem": pair.certificate_pem,
            "private_key_pem": pair.private_key_pem,
        }
    session.add(credential)
    session.flush()
    return IssuedCredentials(
        credential=credential,
        username=username,
        ca_certificate_pem=ca_bundle(session),
        **issued,
    )


def revoke_credentials(*, session: Session, device_id: uuid.UUID | str) -> int:
    """Revoke every live credential of the device; how many there were."""
    live = _live(session, validation.parse_id(device_id, "deviceId"))
    now = utcnow()
    for credential in live:
        credential.revoked_at = now
        session.add(credential)
    session.flush()
    return len(live)


def password_credential(*, session: Session, username: str, password: str) -> bool:
    """True when `username`/`password` is a device's live password credential."""
    try:
        device_id = uuid.UUID(username)
    except ValueError:
        return False
    return any(
        c.kind == CredentialKind.PASSWORD
        and c.password_hash is not None
        and password_matches(c.password_hash, password)
        for c in _live(session, device_id)
    )


# service accounts ----------------------------------------------------------------------


def service_login(*, session: Session, username: str) -> tuple[str, str]:
    """The (username, password) of a platform service account, created on first use."""
    account = session.get(ServiceAccount, username)
    if account is None:
        password = new_secret()
        account = ServiceAccount(
            username=username, password=password, password_hash=hash_password(password)
        )
        try:
            with session.begin_nested():
                session.add(account)
        except IntegrityError:  # another process created it first
            account = session.get(ServiceAccount, username)
            assert account is not None
    return account.username, account.password


def is_service_login(*, session: Session, username: str, password: str) -> bool:
    """True when `username`/`password` is a service account's."""
    account = session.get(ServiceAccount, username)
    return account is not None and hmac.compare_digest(account.password, password)


# what the broker needs -----------------------------------------------------------------


@dataclass
class BrokerState:
    """Everything `iotdeck mqtt-broker` writes for Mosquitto, read in one go."""

    # username -> `$7$` hash: device passwords and service accounts
    passwords: dict[str, str] = field(default_factory=dict)
    services: list[str] = field(default_factory=list)
    # devices holding any live credential (their ACL entries)
    devices: list[str] = field(default_factory=list)
    # serials of live certificates, and of revoked ones by the CA that signed them
    live_serials: set[str] = field(default_factory=set)
    revoked: dict[int, list[tuple[int, datetime]]] = field(default_factory=dict)
    authorities: list[CertificateAuthority] = field(default_factory=list)


def broker_state(*, session: Session) -> BrokerState:
    """Who may connect and with what, as of now."""
    state = BrokerState(authorities=trusted_authorities(session))
    for account in session.exec(select(ServiceAccount).order_by(col(ServiceAccount.username))):
        state.passwords[account.username] = account.password_hash
        state.services.append(account.username)
    live = session.exec(
        select(DeviceCredential)
        .where(col(DeviceCredential.revoked_at).is_(None))
        .order_by(col(DeviceCredential.device_id))
    )
    devices: set[str] = set()
    for credential in live:
        username = str(credential.device_id)
        devices.add(username)
        if credential.password_hash is not None:
            state.passwords[username] = credential.password_hash
        if credential.serial is not None:
            state.live_serials.add(credential.serial)
    state.devices = sorted(devices)
    revoked = session.exec(
        select(DeviceCredential.serial, DeviceCredential.authority_id, DeviceCredential.revoked_at)
        .where(col(DeviceCredential.revoked_at).is_not(None))
        .where(col(DeviceCredential.serial).is_not(None))
    )
    for serial, authority_id, revoked_at in revoked:
        if authority_id is not None:
            state.revoked.setdefault(authority_id, []).append((int(serial), revoked_at))
    return state
