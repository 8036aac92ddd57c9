"""No secret reaches a log (issue 12, item 8): a full run, every secret set, then a grep.

The run goes through the paths where secrets leak in practice, errors above all: the
migration and seed output, a start-up, a wrong and a right sign-in over GraphQL and on
the page, a single sign-on attempt whose provider is down, Redis going away and coming
back (reconnect logs), and an ingest process whose MQTT login the broker refuses. Logs
are at DEBUG. Then every output is searched for every secret the run configured.
"""

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from bench.services import (
    PG_ADMIN_URL,
    RedisServer,
    free_port,
    fresh_database,
    iotdeck_environment,
    wait_for_port,
)
from tests.e2e.conftest import BROKER_LINE, IOTDECK, running_server
from tests.waiting import wait_until

SECRETS = {
    "database": "pg-SECRET-1f3a9c",
    "redis": "redis-SECRET-7b2e4d",
    "jwt": "jwt-SECRET-" + "j" * 40,
    "previous jwt": "jwt-old-SECRET-" + "p" * 40,
    "admin": "admin-SECRET-5c1d",
    "operator": "operator-SECRET-9e8f",
    "viewer": "viewer-SECRET-2a7b",
    "webhook": "webhook-SECRET-4d6c",
    "emqx": "emqx-SECRET-8f0e",
    "smtp": "smtp-SECRET-3b5a",
    "mqtt": "mqtt-SECRET-6e2c",
    "oidc": "oidc-SECRET-0a9d",
}


class PasswordRedis(RedisServer):
    """A private redis-server that wants a password, as a production one does."""

    def start(self) -> "PasswordRedis":
        """Start it with `requirepass`; wait until it accepts connections."""
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--requirepass", SECRETS["redis"], "--save", "", "--appendonly", "no"]
        command += ["--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")]
        self.process = subprocess.Popen(command)
        wait_for_port(self.port)
        return self

    @property
    def url(self) -> str:
        """The server as an IOTDECK_REDIS_URL, password included."""
        return f"redis://:{SECRETS['redis']}@127.0.0.1:{self.port}/0"


def _run(args: list[str], env: dict[str, str], root: Path) -> str:
    command = [IOTDECK, *args]
    environment = iotdeck_environment(**env)
    done = subprocess.run(
        command, env=environment, cwd=root, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
def test_no_secret_reaches_the_output_or_the_logs_of_a_full_run(tmp_path: Path) -> None:
    redis = PasswordRedis(tmp_path).start()
    outputs: dict[str, str] = {}
    try:
        with fresh_database(PG_ADMIN_URL, prefix="iotdeck_secrets") as url:
            # trust authentication ignores the password, but the URL carries it everywhere
            database_url = url.replace("://postgres@", f"://postgres:{SECRETS['database']}@")
            env = {
                "IOTDECK_DATA_DIR": str(tmp_path / "data"),
                "IOTDECK_DATABASE_URL": database_url,
                "IOTDECK_TIMESCALEDB": "off",
                "IOTDECK_REDIS_URL": redis.url,
                "IOTDECK_JWT_SECRET": SECRETS["jwt"],
                "IOTDECK_JWT_PREVIOUS_SECRETS": SECRETS["previous jwt"],
                "IOTDECK_ADMIN_PASSWORD": SECRETS["admin"],
                "IOTDECK_OPERATOR_PASSWORD": SECRETS["operator"],
                "IOTDECK_VIEWER_PASSWORD": SECRETS["viewer"],
                "IOTDECK_WEBHOOK_SECRET": SECRETS["webhook"],
                "IOTDECK_EMQX_SECRET": SECRETS["emqx"],
                "IOTDECK_SMTP_URL": f"smtp://alerts:{SECRETS['smtp']}@127.0.0.1:{free_port()}",
                "IOTDECK_OIDC_ISSUER": f"http://127.0.0.1:{free_port()}/realm",
                "IOTDECK_OIDC_CLIENT_ID": "iotdeck",
                "IOTDECK_OIDC_CLIENT_SECRET": SECRETS["oidc"],
                "IOTDECK_BCRYPT_ROUNDS": "4",
                "IOTDECK_LOG_LEVEL": "DEBUG",
            }
            outputs["migrate"] = _run(["migrate"], env, tmp_path)
            outputs["seed"] = _run(["seed"], env, tmp_path)
            with running_server(tmp_path, [], env) as server:
                _exercise(server.url)
                redis.stop()  # the bus and the rate limits lose Redis...
                _exercise(server.url)
                _wait_in_log(tmp_path / "serve.log", "lost", timeout=60)
                redis.start()  # ...and find it again
                wait_until(lambda: "bus: listening" in _log(tmp_path).split("lost")[-1], timeout=60)
                broker_port = _embedded_broker_port(tmp_path)
                outputs["ingest"] = _refused_ingest(env, tmp_path, broker_port)
            outputs["serve"] = _log(tmp_path)
    finally:
        redis.stop()
    # the run did go through the error paths it is meant to search
    assert "reconnecting" in outputs["serve"]
    assert "refused the connection" in outputs["ingest"]
    assert "Traceback" not in outputs["serve"]
    for where, text in outputs.items():
        for name, secret in SECRETS.items():
            assert secret not in text, f"the {name} secret is in the output of {where}"


def _exercise(url: str) -> None:
    """Sign in wrong and right over GraphQL, open the login page, try single sign-on."""
    login = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"
    with httpx.Client(base_url=url, timeout=15) as client:
        for password in ("wrong " + SECRETS["viewer"], SECRETS["admin"]):
            variables = {"e": "admin@example.com", "p": password}
            client.post("/graphql", json={"query": login, "variables": variables})
        client.get("/login")
        client.get("/auth/oidc/login")  # the provider is down: an error, logged
        client.post("/mqtt/auth", json={"username": "x", "password": SECRETS["mqtt"]})


def _log(root: Path) -> str:
    return (root / "serve.log").read_text(errors="replace")


def _wait_in_log(log: Path, text: str, timeout: float) -> None:
    """Wait until `text` is in `log`; on failure the assertion shows the ends of the logs."""
    try:
        wait_until(lambda: text in log.read_text(errors="replace"), timeout=timeout)
    except AssertionError:
        ends = "".join(
            f"\n--- {other.name} ends:\n{other.read_text(errors='replace')[-3000:]}"
            for other in sorted(log.parent.glob("*.log"))
        )
        raise AssertionError(f"{text!r} not in {log.name} within {timeout} s{ends}") from None


def _embedded_broker_port(root: Path) -> int:
    found = BROKER_LINE.search(_log(root))
    assert found is not None, "serve did not print its embedded broker's port"
    return int(found.group(1))


def _refused_ingest(env: dict[str, str], root: Path, port: int) -> str:
    """`iotdeck ingest` with a wrong password in IOTDECK_MQTT_URL, for a few attempts."""
    mqtt_url = f"mqtt://iotdeck-ingest:{SECRETS['mqtt']}@127.0.0.1:{port}"
    log = root / "ingest.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [IOTDECK, "ingest"],
            # the embedded broker speaks MQTT 3.1.1
            env=iotdeck_environment(
                **env, IOTDECK_MQTT_URL=mqtt_url, IOTDECK_MQTT_PROTOCOL="3.1.1"
            ),
            cwd=root,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_in_log(log, "refused the connection", timeout=60)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return log.read_text()
