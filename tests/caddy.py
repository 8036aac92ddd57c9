"""deploy/caddy/Caddyfile run by the system's Caddy on free ports, for the proxy tests."""

import os
import shutil
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.services import free_port
from tests.serving import answers, running

CADDYFILE = Path(__file__).resolve().parents[1] / "deploy" / "caddy" / "Caddyfile"
CADDY = shutil.which("caddy")
MISSING = (
    "no `caddy` binary (Debian: apt-get install caddy): the proxy configuration in "
    "deploy/caddy cannot be run"
)


@dataclass(frozen=True)
class Proxy:
    """Caddy's two listeners, and the TLS context that trusts its certificate."""

    http: str
    https: str
    trusted: ssl.SSLContext


def internal_root(root: Path) -> Path:
    """Where `caddy(root, ...)` keeps the root certificate of its own CA (SITE_TLS internal)."""
    return root / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"


def _trust(root_file: Path) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=root_file) if root_file.exists() else None


@contextmanager
def caddy(
    root: Path, upstream: str, site_tls: str | None, root_file: Path, *, grafana: str | None = None
) -> Iterator[Proxy]:
    """The repository's Caddyfile in front of `upstream` (host:port), as compose runs it
    but on free ports, with SITE_TLS `site_tls` (None: its default); `root_file` is the CA
    certificate to verify it by; `grafana` (host:port) is where /grafana/ goes."""
    assert CADDY is not None, MISSING
    http_port, https_port = free_port(), free_port()
    env = {
        "PATH": os.environ["PATH"],
        # its certificates, its CA and its locks in this test's folder
        "HOME": str(root),
        "XDG_DATA_HOME": str(root / "data"),
        "XDG_CONFIG_HOME": str(root / "config"),
        "SITE_ADDRESS": f"localhost:{https_port}",
        "HTTP_PORT": str(http_port),
        "CADDY_ADMIN": "off",  # several tests' Caddies would share localhost:2019
        "UPSTREAM": upstream,
    }
    if site_tls is not None:
        env["SITE_TLS"] = site_tls
    if grafana is not None:
        env["GRAFANA_UPSTREAM"] = grafana
    https = f"https://localhost:{https_port}"

    def ready() -> bool:
        trusted = _trust(root_file)  # Caddy's own CA appears once it runs
        return trusted is not None and answers(f"{https}/health/live", trusted)

    command = [CADDY, "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"]
    with running(command, env, root / "caddy.log", ready):
        trusted = _trust(root_file)
        assert trusted is not None
        yield Proxy(http=f"http://localhost:{http_port}", https=https, trusted=trusted)
