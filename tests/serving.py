"""A real `iotdeck serve` (or another server) in a subprocess, waited for by a condition."""

import json
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.services import iotdeck_environment
from tests.waiting import wait_until

IOTDECK = str(Path(sys.executable).with_name("iotdeck"))
STARTUP_SECONDS = 60
Line = dict[str, Any]


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


def bench_stdout(*arguments: str) -> str:
    """What `iotdeck bench ARGUMENTS` printed, after asserting it succeeded."""
    done = subprocess.run(
        [IOTDECK, "bench", *arguments],
        env=iotdeck_environment(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


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


class Log:
    """The JSON lines of a running server's log (its stdout's plain lines skipped)."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout  # how long `one` waits

    def lines(self) -> list[Line]:
        """Every JSON line written so far; each must be one whole object."""
        found = []
        for text in self.path.read_text(errors="replace").splitlines():
            if text.startswith("{"):
                found.append(json.loads(text))
        return found

    def where(self, **fields: str) -> list[Line]:
        """The lines with all of these field values."""
        return [line for line in self.lines() if all(line.get(k) == v for k, v in fields.items())]

    def one(self, match: Callable[[Line], bool]) -> Line:
        """Wait for the first line `match` accepts and return it."""
        found = wait_until(lambda: [line for line in self.lines() if match(line)], self.timeout)
        assert isinstance(found, list)
        return found[0]


def graphql(
    url: str, token: str, query: str, headers: dict[str, str], **variables: Any
) -> tuple[httpx.Response, Any]:
    """POST `query` to the server at `url` as `token`'s user; the answer, and its data."""
    answer = httpx.post(
        f"{url}/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}", **headers},
        timeout=10,
    )
    body = answer.json()
    assert "errors" not in body, body
    return answer, body["data"]
