"""`iotdeck` command line: serve, migrate, seed, user management."""

import getpass
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from app.core import db, logs, migrate, storage
from app.core.config import ConfigError, Settings, get_settings
from app.core.errors import DomainError, NotFoundError, ValidationError
from app.core.models import CredentialKind, DashboardVisibility, Role, UserCreate, UserUpdate
from app.core.redaction import redacted
from app.services import credentials, dashboards, users
from app.services.credentials import IssuedCredentials
from app.services.seed import ADMIN_EMAIL, SeedReport, seed_demo

cli = typer.Typer(help="iotdeck: an IoT platform in one Python application.", no_args_is_help=True)
user_cli = typer.Typer(help="Manage user accounts.", no_args_is_help=True)
cli.add_typer(user_cli, name="user")
device_cli = typer.Typer(help="Manage devices.", no_args_is_help=True)
cli.add_typer(device_cli, name="device")
ca_cli = typer.Typer(help="The platform CA that signs device and broker certificates.")
cli.add_typer(ca_cli, name="ca")
dashboards_cli = typer.Typer(help="Dashboards as files (docs/dashboards.md).", no_args_is_help=True)
cli.add_typer(dashboards_cli, name="dashboards")
bench_cli = typer.Typer(help="Benchmarks (need a source checkout, Mosquitto, PostgreSQL).")
cli.add_typer(bench_cli, name="bench")


def _settings(*, demo: bool = False) -> Settings:
    settings = get_settings()
    settings.demo = settings.demo or demo
    logs.configure(settings)  # after --demo: it decides the default format
    return settings


def _warnings_only() -> None:
    """The benchmarks print their figures; only their warnings are worth a log line."""
    logs.configure(get_settings(), level="WARNING")


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _open_database(settings: Settings) -> storage.Layout:
    try:
        return migrate.open_database(settings)
    except ConfigError as exc:
        _fail(str(exc))


# NiceGUI takes a process whose environment has these for one of its own tests (it then
# demands a screen-test port, or simulates the browser instead of serving); a server that
# an integrator's pytest run starts inherits them: `iotdeck serve` is never such a test
_TEST_RUNNER_VARIABLES = (
    "PYTEST_CURRENT_TEST",
    "NICEGUI_SCREEN_TEST_PORT",
    "NICEGUI_USER_SIMULATION",
)


def _forget_test_runner() -> None:
    for name in _TEST_RUNNER_VARIABLES:
        os.environ.pop(name, None)


@cli.command()
def serve(  # keyword-only: seven options, each named on the command line
    *,
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Web port (default 8080).")] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Embedded SQLite, generated secret, demo data.")
    ] = False,
    no_ingest: Annotated[
        bool, typer.Option("--no-ingest", help="Leave MQTT ingest to `iotdeck ingest` processes.")
    ] = False,
    no_workers: Annotated[
        bool,
        typer.Option(
            "--no-workers",
            help="Leave rules, notifications, commands and jobs to `iotdeck worker` processes.",
        ),
    ] = False,
    certfile: Annotated[
        Path | None,
        typer.Option(help="PEM certificate (chain) to serve HTTPS with (IOTDECK_TLS_CERT)."),
    ] = None,
    keyfile: Annotated[
        Path | None, typer.Option(help="Its PEM private key, unencrypted (IOTDECK_TLS_KEY).")
    ] = None,
) -> None:
    """Run the dashboard, /graphql, health endpoints and (unless --no-ingest) MQTT ingest.

    Rule evaluation, notifications, commands and periodic jobs run in it too, unless
    --no-workers.
    """
    _forget_test_runner()
    from app import main
    from app.web import https  # imports NiceGUI, which other commands do not need

    settings = _settings(demo=demo)
    settings.host = host or settings.host
    settings.port = port or settings.port
    settings.tls_cert = str(certfile) if certfile else settings.tls_cert
    settings.tls_key = str(keyfile) if keyfile else settings.tls_key
    wanted_mqtt_port = settings.mqtt_embedded_port
    try:
        # before the database: a certificate that cannot serve stops nothing half-started
        tls = https.check_tls(settings.tls_cert, settings.tls_key)
        report = main.prepare(settings)
    except ConfigError as exc:
        _fail(str(exc))
    url = f"{'https' if tls else 'http'}://{settings.host}:{settings.port}"
    print(f"iotdeck dashboard: {url}  (GraphQL: {url}/graphql)")
    if not settings.mqtt_url:
        port = settings.mqtt_embedded_port
        if port != wanted_mqtt_port:
            print(f"MQTT port {wanted_mqtt_port} is taken; the embedded broker uses {port} instead")
        print(f"embedded MQTT broker (3.1.1): mqtt://127.0.0.1:{port}")
    if settings.demo:
        print(f"demo database: {redacted(settings.database_url)}")
        if ADMIN_EMAIL in _print_generated_logins(report):
            pass  # its password is on the line above
        elif settings.admin_password:
            print(f"admin login: {ADMIN_EMAIL} / the password in IOTDECK_ADMIN_PASSWORD")
        else:
            print(
                f"admin login: {ADMIN_EMAIL} / the password printed on the first run "
                f"(reset it with: iotdeck user set-password --email {ADMIN_EMAIL})"
            )
    sys.stdout.flush()
    settings.ingest = settings.ingest and not no_ingest
    settings.workers = settings.workers and not no_workers
    raise typer.Exit(main.run(settings))  # 1: something was left to the next process


