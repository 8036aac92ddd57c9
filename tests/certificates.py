"""A throw-away CA and a server certificate it signs, as PEM files, for TLS tests."""

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from app.services import credentials

LOCAL_NAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class ServerFiles:
    """Where a test's CA certificate, server certificate and server key were written."""

    ca: Path
    certificate: Path
    key: Path


def _test_authority() -> credentials.Authority:
    """A CA made by the platform's own code (credentials.self_signed_authority), for a day."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iotdeck test CA")])
    certificate, key = credentials.self_signed_authority(name, start=datetime.now(UTC), days=1)
    return credentials.Authority(id=0, certificate=certificate, key=key)


def server_files(
    folder: Path, name: str = "server", server_names: tuple[str, ...] = LOCAL_NAMES
) -> ServerFiles:
    """A new CA and a certificate for `server_names` it signs, under `folder`.

    The server certificate is made by the platform's own signing code (credentials.sign),
    its common name the first of `server_names`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    authority = _test_authority()
    pair = credentials.sign(authority, server_names[0], days=1, server_names=server_names)
    files = ServerFiles(folder / f"{name}-ca.crt", folder / f"{name}.crt", folder / f"{name}.key")
    files.ca.write_bytes(authority.certificate.public_bytes(serialization.Encoding.PEM))
    files.certificate.write_text(pair.certificate_pem)
    files.key.write_text(pair.private_key_pem)
    return files
