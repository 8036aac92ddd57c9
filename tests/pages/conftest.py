"""Page tests with NiceGUI's simulated browser: a fresh SQLite database per test."""

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nicegui import core
from nicegui.storage import request_contextvar
from nicegui.testing import User
from nicegui.testing.general_fixtures import get_path_to_main_file
from nicegui.testing.user_simulation import user_simulation

from app.core import db
from app.core.config import get_settings
from app.core.models import Device, DeviceCreate, DeviceStatus, Role, UserCreate, utcnow
from app.services import devices, users

PASSWORD = "correct horse battery"
# NiceGUI's app is one object for the whole run, and each test runs app/main.py again: its
# include_router calls wrap the app's lifespan once more every time (FastAPI merges a
# router's lifespan into the app's), so after a few hundred tests starting the app
# overflowed the stack. Each test starts from NiceGUI's own lifespan instead.
NICEGUI_LIFESPAN = core.app.router.lifespan_context


@dataclass(frozen=True)
class Account:
    """A user that exists in the test database, with its plain password."""

    email: str
    password: str
    role: Role
    name: str


@pytest.fixture(autouse=True)
def iotdeck_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point the app at a new SQLite file before the `user` fixture runs app/main.py."""
    monkeypatch.setenv("IOTDECK_DATABASE_URL", f"sqlite:///{tmp_path / 'iotdeck.db'}")
    monkeypatch.setenv("IOTDECK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IOTDECK_JWT_SECRET", "page-tests-" + "s" * 40)
    monkeypatch.delenv("IOTDECK_DEMO", raising=False)
    monkeypatch.setenv("IOTDECK_INGEST", "false")  # pages read the database; no MQTT here
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
async def user(
    caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> AsyncIterator[User]:
    """NiceGUI's simulated browser on app/main.py, failing on ERROR logs once it stopped.

    NiceGUI's own `user` fixture fails inside the simulation, which skips the app's
    shutdown: NiceGUI stays marked as started, and every later page test then fails at
    setup ("NiceGUI has already been started"), one test's ERROR line reported as ninety.
    This one stops the app first, then fails, naming the lines.
    """
    core.app.router.lifespan_context = NICEGUI_LIFESPAN
    async with user_simulation(main_file=get_path_to_main_file(request)) as simulated:
        yield simulated
    errors = [record for record in caplog.get_records("call") if record.levelname == "ERROR"]
    if errors:
        lines = "; ".join(f"{record.name}: {record.getMessage()}" for record in errors)
        pytest.fail(f"unexpected ERROR logs: {lines}", pytrace=False)


@pytest.fixture
def add_account(user: User) -> Callable[..., Account]:
    """Create accounts in the app's database (it exists once `user` has started the app)."""
    del user

    def add(role: Role, email: str | None = None, name: str | None = None) -> Account:
        email = email or f"{role.value.lower()}-{uuid.uuid4().hex[:6]}@example.com"
        name = name or f"{role.value.capitalize()} Person"
        with db.session_scope() as session:
            data = UserCreate(email=email, password=PASSWORD, role=role, name=name)
            users.create_user(session=session, data=data)
        return Account(email=email, password=PASSWORD, role=role, name=name)

    return add


@pytest.fixture
def add_device(user: User) -> Callable[..., Device]:
    """Register devices directly through the service, optionally with a status."""
    del user

    def add(
        name: str,
        type_: str = "thermostat",
        status: DeviceStatus = DeviceStatus.UNKNOWN,
        metadata: dict[str, Any] | None = None,
    ) -> Device:
        with db.session_scope() as session:
            data = DeviceCreate(name=name, type=type_, metadata=metadata)
            device = devices.create_device(session=session, data=data)
            if status != DeviceStatus.UNKNOWN:
                # status changes come from telemetry; tests set it directly
                device.status, device.last_seen_at = status, utcnow()
                session.add(device)
        return device

    return add


async def sign_in(user: User, account: Account, path: str = "/devices") -> None:
    """Open `path`, sign in on the login page it redirects to, and wait for the page."""
    await user.open(path)
    user.find("Email").type(account.email)
    user.find("Password").type(account.password)
    user.find(marker="login-submit").click()
    # sign-in goes through two redirects, then the page reads its data off the event loop
    await user.should_see(marker="logout", retries=30)
    # a real browser's events carry the request of their own page; the simulated user's
    # carry the last one this task saw, the login page's, whose session sign-in replaced
    request_contextvar.set(user.client.request)


@pytest.fixture
async def admin(user: User, add_account: Callable[..., Account]) -> Account:
    """An ADMIN, signed in."""
    account = add_account(Role.ADMIN, name="Ada Admin")
    await sign_in(user, account)
    return account


@pytest.fixture
async def viewer(user: User, add_account: Callable[..., Account]) -> Account:
    """A VIEWER, signed in (with an admin existing, as in any real installation)."""
    add_account(Role.ADMIN)
    account = add_account(Role.VIEWER, name="Vera Viewer")
    await sign_in(user, account)
    return account


@pytest.fixture
async def operator(user: User, add_account: Callable[..., Account]) -> Account:
    """An OPERATOR, signed in (with an admin existing)."""
    add_account(Role.ADMIN)
    account = add_account(Role.OPERATOR, name="Otto Operator")
    await sign_in(user, account)
    return account