def _print_generated_logins(report: SeedReport | None) -> set[str]:
    """Print each generated demo password (its only showing); the e-mails printed."""
    logins = report.generated if report is not None else []
    for login in logins:
        role = login.role.value.lower()
        print(f"{role} login: {login.email} / {login.password}  (shown only once)")
    return {login.email for login in logins}


@cli.command("migrate")
def migrate_command() -> None:
    """Upgrade the database schema to the latest revision."""
    settings = _settings()
    layout = _open_database(settings)
    shown = redacted(settings.database_url)
    print(f"database at the latest revision ({layout} telemetry storage): {shown}")


@cli.command()
def seed() -> None:
    """Create the demo users and devices that are missing (safe to repeat)."""
    settings = _settings()
    _open_database(settings)
    with db.session_scope() as session:
        report = seed_demo(
            session=session,
            admin_password=settings.admin_password,
            operator_password=settings.operator_password,
            viewer_password=settings.viewer_password,
        )
    print(
        f"users created: {len(report.users_created)}, devices: {len(report.devices_created)},"
        f" rules: {len(report.rules_created)}, dashboards: {len(report.dashboards_created)}"
    )
    _print_generated_logins(report)


@cli.command()
def ingest() -> None:
    """Consume device telemetry and status from the broker in IOTDECK_MQTT_URL.

    /metrics and /health/live are served on IOTDECK_METRICS_PORT meanwhile.
    """
    from app.workers.ingest_process import run_ingest  # paho and the scheduler load only here

    _run_beside_metrics("iotdeck-ingest", run_ingest)


@cli.command()
def worker() -> None:
    """Evaluate rules, send notifications and commands and run the periodic jobs, without
    the web app (beside `serve --no-workers`; on IOTDECK_REDIS_URL and IOTDECK_MQTT_URL).

    /metrics and /health/live are served on IOTDECK_METRICS_PORT meanwhile.
    """
    from app.workers.worker import run_worker  # paho and the scheduler load only here

    _run_beside_metrics("iotdeck-worker", run_worker)


def _run_beside_metrics(service: str, run: Callable[[Settings], int]) -> NoReturn:
    """A process without the web app: traced as `service`, /metrics and /health/live on
    IOTDECK_METRICS_PORT while `run` runs; exits with its code (1: something was left to
    the next process, app/core/shutdown.py)."""
    from app.core import metrics_server, presence, tracing

    settings = _settings()
    tracing.configure(service)  # spans over OTLP if OTEL_EXPORTER_OTLP_ENDPOINT is set
    kind = service.removeprefix("iotdeck-")
    try:
        with (
            metrics_server.serving(settings.host, settings.metrics_port),
            presence.announced(settings.redis_url, kind),
        ):
            code = run(settings)
    except ConfigError as exc:
        _fail(str(exc))
    raise typer.Exit(code)


