"""`iotdeck serve --certfile/--keyfile`: HTTPS with the operator's certificate, Secure
cookies over HTTPS (its own, or a trusted proxy's), and a clear refusal of a pair that
cannot serve, before anything starts."""

import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from bench.services import free_port, iotdeck_environment
from tests.certificates import ServerFiles, server_files
from tests.serving import IOTDECK, answers, cookie_attributes, running

PROXY = "127.0.0.2"  # a trusted proxy: Linux answers on all of 127/8


@pytest.fixture
def certificate(tmp_path: Path) -> ServerFiles:
    """A CA and the server certificate for 127.0.0.1 it signed."""
    return server_files(tmp_path / "tls")


def _environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    return iotdeck_environment(
        IOTDECK_DATA_DIR=str(tmp_path / "data"),
        IOTDECK_MQTT_EMBEDDED_PORT="0",
        IOTDECK_BCRYPT_ROUNDS="4",
        **settings,
    )


@pytest.mark.parametrize("given_as", ["options", "environment"])
def test_serves_https_with_its_certificate_and_secure_cookies(
    tmp_path: Path, certificate: ServerFiles, given_as: str
) -> None:
    port = free_port()
    args = ["serve", "--demo", "--no-ingest", "--port", str(port)]
    cert, key = str(certificate.certificate), str(certificate.key)
    if given_as == "options":
        args += ["--certfile", cert, "--keyfile", key]
        env = _environment(tmp_path)
    else:
        env = _environment(tmp_path, IOTDECK_TLS_CERT=cert, IOTDECK_TLS_KEY=key)
    trusted = ssl.create_default_context(cafile=certificate.ca)
    url = f"https://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with running([IOTDECK, *args], env, log, lambda: answers(f"{url}/health/live", trusted)):
        assert f"iotdeck dashboard: {url}  (GraphQL: {url}/graphql)" in log.read_text()
        assert httpx.get(f"{url}/health/live", verify=trusted).json() == {"status": "ok"}
        page = httpx.get(f"{url}/login", verify=trusted)
        assert page.status_code == 200 and "iotdeck" in page.text
        assert {"secure", "httponly", "samesite=lax"} <= cookie_attributes(
            page.headers["set-cookie"]
        )
        with pytest.raises(httpx.TransportError):  # no plain HTTP beside it
            httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=5)


def _login_cookie(url: str, *, source: str, forwarded_proto: str | None) -> set[str]:
    """The session cookie's attributes on a page fetched from address `source`."""
    headers = {"X-Forwarded-Proto": forwarded_proto} if forwarded_proto else {}
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        page = client.get(f"{url}/login", headers=headers)
    assert page.status_code == 200
    return cookie_attributes(page.headers["set-cookie"])


def test_cookie_is_secure_when_a_trusted_proxy_says_the_browser_came_over_https(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [IOTDECK, "serve", "--demo", "--no-ingest", "--port", str(port)]
    env = _environment(tmp_path, IOTDECK_TRUSTED_PROXIES=PROXY)
    with running(args, env, tmp_path / "serve.log", lambda: answers(f"{url}/health/live")):
        behind_tls = _login_cookie(url, source=PROXY, forwarded_proto="https")
        assert {"secure", "httponly", "samesite=lax"} <= behind_tls
        # the proxy itself spoke plain HTTP to the browser: a Secure cookie would be lost
        assert "secure" not in _login_cookie(url, source=PROXY, forwarded_proto=None)
        assert "secure" not in _login_cookie(url, source=PROXY, forwarded_proto="http")
        # anyone else's X-Forwarded-Proto is not believed
        forged = _login_cookie(url, source="127.0.0.1", forwarded_proto="https")
        assert {"httponly", "samesite=lax"} <= forged and "secure" not in forged


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            ["--certfile", "{cert}"],
            "--keyfile (IOTDECK_TLS_KEY) is not set: HTTPS needs the private key of {cert}",
        ),
        (
            ["--keyfile", "{key}"],
            "--certfile (IOTDECK_TLS_CERT) is not set: HTTPS needs the certificate of {key}",
        ),
        (
            ["--certfile", "{cert}", "--keyfile", "{other_key}"],
            "--keyfile (IOTDECK_TLS_KEY): the private key in {other_key} does not belong to "
            "the certificate in {cert}",
        ),
        (
            ["--certfile", "{missing}", "--keyfile", "{key}"],
            "--certfile (IOTDECK_TLS_CERT): cannot read {missing}: No such file or directory",
        ),
        (
            ["--certfile", "{cert}", "--keyfile", "{folder}"],
            "--keyfile (IOTDECK_TLS_KEY): cannot read {folder}: Is a directory",
        ),
        (
            ["--certfile", "{key}", "--keyfile", "{key}"],
            "--certfile (IOTDECK_TLS_CERT): {key} holds no PEM certificate",
        ),
        (
            ["--certfile", "{cert}", "--keyfile", "{cert}"],
            "--keyfile (IOTDECK_TLS_KEY): {cert} holds no PEM private key",
        ),
        (
            ["--certfile", "{cert}", "--keyfile", "{encrypted_key}"],
            "--keyfile (IOTDECK_TLS_KEY): the private key in {encrypted_key} is encrypted; "
            "give it without a passphrase",
        ),
    ],
    ids=[
        "no key",
        "no certificate",
        "another certificate's key",
        "missing file",
        "unreadable",
        "not a certificate",
        "not a key",
        "encrypted key",
    ],
)
def test_refuses_a_certificate_and_key_it_cannot_serve_before_starting(
    tmp_path: Path, certificate: ServerFiles, given: list[str], message: str
) -> None:
    other = server_files(tmp_path / "tls", name="other")
    encrypted = tmp_path / "tls" / "encrypted.key"
    key = serialization.load_pem_private_key(certificate.key.read_bytes(), password=None)
    encryption = serialization.BestAvailableEncryption(b"a passphrase")
    encrypted.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    paths = {
        "cert": certificate.certificate,
        "key": certificate.key,
        "other_key": other.key,
        "missing": tmp_path / "tls" / "missing.crt",
        "folder": tmp_path / "tls",
        "encrypted_key": encrypted,
    }
    args = [part.format(**paths) for part in given]
    done = subprocess.run(
        [IOTDECK, "serve", "--demo", "--port", str(free_port()), *args],
        env=_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"error: {message.format(**paths)}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()  # refused before the database was touched


def test_environment_names_the_variable_of_the_missing_half(
    tmp_path: Path, certificate: ServerFiles
) -> None:
    env = _environment(tmp_path, IOTDECK_TLS_CERT=str(certificate.certificate))
    done = subprocess.run(
        [IOTDECK, "serve", "--demo", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "IOTDECK_TLS_KEY" in done.stderr and "Traceback" not in done.stderr
