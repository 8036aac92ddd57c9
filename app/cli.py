"""`iotdeck` command line: serve, migrate, seed, user management."""

import getpass
import logging
import sys
from typing import Annotated

import typer

from app import db, migrate
from app.config import ConfigError, Settings, get_settings
from app.errors import DomainError
from app.models import Role, UserCreate, UserUpdate
from app.services import users
from app.services.seed import ADMIN_EMAIL, seed_demo

cli = typer.Typer(help="iotdeck: an IoT platform in one Python application.", no_args_is_help=True)
user_cli = typer.Typer(help="Manage user accounts.", no_args_is_help=True)
cli.add_typer(user_cli, name="user")


def _settings(*, demo: bool = False) -> Settings:
    settings = get_settings()
    settings.demo = settings.demo or demo
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # each command says what it did; these libraries' per-step chatter is noise there
    for chatty in ("alembic", "amqtt", "transitions", "apscheduler"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    return settings


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _open_database(settings: Settings) -> None:
    migrate.upgrade(db.init_engine(settings.database_url))


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Web port (default 8080).")] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Embedded SQLite, generated secret, demo data.")
    ] = False,
    no_ingest: Annotated[
        bool, typer.Option("--no-ingest", help="Leave MQTT ingest to `iotdeck ingest` processes.")
    ] = False,
) -> None:
    """Run the dashboard, /graphql, health endpoints and (unless --no-ingest) MQTT ingest."""
    from app import main  # imports NiceGUI, which other commands do not need

    settings = _settings(demo=demo)
    settings.host = host or settings.host
    settings.port = port or settings.port
    wanted_mqtt_port = settings.mqtt_embedded_port
    try:
        report = main.prepare(settings)
    except ConfigError as exc:
        _fail(str(exc))
    url = f"http://{settings.host}:{settings.port}"
    print(f"iotdeck dashboard: {url}  (GraphQL: {url}/graphql)")
    if not settings.mqtt_url:
        port = settings.mqtt_embedded_port
        if port != wanted_mqtt_port:
            print(f"MQTT port {wanted_mqtt_port} is taken; the embedded broker uses {port} instead")
        print(f"embedded MQTT broker (3.1.1): mqtt://127.0.0.1:{port}")
    if settings.demo:
        print(f"demo database: {settings.database_url}")
        if report is not None and report.admin_password:
            print(f"admin login: {ADMIN_EMAIL} / {report.admin_password}  (shown only once)")
        elif settings.admin_password:
            print(f"admin login: {ADMIN_EMAIL} / the password in IOTDECK_ADMIN_PASSWORD")
        else:
            print(
                f"admin login: {ADMIN_EMAIL} / the password printed on the first run "
                f"(reset it with: iotdeck user set-password --email {ADMIN_EMAIL})"
            )
    sys.stdout.flush()
    main.run(settings, ingest=not no_ingest)


@cli.command("migrate")
def migrate_command() -> None:
    """Upgrade the database schema to the latest revision."""
    settings = _settings()
    _open_database(settings)
    print(f"database at the latest revision: {settings.database_url}")


@cli.command()
def seed() -> None:
    """Create the demo users and devices that are missing (safe to repeat)."""
    settings = _settings()
    _open_database(settings)
    with db.session_scope() as session:
        report = seed_demo(session=session, admin_password=settings.admin_password)
    print(f"users created: {len(report.users_created)}, devices: {len(report.devices_created)}")
    if report.admin_password:
        print(f"admin login: {ADMIN_EMAIL} / {report.admin_password}  (shown only once)")


@cli.command()
def ingest() -> None:
    """Consume device telemetry and status from the broker in IOTDECK_MQTT_URL."""
    from app.mqtt.runner import run_ingest  # paho and the scheduler load only here

    settings = _settings()
    try:
        run_ingest(settings)
    except ConfigError as exc:
        _fail(str(exc))


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        _fail("the passwords differ")
    return first


@user_cli.command("create")
def user_create(
    email: Annotated[str, typer.Option(help="Sign-in email.")],
    role: Annotated[Role, typer.Option(help="ADMIN, OPERATOR or VIEWER.")] = Role.VIEWER,
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Create a user account."""
    settings = _settings()
    password = _read_password(password_stdin)
    _open_database(settings)
    try:
        with db.session_scope() as session:
            data = UserCreate(email=email, password=password, role=role, name=name)
            user = users.create_user(session=session, data=data)
    except DomainError as exc:
        _fail(str(exc))
    print(f"created {user.email} ({user.role}) id {user.id}")


@user_cli.command("set-password")
def user_set_password(
    email: Annotated[str, typer.Option(help="Sign-in email of an existing user.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Set a new password for a user (and re-enable the account)."""
    settings = _settings()
    password = _read_password(password_stdin)
    _open_database(settings)
    try:
        with db.session_scope() as session:
            user = users.get_user_by_email(session=session, email=email)
            if user is None:
                _fail(f"no user with email {email}")
            data = UserUpdate(password=password, is_active=True)
            users.update_user(session=session, user_id=user.id, data=data)
    except DomainError as exc:
        _fail(str(exc))
    print(f"password changed for {email}")


def main() -> None:
    """Console entry point."""
    cli()