@cli.command()
def simulate(
    devices: Annotated[int, typer.Option(min=1, help="How many simulated devices.")] = 3,
    rate: Annotated[
        float,
        typer.Option(
            help="Messages per second per device (0.2 = every 5 s); ingest refuses what is "
            "over IOTDECK_DEVICE_RATE_LIMIT (10/second) once a device's burst is spent."
        ),
    ] = 1.0,
    broker: Annotated[
        str | None, typer.Option(help="mqtt://host:port (default: IOTDECK_MQTT_URL).")
    ] = None,
    types: Annotated[
        list[str] | None,
        typer.Option("--type", help="Device type, repeatable (default: all demo types)."),
    ] = None,
) -> None:
    """Publish telemetry from simulated devices until SIGINT or SIGTERM."""
    from app.mqtt import logins
    from app.mqtt.connection import BrokerAddress
    from app.sim import signals, simulator  # paho loads only here

    settings = _settings()
    if not (broker or settings.mqtt_url):
        _fail("no broker: pass --broker mqtt://host:1883 or set IOTDECK_MQTT_URL")
    if not rate > 0:
        _fail("--rate must be a positive number of messages per second")
    try:
        address = BrokerAddress.parse(broker or settings.mqtt_url, settings.mqtt_protocol)
        _open_database(settings)
        specs = simulator.ensure_devices(devices, types or signals.DEFAULT_TYPES)
    except (ConfigError, DomainError) as exc:
        _fail(str(exc))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    # on an identity broker each device logs in as itself (one connection each); on an
    # open one, or with an account in the URL, a large fleet shares a few connections
    device_logins = (
        logins.device_addresses(address, [spec.id for spec in specs], ca_file=settings.mqtt_ca_file)
        if simulator.needs_device_logins(address)
        else None
    )
    running = simulator.Simulator(address, specs, rate=rate, logins=device_logins)
    running.start()
    print(
        f"simulating {len(specs)} devices at {rate:g} messages/s each on {address.url}"
        f" over {len(running.links)} connection(s)"
    )
    sys.stdout.flush()
    stop.wait()
    running.stop()  # publishes `offline` for every device, then disconnects cleanly


@cli.command("mqtt-broker")
def mqtt_broker() -> None:
    """Run Mosquitto for iotdeck: device passwords, certificates and ACLs from the database."""
    from app.mqtt.broker import run_broker

    settings = _settings()
    _open_database(settings)
    try:
        code = run_broker(settings)
    except ConfigError as exc:
        _fail(str(exc))
    raise typer.Exit(code)  # 1: Mosquitto had to be killed (app/core/shutdown.py)


@bench_cli.command("ingest")
def bench_ingest(  # keyword-only: eleven options, each named on the command line
    *,
    devices: Annotated[
        int,
        typer.Option(
            help="Simulated devices (one publisher each; with --rate-per-device a few "
            "publishers share them)."
        ),
    ] = 50,
    seconds: Annotated[float, typer.Option(help="Length of the live phase.")] = 20.0,
    backlog: Annotated[int, typer.Option(help="Messages queued for the drain phase.")] = 60000,
    workers: Annotated[int, typer.Option(help="Ingest processes (shared subscription).")] = 1,
    rate: Annotated[
        float | None,
        typer.Option(
            help="Offered messages/s (default: the measured drain rate; with --fleet the "
            "total over each fleet, default 6000)."
        ),
    ] = None,
    timescaledb: Annotated[
        bool, typer.Option("--timescaledb", help="On the TimescaleDB server (127.0.0.1:5433).")
    ] = False,
    identity: Annotated[
        bool,
        typer.Option("--identity", help="Again behind `iotdeck mqtt-broker`: passwords, then TLS."),
    ] = False,
    streams: Annotated[
        bool,
        typer.Option(
            "--streams",
            help="Then drains with a Redis bus, with and without appending to the streams.",
        ),
    ] = False,
    rate_per_device: Annotated[
        float | None,
        typer.Option(
            min=0.0001,
            help="Fleet shape: --devices (up to 100,000, registered in bulk) publish from a "
            "few connections, each device this many messages/s; no drain or baselines.",
        ),
    ] = None,
    fleet: Annotated[
        bool,
        typer.Option(
            "--fleet", help="The fleet-shape table: 100 to 100,000 devices at one offered total."
        ),
    ] = False,
    fleet_size: Annotated[
        list[int] | None,
        typer.Option(min=1, help="With --fleet: a fleet size, repeatable (default the four)."),
    ] = None,
) -> None:
    """Measure ingest against a bare subscriber and bare COPY; prints one JSON object.

    With --rate-per-device or --fleet: ingest at fleet shapes (bench/ingest_fleet.py).
    """
    _warnings_only()
    if fleet:
        from bench import ingest_fleet

        result = ingest_fleet.run_fleet(
            sizes=tuple(fleet_size or ingest_fleet.FLEET_SIZES),
            total_rate=rate or ingest_fleet.FLEET_TOTAL_RATE,
            seconds=seconds,
            timescaledb=timescaledb,
        )
        print(ingest_fleet.table(result))
        print(json.dumps(result))
        return
    if rate_per_device is not None:
        from bench import ingest_fleet

        shape = ingest_fleet.Options(
            devices=devices,
            rate_per_device=rate_per_device,
            seconds=seconds,
            timescaledb=timescaledb,
        )
        print(json.dumps(ingest_fleet.run(shape), indent=2))
        return
    from bench.ingest import Options, run

    options = Options(
        devices=devices,
        seconds=seconds,
        backlog=backlog,
        workers=workers,
        rate=rate,
        timescaledb=timescaledb,
        identity=identity,
        streams=streams,
    )
    print(json.dumps(run(options), indent=2))


