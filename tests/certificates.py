"""A throw-away CA and a server certificate it signs, as PEM files, for HTTPS tests."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.services import credentials


@dataclass(frozen=True)
class ServerFiles:
    """Where a test's CA certificate, server certificate and server key were written."""

    ca: Path
    certificate: Path
    key: Path


def _test_authority() -> credentials.Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iotdeck test CA")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return credentials.Authority(id=0, certificate=certificate, key=key)


def server_files(folder: Path, name: str = "server") -> ServerFiles:
    """A new CA and a certificate for localhost and 127.0.0.1 it signs, under `folder`.

    The server certificate is made by the platform's own signing code (credentials.sign).
    """
    folder.mkdir(parents=True, exist_ok=True)
    authority = _test_authority()
    pair = credentials.sign(authority, "localhost", days=1, server_names=("localhost", "127.0.0.1"))
    files = ServerFiles(folder / f"{name}-ca.crt", folder / f"{name}.crt", folder / f"{name}.key")
    files.ca.write_bytes(authority.certificate.public_bytes(serialization.Encoding.PEM))
    files.certificate.write_text(pair.certificate_pem)
    files.key.write_text(pair.private_key_pem)
    return files
