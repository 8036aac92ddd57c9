"""HTTPS for `serve`: its certificate checked before binding, cookies `Secure` over HTTPS.

uvicorn would otherwise meet a missing file or a key of another certificate only while
binding, as a traceback; and Starlette's session cookie is `Secure` only by a fixed flag,
which cannot know whether a TLS-terminating proxy fronts the process.
"""

import ipaddress
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.config import ConfigError, Settings

CERT = "--certfile (IOTDECK_TLS_CERT)"
KEY = "--keyfile (IOTDECK_TLS_KEY)"


def check_tls(certfile: str, keyfile: str) -> bool:
    """Whether to serve HTTPS; ConfigError naming the option when the pair cannot serve it.

    Both empty: plain HTTP. Checked: both given, both readable, a PEM certificate and an
    unencrypted PEM private key, the key the certificate's, and OpenSSL takes the pair.
    """
    if not certfile and not keyfile:
        return False
    if not keyfile:
        raise ConfigError(f"{KEY} is not set: HTTPS needs the private key of {certfile}")
    if not certfile:
        raise ConfigError(f"{CERT} is not set: HTTPS needs the certificate of {keyfile}")
    certificate = _certificate(certfile)
    key = _private_key(keyfile)
    if _public_der(certificate.public_key()) != _public_der(key.public_key()):
        raise ConfigError(
            f"{KEY}: the private key in {keyfile} does not belong to the certificate in {certfile}"
        )
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certfile, keyfile, password="")
    except ssl.SSLError as exc:
        raise ConfigError(f"{CERT}: OpenSSL refuses {certfile} with {keyfile}: {exc}") from None
    return True


def _read(option: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None


def _certificate(path: str) -> x509.Certificate:
    """The first certificate of a PEM chain (the server's own: its key must match)."""
    try:
        return x509.load_pem_x509_certificates(_read(CERT, path))[0]
    except ValueError:
        raise ConfigError(f"{CERT}: {path} holds no PEM certificate") from None


def _private_key(path: str) -> Any:
    try:
        return serialization.load_pem_private_key(_read(KEY, path), password=None)
    except TypeError:  # encrypted: uvicorn would stop and ask for the passphrase on a tty
        raise ConfigError(
            f"{KEY}: the private key in {path} is encrypted; give it without a passphrase"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{KEY}: {path} holds no PEM private key") from None


def _public_der(public_key: Any) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS files, and whose X-Forwarded-For/-Proto it believes.

    Only IOTDECK_TRUSTED_PROXIES: uvicorn's own default (127.0.0.1) would believe any local
    process, where the setting says no one when empty. A request such a proxy forwarded
    then has the browser's address and scheme (https), as the cookies below need.
    """
    options: dict[str, Any] = {"proxy_headers": bool(settings.trusted_proxies)}
    if settings.trusted_proxies:
        # as the settings read them: uvicorn takes "10.0.0.1/8" for a host name, never matched
        networks = [ipaddress.ip_network(entry, strict=False) for entry in settings.trusted_proxies]
        options["forwarded_allow_ips"] = [str(network) for network in networks]
    if settings.tls_cert:
        options |= {"ssl_certfile": settings.tls_cert, "ssl_keyfile": settings.tls_key}
    return options


def session_cookie_options(settings: Settings) -> dict[str, Any]:
    """Starlette's SessionMiddleware options: SameSite=Lax, Secure whenever serve has TLS.

    HttpOnly it always sets; SameSite=Lax is its default too, spelt out so an upgrade
    cannot loosen it.
    """
    return {"same_site": "lax", "https_only": bool(settings.tls_cert)}


class SecureCookies:
    """ASGI: every cookie set in answer to an HTTPS request gets `Secure`.

    HTTPS as the request's scheme says: serve's own TLS, or a trusted proxy's
    `X-Forwarded-Proto: https`. Over plain HTTP a browser would drop a Secure cookie.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add `Secure` to the Set-Cookie headers of its answer."""
        if scope["type"] != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def send_secure(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                message["headers"] = [_secure(name, value) for name, value in headers]
            await send(message)

        await self.app(scope, receive, send_secure)


def _secure(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    if name.lower() != b"set-cookie":
        return name, value
    attributes = {part.strip().lower() for part in value.split(b";")[1:]}
    return name, value if b"secure" in attributes else value + b"; secure"


@dataclass(frozen=True)
class _SecuredStack:
    """Starlette's stack builder, wrapped: SecureCookies around the stack it builds."""

    build: Callable[[], ASGIApp]

    def __call__(self) -> ASGIApp:
        return SecureCookies(self.build())


def secure_cookies_over_https(app: Starlette) -> None:
    """Make every cookie `app` sets over HTTPS Secure, NiceGUI's session cookie included.

    NiceGUI adds its SessionMiddleware when the server starts, outside every middleware
    added before: only around the built stack can a middleware see that cookie.
    """
    if not isinstance(app.build_middleware_stack, _SecuredStack):  # NiceGUI's tests re-run
        app.build_middleware_stack = _SecuredStack(app.build_middleware_stack)  # type: ignore[method-assign]