@bench_cli.command("storage")
def bench_storage(  # keyword-only: six options, each named on the command line
    *,
    devices: Annotated[int, typer.Option(min=1, help="Devices with a month of points.")] = 1000,
    days: Annotated[int, typer.Option(min=1, max=90, help="Days of one-minute points.")] = 30,
    repeats: Annotated[int, typer.Option(min=1, help="Warm runs of each chart query.")] = 50,
    ingest_seconds: Annotated[float, typer.Option(help="Each live ingest attempt.")] = 15.0,
    skip_ingest: Annotated[
        bool, typer.Option("--skip-ingest", help="Only the chart and compression phases.")
    ] = False,
    skip_charts: Annotated[
        bool, typer.Option("--skip-charts", help="Only the ingest phase.")
    ] = False,
) -> None:
    """Plain PostgreSQL against TimescaleDB: ingest, chart queries, compression; JSON."""
    from bench.storage import Options, run

    _warnings_only()
    options = Options(
        devices=devices,
        days=days,
        repeats=repeats,
        ingest_seconds=ingest_seconds,
        skip_ingest=skip_ingest,
        skip_charts=skip_charts,
    )
    print(json.dumps(run(options), indent=2))


PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]


@bench_cli.command("realtime")
def bench_realtime(
    subscribers: Annotated[
        int, typer.Option(help="WebSocket subscribers, one device each.")
    ] = 1000,
    seconds: Annotated[float, typer.Option(help="How long devices publish (1 Hz each).")] = 30.0,
) -> None:
    """GraphQL subscribers under load: delivery rate, latency, drops, memory; prints JSON."""
    from bench.realtime import Options, run

    _warnings_only()
    print(json.dumps(run(Options(subscribers=subscribers, seconds=seconds)), indent=2))


@bench_cli.command("dashboard")
def bench_dashboard(
    *,
    viewers: Annotated[int, typer.Option(min=2, help="Browser pages on the dashboard.")] = 20,
    devices: Annotated[int, typer.Option(min=1, help="Devices publishing.")] = 50,
    rate: Annotated[float, typer.Option(min=0.1, help="Messages per second per device.")] = 1.0,
    seconds: Annotated[float, typer.Option(min=1, help="Each steady measuring window.")] = 30.0,
) -> None:
    """A 12-widget dashboard in headless Chromium: first render, latency, server cost."""
    from bench.dashboard import Options, run, table

    _warnings_only()
    options = Options(viewers=viewers, devices=devices, rate=rate, seconds=seconds)
    result = run(options)
    print(table(result))
    print(json.dumps(result))


