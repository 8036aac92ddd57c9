"""The `iotdeck` command as an operator runs it."""

import re
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlmodel import Session

from app.core import db
from app.core.errors import AuthenticationError
from app.core.models import DeviceCreate
from app.services import credentials, devices, users
from bench.services import iotdeck_environment

IOTDECK = str(Path(sys.executable).with_name("iotdeck"))


def _run(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [IOTDECK, *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a shell with this test's database and no secret set."""
    return iotdeck_environment(
        IOTDECK_DATABASE_URL=database_url,
        IOTDECK_DATA_DIR=str(tmp_path / "data"),
        IOTDECK_BCRYPT_ROUNDS="4",
    )


_GENERATED_LOGIN = re.compile(r"^(\w+) login: (\S+) / (\S+)  \(shown only once\)$", re.MULTILINE)


def test_seed_gives_each_demo_account_its_own_password_printed_once(
    env: dict[str, str], engine: Engine
) -> None:
    first = _run(["seed"], env)
    assert first.returncode == 0, first.stderr
    assert "users created: 3, devices: 10, rules: 5, dashboards: 1" in first.stdout
    logins = _GENERATED_LOGIN.findall(first.stdout)
    assert sorted(email for _, email, _ in logins) == [
        "admin@example.com",
        "operator@example.com",
        "viewer@example.com",
    ]
    passwords = [password for _, _, password in logins]
    assert len(set(passwords)) == 3
    assert all(first.stdout.count(password) == 1 for password in passwords)
    with db.session_scope() as session:
        for role, email, password in logins:
            user = users.authenticate(session=session, email=email, password=password)
            assert user.role.lower() == role
        with pytest.raises(AuthenticationError):  # no account takes another's password
            users.authenticate(session=session, email=logins[0][1], password=passwords[1])
    second = _run(["seed"], env)
    assert second.returncode == 0, second.stderr
    assert "users created: 0, devices: 0, rules: 0, dashboards: 0" in second.stdout
    assert "login" not in second.stdout


def test_seed_uses_the_configured_passwords_and_prints_none(
    env: dict[str, str], engine: Engine
) -> None:
    configured = {
        "admin@example.com": "admin password here",
        "operator@example.com": "operator password here",
        "viewer@example.com": "viewer password here",
    }
    names = ["IOTDECK_ADMIN_PASSWORD", "IOTDECK_OPERATOR_PASSWORD", "IOTDECK_VIEWER_PASSWORD"]
    result = _run(["seed"], env | dict(zip(names, configured.values(), strict=True)))
    assert result.returncode == 0, result.stderr
    assert "login" not in result.stdout
    with db.session_scope() as session:
        for email, password in configured.items():
            users.authenticate(session=session, email=email, password=password)


def test_user_create_reads_the_password_from_stdin(env: dict[str, str]) -> None:
    created = _run(
        ["user", "create", "--email", "Ops@Example.com", "--role", "OPERATOR", "--password-stdin"],
        env,
        stdin="long enough password\n",
    )
    assert created.returncode == 0, created.stderr
    assert "created ops@example.com (OPERATOR)" in created.stdout
    again = _run(
        ["user", "create", "--email", "ops@example.com", "--password-stdin"],
        env,
        stdin="long enough password\n",
    )
    assert again.returncode == 2
    assert "email: a user with email ops@example.com already exists" in again.stderr
    short = _run(
        ["user", "create", "--email", "x@example.com", "--password-stdin"], env, stdin="short\n"
    )
    assert short.returncode == 2
    assert "password: must be at least 8 characters" in short.stderr


def test_set_password_for_an_existing_user(env: dict[str, str]) -> None:
    assert _run(["seed"], env).returncode == 0
    changed = _run(
        ["user", "set-password", "--email", "admin@example.com", "--password-stdin"],
        env,
        stdin="a brand new password\n",
    )
    assert changed.returncode == 0, changed.stderr
    missing = _run(
        ["user", "set-password", "--email", "nobody@example.com", "--password-stdin"],
        env,
        stdin="a brand new password\n",
    )
    assert missing.returncode == 2
    assert "no user with email nobody@example.com" in missing.stderr


@pytest.mark.parametrize(
    ("secret", "message"),
    [("", "IOTDECK_JWT_SECRET is not set"), ("short", "IOTDECK_JWT_SECRET is shorter than 32")],
)
def test_serve_refuses_to_start_without_a_real_secret(
    env: dict[str, str], secret: str, message: str
) -> None:
    result = _run(["serve", "--port", "1"], {**env, "IOTDECK_JWT_SECRET": secret})
    assert result.returncode == 2
    assert message in result.stderr


def test_migrate_reports_the_latest_revision(env: dict[str, str]) -> None:
    result = _run(["migrate"], env)
    assert result.returncode == 0, result.stderr
    assert "database at the latest revision" in result.stdout


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_migrate_never_prints_the_database_password(env: dict[str, str]) -> None:
    url = make_url(env["IOTDECK_DATABASE_URL"])
    # local trust authentication accepts any password; a configured one is kept as it is
    secret = url.password or "migrate-s3cr3t-pw"
    with_password = url.set(password=secret).render_as_string(hide_password=False)
    result = _run(["migrate"], env | {"IOTDECK_DATABASE_URL": with_password})
    assert result.returncode == 0, result.stderr
    assert f"{url.username}:***@" in result.stdout
    assert secret not in result.stdout + result.stderr


def _device_id() -> str:
    with db.session_scope() as session:
        data = DeviceCreate(name="Gate", type="door")
        return str(devices.create_device(session=session, data=data).id)


def test_device_certificate_files_with_a_private_key_for_the_owner_only(
    env: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    del engine  # the process-wide engine, to register the device in this test's database
    device_id = _device_id()
    out = tmp_path / "new" / "folder"
    args = ["device", "credentials", "--device", device_id, "--kind", "certificate"]
    result = _run([*args, "--out", str(out)], env)
    assert result.returncode == 0, result.stderr
    files = {name: out / name for name in (f"{device_id}.crt", f"{device_id}.key", "ca.crt")}
    assert sorted(path.name for path in out.iterdir()) == sorted(files)
    for path in files.values():
        assert str(path) in result.stdout
    assert stat.S_IMODE(files[f"{device_id}.key"].stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in result.stdout + result.stderr
    certificate = x509.load_pem_x509_certificate(files[f"{device_id}.crt"].read_bytes())
    [common_name] = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert common_name.value == device_id
    certificate.verify_directly_issued_by(
        x509.load_pem_x509_certificate(files["ca.crt"].read_bytes())
    )


def test_device_password_is_printed_and_verifies(
    env: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    del engine
    device_id = _device_id()
    args = ["device", "credentials", "--device", device_id, "--kind", "password"]
    result = _run([*args, "--out", str(tmp_path / "ca")], env)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert lines["username"] == device_id
    assert lines["CA certificate"] == str(tmp_path / "ca" / "ca.crt")
    password = lines["password"].split()[0]
    with db.session_scope() as session:
        login = {"username": device_id, "password": password}
        assert credentials.password_credential(session=session, **login)


@pytest.mark.parametrize(
    ("device", "kind", "message"),
    [
        ("nope", "password", "--device: 'nope' is not a valid id"),
        (str(uuid.UUID(int=7)), "password", f"--device: no device with id {uuid.UUID(int=7)}"),
        (str(uuid.UUID(int=7)), "token", "--kind: 'token' is not one of password, certificate"),
    ],
)
def test_device_credentials_refusals_name_the_option(
    env: dict[str, str], device: str, kind: str, message: str
) -> None:
    result = _run(["device", "credentials", "--device", device, "--kind", kind], env)
    assert result.returncode == 2
    assert message in result.stderr


def test_ca_rotate_then_retire_leaves_only_the_newest_ca_trusted(
    env: dict[str, str], engine: Engine
) -> None:
    first = _run(["ca", "rotate"], env)
    assert first.returncode == 0, first.stderr
    second = _run(["ca", "rotate"], env)
    assert second.returncode == 0, second.stderr
    newest = second.stdout.split("new CA ", 1)[1].split()[0]
    assert "trusted CAs: 2" in second.stdout
    retired = _run(["ca", "retire"], env)
    assert retired.returncode == 0, retired.stderr
    assert "retired 1 CA(s)" in retired.stdout
    with Session(engine) as session:
        assert len(credentials.trusted_authorities(session)) == 1
        assert credentials.fingerprint(credentials.authority(session).certificate) == newest
