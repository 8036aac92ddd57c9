"""A real `iotdeck serve` (or another server) in a subprocess, waited for by a condition."""

import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.waiting import wait_until

IOTDECK = str(Path(sys.executable).with_name("iotdeck"))
STARTUP_SECONDS = 60


@contextmanager
def running(
    command: list[str], env: dict[str, str], log: Path, ready: Callable[[], bool] | None = None
) -> Iterator[subprocess.Popen]:
    """`command` with its output in `log`, once `ready()` (at once without it); terminated
    (then killed) after."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=env, cwd=log.parent, stdout=output, stderr=subprocess.STDOUT
        )
    try:

        def up() -> bool:
            assert process.poll() is None, f"{command[0]} exited:\n{log.read_text()}"
            return ready()

        if ready is not None:
            wait_until(up, timeout=STARTUP_SECONDS, every=0.2)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def answers(url: str, verify: ssl.SSLContext | bool = True) -> bool:
    """Whether GET `url` answers 200 now (False while nothing accepts or TLS is not up)."""
    try:
        return httpx.get(url, verify=verify, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def cookie_attributes(set_cookie: str) -> set[str]:
    """A Set-Cookie header's attributes, lower case, values dropped: {"secure", "httponly",
    "samesite=lax", "path", ...} (SameSite keeps its value: it is the point)."""
    attributes = set()
    for part in set_cookie.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        name = name.lower()
        attributes.add(f"{name}={value.lower()}" if name == "samesite" else name)
    return attributes