@bench_cli.command("rules")
def bench_rules(  # keyword-only: nine options, each named on the command line
    *,
    rules: Annotated[int, typer.Option(min=1, help="Rules (thresholds, windows, nodata).")] = 100,
    devices: Annotated[int, typer.Option(min=1, help="Devices (one publisher each).")] = 1000,
    points: Annotated[int, typer.Option(min=1, help="Points fed to the engine alone.")] = 200000,
    repeats: Annotated[int, typer.Option(min=1, help="Passes of the engine alone.")] = 5,
    seconds: Annotated[float, typer.Option(help="Length of each live ingest attempt.")] = 10.0,
    backlog: Annotated[int, typer.Option(help="Messages queued for each drain.")] = 30000,
    workers: Annotated[int, typer.Option(help="Ingest processes (shared subscription).")] = 1,
    engine_only: Annotated[
        bool, typer.Option("--engine-only", help="Skip the ingest comparison.")
    ] = False,
    rule_workers: Annotated[
        list[int] | None,
        typer.Option(
            "--rule-workers",
            min=1,
            help="Instead: evaluator processes sharing the partitions, one run per value "
            "(e.g. --rule-workers 1 --rule-workers 2), on the same backlog.",
        ),
    ] = None,
) -> None:
    """Rule engine µs per point, and ingest points/s with rules evaluated versus none."""
    from bench.rules import Options, run, table

    _warnings_only()
    if rule_workers:
        from bench import rules_scaling

        scaled = rules_scaling.run(
            rules_scaling.Options(
                rules=rules, devices=devices, points=points, workers=tuple(rule_workers)
            )
        )
        print(rules_scaling.table(scaled))
        print(json.dumps(scaled))
        return
    options = Options(
        rules=rules,
        devices=devices,
        points=points,
        repeats=repeats,
        seconds=seconds,
        backlog=backlog,
        workers=workers,
        macro=not engine_only,
    )
    result = run(options)
    print(table(result))
    print(json.dumps(result))


@bench_cli.command("fleet")
def bench_fleet(  # keyword-only: eight options, each named on the command line
    *,
    devices: Annotated[int, typer.Option(min=100, help="Devices registered (in bulk).")] = 100000,
    silent: Annotated[
        int, typer.Option(min=0, help="Of them, ONLINE but silent: the offline job's work.")
    ] = 50000,
    type_devices: Annotated[
        int, typer.Option(min=1, help="Devices of the dashboards' type, with telemetry.")
    ] = 10000,
    requests: Annotated[
        int, typer.Option(min=1, help="Timed GraphQL requests of each kind.")
    ] = 200,
    rules: Annotated[
        int, typer.Option(min=1, help="Rules in the engine whose memory is traced.")
    ] = 100,
    simulate_devices: Annotated[
        int, typer.Option(min=1, help="Devices of `iotdeck simulate`.")
    ] = 10000,
    simulate_rate: Annotated[
        float, typer.Option(min=0.001, help="Messages/s of each simulated device.")
    ] = 0.1,
    seconds: Annotated[
        float, typer.Option(min=1, help="How long the simulator is measured.")
    ] = 20.0,
) -> None:
    """The product with a large fleet: device list, offline job, rules, dashboards, simulator."""
    from bench.fleet import Options, run, table

    _warnings_only()
    options = Options(
        devices=devices,
        silent=min(silent, devices),
        type_devices=min(type_devices, devices),
        requests=requests,
        rules=rules,
        simulate_devices=simulate_devices,
        simulate_rate=simulate_rate,
        simulate_seconds=seconds,
    )
    result = run(options)
    print(table(result))
    print(json.dumps(result))


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        _fail("the passwords differ")
    return first


@dashboards_cli.command("export")
def dashboards_export(
    dashboard_id: Annotated[str, typer.Argument(metavar="ID", help="The dashboard's id.")],
    out: Annotated[
        Path | None, typer.Option(help="Write the spec to this file (default: print it).")
    ] = None,
) -> None:
    """Write a dashboard's whole spec as JSON: `dashboards import` takes it back."""
    settings = _settings()
    _open_database(settings)
    try:
        with db.session_scope() as session:
            found = dashboards.find_dashboard(session=session, dashboard_id=dashboard_id)
            text = dashboards.spec_json(found)
    except DomainError as exc:
        _fail(str(exc))
    if out is None:
        sys.stdout.buffer.write(text)
    else:
        out.write_bytes(text)
        print(f"wrote {out}", file=sys.stderr)


@dashboards_cli.command("import")
def dashboards_import(
    file: Annotated[Path, typer.Argument(help="A dashboard spec (JSON), e.g. an export.")],
    owner: Annotated[
        str, typer.Option(help="Email of its owner, an OPERATOR or ADMIN.")
    ] = ADMIN_EMAIL,
    shared: Annotated[bool, typer.Option("--shared", help="Visible to every user.")] = False,
) -> None:
    """Create a dashboard from a spec file; a bad spec is refused naming its JSON path."""
    settings = _settings()
    try:
        spec = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        _fail(f"{file}: {exc}")
    _open_database(settings)
    visibility = DashboardVisibility.SHARED if shared else DashboardVisibility.PRIVATE
    try:
        with db.session_scope() as session:
            user = users.get_user_by_email(session=session, email=owner)
            if user is None:
                _fail(f"--owner: no user with email {owner}")
            created = dashboards.import_dashboard(
                session=session, user=user, spec=spec, visibility=visibility
            )
            print(f"imported “{created.name}” id {created.id}")
    except DomainError as exc:
        _fail(f"{file}: {exc}")


@user_cli.command("create")
def user_create(
    email: Annotated[str, typer.Option(help="Sign-in email.")],
    role: Annotated[Role, typer.Option(help="ADMIN, OPERATOR or VIEWER.")] = Role.VIEWER,
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    password_stdin: PasswordStdin = False,
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
    password_stdin: PasswordStdin = False,
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


# the service names fields as GraphQL does; here they are options
_CREDENTIAL_OPTIONS = {"deviceId": "--device", "kind": "--kind"}


def _credential_kind(value: str) -> CredentialKind:
    try:
        return CredentialKind(value.upper())
    except ValueError:
        _fail(f"--kind: '{value}' is not one of password, certificate")


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"--out: cannot create the folder {folder}: {exc.strerror}")


def _write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner can read, from the first byte on."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # the mode of os.open applies to a new file only
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def _credential_files(issued: IssuedCredentials, folder: Path | None) -> dict[str, Path]:
    """Write what the device installs into `folder`; each file by what it holds."""
    if folder is None:
        return {}
    files = {"CA certificate": folder / "ca.crt"}
    files["CA certificate"].write_text(issued.ca_certificate_pem)
    if issued.certificate_pem is not None and issued.private_key_pem is not None:
        files["certificate"] = folder / f"{issued.username}.crt"
        files["certificate"].write_text(issued.certificate_pem)
        files["private key"] = folder / f"{issued.username}.key"
        _write_private(files["private key"], issued.private_key_pem)
    return files


@device_cli.command("credentials")
def device_credentials(
    device: Annotated[str, typer.Option(help="The device's id.")],
    kind: Annotated[
        str, typer.Option(metavar="password|certificate", help="What the device signs in with.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the files: the CA certificate, and a certificate's .crt and .key "
            "(default for a certificate: the current folder)."
        ),
    ] = None,
) -> None:
    """Issue broker credentials for a device, replacing its previous ones of that kind."""
    wanted = _credential_kind(kind)
    folder = out or (Path.cwd() if wanted == CredentialKind.CERTIFICATE else None)
    settings = _settings()
    _open_database(settings)
    if folder is not None:
        _make_folder(folder)
    try:
        with db.session_scope() as session:
            issued = credentials.issue_credentials(session=session, device_id=device, kind=wanted)
            # written before the commit: when a file cannot be written, nothing is issued
            files = _credential_files(issued, folder)
    except ValidationError as exc:
        _fail(f"{_CREDENTIAL_OPTIONS.get(exc.field, exc.field)}: {exc.reason}")
    except NotFoundError:
        _fail(f"--device: no device with id {device}")
    except OSError as exc:
        _fail(f"--out: cannot write {exc.filename}: {exc.strerror}")
    print(f"issued a {wanted.lower()} for device {issued.username} (any previous one is revoked)")
    print(f"username: {issued.username}")
    if issued.password is not None:
        print(f"password: {issued.password}  (shown only once)")
    for what, path in files.items():
        print(f"{what}: {path}")


@ca_cli.command("rotate")
def ca_rotate() -> None:
    """Create a new CA that signs from now on; the previous ones stay trusted until retired."""
    settings = _settings()
    _open_database(settings)
    with db.session_scope() as session:
        created = credentials.create_authority(session)
        trusted = len(credentials.trusted_authorities(session))
    print(f"new CA {credentials.fingerprint(created.certificate)} signs from now on")
    print(f"trusted CAs: {trusted}; re-issue device certificates, restart iotdeck mqtt-broker,")
    print("then `iotdeck ca retire` to stop trusting the older ones")


@ca_cli.command("retire")
def ca_retire() -> None:
    """Stop trusting every CA but the newest: certificates they signed are refused."""
    settings = _settings()
    _open_database(settings)
    with db.session_scope() as session:
        current = credentials.authority(session)
        retired = credentials.retire_authorities(session, keep=current.id)
    print(f"retired {len(retired)} CA(s); trusted: {credentials.fingerprint(current.certificate)}")


def main() -> None:
    """Console entry point."""
    cli()
